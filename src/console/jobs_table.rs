//! The jobs table: one row per job, with a progress bar and a confirmed Stop
//! on active rows. Nine columns fit a 1366 px laptop without sideways
//! scrolling; below 720 px each row becomes a card (see `style/main.css`).

use super::format::{duration_secs, exact_time, machine_time, relative_time, thousands, truncate};
use super::job_detail::{run_duration, run_rate};
use super::progress_bar::JobProgressBar;
use super::run_chart::MiniChart;
use super::sync_any::IntoSyncAny;
use super::wrap::Wrapped;
use crate::backfill::api::Stop;
use crate::backfill::domain::{Job, JobStatus};
use leptos::prelude::*;

#[component]
pub fn StatusBadge(status: JobStatus, #[prop(optional)] stopping_now: bool) -> impl IntoView {
    let status = if stopping_now && status == JobStatus::Running {
        JobStatus::Stopping
    } else {
        status
    };
    view! { <span class=format!("badge badge-{}", status.as_str())>{status.as_str()}</span> }
}

#[component]
pub fn JobsTable(
    jobs: Vec<Job>,
    on_changed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    if jobs.is_empty() {
        return view! {
            <div class="empty">
                <p><strong>"No jobs yet."</strong></p>
                <p class="muted">"Start a dry run to rehearse, then a real run with the same key."</p>
            </div>
        }
        .into_sync_any();
    }
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Jobs table">
            <table class="jobs-table">
                <caption class="visually-hidden">"Backfill jobs, active first"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Job"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Progress"</th>
                        <th scope="col" class="num">"Processed"</th>
                        <th scope="col" class="num">"Failed"</th>
                        <th scope="col" class="num">"Skipped"</th>
                        <th scope="col">"Rate · ETA / last run"</th>
                        <th scope="col">"Last error"</th>
                        <th scope="col">"Updated"</th>
                    </tr>
                </thead>
                <tbody>
                    {jobs.into_iter().map(|job| {
                        let on_changed = on_changed.clone();
                        view! { <JobRow job on_changed /> }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_sync_any()
}

#[component]
fn JobRow(job: Job, on_changed: impl Fn() + Clone + Send + Sync + 'static) -> impl IntoView {
    let href = format!("/jobs/{}", job.job_key);
    let active = job.status.is_active();
    let rate = if active {
        let chart = view! {
            <MiniChart samples=job.samples.clone() started_at=job.last_run.as_ref().map(|run| run.started_at) />
        };
        job.throughput_per_sec.map(|rate| {
            let eta = job
                .eta_secs
                .map(|eta| view! { <span class="eta">"~" {duration_secs(eta)} " left"</span> });
            view! { {chart} <span>{thousands(rate.round() as i64)} " users/s"</span> {eta} }
                .into_sync_any()
        })
    } else {
        // A run that ended: how long it took and how fast it went.
        job.last_run
            .clone()
            .filter(|run| run.ended_at.is_some())
            .map(|run| {
                view! {
                    <span class="run-story" title=format!("Run {} of this job", run.run_number)>
                        <span class="duration">"Run " {run.run_number} " took " {run_duration(&run)}</span>
                        <span class="avg-rate">"avg " {run_rate(&run)}</span>
                    </span>
                }
                .into_sync_any()
            })
    };
    let error_view = job.last_error.clone().map(|error| {
        let (short, cut) = truncate(&error, 60);
        if cut {
            view! {
                <details class="error-text">
                    <summary title="Show the full error">{short}</summary>
                    <p>{error}</p>
                </details>
            }
            .into_sync_any()
        } else {
            view! { <span class="error-text">{error}</span> }.into_sync_any()
        }
    });
    let rate_class = if rate.is_some() {
        "rate"
    } else {
        "rate is-empty"
    };
    let error_class = if error_view.is_some() {
        "last-error"
    } else {
        "last-error is-empty"
    };
    let owner = job.started_by.clone().map(|email| {
        let title = email.clone();
        view! { " · by " <span class="owner" title=title><Wrapped text=email /></span> }
    });
    view! {
        <tr>
            <th scope="row">
                <a class="job-link" rel="external" href=href><Wrapped text=job.job_key.clone() /></a>
                {job.dry_run.then(|| view! { <span class="marker" title="Dry run: nothing is written">"dry run"</span> })}
                <span class="job-meta">{job.mode.as_str()} {owner}</span>
            </th>
            <td class="status-td">
                <StatusCell job=job.clone() />
                <StopButton job_key=job.job_key.clone() can_stop=job.status.can_stop() on_changed />
            </td>
            <td class="progress-cell">
                <JobProgressBar job=job.clone() />
                <span class="progress">{job.progress_label.clone()}</span>
            </td>
            <td class="num" data-label="Processed">{thousands(job.processed)}</td>
            <td class="num" data-label="Failed">{thousands(job.failed)}</td>
            <td class="num" data-label="Skipped">{thousands(job.skipped)}</td>
            <td class=rate_class>
                {rate.unwrap_or_else(|| view! { <span class="muted">"—"</span> }.into_sync_any())}
            </td>
            <td class=error_class>
                {error_view.unwrap_or_else(|| view! { <span class="muted">"—"</span> }.into_sync_any())}
            </td>
            <td class="updated">
                <time datetime=machine_time(job.updated_at) title=exact_time(job.updated_at)>
                    {relative_time(job.updated_at)}
                </time>
            </td>
        </tr>
    }
}

/// Status and pause reason; the badge turns `stopping` the moment Stop is confirmed.
#[component]
fn StatusCell(job: Job) -> impl IntoView {
    let requests = use_context::<StopRequests>();
    let key = job.job_key.clone();
    let stopping_now = move || requests.is_some_and(|r| r.0.with(|keys| keys.contains(&key)));
    view! {
        <div class="status-cell" aria-live="polite">
            {move || view! { <StatusBadge status=job.status stopping_now=stopping_now() /> }}
            {job.pause_reason.map(|reason| view! { <span class="reason">{reason.as_str()}</span> })}
        </div>
    }
}

/// Keys whose stop the operator just confirmed, for the immediate `stopping` badge.
#[derive(Clone, Copy)]
pub struct StopRequests(pub RwSignal<Vec<String>>);

/// The key whose Stop is waiting for its confirmation. The page keeps it,
/// not the button: every refresh (2 s while a job runs) rebuilds the rows and
/// the job page, which would close the question under the operator's cursor.
#[derive(Clone, Copy)]
pub struct StopConfirmation(pub RwSignal<Option<String>>);

impl StopConfirmation {
    pub fn provide() {
        provide_context(StopConfirmation(RwSignal::new(None)));
    }
}

#[component]
pub fn StopButton(
    job_key: String,
    can_stop: bool,
    on_changed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    if !can_stop {
        return ().into_sync_any();
    }
    let stop = ServerAction::<Stop>::new();
    Effect::new(move |_| {
        if stop.value().get().is_some() {
            on_changed();
        }
    });
    let confirmation =
        use_context::<StopConfirmation>().unwrap_or_else(|| StopConfirmation(RwSignal::new(None)));
    let key = StoredValue::new(job_key);
    let confirming = move || {
        confirmation
            .0
            .with(|open| open.as_deref() == Some(key.get_value().as_str()))
    };
    let requests = use_context::<StopRequests>();
    let error = move || {
        stop.value()
            .get()
            .and_then(Result::err)
            .map(|e| e.display_message())
    };
    view! {
        <div class="stop">
            {move || {
                if confirming() {
                    view! {
                        <div class="confirm" role="group" aria-label=format!("Confirm stopping {}", key.get_value())>
                            <span>"Stop this job?"</span>
                            <button
                                type="button"
                                class="button danger small"
                                on:click=move |_| {
                                    confirmation.0.set(None);
                                    if let Some(requests) = requests {
                                        requests.0.update(|keys| keys.push(key.get_value()));
                                    }
                                    stop.dispatch(Stop { job_key: key.get_value() });
                                }
                            >
                                "Confirm stop"
                            </button>
                            <button type="button" class="button ghost small" on:click=move |_| confirmation.0.set(None)>
                                "Cancel"
                            </button>
                        </div>
                    }
                    .into_sync_any()
                } else {
                    view! {
                        <button
                            type="button"
                            class="button danger small"
                            aria-label=format!("Stop {}", key.get_value())
                            on:click=move |_| confirmation.0.set(Some(key.get_value()))
                        >
                            "Stop"
                        </button>
                    }
                    .into_sync_any()
                }
            }}
            <p class="field-error" role="alert">{error}</p>
        </div>
    }
    .into_sync_any()
}
