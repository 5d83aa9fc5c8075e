//! Progress bars: the share of the source a job's cursor has covered.
//!
//! The share is the cursor over the highest user id when the run started,
//! which the server keeps on the job (`Job::source_max_id`). A row written
//! before that field existed has none; while such a full-mode run is active
//! the denominator is estimated from the ETA the server sends (it computes
//! `eta = ceil((max_id - cursor) / rate)`, so `cursor + eta × rate` is the
//! highest id, give or take one second of work). Without either, the bar
//! says the share is unknown instead of guessing.

use super::format::thousands;
use crate::backfill::domain::{Job, JobStatus, Mode};
use leptos::prelude::*;

/// The highest user id when the job's run started, as kept on the run.
pub fn source_max_id(job: &Job) -> Option<i64> {
    job.source_max_id
}

/// What a bar divides the cursor by, and whether that number is an estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Denominator {
    pub highest_id: i64,
    pub estimated: bool,
}

/// The best denominator the page has for `job`: the kept id, else the
/// ETA-based estimate of an active full-mode run, else none.
pub fn denominator(job: &Job) -> Option<Denominator> {
    if let Some(highest_id) = source_max_id(job) {
        return Some(Denominator {
            highest_id,
            estimated: false,
        });
    }
    let active_scan = job.status.is_active() && job.options.mode == Mode::Full;
    match (active_scan, job.throughput_per_sec, job.eta_secs) {
        (true, Some(rate), Some(eta)) if rate > 0.0 => Some(Denominator {
            highest_id: job.cursor + (eta as f64 * rate).round() as i64,
            estimated: true,
        }),
        _ => None,
    }
}

/// The covered share in 0..=1: `None` when it cannot be known.
pub fn covered_share(job: &Job) -> Option<f64> {
    if job.status == JobStatus::Completed {
        return Some(1.0);
    }
    let denominator = denominator(job)?;
    Some(share(job.cursor, denominator.highest_id))
}

fn share(cursor: i64, highest_id: i64) -> f64 {
    if highest_id <= 0 {
        // An empty source: nothing to cover, so nothing is left either.
        1.0
    } else {
        (cursor as f64 / highest_id as f64).clamp(0.0, 1.0)
    }
}

/// `0.4213` → `42%`; below 1% but started shows `<1%` rather than a false 0.
pub fn percent_label(share: f64) -> String {
    let percent = (share * 100.0).floor() as i64;
    if percent == 0 && share > 0.0 {
        "<1%".into()
    } else {
        format!("{percent}%")
    }
}

/// A job's progress bar. `large` is the job page's version.
#[component]
pub fn JobProgressBar(job: Job, #[prop(optional)] large: bool) -> impl IntoView {
    let denominator = denominator(&job);
    view! {
        <ProgressBar
            job_key=job.job_key.clone()
            cursor=job.cursor
            denominator=denominator.map(|d| d.highest_id)
            estimated=denominator.is_some_and(|d| d.estimated)
            status=job.status
            dry_run=job.dry_run
            large
        />
    }
}

/// The bar itself. `denominator: None` draws a labelled "share unknown" bar;
/// a completed job is always full; a dry run is striped, a rehearsal.
#[component]
pub fn ProgressBar(
    job_key: String,
    cursor: i64,
    denominator: Option<i64>,
    #[prop(optional)] estimated: bool,
    status: JobStatus,
    dry_run: bool,
    #[prop(optional)] large: bool,
) -> impl IntoView {
    let share = if status == JobStatus::Completed {
        Some(1.0)
    } else {
        denominator.map(|highest_id| share(cursor, highest_id))
    };
    let about = if estimated && status != JobStatus::Completed {
        "~"
    } else {
        ""
    };
    let rehearsal = if dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    let (text, value_text) = match share {
        Some(share) => {
            let percent = percent_label(share);
            let of = denominator
                .map(|d| format!(", cursor {} of {}", thousands(cursor), thousands(d)))
                .unwrap_or_default();
            (
                format!("{about}{percent}"),
                format!("{about}{percent} of the source covered{of}{rehearsal}"),
            )
        }
        None => (
            "share unknown".to_string(),
            format!(
                "share of the source unknown; cursor {}{rehearsal}",
                thousands(cursor)
            ),
        ),
    };
    let mut class = format!("meter meter-{}", status.as_str());
    for (on, name) in [
        (large, " meter-large"),
        (dry_run, " meter-rehearsal"),
        (share.is_none(), " meter-unknown"),
    ] {
        if on {
            class.push_str(name);
        }
    }
    let width = format!("{:.1}%", share.unwrap_or(0.0) * 100.0);
    view! {
        <div class=class>
            <div
                class="meter-track"
                role="progressbar"
                aria-label=format!("Coverage of {job_key}")
                aria-valuemin="0"
                aria-valuemax="100"
                aria-valuenow=share.map(|s| ((s * 100.0).floor() as i64).to_string())
                aria-valuetext=value_text.clone()
                title=value_text
            >
                <div class="meter-fill" style:width=width></div>
            </div>
            <span class="meter-text" aria-hidden="true">{text}</span>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_clamped_and_honest_near_zero() {
        assert_eq!(share(50, 200), 0.25);
        assert_eq!(share(300, 200), 1.0);
        assert_eq!(share(0, 0), 1.0);
        assert_eq!(percent_label(0.4213), "42%");
        assert_eq!(percent_label(0.001), "<1%");
        assert_eq!(percent_label(0.0), "0%");
        assert_eq!(percent_label(1.0), "100%");
    }
}
