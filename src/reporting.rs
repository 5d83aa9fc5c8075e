//! `/reporting`: a small Reporting index whose backfill widget calls the same
//! `list` server function as the console — the way another page reuses it.

use crate::backfill::api::list;
use crate::backfill::domain::thousands;
use crate::backfill::domain::ListResponse;
use crate::console::{IntoSyncAny, JobProgressBar, PolledResource, StatusBadge};
use leptos::prelude::*;

#[component]
pub fn ReportingPage() -> impl IntoView {
    view! {
        <div class="reporting">
            <div class="page-head">
                <div>
                    <p class="eyebrow">"Reporting"</p>
                    <h1>"Reporting"</h1>
                    <p class="lede">"Standalone reporting pages outside the main dashboard widgets."</p>
                </div>
            </div>
            <div class="report-grid">
                <BackfillWidget />
                <section class="card muted-card" aria-labelledby="other-title">
                    <h2 id="other-title">"Other reports"</h2>
                    <p class="muted">"Affiliate events, bonus performance and deal dashboards live in their own apps."</p>
                </section>
            </div>
        </div>
    }
    // Erased here because it is a Frame's child (see sync_any).
    .into_sync_any()
}

/// A compact view of the backfills, fed by `backfill::api::list`.
#[component]
pub fn BackfillWidget() -> impl IntoView {
    let refresh = RwSignal::new(0u64);
    let jobs: PolledResource<ListResponse> =
        Resource::new_with_options(move || refresh.get(), |_| list(), false);
    view! {
        <section class="card widget" aria-labelledby="widget-title">
            <div class="section-head">
                <h2 id="widget-title">"Identity Graph Backfill"</h2>
                <crate::console::RefreshButton refresh />
            </div>
            <Transition fallback=|| view! { <p role="status">"Loading…"</p> }.into_sync_any()>
                {move || jobs.get().map(|result| match result {
                    Ok(list) => view! {
                        <p class="widget-summary">
                            <strong>{thousands(list.summary.jobs)}</strong> " jobs · "
                            <strong>{thousands(list.summary.active_runs)}</strong> " active runs"
                        </p>
                        <ul class="widget-jobs">
                            {list.jobs.into_iter().take(5).map(|job| view! {
                                <li>
                                    <a rel="external" href=format!("/jobs/{}", job.job_key)>{job.job_key.clone()}</a>
                                    <StatusBadge status=job.status />
                                    <JobProgressBar job=job.clone() />
                                    <span class="muted small">{job.progress_label}</span>
                                </li>
                            }).collect_view()}
                        </ul>
                        <p><a rel="external" href="/">"Open the console"</a></p>
                    }.into_sync_any(),
                    Err(error) => view! { <p class="notice error" role="alert">{error.display_message()}</p> }.into_sync_any(),
                })}
            </Transition>
        </section>
    }
}
