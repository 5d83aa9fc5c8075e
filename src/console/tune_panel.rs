//! The brake on the job page: change a running job's max rate, concurrency
//! and sleep without stopping it (`tune`). Each change is an entry of the
//! job's history (`history.rs`).

use super::format::thousands;
use super::IntoSyncAny;
use crate::backfill::api::Tune;
use crate::backfill::domain::{Job, NumberOption, TuneRequest, CONCURRENCY, MAX_RATE, SLEEP_MS};
use leptos::prelude::*;

/// The knobs `tune` changes, in the order the panel shows them.
const KNOBS: [&NumberOption; 3] = [&MAX_RATE, &CONCURRENCY, &SLEEP_MS];

/// The panel's state, owned by the job page rather than by the panel: the
/// page re-renders its cards at every poll, and what an operator typed, or
/// the answer to the last Apply, must survive that.
#[derive(Clone, Copy)]
pub struct TuneState {
    values: [RwSignal<String>; 3],
    action: ServerAction<Tune>,
}

impl TuneState {
    pub fn provide() {
        provide_context(Self::new());
    }

    fn new() -> Self {
        TuneState {
            values: [
                RwSignal::new(String::new()),
                RwSignal::new(String::new()),
                RwSignal::new(String::new()),
            ],
            action: ServerAction::new(),
        }
    }
}

/// The control, shown while the job runs: one field per knob, prefilled
/// with the value the run uses, and "Apply". The job page's polling shows
/// the new values and the history within its next refresh.
#[component]
pub fn TunePanel(job: Job) -> impl IntoView {
    if job.status != crate::backfill::domain::JobStatus::Running {
        return ().into_sync_any();
    }
    let TuneState {
        values,
        action: tune,
    } = use_context::<TuneState>().unwrap_or_else(TuneState::new);
    for (value, option) in values.iter().zip(KNOBS) {
        if value.get_untracked().is_empty() {
            value.set((option.effective)(&job.options).to_string());
        }
    }
    let key = StoredValue::new(job.job_key.clone());
    let outcome = move || {
        tune.value().get().map(|result| match result {
            Ok(answer) if answer.changes.is_empty() => "Nothing changed.".to_string(),
            Ok(answer) => {
                let mut text = format!(
                    "Applied: {}.",
                    answer
                        .changes
                        .iter()
                        .map(|c| format!(
                            "{} {} → {}",
                            label_of(&c.field),
                            thousands(c.old_value),
                            thousands(c.new_value)
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for adjustment in &answer.adjustments {
                    text.push_str(&format!(
                        " {} {} was clamped to {}.",
                        label_of(&adjustment.field),
                        adjustment.requested,
                        adjustment.effective
                    ));
                }
                text
            }
            Err(error) => error.display_message(),
        })
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let number = |index: usize| {
            let text = values[index].get_untracked();
            let text = text.trim().replace(',', "");
            Some(
                text.parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::String(text)),
            )
        };
        tune.dispatch(Tune {
            request: TuneRequest {
                job_key: key.get_value(),
                max_rate: number(0),
                concurrency: number(1),
                sleep_ms: number(2),
            },
        });
    };
    view! {
        <section class="card tune" aria-labelledby="tune-title">
            <h2 id="tune-title">"Tune the running job"</h2>
            <p class="muted">
                "Slow it down or speed it up without stopping it. The run applies a change within a second, on whichever replica runs it."
            </p>
            <BrakeFigures job=job.clone() />
            <form class="tune-form" on:submit=submit>
                {KNOBS
                    .iter()
                    .enumerate()
                    .map(|(index, option)| {
                        let id = format!("tune-{}", option.field);
                        view! {
                            <div class="field">
                                <label for=id.clone()>{option.label} <span class="unit">" (" {option.unit} ")"</span></label>
                                <input
                                    id=id
                                    type="text"
                                    inputmode="numeric"
                                    autocomplete="off"
                                    prop:value=move || values[index].get()
                                    on:input=move |ev| values[index].set(event_target_value(&ev))
                                />
                                <p class="help range">
                                    {thousands(option.bounds.min)} "–" {thousands(option.bounds.max)}
                                    {(option.field == MAX_RATE.field).then_some(" · 0 = no limit")}
                                </p>
                            </div>
                        }
                    })
                    .collect_view()}
                <div class="actions">
                    <button class="button primary" type="submit" disabled=move || tune.pending().get()>
                        {move || if tune.pending().get() { "Applying…" } else { "Apply" }}
                    </button>
                </div>
            </form>
            <p class="tune-outcome" role="status" aria-live="polite">{outcome}</p>
        </section>
    }
    .into_sync_any()
}

/// What the run's replica last reported of its brake: how fast it goes,
/// against which limits, how the graph answers, and what holds it back.
#[component]
fn BrakeFigures(job: Job) -> impl IntoView {
    let Some(brake) = job.throttle else {
        return view! { <p class="muted brake-pending">"Waiting for the run's first report…"</p> }
            .into_sync_any();
    };
    let options = &job.options;
    let rate_limit = match brake.max_rate {
        0 => "no limit".to_string(),
        limit => format!("{} users/s", thousands(limit.into())),
    };
    let in_flight_limit = if options.adaptive {
        format!(
            "{} of {} (adaptive, target {} ms)",
            brake.in_flight_limit, options.concurrency, options.target_latency_ms
        )
    } else {
        brake.in_flight_limit.to_string()
    };
    let latency = match (brake.latency_p50_ms, brake.latency_p95_ms) {
        (Some(p50), Some(p95)) => format!("{} ms / {} ms", milliseconds(p50), milliseconds(p95)),
        _ => "no answers yet".to_string(),
    };
    let held_by = brake
        .held_by
        .map_or("nothing: running freely", |held| held.describe());
    view! {
        <dl class="facts brake" aria-label="The run's brake">
            <div><dt>"Rate"</dt><dd>{format!("{} users/s", thousands(brake.rate.round() as i64))}</dd></div>
            <div><dt>"Max rate"</dt><dd>{rate_limit}</dd></div>
            <div><dt>"In flight"</dt><dd>{brake.in_flight} " · limit " {in_flight_limit}</dd></div>
            <div><dt>"Graph p50 / p95"</dt><dd>{latency}</dd></div>
            <div class="held-by" class:holding=brake.held_by.is_some()>
                <dt>"Held by"</dt><dd>{held_by}</dd>
            </div>
        </dl>
    }
    .into_sync_any()
}

/// Milliseconds, whole above 10 and with one decimal below.
fn milliseconds(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{}", ms.round() as i64)
    } else {
        format!("{ms:.1}")
    }
}

/// A knob's label, as the form names it.
pub fn label_of(field: &str) -> &'static str {
    KNOBS
        .iter()
        .find(|option| option.field == field)
        .map_or("a knob", |option| option.label)
}
