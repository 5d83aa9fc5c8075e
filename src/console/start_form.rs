//! The start form: every option with its default, range and help, checked
//! in the browser with the same `StartRequest` rules the server applies.

use super::format::thousands;
use super::sync_any::IntoSyncAny;
use crate::backfill::api::Start;
use crate::backfill::domain::*;
use crate::error::AppError;
use leptos::prelude::*;

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

/// The live message under a number field while it does not hold one.
fn number_problem(raw: &str) -> Option<String> {
    parse_number(raw).err().map(|_| {
        format!(
            "{:?} is not a whole number; type digits only (or leave it blank for the default).",
            raw.trim()
        )
    })
}

const NUMBERS: usize = NUMBER_OPTIONS.len();
const FLAGS: usize = FLAG_OPTIONS.len();

/// The form's state: one signal per declared option, reached by its field.
/// Numbers are held as typed text, so a half-typed value stays as typed.
#[derive(Clone, Copy)]
struct FormState {
    job_key: RwSignal<String>,
    numbers: [RwSignal<String>; NUMBERS],
    mode: RwSignal<Mode>,
    flags: [RwSignal<bool>; FLAGS],
}

impl FormState {
    fn new() -> Self {
        Self {
            job_key: RwSignal::new(String::new()),
            numbers: std::array::from_fn(|index| {
                RwSignal::new(NUMBER_OPTIONS[index].bounds.default.to_string())
            }),
            mode: RwSignal::new(Mode::default()),
            flags: std::array::from_fn(|index| RwSignal::new(FLAG_OPTIONS[index].default)),
        }
    }

    fn number_signal(&self, field: &str) -> RwSignal<String> {
        let index = NUMBER_OPTIONS
            .iter()
            .position(|option| option.field == field)
            .expect("a declared number option");
        self.numbers[index]
    }

    fn flag_signal(&self, field: &str) -> RwSignal<bool> {
        let index = FLAG_OPTIONS
            .iter()
            .position(|option| option.field == field)
            .expect("a declared flag option");
        self.flags[index]
    }

    fn number(&self, field: &'static str) -> String {
        self.number_signal(field).get()
    }

    fn set_number(&self, field: &'static str, value: String) {
        self.number_signal(field).set(value);
    }

    fn flag(&self, field: &'static str) -> bool {
        self.flag_signal(field).get()
    }

    fn set_flag(&self, field: &'static str, value: bool) {
        self.flag_signal(field).set(value);
    }

