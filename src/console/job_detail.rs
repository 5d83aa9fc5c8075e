//! `/jobs/:key`: one job in full — a large progress bar, the chart of its
//! latest run (rate and graph latency, during and after the run), a dry
//! run's prediction of the real run, effective options, last error, its
//! failures by reason, and its history (runs, stops, tunes, pauses, resumes
//! and notifications) in one timeline.

use super::failures_panel::{FailuresPanel, FailuresState};
use super::format::{
    duration_ms, duration_secs, exact_time, machine_time, relative_time, thousands,
};
use super::history::{HistoryState, JobHistory};
use super::jobs_table::{StatusBadge, StopButton, StopConfirmation};
use super::latest::latest_ok;
use super::live_title::{job_title, LiveTitle};
use super::progress_bar::JobProgressBar;
use super::resource_codec::PolledResource;
use super::run_chart::RunChart;
use super::tune_panel::{TunePanel, TuneState};
use super::wrap::Wrapped;
use super::{use_auto_refresh, IntoSyncAny, RefreshButton};
use crate::backfill::api::{job, CheckCoverage};
use crate::backfill::domain::{
    Coverage, JobDetail, RunRecord, StartOptions, Timestamp, WouldCounts, AUTO_RESUME,
    FLAG_OPTIONS, JOB_KEY, MAX_RATE, MODE, NUMBER_OPTIONS,
};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[component]
pub fn JobDetailPage() -> impl IntoView {
    let params = use_params_map();
    let key = Memo::new(move |_| params.with(|p| p.get("key").unwrap_or_default()));
    let refresh = RwSignal::new(0u64);
    let detail: PolledResource<JobDetail> = Resource::new_with_options(
        move || (key.get(), refresh.get()),
        |(key, _)| job(key),
        false,
    );
    // Only the view reads `detail` (inside <Transition/>); the rest reads this.
    let latest = latest_ok(detail);
    StopConfirmation::provide();
    TuneState::provide();
    HistoryState::provide();
    FailuresState::provide(key, refresh);
    // A coverage check in the background polls like a run, so its result
    // shows within seconds of being stored.
    let active = Signal::derive(move || {
        latest.with(|d| {
            d.as_ref()
                .is_some_and(|d| d.job.status.is_active() || d.coverage_checking)
        })
    });
    use_auto_refresh(refresh, active);
    let title = Signal::derive(move || latest.with(|d| d.as_ref().map(|d| job_title(&d.job))));

    view! {
        <LiveTitle title />
        <div class="detail">
            <nav class="breadcrumb" aria-label="Breadcrumb">
                <a rel="external" href="/">"Identity Graph Backfill"</a>
                <span aria-hidden="true">" / "</span>
                <span aria-current="page">{move || key.get()}</span>
            </nav>
            <div class="page-head">
                <div>
                    <p class="eyebrow">"Job"</p>
                    <h1 class="mono">{move || view! { <Wrapped text=key.get() /> }}</h1>
                </div>
                <RefreshButton refresh />
            </div>
            <Transition fallback=|| view! { <p class="empty" role="status">"Loading the job…"</p> }.into_sync_any()>
                {move || detail.get().map(|result| match result {
                    Ok(detail) => view! {
                        <Detail detail on_changed=move || refresh.update(|n| *n += 1) />
                    }.into_sync_any(),
                    Err(error) => view! {
                        <div class="notice error" role="alert">
                            <p><strong>"Could not load this job. "</strong>{error.display_message()}</p>
                            <p><a rel="external" href="/">"Back to all jobs"</a></p>
                        </div>
                    }.into_sync_any(),
                })}
            </Transition>
        </div>
    }
    // Erased here because it is a Frame's child (see sync_any).
    .into_sync_any()
}

fn time_cell(at: Option<Timestamp>) -> impl IntoView {
    match at {
        Some(at) => {
            view! { <time datetime=machine_time(at) title=exact_time(at)>{relative_time(at)}</time> }
                .into_sync_any()
        }
        None => view! { <span class="muted">"—"</span> }.into_sync_any(),
    }
}

