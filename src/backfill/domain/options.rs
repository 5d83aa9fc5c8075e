//! The start options. Each is declared once, in `start_options!` at the
//! bottom of this file, and that declaration drives the request's parsing,
//! the clamping and its adjustments report, the reading of stored options,
//! the form's control and help text, and (through a test) the options table
//! in docs/options.md.
//!
//! Adding an option: one line in `start_options!`, its use in the runner, and
//! its row in docs/options.md.

use super::failures::FailureFilter;
use super::job_key::JobKey;
use super::status::Mode;
use crate::error::{field_error_message, AppError};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::ops::RangeInclusive;

/// An inclusive range with a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: i64,
    pub max: i64,
    pub default: i64,
}

impl Bounds {
    pub fn clamp(self, value: i64) -> i64 {
        value.clamp(self.min, self.max)
    }

    pub fn range(self) -> RangeInclusive<i64> {
        self.min..=self.max
    }
}

/// A whole-number option.
#[derive(Clone, Copy)]
pub struct NumberOption {
    pub field: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub help: &'static str,
    pub bounds: Bounds,
    pub requested: fn(&StartRequest) -> Option<i64>,
    pub set_requested: fn(&mut StartRequest, Option<i64>),
    /// The value a run uses.
    pub effective: fn(&StartOptions) -> i64,
    apply: fn(&mut StartOptions, i64),
}

impl NumberOption {
    /// `requested` clamped into range; a clamped value is reported in
    /// `adjustments`.
    pub fn clamp_reporting(&self, requested: i64, adjustments: &mut Vec<Adjustment>) -> i64 {
        let effective = self.bounds.clamp(requested);
        if effective != requested {
            adjustments.push(Adjustment {
                field: self.field.to_string(),
                requested: requested.to_string(),
                effective: effective.to_string(),
            });
        }
        effective
    }
}

/// An on/off option.
#[derive(Clone, Copy)]
pub struct FlagOption {
    pub field: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub default: bool,
    pub requested: fn(&StartRequest) -> Option<bool>,
    pub set_requested: fn(&mut StartRequest, Option<bool>),
    /// The value a run uses.
    pub effective: fn(&StartOptions) -> bool,
    apply: fn(&mut StartOptions, bool),
}

/// The job key and the mode have rules of their own (`JobKey::parse`,
/// `Mode`); these are their labels and help.
pub struct FieldText {
    pub field: &'static str,
    pub label: &'static str,
    pub help: &'static str,
}

pub const JOB_KEY: FieldText = FieldText {
    field: "job_key",
    label: "Job key",
    help: "1–120 characters of a–z 0–9 . _ : -. Leave blank for the default key. A dry run is recorded under the key plus :dry-run.",
};

pub const FAILURE_CLASS: FieldText = FieldText {
    field: "failure_class",
    label: "Failure class",
    help: "Failed-only runs only: retry just the failures of this class (http 400, timeout …).",
};

pub const FAILURE_SEARCH: FieldText = FieldText {
    field: "failure_search",
    label: "Failure search",
    help: "Failed-only runs only: retry just the failures whose message contains this, or whose user id it is.",
};

pub const MODE: FieldText = FieldText {
    field: "mode",
    label: "Mode",
    help: "Full scans users after the cursor. Failed only retries recorded failures and leaves the cursor alone. Default Full.",
};

/// A field whose effective value differs from what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub field: String,
    pub requested: String,
    pub effective: String,
}

