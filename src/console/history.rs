//! The job page's history: one timeline, newest first, of who started each
//! run and with what options, who stopped or tuned it, each pause and the
//! watchdog's resume, and what the webhook was told (see
//! `backfill::domain::history` for how the entries are merged).

use super::format::{exact_time, machine_time, relative_time, thousands};
use super::job_detail::{run_duration, run_rate};
use super::tune_panel::label_of;
use super::wrap::Wrapped;
use super::IntoSyncAny;
use crate::backfill::domain::{
    Actor, History, HistoryEntry, HistoryEvent, Mode, NotificationRecord, StartOptions,
    TuningRecord, ADAPTIVE, BATCH_SIZE, CONCURRENCY, MAX_CONSECUTIVE_FAILURES, MAX_RATE,
    MAX_RUNTIME_MS, SLEEP_MS, TARGET_LATENCY_MS,
};
use leptos::prelude::*;

/// Entries shown before "Show all".
const FIRST_ENTRIES: usize = 12;

/// Whether the whole history is open, owned by the job page rather than by
/// the card: the page re-renders its cards at every poll, and an open
/// history must stay open.
#[derive(Clone, Copy)]
pub struct HistoryState {
    show_all: RwSignal<bool>,
}

impl HistoryState {
    pub fn provide() {
        provide_context(Self {
            show_all: RwSignal::new(false),
        });
    }
}

#[component]
pub fn JobHistory(history: History, webhook_configured: bool) -> impl IntoView {
    let total = history.entries.len();
    let show_all = use_context::<HistoryState>()
        .map(|state| state.show_all)
        .unwrap_or_else(|| RwSignal::new(false));
    let entries = StoredValue::new(history.entries);
    let webhook_note = (!webhook_configured).then(|| {
        view! {
            <p class="muted small history-note">
                "No webhook is set (" <code>"NOTIFY_WEBHOOK_URL"</code> "), so nobody is told when this job comes to rest."
            </p>
        }
    });
    view! {
        <section class="card" aria-labelledby="history-title">
            <h2 id="history-title">"History"</h2>
            {webhook_note}
            {if total == 0 {
                view! { <p class="empty">"Nothing has happened to this job yet."</p> }.into_sync_any()
            } else {
                view! {
                    <ol class="history" aria-label="Job history, newest first">
                        {move || {
                            let shown = if show_all.get() { total } else { FIRST_ENTRIES.min(total) };
                            entries.with_value(|entries| {
                                entries[..shown].iter().cloned().map(|entry| view! { <Entry entry /> }).collect_view()
                            })
                        }}
                    </ol>
                    {(total > FIRST_ENTRIES).then(|| view! {
                        <button
                            type="button"
                            class="button ghost small"
                            aria-expanded=move || show_all.get().to_string()
                            on:click=move |_| show_all.update(|all| *all = !*all)
                        >
                            {move || if show_all.get() {
                                format!("Show the latest {FIRST_ENTRIES}")
                            } else {
                                format!("Show all {total} entries")
                            }}
                        </button>
                    })}
                }.into_sync_any()
            }}
            {history.older_hidden.then(|| view! {
                <p class="muted small history-note">"Older history is kept in the database but not shown here."</p>
            })}
        </section>
    }
}

#[component]
fn Entry(entry: HistoryEntry) -> impl IntoView {
    let kind = entry.event.kind();
    let (headline, detail) = describe(entry.event);
    view! {
        <li class=format!("history-entry {kind}") data-kind=kind>
            <div class="history-head">
                <p class="history-headline">{headline}</p>
                <time class="muted small" datetime=machine_time(entry.at) title=exact_time(entry.at)>
                    {relative_time(entry.at)}
                </time>
            </div>
            {detail.map(|detail| view! { <p class="muted small history-detail">{detail}</p> })}
        </li>
    }
}

/// The entry's headline (a view: emails wrap at their `@`) and a line of
/// detail.
fn describe(event: HistoryEvent) -> (AnyView, Option<String>) {
    match event {
        HistoryEvent::RunStarted {
            run_number,
            by,
            options,
        } => {
            let headline = match by {
                Actor::Watchdog => view! {
                    <strong>"Run " {run_number}</strong> " resumed by the watchdog"
                }
                .into_sync_any(),
                Actor::Admin(email) => view! {
                    <strong>"Run " {run_number}</strong> " started by " <Wrapped text=email />
                }
                .into_sync_any(),
                Actor::Other(trigger) => view! {
                    <strong>"Run " {run_number}</strong> " started (" {trigger} ")"
                }
                .into_sync_any(),
            };
            (headline, options.map(|options| options_line(&options)))
        }
        HistoryEvent::StopRequested { run_number, by } => (
            view! { "Stop of run " {run_number} " requested by " <Wrapped text=by /> }
                .into_sync_any(),
            None,
        ),
        HistoryEvent::RunEnded { run, outcome } => {
            let headline = view! {
                <strong>"Run " {run.run_number}</strong> " " {ending(&outcome)}
            }
            .into_sync_any();
            let mut detail = format!(
                "{} processed, {} failed, {} skipped",
                thousands(run.processed),
                thousands(run.failed),
                thousands(run.skipped)
            );
            if run.duration_secs().is_some() {
                detail = format!(
                    "took {} at {} · {detail}",
                    run_duration(&run),
                    run_rate(&run)
                );
            }
            (headline, Some(detail))
        }
        HistoryEvent::Tuned(tuning) => tuned(tuning),
        HistoryEvent::Notified(notification) => notified(notification),
    }
}

