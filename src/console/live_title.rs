//! The document title carries the live state of a run, e.g.
//! `▶ 42% · identity-graph-users`, so a background tab shows when it ends.

use super::progress_bar::{covered_share, denominator, percent_label};
use crate::backfill::domain::{Job, JobStatus};
use leptos::prelude::*;
use leptos_meta::Title;

pub const APP_TITLE: &str = "Identity Graph Backfill";

/// One job's state in a tab title.
pub fn job_title(job: &Job) -> String {
    let symbol = match job.status {
        JobStatus::Running => "▶",
        JobStatus::Stopping => "◼…",
        JobStatus::Stopped => "◼",
        JobStatus::Paused => "⏸",
        JobStatus::Completed => "✓",
        JobStatus::Failed => "✕",
        JobStatus::Archived => "·",
        JobStatus::Unreadable => "?",
    };
    let state = match covered_share(job) {
        Some(share) if job.status.is_active() => {
            let about = if denominator(job).is_some_and(|d| d.estimated) {
                "~"
            } else {
                ""
            };
            format!("{about}{}", percent_label(share))
        }
        _ => job.status.as_str().to_string(),
    };
    format!("{symbol} {state} · {}", job.job_key)
}

/// The console's title: the first active job (the list puts them first),
/// with a count of the others. When none is active, the last job this tab
/// saw running, so its end (`✓ completed · key`) shows in a background tab;
/// otherwise the plain app title.
pub fn console_title(jobs: &[Job], last_watched: Option<&str>) -> String {
    let mut active = jobs.iter().filter(|job| job.status.is_active());
    if let Some(first) = active.next() {
        let others = active.count();
        let more = if others > 0 {
            format!(" (+{others})")
        } else {
            String::new()
        };
        return format!("{}{more}", job_title(first));
    }
    last_watched
        .and_then(|key| jobs.iter().find(|job| job.job_key == key))
        .map(job_title)
        .unwrap_or_else(|| APP_TITLE.to_string())
}

/// Sets the document title from `title`; the app's title until it is known.
#[component]
pub fn LiveTitle(title: Signal<Option<String>>) -> impl IntoView {
    view! { <Title text=move || title.get().unwrap_or_else(|| APP_TITLE.to_string()) /> }
}