/// Declares every start option: the request's and the effective options'
/// fields, and a `NumberOption` / `FlagOption` constant for each.
macro_rules! start_options {
    (
        numbers {
            $( $number:ident $number_field:ident: $number_type:ty =
                [$min:literal ..= $max:literal] default $default:literal,
                $number_label:literal ($unit:literal), $number_help:literal; )*
        }
        flags {
            $( $flag:ident $flag_field:ident = $flag_default:literal,
                $flag_label:literal, $flag_help:literal; )*
        }
    ) => {
        /// What a caller sends to `start`: every field optional. Its
        /// `Deserialize` is written by hand so that a value of the wrong type is
        /// a `VALIDATION` error naming its field.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct StartRequest {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub job_key: Option<String>,
            $( #[serde(skip_serializing_if = "Option::is_none")]
            pub $number_field: Option<i64>, )*
            #[serde(skip_serializing_if = "Option::is_none")]
            pub mode: Option<Mode>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub failure_class: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub failure_search: Option<String>,
            $( #[serde(skip_serializing_if = "Option::is_none")]
            pub $flag_field: Option<bool>, )*
        }

        /// The effective options of a run, after defaults and clamping.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct StartOptions {
            pub job_key: JobKey,
            $( pub $number_field: $number_type, )*
            pub mode: Mode,
            /// A failed-only run retries only the failures this takes.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub failure_filter: Option<FailureFilter>,
            $( pub $flag_field: bool, )*
        }

        impl StartOptions {
            /// Every option at its declared default, under `job_key`.
            fn defaults(job_key: JobKey) -> Self {
                Self {
                    job_key,
                    $( $number_field: $default, )*
                    mode: Mode::Full,
                    failure_filter: None,
                    $( $flag_field: $flag_default, )*
                }
            }
        }

        $( pub const $number: NumberOption = NumberOption {
            field: stringify!($number_field),
            label: $number_label,
            unit: $unit,
            help: $number_help,
            bounds: Bounds { min: $min, max: $max, default: $default },
            requested: |request| request.$number_field,
            set_requested: |request, value| request.$number_field = value,
            effective: |options| options.$number_field as i64,
            apply: |options, value| options.$number_field = value as $number_type,
        }; )*

        pub const NUMBER_OPTIONS: &[NumberOption] = &[$($number),*];

        $( pub const $flag: FlagOption = FlagOption {
            field: stringify!($flag_field),
            label: $flag_label,
            help: $flag_help,
            default: $flag_default,
            requested: |request| request.$flag_field,
            set_requested: |request, value| request.$flag_field = value,
            effective: |options| options.$flag_field,
            apply: |options, value| options.$flag_field = value,
        }; )*

        pub const FLAG_OPTIONS: &[FlagOption] = &[$($flag),*];
    };
}

start_options! {
    numbers {
        BATCH_SIZE batch_size: u32 = [1 ..= 1_000] default 100,
            "Batch size" ("users"),
            "Users fetched per batch, in id order after the cursor. The cursor and counters are saved once per batch.";
        SLEEP_MS sleep_ms: u32 = [0 ..= 60_000] default 250,
            "Sleep between batches" ("ms"),
            "Pacing: how long the runner waits after each batch, to spare the Identity Graph. A dry run never calls the graph, so it defaults to 0 unless you set it. Tunable while the job runs.";
        MAX_RUNTIME_MS max_runtime_ms: u64 = [1_000 ..= 21_600_000] default 900_000,
            "Runtime cap" ("ms"),
            "The run pauses itself after this long (a safety bound, not a failure) and auto-resumes later from its cursor.";
        MAX_CONSECUTIVE_FAILURES max_consecutive_failures: u32 = [1 ..= 10_000] default 25,
            "Max consecutive failures" ("users"),
            "After this many users fail in a row, the run pauses (consecutive-failures) instead of failing everyone.";
        CONCURRENCY concurrency: u32 = [1 ..= 64] default 8,
            "Concurrency" ("users at once"),
            "How many users of a batch are synced at the same time. Tunable while the job runs.";
        MAX_RATE max_rate: u32 = [0 ..= 100_000] default 0,
            "Max rate" ("users/s"),
            "At most this many users a second, spread evenly over every slot and the retry pass; 0 for no limit. Tunable while the job runs.";
        TARGET_LATENCY_MS target_latency_ms: u32 = [5 ..= 60_000] default 250,
            "Target latency" ("ms"),
            "Adaptive mode holds the Identity Graph's p95 answer time near this. Only read when Adaptive is on.";
    }
    flags {
        DRY_RUN dry_run = false,
            "Dry run",
            "Scan the same users without writing anything; every user counts as skipped (dry-run). Needs no Identity Graph. Default off.";
        RESET_CURSOR reset_cursor = false,
            "Reset cursor",
            "Scan from the beginning again, with fresh counters. Default off.";
        RETRY_FAILED_BEFORE_CURSOR retry_failed_before_cursor = true,
            "Retry failed before cursor",
            "In full mode, retry recorded failures first, then resume the cursor. Default on.";
        AUTO_RESUME auto_resume = true,
            "Auto-resume",
            "Let the watchdog resume this job after it pauses on the runtime cap, a failure streak, a throttling graph or a restart. Never applies to dry runs. Default on.";
        ADAPTIVE adaptive = false,
            "Adaptive",
            "Raise and cut the users in flight to hold the Identity Graph's p95 near Target latency, backing off on any 429; Concurrency and Max rate stay the ceiling. Default off.";
    }
}

