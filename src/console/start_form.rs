//! The start form: every option with its default, range and help, checked
//! in the browser with the same `StartRequest` rules the server applies.

use super::format::thousands;
use super::sync_any::IntoSyncAny;
use crate::backfill::api::Start;
use crate::backfill::domain::*;
use crate::error::AppError;
use leptos::prelude::*;

/// One numeric option: its field name, label, bounds and help text.
struct NumberOption {
    field: &'static str,
    label: &'static str,
    bounds: Bounds,
    unit: &'static str,
    help: &'static str,
}

const NUMBER_OPTIONS: [NumberOption; 5] = [
    NumberOption {
        field: "batch_size",
        label: "Batch size",
        bounds: BATCH_SIZE,
        unit: "users",
        help: "Users fetched per batch, in id order after the cursor. The cursor and counters are saved once per batch.",
    },
    NumberOption {
        field: "sleep_ms",
        label: "Sleep between batches",
        bounds: SLEEP_MS,
        unit: "ms",
        help: "Pacing: how long the runner waits after each batch, to spare the Identity Graph.",
    },
    NumberOption {
        field: "max_runtime_ms",
        label: "Runtime cap",
        bounds: MAX_RUNTIME_MS,
        unit: "ms",
        help: "The run pauses itself after this long (a safety bound, not a failure) and auto-resumes later from its cursor.",
    },
    NumberOption {
        field: "max_consecutive_failures",
        label: "Max consecutive failures",
        bounds: MAX_CONSECUTIVE_FAILURES,
        unit: "users",
        help: "After this many users fail in a row, the run pauses (consecutive-failures) instead of failing everyone.",
    },
    NumberOption {
        field: "concurrency",
        label: "Concurrency",
        bounds: CONCURRENCY,
        unit: "users at once",
        help: "How many users of a batch are synced at the same time.",
    },
];

/// `""` → not sent (the default applies); otherwise a whole number.
fn parse_number(raw: &str) -> Result<Option<i64>, &'static str> {
    let trimmed = raw.trim().replace(',', "");
    if trimmed.is_empty() {
        return Ok(None);
    }
    trimmed
        .parse::<i64>()
        .map(Some)
        .map_err(|_| "must be a whole number")
}

#[derive(Clone, Copy)]
struct FormState {
    job_key: RwSignal<String>,
    numbers: [RwSignal<String>; 5],
    mode: RwSignal<Mode>,
    dry_run: RwSignal<bool>,
    reset_cursor: RwSignal<bool>,
    retry_failed_before_cursor: RwSignal<bool>,
    auto_resume: RwSignal<bool>,
}

impl FormState {
    fn new() -> Self {
        Self {
            job_key: RwSignal::new(String::new()),
            numbers: NUMBER_OPTIONS.map(|option| RwSignal::new(option.bounds.default.to_string())),
            mode: RwSignal::new(Mode::Full),
            dry_run: RwSignal::new(false),
            reset_cursor: RwSignal::new(false),
            retry_failed_before_cursor: RwSignal::new(true),
            auto_resume: RwSignal::new(true),
        }
    }

    fn request(&self) -> Result<StartRequest, AppError> {
        let mut values = [None; 5];
        for (index, option) in NUMBER_OPTIONS.iter().enumerate() {
            values[index] = parse_number(&self.numbers[index].get_untracked())
                .map_err(|reason| AppError::validation(option.field, reason))?;
        }
        let key = self.job_key.get_untracked();
        Ok(StartRequest {
            job_key: (!key.trim().is_empty()).then_some(key),
            batch_size: values[0],
            sleep_ms: values[1],
            max_runtime_ms: values[2],
            max_consecutive_failures: values[3],
            concurrency: values[4],
            mode: Some(self.mode.get_untracked()),
            retry_failed_before_cursor: Some(self.retry_failed_before_cursor.get_untracked()),
            reset_cursor: Some(self.reset_cursor.get_untracked()),
            dry_run: Some(self.dry_run.get_untracked()),
            auto_resume: Some(self.auto_resume.get_untracked()),
        })
    }
}