#[component]
fn Detail(
    detail: JobDetail,
    on_changed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let history = detail.history();
    let job = detail.job;
    let rate = job
        .throughput_per_sec
        .map(|r| format!("{} users/s", thousands(r.round() as i64)))
        .unwrap_or_else(|| "—".into());
    // A run that ended tells its story: how long it took, how fast it went.
    let ended_run = job
        .last_run
        .clone()
        .filter(|run| run.ended_at.is_some() && !job.status.is_active());
    let chart = job.last_run.clone().map(|run| {
        view! { <RunChart samples=job.samples.clone() started_at=run.started_at ended=run.ended_at.is_some() /> }
    });
    let would = job.would();
    let eta = job
        .eta_secs
        .map(|s| format!("~{}", duration_secs(s)))
        .unwrap_or_else(|| "—".into());
    view! {
        <section class="card" aria-labelledby="status-title">
            <div class="section-head">
                <h2 id="status-title">"Status"</h2>
                <StopButton job_key=job.job_key.clone() can_stop=job.status.can_stop() on_changed=on_changed.clone() />
            </div>
            <div class="status-line" aria-live="polite">
                <StatusBadge status=job.status />
                {job.dry_run.then(|| view! { <span class="marker">"dry run"</span> })}
                {job.pause_reason.map(|r| view! { <span class="reason">"paused: " {r.as_str()}</span> })}
                {job.stop_requested.then(|| view! { <span class="reason">"stop requested"</span> })}
                <span class="progress">{job.progress_label.clone()}</span>
            </div>
            <JobProgressBar job=job.clone() large=true />
            <div class="status-body">
            <dl class="facts">
                <div><dt>"Processed"</dt><dd>{thousands(job.processed)}</dd></div>
                <div><dt>"Failed"</dt><dd>{thousands(job.failed)}</dd></div>
                <div>
                    <dt>"Skipped"</dt>
                    <dd>
                        {thousands(job.skipped)}
                        <span class="muted small">
                            " (dry-run " {thousands(job.skipped_by_reason.dry_run)}
                            " · deleted " {thousands(job.skipped_by_reason.deleted)}
                            " · no identifiers " {thousands(job.skipped_by_reason.no_identifiers)} ")"
                        </span>
                    </dd>
                </div>
                <div><dt>"Cursor"</dt><dd>{thousands(job.cursor)}</dd></div>
                <div>
                    <dt>"Identifiers dropped"</dt>
                    <dd class="dropped">
                        {dropped_lines(&job.dropped_identifiers)
                            .into_iter()
                            .map(|line| view! { <span>{line}</span> })
                            .collect_view()}
                    </dd>
                </div>
                <div>
                    <dt>"Identity Graph"</dt>
                    <dd class="graph-binding">{job.graph.clone().unwrap_or_else(|| {
                        if job.dry_run { "none (a rehearsal writes nothing)".into() } else { "not bound yet".into() }
                    })}</dd>
                </div>
                {match ended_run.clone() {
                    Some(run) => view! {
                        <div class="run-story">
                            <dt>"Last run"</dt>
                            <dd>{format!("Run {}", run.run_number)}</dd>
                        </div>
                        <div class="run-story"><dt>"Duration"</dt><dd>{run_duration(&run)}</dd></div>
                        <div class="run-story"><dt>"Average rate"</dt><dd>{run_rate(&run)}</dd></div>
                    }.into_sync_any(),
                    None => view! {
                        <div><dt>"Throughput"</dt><dd>{rate}</dd></div>
                        <div><dt>"ETA"</dt><dd>{eta}</dd></div>
                    }.into_sync_any(),
                }}
                <div><dt>"Started by"</dt><dd class="who" title=job.started_by.clone()>{who(job.started_by.clone())}</dd></div>
                <div><dt>"Stopped by"</dt><dd class="who" title=job.stopped_by.clone()>{who(job.stopped_by.clone())}</dd></div>
                <div><dt>"Started"</dt><dd>{time_cell(job.started_at)}</dd></div>
                <div><dt>"Updated"</dt><dd>{time_cell(Some(job.updated_at))}</dd></div>
                <div><dt>"Finished"</dt><dd>{time_cell(job.finished_at)}</dd></div>
            </dl>
            </div>
            {would.map(|would| view! { <WouldDo would /> })}
            {chart}
        </section>
        {job.unreadable_reason.clone().map(|reason| view! {
            <section class="notice error" role="alert">
                <h2>"This version cannot read this job"</h2>
                <p>"Its row was written by another release and " {reason} "."</p>
                <p>
                    "It is never resumed. To run it again, start it with "
                    <strong>"Reset cursor"</strong>
                    ": that rewrites its options and scans every user from the beginning."
                </p>
            </section>
        })}
        <TunePanel job=job.clone() />
        <CoverageCheck
            job_key=job.job_key.clone()
            coverage=detail.coverage.clone()
            dry_run=job.dry_run
            active=job.status.is_active()
            checking=detail.coverage_checking
            failed=detail.coverage_error.clone()
            finished_at=job.finished_at
            on_changed=on_changed.clone()
        />
        <section class="card" aria-labelledby="error-title">
            <h2 id="error-title">"Last error"</h2>
            {match job.last_error.clone() {
                Some(error) => view! { <pre class="error-block">{error}</pre> }.into_sync_any(),
                None => view! { <p class="muted">"No error recorded."</p> }.into_sync_any(),
            }}
        </section>
        <div class="detail-grid">
            <JobHistory history webhook_configured=detail.webhook_configured />
            <section class="card" aria-labelledby="options-title">
                <h2 id="options-title">"Effective options"</h2>
                <OptionsList options=job.options.clone() />
            </section>
        </div>
        <FailuresPanel
            job_key=job.job_key.clone()
            classes=detail.failure_classes.clone()
            unresolved=detail.unresolved_failures
            can_retry=!job.status.is_active() && !job.dry_run
            on_changed=on_changed.clone()
        />
    }
}