/// `paused (max-runtime)` → `paused on its runtime cap`.
fn ending(outcome: &str) -> String {
    let reason = outcome
        .strip_prefix("paused (")
        .and_then(|rest| rest.strip_suffix(')'));
    match reason {
        Some("max-runtime") => "paused on its runtime cap".into(),
        Some("consecutive-failures") => "paused after a streak of failures".into(),
        Some("interrupted") => "paused: its replica went away".into(),
        Some("throttled") => "paused: the Identity Graph held it too long".into(),
        Some(other) => format!("paused ({other})"),
        None => match outcome {
            "lease lost" => "ended: its replica lost the job".into(),
            other => other.to_string(),
        },
    }
}

fn tuned(tuning: TuningRecord) -> (AnyView, Option<String>) {
    let value = |value: i64| {
        if tuning.field == MAX_RATE.field && value == 0 {
            "no limit".to_string()
        } else {
            thousands(value)
        }
    };
    let change = format!(
        "{} {} → {}",
        label_of(&tuning.field),
        value(tuning.old_value),
        value(tuning.new_value)
    );
    (
        view! { <strong>{change}</strong> " by " <Wrapped text=tuning.tuned_by /> }.into_sync_any(),
        None,
    )
}

fn notified(notification: NotificationRecord) -> (AnyView, Option<String>) {
    let event = match &notification.pause_reason {
        Some(reason) => format!("{} ({reason})", notification.event),
        None => notification.event.clone(),
    };
    let attempts = |n: i32| {
        if n == 1 {
            "1 attempt".to_string()
        } else {
            format!("{n} attempts")
        }
    };
    let answered = notification
        .last_outcome
        .as_deref()
        .map(|outcome| format!("; last answer: {outcome}"))
        .unwrap_or_default();
    let (state_class, badge, detail) = match notification.state.as_str() {
        "delivered" => (
            "delivered",
            "delivered",
            format!("after {}", attempts(notification.attempts)),
        ),
        "expired" if notification.attempts == 0 => (
            "expired",
            "given up",
            "never sent: too old to be news when a notifier came".to_string(),
        ),
        "expired" => (
            "expired",
            "given up",
            format!(
                "after {}{answered}: too old to be news",
                attempts(notification.attempts)
            ),
        ),
        _ if notification.attempts == 0 => ("pending", "waiting", "not sent yet".to_string()),
        _ => (
            "pending",
            "retrying",
            format!("{} so far{answered}", attempts(notification.attempts)),
        ),
    };
    (
        view! {
            "Webhook told: " <strong>{event}</strong> " "
            <span class=format!("delivery {state_class}")>{badge}</span>
        }
        .into_sync_any(),
        Some(detail),
    )
}

/// A run's options in one line: `batch 100 · concurrency 8 · …`.
fn options_line(options: &StartOptions) -> String {
    let mut parts = vec![
        options.mode.as_str().to_string(),
        format!("batch {}", thousands((BATCH_SIZE.effective)(options))),
        format!(
            "concurrency {}",
            thousands((CONCURRENCY.effective)(options))
        ),
        format!("sleep {} ms", thousands((SLEEP_MS.effective)(options))),
        match (MAX_RATE.effective)(options) {
            0 => "no rate limit".to_string(),
            rate => format!("max {} users/s", thousands(rate)),
        },
        format!(
            "cap {}",
            super::format::duration_ms((MAX_RUNTIME_MS.effective)(options) as u64)
        ),
        format!(
            "pause after {} failures in a row",
            thousands((MAX_CONSECUTIVE_FAILURES.effective)(options))
        ),
    ];
    if (ADAPTIVE.effective)(options) {
        parts.push(format!(
            "adaptive, target {} ms",
            thousands((TARGET_LATENCY_MS.effective)(options))
        ));
    }
    if let Some(filter) = options
        .failure_filter
        .as_ref()
        .filter(|_| options.mode == Mode::FailedOnly)
    {
        parts.push(format!("only {}", filter.describe()));
    }
    if options.dry_run {
        parts.push("dry run".into());
    }
    if options.reset_cursor {
        parts.push("reset cursor".into());
    }
    if options.mode == Mode::Full && !options.retry_failed_before_cursor {
        parts.push("no retry of earlier failures".into());
    }
    if !options.auto_resume && !options.dry_run {
        parts.push("no auto-resume".into());
    }
    parts.join(" · ")
}