#[component]
pub fn StartForm(
    #[prop(into)] runtime_cap: Signal<u64>,
    on_started: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let form = FormState::new();
    let start = ServerAction::<Start>::new();
    let client_error = RwSignal::new(None::<AppError>);
    let runtime_touched = RwSignal::new(false);

    // The runtime cap's default is the server's configured UI cap.
    Effect::new(move |_| {
        let cap = runtime_cap.get();
        if !runtime_touched.get_untracked() {
            form.numbers[2].set(cap.to_string());
        }
    });

    // Show what the server actually used.
    Effect::new(move |_| {
        if let Some(Ok(response)) = start.value().get() {
            for adjustment in &response.adjustments {
                if let Some(index) = NUMBER_OPTIONS
                    .iter()
                    .position(|o| o.field == adjustment.field)
                {
                    form.numbers[index].set(adjustment.effective.clone());
                }
            }
            on_started();
        }
    });

    let error = move || {
        client_error
            .get()
            .or_else(|| start.value().get().and_then(Result::err))
    };
    let field_error = move |field: &'static str| {
        Signal::derive(move || {
            error()
                .filter(|e| e.field.as_deref() == Some(field))
                .map(|e| e.message)
        })
    };
    let form_error = move || {
        error()
            .filter(|e| {
                e.field
                    .as_deref()
                    .is_none_or(|f| f == "body" || !is_form_field(f))
            })
            .map(|e| e.display_message())
    };

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let checked = form.request().and_then(|request| {
            request
                .resolve(runtime_cap.get_untracked())
                .map(|_| request)
        });
        match checked {
            Err(err) => client_error.set(Some(err)),
            Ok(options) => {
                client_error.set(None);
                start.dispatch(Start { options });
            }
        }
    };

    let key_placeholder = move || {
        if form.dry_run.get() {
            format!("{DEFAULT_JOB_KEY}{DRY_RUN_SUFFIX}")
        } else {
            DEFAULT_JOB_KEY.to_string()
        }
    };
    // The key the server will record the run under, by the same rule it
    // applies, so a rehearsal's `:dry-run` twin is visible before submitting.
    let key_to_use = move || {
        JobKey::parse(Some(&form.job_key.get()), form.dry_run.get())
            .map(|key| key.as_str().to_string())
    };

    view! {
        <section class="card start" aria-labelledby="start-title">
            <h2 id="start-title">"Start a run"</h2>
            <p class="muted small">
                "Re-running a job key continues from its saved cursor. Numbers outside their range are clamped, and the values used are shown below."
            </p>
            <form on:submit=on_submit novalidate>
                <div class="field">
                    <label for="job_key">"Job key"</label>
                    <input
                        id="job_key"
                        name="job_key"
                        type="text"
                        autocomplete="off"
                        spellcheck="false"
                        maxlength=MAX_JOB_KEY_LEN.to_string()
                        placeholder=key_placeholder
                        aria-describedby="job_key-help job_key-error"
                        aria-invalid=move || field_error("job_key").get().is_some().to_string()
                        prop:value=form.job_key
                        on:input=move |ev| form.job_key.set(event_target_value(&ev))
                    />
                    <p id="job_key-help" class="help">
                        "1–120 characters of a–z 0–9 . _ : -. Leave blank for the default key. A dry run is recorded under the key plus :dry-run."
                    </p>
                    <FieldError id="job_key-error" message=field_error("job_key") />
                    <p class="help" data-testid="key-to-use" aria-live="polite">
                        {move || match key_to_use() {
                            Ok(key) => {
                                view! { "This run will use the key " <code>{key}</code> "." }
                                    .into_sync_any()
                            }
                            Err(error) => {
                                view! { <span class="error-text">{error.message}</span> }
                                    .into_sync_any()
                            }
                        }}
                    </p>
                </div>
                <div class="field-grid">
                    {NUMBER_OPTIONS
                        .iter()
                        .enumerate()
                        .map(|(index, option)| {
                            let value = form.numbers[index];
                            let bounds = option.bounds;
                            let field = option.field;
                            let clamp_note = move || match parse_number(&value.get()) {
                                Ok(Some(n)) if !bounds.range().contains(&n) => {
                                    Some(format!("Will be clamped to {}", thousands(bounds.clamp(n))))
                                }
                                _ => None,
                            };
                            let default_text = if field == "max_runtime_ms" {
                                "the UI runtime cap".to_string()
                            } else {
                                thousands(bounds.default)
                            };
                            view! {
                                <div class="field">
                                    <label for=field>{option.label} <span class="unit">" (" {option.unit} ")"</span></label>
                                    <input
                                        id=field
                                        name=field
                                        type="text"
                                        inputmode="numeric"
                                        autocomplete="off"
                                        aria-describedby=format!("{field}-help {field}-error")
                                        aria-invalid=move || field_error(field).get().is_some().to_string()
                                        prop:value=value
                                        on:input=move |ev| {
                                            if field == "max_runtime_ms" {
                                                runtime_touched.set(true);
                                            }
                                            value.set(event_target_value(&ev));
                                        }
                                    />
                                    <p id=format!("{field}-help") class="help">
                                        {option.help}
                                        <span class="range">
                                            " Default " {default_text} " · range " {thousands(bounds.min)} "–" {thousands(bounds.max)} "."
                                        </span>
                                    </p>
                                    <p class="clamp-note" aria-live="polite">{clamp_note}</p>
                                    <FieldError id=format!("{field}-error") message=field_error(field) />
                                </div>
                            }
                        })
                        .collect_view()}
                    <div class="field">
                        <label for="mode">"Mode"</label>
                        <select
                            id="mode"
                            name="mode"
                            aria-describedby="mode-help mode-error"
                            on:change=move |ev| {
                                form.mode.set(Mode::parse(&event_target_value(&ev)).unwrap_or_default())
                            }
                        >
                            <option value="full" selected=move || form.mode.get() == Mode::Full>"Full"</option>
                            <option value="failed-only" selected=move || form.mode.get() == Mode::FailedOnly>
                                "Failed only"
                            </option>
                        </select>
                        <p id="mode-help" class="help">
                            "Full scans users after the cursor. Failed only retries recorded failures and leaves the cursor alone. Default Full."
                        </p>
                        <FieldError id="mode-error" message=field_error("mode") />
                    </div>
                </div>
                <fieldset class="toggles">
                    <legend>"Switches"</legend>
                    <Toggle
                        id="dry_run"
                        label="Dry run"
                        value=form.dry_run
                        help="Scan the same users without writing anything; every user counts as skipped (dry-run). Needs no Identity Graph. Default off."
                    />
                    <Toggle
                        id="reset_cursor"
                        label="Reset cursor"
                        value=form.reset_cursor
                        help="Scan from the beginning again, with fresh counters. Default off."
                    />
                    <Toggle
                        id="retry_failed_before_cursor"
                        label="Retry failed before cursor"
                        value=form.retry_failed_before_cursor
                        help="In full mode, retry recorded failures first, then resume the cursor. Default on."
                    />
                    <Toggle
                        id="auto_resume"
                        label="Auto-resume"
                        value=form.auto_resume
                        help="Let the watchdog resume this job after it pauses on the runtime cap, a failure streak or a restart. Never applies to dry runs. Default on."
                    />
                </fieldset>
                <p class="form-error" role="alert">{form_error}</p>
                <div class="actions">
                    <button class="button primary" type="submit" disabled=move || start.pending().get()>
                        {move || match (start.pending().get(), form.dry_run.get()) {
                            (true, _) => "Starting…",
                            (false, true) => "Start dry run",
                            (false, false) => "Start run",
                        }}
                    </button>
                </div>
            </form>
            <div class="start-result" role="status" aria-live="polite">
                {move || start.value().get().and_then(Result::ok).map(|response| view! { <StartOutcome response /> })}
            </div>
        </section>
    }
}