/// An admin's email, breaking only after its `@` or before a dot.
fn who(email: Option<String>) -> impl IntoView {
    match email {
        Some(email) => view! { <Wrapped text=email /> }.into_sync_any(),
        None => "—".into_sync_any(),
    }
}

/// `2 min 5 s`; under 10 s with a decimal (`1.4 s`), so a fast run reads true.
pub fn run_duration(run: &RunRecord) -> String {
    match run.duration_secs() {
        Some(secs) if secs < 10.0 => format!("{secs:.1} s"),
        Some(secs) => duration_secs(secs.round() as i64),
        None => "—".into(),
    }
}

/// The run's users handled ÷ its duration.
pub fn run_rate(run: &RunRecord) -> String {
    match run.average_rate() {
        Some(rate) => format!("{} users/s", thousands(rate.round() as i64)),
        None => "—".into(),
    }
}

/// A dry run's prediction: what a real run would do with the same users.
#[component]
fn WouldDo(would: WouldCounts) -> impl IntoView {
    view! {
        <div class="would" role="group" aria-labelledby="would-title">
            <h3 id="would-title">"A real run with these users would"</h3>
            <dl class="facts would-facts">
                <div><dt>"Write"</dt><dd data-would="write">{thousands(would.write)}</dd></div>
                <div><dt>"Skip as deleted"</dt><dd data-would="deleted">{thousands(would.skip_deleted)}</dd></div>
                <div><dt>"Skip, no identifiers"</dt><dd data-would="no-identifiers">{thousands(would.skip_no_identifiers)}</dd></div>
            </dl>
        </div>
    }
}

#[component]
fn OptionsList(options: StartOptions) -> impl IntoView {
    let numbers = NUMBER_OPTIONS.iter().map(|option| {
        let value = (option.effective)(&options);
        let shown = if option.field == MAX_RATE.field && value == 0 {
            "no limit".to_string()
        } else if option.has_configured_default() {
            // The runtime cap reads better with its duration beside it.
            format!("{} ms ({})", thousands(value), duration_ms(value as u64))
        } else if option.unit == "ms" {
            format!("{} ms", thousands(value))
        } else {
            thousands(value)
        };
        (option.label, shown)
    });
    let flags = FLAG_OPTIONS.iter().map(|option| {
        let on = (option.effective)(&options);
        let shown = if option.field == AUTO_RESUME.field && options.dry_run {
            "never for a dry run"
        } else if on {
            "on"
        } else {
            "off"
        };
        (option.label, shown.to_string())
    });
    let rows: Vec<(&str, String)> = std::iter::once((JOB_KEY.label, options.job_key.to_string()))
        .chain(numbers)
        .chain(std::iter::once((
            MODE.label,
            options.mode.as_str().to_string(),
        )))
        .chain(
            options
                .failure_filter
                .as_ref()
                .map(|filter| ("Retrying only", filter.describe())),
        )
        .chain(flags)
        .collect();
    view! {
        <dl class="options">
            {rows.into_iter().map(|(label, value)| view! { <div><dt>{label}</dt><dd>{value}</dd></div> }).collect_view()}
        </dl>
    }
}