    fn request(&self) -> Result<StartRequest, AppError> {
        let key = self.job_key.get_untracked();
        let mut request = StartRequest {
            job_key: (!key.trim().is_empty()).then_some(key),
            mode: Some(self.mode.get_untracked()),
            ..Default::default()
        };
        for (option, typed) in NUMBER_OPTIONS.iter().zip(self.numbers) {
            let value = parse_number(&typed.get_untracked())
                .map_err(|reason| AppError::validation(option.field, reason))?;
            (option.set_requested)(&mut request, value);
        }
        for (option, flag) in FLAG_OPTIONS.iter().zip(self.flags) {
            (option.set_requested)(&mut request, Some(flag.get_untracked()));
        }
        Ok(request)
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
    let sleep_touched = RwSignal::new(false);

    // A dry run never calls the graph, so its pacing defaults to 0; the
    // field follows the switch until the operator types a sleep.
    Effect::new(move |_| {
        let dry_run = form.flag(DRY_RUN.field);
        if !sleep_touched.get_untracked() {
            let default = if dry_run {
                DRY_RUN_SLEEP_MS as i64
            } else {
                SLEEP_MS.bounds.default
            };
            form.set_number(SLEEP_MS.field, default.to_string());
        }
    });
    // Start waits until every number field holds a number.
    let numbers_invalid = move || {
        NUMBER_OPTIONS
            .iter()
            .any(|option| number_problem(&form.number(option.field)).is_some())
    };

    // The runtime cap's default is the server's configured UI cap.
    Effect::new(move |_| {
        let cap = runtime_cap.get();
        if !runtime_touched.get_untracked() {
            form.set_number(MAX_RUNTIME_MS.field, cap.to_string());
        }
    });

    // Show what the server actually used.
    Effect::new(move |_| {
        if let Some(Ok(response)) = start.value().get() {
            for adjustment in &response.adjustments {
                if let Some(option) = NUMBER_OPTIONS.iter().find(|o| o.field == adjustment.field) {
                    form.set_number(option.field, adjustment.effective.clone());
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
            let live = NUMBER_OPTIONS
                .iter()
                .any(|option| option.field == field)
                .then(|| number_problem(&form.number(field)))
                .flatten();
            live.or_else(|| {
                error()
                    .filter(|e| e.field.as_deref() == Some(field))
                    .map(|e| e.message)
            })
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
        if form.flag(DRY_RUN.field) {
            format!("{DEFAULT_JOB_KEY}{DRY_RUN_SUFFIX}")
        } else {
            DEFAULT_JOB_KEY.to_string()
        }
    };
    // The key the server will record the run under, by the same rule it
    // applies, so a rehearsal's `:dry-run` twin is visible before submitting.
    let key_to_use = move || {
        JobKey::parse(Some(&form.job_key.get()), form.flag(DRY_RUN.field))
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
                    <label for="job_key">{JOB_KEY.label}</label>
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
                    <p id="job_key-help" class="help">{JOB_KEY.help}</p>
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
                        .map(|option| {
                            let bounds = option.bounds;
                            let field = option.field;
                            let clamp_note = move || match parse_number(&form.number(field)) {
                                Ok(Some(n)) if !bounds.range().contains(&n) => {
                                    Some(format!("Will be clamped to {}", thousands(bounds.clamp(n))))
                                }
                                _ => None,
                            };
                            let default_text = if option.has_configured_default() {
                                "the UI runtime cap".to_string()
                            } else if field == SLEEP_MS.field {
                                format!("{} ({DRY_RUN_SLEEP_MS} for a dry run)", thousands(bounds.default))
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
                                        prop:value=move || form.number(field)
                                        on:input=move |ev| {
                                            if field == MAX_RUNTIME_MS.field {
                                                runtime_touched.set(true);
                                            }
                                            if field == SLEEP_MS.field {
                                                sleep_touched.set(true);
                                            }
                                            form.set_number(field, event_target_value(&ev));
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
                        <label for="mode">{MODE.label}</label>
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
                        <p id="mode-help" class="help">{MODE.help}</p>
                        <FieldError id="mode-error" message=field_error("mode") />
                    </div>
                </div>
                <fieldset class="toggles">
                    <legend>"Switches"</legend>
                    {FLAG_OPTIONS
                        .iter()
                        .map(|option| view! { <Toggle option form /> })
                        .collect_view()}
                </fieldset>
                <p class="form-error" role="alert">{form_error}</p>
                <div class="actions">
                    <button
                        class="button primary"
                        type="submit"
                        disabled=move || start.pending().get() || numbers_invalid()
                        aria-describedby="start-blocked"
                    >
                        {move || match (start.pending().get(), form.flag(DRY_RUN.field)) {
                            (true, _) => "Starting…",
                            (false, true) => "Start dry run",
                            (false, false) => "Start run",
                        }}
                    </button>
                    <p id="start-blocked" class="help" aria-live="polite">
                        {move || numbers_invalid().then_some("Fix the fields marked above to start.")}
                    </p>
                </div>
            </form>
            <div class="start-result" role="status" aria-live="polite">
                {move || start.value().get().and_then(Result::ok).map(|response| view! { <StartOutcome response /> })}
            </div>
        </section>
    }
}

fn is_form_field(field: &str) -> bool {
    field == JOB_KEY.field || field == MODE.field || NUMBER_OPTIONS.iter().any(|o| o.field == field)
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
fn Toggle(option: &'static FlagOption, form: FormState) -> impl IntoView {
    let field = option.field;
    let help_id = format!("{field}-help");
    // Auto-resume never applies to a dry run: say so, instead of "on".
    let never = move || field == AUTO_RESUME.field && form.flag(DRY_RUN.field);
    view! {
        <div class="toggle">
            <input
                id=field
                name=field
                type="checkbox"
                role="switch"
                aria-describedby=help_id.clone()
                prop:checked=move || form.flag(field) && !never()
                disabled=never
                on:change=move |ev| form.set_flag(field, event_target_checked(&ev))
            />
            <label for=field>
                {option.label}
                {move || never().then(|| view! { <span class="never">" — never for a dry run"</span> })}
            </label>
            <p id=help_id class="help">{option.help}</p>
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