fn is_form_field(field: &str) -> bool {
    field == "job_key" || field == "mode" || NUMBER_OPTIONS.iter().any(|o| o.field == field)
}

#[component]
fn FieldError(#[prop(into)] id: String, message: Signal<Option<String>>) -> impl IntoView {
    view! {
        <p id=id class="field-error">
            {move || message.get()}
        </p>
    }
}

#[component]
fn Toggle(
    id: &'static str,
    label: &'static str,
    value: RwSignal<bool>,
    help: &'static str,
) -> impl IntoView {
    let help_id = format!("{id}-help");
    view! {
        <div class="toggle">
            <input
                id=id
                name=id
                type="checkbox"
                role="switch"
                aria-describedby=help_id.clone()
                prop:checked=value
                on:change=move |ev| value.set(event_target_checked(&ev))
            />
            <label for=id>{label}</label>
            <p id=help_id class="help">{help}</p>
        </div>
    }
}

#[component]
fn StartOutcome(response: StartResponse) -> impl IntoView {
    let key = response.job.job_key.clone();
    let href = format!("/jobs/{key}");
    let headline = if response.started {
        format!("Started {key}.")
    } else {
        format!("{key} is already running; nothing was changed.")
    };
    view! {
        <div class=if response.started { "notice success" } else { "notice info" }>
            <p>
                <strong>{headline}</strong>
                " " <a rel="external" href=href>"Open the job"</a>
            </p>
            {(!response.adjustments.is_empty()).then(|| view! {
                <p>"The server adjusted values that were out of range:"</p>
                <ul class="adjustments">
                    {response.adjustments.into_iter().map(|a| view! {
                        <li>
                            <code>{a.field}</code> ": asked " {a.requested} ", using " <strong>{a.effective}</strong>
                        </li>
                    }).collect_view()}
                </ul>
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_accept_separators_and_blank() {
        assert_eq!(parse_number(""), Ok(None));
        assert_eq!(parse_number(" 1,000 "), Ok(Some(1000)));
        assert_eq!(parse_number("-5"), Ok(Some(-5)));
        assert!(parse_number("ten").is_err());
        assert!(parse_number("2.5").is_err());
    }
}
