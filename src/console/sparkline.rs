//! The throughput sparkline: users per second over the last few minutes,
//! drawn as inline SVG from the job samples the detail page already polls.
//!
//! Each poll is one sample: the job's `scanned` count and the server's
//! `updated_at` (written at every checkpoint). The rate between two samples
//! is Δscanned / Δupdated_at — the server's clock, so request latency does
//! not make the line jitter. No new server state is needed.

use super::format::thousands;
use super::sync_any::IntoSyncAny;
use crate::backfill::domain::Job;
use leptos::prelude::*;

/// How far back the line reaches.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;

const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 48.0;
/// Room for the stroke at the top and bottom edges.
const PAD: f64 = 2.0;

/// One polled observation of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub scanned: i64,
}

/// The samples of the current run, oldest first, at most [`WINDOW_MS`] old.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateHistory {
    run_started_ms: Option<i64>,
    samples: Vec<Sample>,
}

impl RateHistory {
    /// Adds `job` as a sample. A new run (or a reset counter) starts a new
    /// line; a poll that saw no new checkpoint adds nothing.
    pub fn record(&mut self, job: &Job) {
        let run_started_ms = job.started_at.map(|at| at.timestamp_millis());
        let sample = Sample {
            at_ms: job.updated_at.timestamp_millis(),
            scanned: job.scanned,
        };
        let restarted = run_started_ms != self.run_started_ms
            || self
                .samples
                .last()
                .is_some_and(|last| sample.scanned < last.scanned);
        if restarted {
            self.run_started_ms = run_started_ms;
            self.samples.clear();
        }
        if self
            .samples
            .last()
            .is_some_and(|last| sample.at_ms <= last.at_ms)
        {
            return;
        }
        self.samples.push(sample);
        let oldest = sample.at_ms - WINDOW_MS;
        // Keep one sample older than the window so the first rate spans it.
        let first_kept = self
            .samples
            .iter()
            .rposition(|s| s.at_ms < oldest)
            .unwrap_or(0);
        self.samples.drain(..first_kept);
    }

    /// Users per second between consecutive samples: `(end_ms, rate)`.
    pub fn rates(&self) -> Vec<(i64, f64)> {
        self.samples
            .windows(2)
            .map(|pair| {
                let seconds = (pair[1].at_ms - pair[0].at_ms) as f64 / 1000.0;
                let users = (pair[1].scanned - pair[0].scanned) as f64;
                (pair[1].at_ms, users / seconds)
            })
            .collect()
    }
}

/// The SVG path of the line through `rates`, scaled to the box, with the
/// highest rate at the top; `None` until there are two points to join.
pub fn line_path(rates: &[(i64, f64)]) -> Option<String> {
    let (first, last) = (rates.first()?.0, rates.last()?.0);
    if rates.len() < 2 || last <= first {
        return None;
    }
    let peak = rates.iter().map(|(_, r)| *r).fold(0.0, f64::max).max(1.0);
    let span = (last - first) as f64;
    let mut path = String::new();
    for (index, (at, rate)) in rates.iter().enumerate() {
        let x = (*at - first) as f64 / span * WIDTH;
        let y = PAD + (1.0 - rate / peak) * (HEIGHT - 2.0 * PAD);
        let command = if index == 0 { 'M' } else { 'L' };
        path.push_str(&format!("{command}{x:.1} {y:.1} "));
    }
    Some(path.trim_end().to_string())
}

/// The sparkline with its latest and peak rates in words beside it.
#[component]
pub fn ThroughputSparkline(history: Signal<RateHistory>) -> impl IntoView {
    let rates = Memo::new(move |_| history.with(RateHistory::rates));
    let summary = move || {
        rates.with(|rates| {
            let latest = rates.last().map(|(_, r)| *r)?;
            let peak = rates.iter().map(|(_, r)| *r).fold(0.0, f64::max);
            Some((
                thousands(latest.round() as i64),
                thousands(peak.round() as i64),
            ))
        })
    };
    let drawing = move || {
        let path = rates.with(|rates| line_path(rates))?;
        let (latest, peak) = summary()?;
        let label = format!(
            "Throughput over the last few minutes: now {latest} users/s, peak {peak} users/s"
        );
        // The area under the line, closed along the bottom edge.
        let area = format!("{path} L{WIDTH} {HEIGHT} L0 {HEIGHT} Z");
        Some(view! {
            <svg
                class="sparkline-chart"
                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                preserveAspectRatio="none"
                role="img"
                aria-label=label
            >
                <path class="sparkline-area" d=area />
                <path class="sparkline-line" d=path vector-effect="non-scaling-stroke" />
            </svg>
            <p class="sparkline-numbers">
                <strong>{latest}</strong>" users/s now"
                <span class="muted">" · peak " {peak}</span>
            </p>
        })
    };
    view! {
        <figure class="sparkline">
            <figcaption>"Throughput, last 5 min"</figcaption>
            {move || {
                drawing()
                    .map(|d| d.into_sync_any())
                    .unwrap_or_else(|| {
                        view! {
                            <p class="sparkline-waiting muted" role="status">
                                "Collecting samples: the line appears after two refreshes."
                            </p>
                        }
                        .into_sync_any()
                    })
            }}
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_deltas_and_the_line_needs_two_points() {
        let history = RateHistory {
            run_started_ms: Some(0),
            samples: vec![
                Sample {
                    at_ms: 0,
                    scanned: 0,
                },
                Sample {
                    at_ms: 2_000,
                    scanned: 200,
                },
                Sample {
                    at_ms: 4_000,
                    scanned: 600,
                },
            ],
        };
        assert_eq!(history.rates(), vec![(2_000, 100.0), (4_000, 200.0)]);
        assert_eq!(line_path(&history.rates()[..1]), None);
        assert_eq!(
            line_path(&history.rates()).as_deref(),
            Some("M0.0 24.0 L240.0 2.0")
        );
    }
}