impl NumberOption {
    /// The runtime cap's default is the server's configured UI cap.
    pub fn has_configured_default(&self) -> bool {
        self.field == MAX_RUNTIME_MS.field
    }
}

/// A dry run's `sleep_ms` when the request does not set one.
pub const DRY_RUN_SLEEP_MS: u32 = 0;

/// Every field `start` takes, in the order the form shows them.
pub fn start_fields() -> Vec<&'static str> {
    let numbers = NUMBER_OPTIONS.iter().map(|option| option.field);
    let flags = FLAG_OPTIONS.iter().map(|option| option.field);
    std::iter::once(JOB_KEY.field)
        .chain(numbers)
        .chain([MODE.field, FAILURE_CLASS.field, FAILURE_SEARCH.field])
        .chain(flags)
        .collect()
}

impl StartOptions {
    /// The defaults, with the runtime cap from the server's setting.
    fn defaults_with_runtime(job_key: JobKey, max_runtime_default: u64) -> Self {
        let mut options = Self::defaults(job_key);
        (MAX_RUNTIME_MS.apply)(
            &mut options,
            MAX_RUNTIME_MS.bounds.clamp(max_runtime_default as i64),
        );
        options
    }

    /// Reads options as any release stored them. A missing field takes its
    /// documented default and an unknown one is ignored, so a row written
    /// before or after this release still reads; a field of the wrong type
    /// makes the row unreadable, with the reason. The key and the dry-run
    /// flag come from the row's own columns.
    pub fn from_stored(
        stored: &serde_json::Value,
        job_key: &str,
        dry_run: bool,
        max_runtime_default: u64,
    ) -> Result<Self, String> {
        let serde_json::Value::Object(fields) = stored else {
            return Err(format!(
                "its stored options are {}, not an object",
                json_kind(stored)
            ));
        };
        let present = |field: &str| fields.get(field).filter(|value| !value.is_null());
        let mut options =
            Self::defaults_with_runtime(JobKey::from_stored(job_key), max_runtime_default);
        for option in NUMBER_OPTIONS {
            if let Some(value) = present(option.field) {
                let number = whole_number(option.field, value)
                    .map_err(|_| stored_type_error(option.field, "a whole number", value))?;
                (option.apply)(&mut options, option.bounds.clamp(number));
            }
        }
        if let Some(value) = present(MODE.field) {
            options.mode = value
                .as_str()
                .and_then(Mode::parse)
                .ok_or_else(|| stored_type_error(MODE.field, MODE_CHOICES, value))?;
        }
        if let Some(value) = present("failure_filter") {
            let filter: FailureFilter = serde_json::from_value(value.clone())
                .map_err(|_| stored_type_error("failure_filter", "a class and a search", value))?;
            options.failure_filter = (!filter.is_empty()).then_some(filter);
        }
        // A job's dry_run is its column, never its stored options.
        for option in FLAG_OPTIONS.iter().filter(|o| o.field != DRY_RUN.field) {
            if let Some(value) = present(option.field) {
                let flag = value
                    .as_bool()
                    .ok_or_else(|| stored_type_error(option.field, "true or false", value))?;
                (option.apply)(&mut options, flag);
            }
        }
        options.dry_run = dry_run;
        Ok(options)
    }
}

const MODE_CHOICES: &str = "\"full\" or \"failed-only\"";

impl StartRequest {
    /// Applies defaults and clamps numbers into range. `max_runtime_default`
    /// is the configured UI runtime cap. Returns the effective options and
    /// every field whose value was changed.
    pub fn resolve(
        &self,
        max_runtime_default: u64,
    ) -> Result<(StartOptions, Vec<Adjustment>), AppError> {
        let dry_run = self.dry_run.unwrap_or(DRY_RUN.default);
        let job_key = JobKey::parse(self.job_key.as_deref(), dry_run)?;
        let mut options = StartOptions::defaults_with_runtime(job_key, max_runtime_default);
        let mut adjustments = Vec::new();
        for option in NUMBER_OPTIONS {
            if let Some(requested) = (option.requested)(self) {
                let effective = option.clamp_reporting(requested, &mut adjustments);
                (option.apply)(&mut options, effective);
            }
        }
        // A dry run never calls the graph: it waits on no pacing unless asked.
        if dry_run && self.sleep_ms.is_none() {
            options.sleep_ms = DRY_RUN_SLEEP_MS;
        }
        options.mode = self.mode.unwrap_or_default();
        options.failure_filter = self.failure_filter(options.mode)?;
        for option in FLAG_OPTIONS {
            if let Some(requested) = (option.requested)(self) {
                (option.apply)(&mut options, requested);
            }
        }
        Ok((options, adjustments))
    }
}

