//! The operator console: the jobs (running first), the start form, the
//! summary cards, the operator guide one click away, and the job page.
//! Mountable by another Leptos app as `ConsolePage`.

mod chart;
mod failures_panel;
mod format;
mod guide;
mod history;
mod job_detail;
mod jobs_table;
mod latest;
mod live_title;
mod progress_bar;
mod refresh;
mod resource_codec;
mod run_chart;
mod start_form;
mod summary;
mod sync_any;
mod tune_panel;
mod wrap;

pub use format::{exact_time, relative_time};
pub use job_detail::JobDetailPage;
pub use jobs_table::{JobsTable, StatusBadge, StopButton, StopConfirmation, StopRequests};
pub use latest::latest_ok;
pub use live_title::{console_title, job_title, LiveTitle};
pub use progress_bar::{source_max_id, JobProgressBar, ProgressBar};

pub use refresh::use_auto_refresh;
pub use resource_codec::{JsonAsBytes, PolledResource};
pub use summary::SummaryCards;
pub use sync_any::{IntoSyncAny, SyncHydrated};

use crate::backfill::api::list;
use crate::backfill::domain::{JobStatus, ListResponse};
use guide::{GuideLink, OperatorGuide};
use leptos::prelude::*;
use start_form::StartForm;

/// The whole console page. It assumes its caller already checked access
/// (the app's frame does); the server checks again on every call.
#[component]
pub fn ConsolePage() -> impl IntoView {
    let refresh = RwSignal::new(0u64);
    let jobs: PolledResource<ListResponse> =
        Resource::new_with_options(move || refresh.get(), |_| list(), false);
    // Only the view reads `jobs` (inside <Transition/>); the rest reads this.
    let latest = latest_ok(jobs);
    let any_active = Signal::derive(move || {
        latest.with(|list| {
            list.as_ref()
                .is_some_and(|list| list.jobs.iter().any(|job| job.status.is_active()))
        })
    });
    use_auto_refresh(refresh, any_active);
    StopConfirmation::provide();
    let stop_requests = StopRequests(RwSignal::new(Vec::new()));
    provide_context(stop_requests);
    // A confirmed stop shows `stopping` until the server's own status replaces it.
    Effect::new(move |_| {
        latest.with(|list| {
            if let Some(list) = list {
                stop_requests.0.update(|keys| {
                    keys.retain(|key| {
                        list.jobs
                            .iter()
                            .any(|j| &j.job_key == key && j.status == JobStatus::Running)
                    })
                });
            }
        })
    });
    let runtime_cap = Signal::derive(move || {
        latest.with(|list| {
            list.as_ref()
                .map(|list| list.summary.ui_runtime_cap_ms)
                .unwrap_or(crate::backfill::domain::MAX_RUNTIME_MS.bounds.default as u64)
        })
    });
    // The last job this tab saw running, so the title can report its end.
    let last_watched = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        latest.with(|list| {
            let first_active = list
                .iter()
                .flat_map(|list| &list.jobs)
                .find(|job| job.status.is_active());
            if let Some(job) = first_active {
                if last_watched.with_untracked(|key| key.as_deref() != Some(&job.job_key)) {
                    last_watched.set(Some(job.job_key.clone()));
                }
            }
        })
    });
    let title = Signal::derive(move || {
        latest.with(|list| {
            list.as_ref()
                .map(|list| last_watched.with(|key| console_title(&list.jobs, key.as_deref())))
        })
    });

    let guide_open = guide::GuideOpen::provide();
    view! {
        <LiveTitle title />
        <div class="console">
            <div class="page-head">
                <div>
                    <p class="eyebrow">"Reporting"</p>
                    <h1>"Identity Graph Backfill"</h1>
                    <p class="lede">
                        "Start a bounded historical user sync, watch its progress, and stop a running job."
                    </p>
                </div>
                <div class="head-actions">
                    <GuideLink open=guide_open />
                    <RefreshButton refresh />
                </div>
            </div>
            <div class="console-grid">
                <section class="card jobs" aria-labelledby="jobs-title">
                    <div class="section-head">
                        <h2 id="jobs-title">"Jobs"</h2>
                        <p class="muted">
                            "Refreshes every 2 s while a job is active and every 15 s otherwise; a hidden tab checks every 10 s, only while a job is active."
                        </p>
                    </div>
                    <Transition fallback=|| view! { <p class="empty" role="status">"Loading jobs…"</p> }.into_sync_any()>
                        {move || jobs.get().map(|result| match result {
                            Ok(list) => view! {
                                <JobsTable jobs=list.jobs on_changed=move || refresh.update(|n| *n += 1) />
                            }.into_sync_any(),
                            Err(error) => view! {
                                <div class="notice error" role="alert">
                                    <p><strong>"Could not load the jobs. "</strong>{error.display_message()}</p>
                                    <p>"Check that the server is up, then press Refresh."</p>
                                </div>
                            }.into_sync_any(),
                        })}
                    </Transition>
                </section>
                <StartForm runtime_cap on_started=move || refresh.update(|n| *n += 1) />
            </div>
            <Transition fallback=|| view! { <SummaryCards summary=None /> }.into_sync_any()>
                {move || jobs.get().map(|result| view! { <SummaryCards summary=result.ok().map(|l| l.summary) /> }.into_sync_any())}
            </Transition>
            <OperatorGuide open=guide_open />
        </div>
    }
    // Erased here because it is a Frame's child (see sync_any).
    .into_sync_any()
}

#[component]
pub fn RefreshButton(refresh: RwSignal<u64>) -> impl IntoView {
    view! {
        <button type="button" class="button" on:click=move |_| refresh.update(|n| *n += 1)>
            "Refresh"
        </button>
    }
}