/// The proof of coverage: every user up to the cursor written, failed, or
/// skipped with a reason. The check counts the source, so it is never run
/// here: the page shows the result stored when the last run ended (or at the
/// last "Check again"), with its age.
#[allow(clippy::too_many_arguments)]
#[component]
fn CoverageCheck(
    job_key: String,
    coverage: Option<Coverage>,
    dry_run: bool,
    active: bool,
    checking: bool,
    failed: Option<String>,
    finished_at: Option<Timestamp>,
    on_changed: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    if active {
        return view! {
            <section class="card" aria-labelledby="coverage-title">
                <h2 id="coverage-title">"Coverage check"</h2>
                <p class="muted">
                    "A run is active: the figures above are its own, live. The check counts the source once the run ends, in the background."
                </p>
            </section>
        }
        .into_sync_any();
    }
    let body = match coverage {
        None => view! {
            <p class="muted coverage-age">
                {if checking {
                    "Checking: the source is being counted in the background."
                } else {
                    "Not checked yet."
                }}
            </p>
        }
        .into_sync_any(),
        Some(c) => {
            let complete =
                c.unaccounted == 0 && c.counters_match && c.missing_from_graph.unwrap_or(0) == 0;
            let verdict = if complete {
                "Every user up to the cursor is accounted for.".to_string()
            } else if c.late_arrivals > 0 {
                format!(
                    "{} arrived below the cursor after the scan passed them; the job's next run catches them up first.",
                    plural(c.late_arrivals, "user", "users")
                )
            } else {
                "Some users up to the cursor are not accounted for.".to_string()
            };
            let stale = matches!((c.checked_at, finished_at), (Some(at), Some(end)) if at < end);
            view! {
                <p class="muted coverage-age">
                    {match c.checked_at {
                        Some(at) => view! {
                            "Checked "
                            <time datetime=machine_time(at) title=exact_time(at)>{relative_time(at)}</time>
                            {stale.then_some(", before the last run ended")}
                            {checking.then_some(" · checking again now…")}
                        }
                        .into_sync_any(),
                        None => view! { "Checked at an unknown time" }.into_sync_any(),
                    }}
                </p>
                <p class=if complete { "coverage-verdict ok" } else { "coverage-verdict bad" } role="status">
                    {verdict}
                </p>
                <dl class="facts coverage">
                    <div><dt>"Users up to the cursor"</dt><dd>{thousands(c.users_up_to_cursor)}</dd></div>
                    <div><dt>"Eligible (not deleted, with an identifier)"</dt><dd>{thousands(c.eligible_up_to_cursor)}</dd></div>
                    <div>
                        <dt>{if dry_run { "Written (a rehearsal writes nothing)" } else { "Written" }}</dt>
                        <dd>{thousands(c.written)}</dd>
                    </div>
                    <div><dt>"Unresolved failures"</dt><dd>{thousands(c.unresolved_failures)}</dd></div>
                    <div><dt>"Unaccounted for"</dt><dd>{thousands(c.unaccounted)}</dd></div>
                    <div><dt>"Arrived after the scan passed"</dt><dd>{thousands(c.late_arrivals)}</dd></div>
                    <div>
                        <dt>"Counters add up"</dt>
                        <dd>{if c.counters_match { "yes" } else { "no" }}</dd>
                    </div>
                    {c.missing_from_graph.map(|missing| view! {
                        <div><dt>"Missing from the built-in graph"</dt><dd>{thousands(missing)}</dd></div>
                    })}
                </dl>
            }
            .into_sync_any()
        }
    };
    let check = ServerAction::<CheckCoverage>::new();
    Effect::new(move |_| {
        if check.value().with(|v| matches!(v, Some(Ok(_)))) {
            on_changed();
        }
    });
    let key = StoredValue::new(job_key);
    let pending = check.pending();
    // The answer's error, or the stored reason the last check did not finish.
    let error = move || {
        check
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| e.display_message())
            .or_else(|| {
                failed
                    .clone()
                    .filter(|_| check.value().with(Option::is_none))
            })
    };
    view! {
        <section class="card" aria-labelledby="coverage-title">
            <div class="section-head">
                <h2 id="coverage-title">"Coverage check"</h2>
                <button
                    type="button"
                    class="button ghost small"
                    aria-label=move || format!("Check the coverage of {} again", key.get_value())
                    disabled=move || pending.get()
                    on:click=move |_| {
                        check.dispatch(CheckCoverage { job_key: key.get_value() });
                    }
                >
                    {move || if pending.get() { "Checking…" } else { "Check again" }}
                </button>
            </div>
            {body}
            <p class="field-error coverage-error" role="alert">{error}</p>
        </section>
    }
    .into_sync_any()
}

/// `"email: not an address" → 12` … as `email: 12 not an address`, one
/// line each, largest first.
fn dropped_lines(dropped: &std::collections::BTreeMap<String, i64>) -> Vec<String> {
    if dropped.is_empty() {
        return vec!["none".into()];
    }
    let mut entries: Vec<(&String, &i64)> = dropped.iter().collect();
    entries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    entries
        .into_iter()
        .map(|(key, count)| match key.split_once(": ") {
            Some((kind, reason)) => format!("{kind}: {} {reason}", thousands(*count)),
            None => format!("{key}: {}", thousands(*count)),
        })
        .collect()
}

fn plural(count: i64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(count),
        if count == 1 { one } else { many }
    )
}