impl StartRequest {
    /// The failures a failed-only run is restricted to; a filter on a full
    /// run is refused rather than ignored.
    fn failure_filter(&self, mode: Mode) -> Result<Option<FailureFilter>, AppError> {
        let filter = FailureFilter::parse_fields(
            (FAILURE_CLASS.field, self.failure_class.as_deref()),
            (FAILURE_SEARCH.field, self.failure_search.as_deref()),
        )?;
        if filter.is_empty() {
            return Ok(None);
        }
        if mode != Mode::FailedOnly {
            let field = if filter.class.is_some() {
                FAILURE_CLASS.field
            } else {
                FAILURE_SEARCH.field
            };
            return Err(AppError::validation(
                field,
                format!("{field} applies only to mode \"failed-only\""),
            ));
        }
        Ok(Some(filter))
    }
}

impl<'de> Deserialize<'de> for StartRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut request = StartRequest::default();
        for (field, value) in map.iter().filter(|(_, value)| !value.is_null()) {
            read_field(&mut request, field, value).map_err(de::Error::custom)?;
        }
        Ok(request)
    }
}

fn read_field(
    request: &mut StartRequest,
    field: &str,
    value: &serde_json::Value,
) -> Result<(), String> {
    if field == JOB_KEY.field {
        let key = value
            .as_str()
            .ok_or_else(|| field_error_message(field, "must be a string"))?;
        request.job_key = Some(key.to_string());
    } else if field == MODE.field {
        let mode = value
            .as_str()
            .and_then(Mode::parse)
            .ok_or_else(|| field_error_message(field, &format!("must be {MODE_CHOICES}")))?;
        request.mode = Some(mode);
    } else if field == FAILURE_CLASS.field || field == FAILURE_SEARCH.field {
        let text = value
            .as_str()
            .ok_or_else(|| field_error_message(field, "must be a string"))?
            .to_string();
        if field == FAILURE_CLASS.field {
            request.failure_class = Some(text);
        } else {
            request.failure_search = Some(text);
        }
    } else if let Some(option) = NUMBER_OPTIONS.iter().find(|o| o.field == field) {
        (option.set_requested)(request, Some(whole_number(field, value)?));
    } else if let Some(option) = FLAG_OPTIONS.iter().find(|o| o.field == field) {
        let flag = value
            .as_bool()
            .ok_or_else(|| field_error_message(field, "must be true or false"))?;
        (option.set_requested)(request, Some(flag));
    } else {
        return Err(field_error_message(
            field,
            &format!(
                "unknown field; expected one of {}",
                start_fields().join(", ")
            ),
        ));
    }
    Ok(())
}

fn whole_number(field: &str, value: &serde_json::Value) -> Result<i64, String> {
    let serde_json::Value::Number(number) = value else {
        return Err(field_error_message(field, "must be a number"));
    };
    if let Some(value) = number.as_i64() {
        return Ok(value);
    }
    if number.as_u64().is_some() {
        return Ok(i64::MAX);
    }
    match number.as_f64() {
        Some(value) if value.is_finite() && value.fract() == 0.0 => {
            Ok(value.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
        }
        _ => Err(field_error_message(field, "must be a whole number")),
    }
}

/// What kind of JSON value `value` is, as an error message names it.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn stored_type_error(field: &str, expected: &str, value: &serde_json::Value) -> String {
    let mut shown = value.to_string();
    if shown.len() > 40 {
        shown.truncate(40);
        shown.push('…');
    }
    format!("its stored option {field} is {shown}, not {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_clamped_and_reported() {
        let request = StartRequest {
            batch_size: Some(5_000),
            sleep_ms: Some(-3),
            concurrency: Some(8),
            max_runtime_ms: Some(10),
            ..Default::default()
        };
        let (options, adjustments) = request.resolve(900_000).unwrap();
        assert_eq!(options.batch_size, 1_000);
        assert_eq!(options.sleep_ms, 0);
        assert_eq!(options.max_runtime_ms, 1_000);
        assert_eq!(options.concurrency, 8);
        let fields: Vec<_> = adjustments.iter().map(|a| a.field.as_str()).collect();
        assert_eq!(fields, ["batch_size", "sleep_ms", "max_runtime_ms"]);
    }

    #[test]
    fn defaults_follow_the_contract() {
        let (options, adjustments) = StartRequest::default().resolve(900_000).unwrap();
        assert!(adjustments.is_empty());
        assert_eq!(options.batch_size, 100);
        assert_eq!(options.sleep_ms, 250);
        assert_eq!(options.max_runtime_ms, 900_000);
        assert_eq!(options.max_consecutive_failures, 25);
        assert_eq!(options.concurrency, 8);
        assert_eq!(options.mode, Mode::Full);
        assert!(options.retry_failed_before_cursor && options.auto_resume);
        assert!(!options.reset_cursor && !options.dry_run);
        let (short, _) = StartRequest::default().resolve(60_000).unwrap();
        assert_eq!(short.max_runtime_ms, 60_000, "the configured UI cap");
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (body, field) in [
            (r#"{"batch_size":"ten"}"#, "batch_size"),
            (r#"{"batch_size":2.5}"#, "batch_size"),
            (r#"{"dry_run":"yes"}"#, "dry_run"),
            (r#"{"mode":"sometimes"}"#, "mode"),
            (r#"{"job_key":7}"#, "job_key"),
            (r#"{"surprise":1}"#, "surprise"),
        ] {
            let error = serde_json::from_str::<StartRequest>(body)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("field-error:{field}:")),
                "{body}: {error}"
            );
        }
        let huge: StartRequest =
            serde_json::from_str(r#"{"batch_size":1e30,"sleep_ms":99999999999999999999}"#).unwrap();
        assert_eq!(huge.batch_size, Some(i64::MAX));
        assert_eq!(huge.sleep_ms, Some(i64::MAX));
    }

    #[test]
    fn a_request_round_trips_through_json() {
        let request = StartRequest {
            job_key: Some("q1".into()),
            batch_size: Some(50),
            mode: Some(Mode::FailedOnly),
            auto_resume: Some(false),
            ..Default::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<StartRequest>(&json).unwrap(),
            request
        );
    }

    #[test]
    fn stored_options_read_every_declared_field() {
        let stored = serde_json::json!({
            "batch_size": 5_000, "sleep_ms": 10, "mode": "failed-only",
            "auto_resume": false, "dry_run": true, "someday": "ignored"
        });
        let options = StartOptions::from_stored(&stored, "q1", false, 60_000).unwrap();
        assert_eq!(options.batch_size, 1_000, "clamped");
        assert_eq!(options.sleep_ms, 10);
        assert_eq!(options.max_runtime_ms, 60_000, "the configured default");
        assert_eq!(options.mode, Mode::FailedOnly);
        assert!(!options.auto_resume);
        assert!(!options.dry_run, "the row's column decides");
        let odd_dry_run = serde_json::json!({"dry_run": "yes"});
        assert!(
            StartOptions::from_stored(&odd_dry_run, "q1", false, 60_000).is_ok(),
            "dry_run is read from its column, never from the stored options"
        );
        let bad = serde_json::json!({"concurrency": "lots"});
        let reason = StartOptions::from_stored(&bad, "q1", false, 60_000).unwrap_err();
        assert!(reason.contains("concurrency"), "{reason}");
    }

    /// The options table of docs/options.md quotes each option's default and range.
    #[test]
    fn the_options_table_matches_the_declarations() {
        let table = include_str!("../../../docs/options.md");
        let row = |field: &str| {
            table
                .lines()
                .find(|line| line.starts_with(&format!("| `{field}` |")))
                .unwrap_or_else(|| panic!("docs/options.md has no row for {field}"))
                .to_string()
        };
        let thousands = super::super::views::thousands;
        for option in NUMBER_OPTIONS {
            let row = row(option.field);
            let range = format!(
                "{}–{}",
                thousands(option.bounds.min),
                thousands(option.bounds.max)
            );
            assert!(row.contains(&range), "{row} should say {range}");
            let default = thousands(option.bounds.default);
            assert!(row.contains(&default), "{row} should say {default}");
        }
        for option in FLAG_OPTIONS {
            let row = row(option.field);
            let default = format!("`{}`", option.default);
            assert!(row.contains(&default), "{row} should say {default}");
        }
        assert!(row(MODE.field).contains("`full`"));
    }
}
