//! The backfill's shared vocabulary: statuses, options, keys and the shapes
//! the API returns. Compiled for both the server and the WASM UI, so the form
//! checks input with exactly the rules the server enforces.

use crate::error::{field_error_message, AppError};
use chrono::{DateTime, Utc};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::{fmt, ops::RangeInclusive};

pub const DEFAULT_JOB_KEY: &str = "identity-graph-users";
pub const DRY_RUN_SUFFIX: &str = ":dry-run";
pub const MAX_JOB_KEY_LEN: usize = 120;

/// A job's status, exactly as stored in `identity_graph_backfill_jobs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    Running,
    Stopping,
    Stopped,
    Paused,
    Completed,
    Failed,
    /// Hidden from the list; kept for history.
    Archived,
    /// Never stored: the API's word for a row this version cannot read (its
    /// options are not an object, or a field has the wrong type).
    Unreadable,
}

impl JobStatus {
    pub const VISIBLE: [JobStatus; 6] = [
        JobStatus::Running,
        JobStatus::Stopping,
        JobStatus::Stopped,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Failed,
    ];
    /// A runner owns the job (on some replica).
    pub const ACTIVE: [JobStatus; 2] = [JobStatus::Running, JobStatus::Stopping];
    /// The statuses a start (or a watchdog resume) may leave.
    pub const STARTABLE: [JobStatus; 4] = [
        JobStatus::Stopped,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Stopping => "stopping",
            JobStatus::Stopped => "stopped",
            JobStatus::Paused => "paused",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Archived => "archived",
            JobStatus::Unreadable => "unreadable",
        }
    }

    /// A status as stored. `None` for a value this version does not know,
    /// which the list hides like `archived`.
    pub fn parse(raw: &str) -> Option<Self> {
        [JobStatus::Archived]
            .into_iter()
            .chain(Self::VISIBLE)
            .find(|status| status.as_str() == raw)
    }

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    pub fn can_stop(self) -> bool {
        matches!(
            self,
            JobStatus::Running | JobStatus::Stopping | JobStatus::Paused
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    MaxRuntime,
    ConsecutiveFailures,
    Interrupted,
}

impl PauseReason {
    pub const ALL: [PauseReason; 3] = [
        PauseReason::MaxRuntime,
        PauseReason::ConsecutiveFailures,
        PauseReason::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::MaxRuntime => "max-runtime",
            PauseReason::ConsecutiveFailures => "consecutive-failures",
            PauseReason::Interrupted => "interrupted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Full,
    FailedOnly,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::FailedOnly => "failed-only",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Mode::Full, Mode::FailedOnly]
            .into_iter()
            .find(|mode| mode.as_str() == raw)
    }
}

/// Why a user was skipped rather than written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    DryRun,
    Deleted,
    NoIdentifiers,
}

/// A validated job key: 1–120 characters of `[a-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobKey(String);

impl JobKey {
    /// A blank key becomes the default key. A dry run is always recorded
    /// under `<key>:dry-run`, so a rehearsal never moves a real job's cursor;
    /// a real run on such a key is refused for the same reason.
    pub fn parse(raw: Option<&str>, dry_run: bool) -> Result<Self, AppError> {
        let trimmed = raw.map(str::trim).unwrap_or("");
        let base = if trimmed.is_empty() {
            DEFAULT_JOB_KEY
        } else {
            trimmed
        };
        if let Some(bad) = base.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-'))
        }) {
            return Err(AppError::validation(
                "job_key",
                format!("{bad:?} is not allowed; use lowercase letters, digits and . _ : -"),
            ));
        }
        let is_rehearsal_key = base.ends_with(DRY_RUN_SUFFIX);
        if !dry_run && is_rehearsal_key {
            return Err(AppError::validation(
                "job_key",
                format!(
                    "{base} holds a dry run; a real run needs a key that does not end in {DRY_RUN_SUFFIX}"
                ),
            ));
        }
        let key = if dry_run && !is_rehearsal_key {
            format!("{base}{DRY_RUN_SUFFIX}")
        } else {
            base.to_string()
        };
        if key.chars().count() > MAX_JOB_KEY_LEN {
            let limit = if dry_run && !is_rehearsal_key {
                format!(
                    "{} characters for a dry run (it is recorded under <key>{DRY_RUN_SUFFIX})",
                    MAX_JOB_KEY_LEN - DRY_RUN_SUFFIX.len()
                )
            } else {
                format!("{MAX_JOB_KEY_LEN} characters")
            };
            return Err(AppError::validation(
                "job_key",
                format!("a job key has at most {limit}"),
            ));
        }
        Ok(Self(key))
    }

    /// A key that names an existing job, as `stop` and `job` take it: the
    /// same characters, and no dry-run rewriting.
    pub fn parse_existing(raw: &str) -> Result<Self, AppError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AppError::validation("job_key", "name the job"));
        }
        let dry_run = trimmed.ends_with(DRY_RUN_SUFFIX);
        Self::parse(Some(trimmed), dry_run)
    }

    pub fn is_dry_run_key(&self) -> bool {
        self.0.ends_with(DRY_RUN_SUFFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive range with a default: one row of DESIGN §3's options table.
#[derive(Debug, Clone, Copy)]
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

pub const BATCH_SIZE: Bounds = Bounds {
    min: 1,
    max: 1_000,
    default: 100,
};
pub const SLEEP_MS: Bounds = Bounds {
    min: 0,
    max: 60_000,
    default: 250,
};
pub const MAX_RUNTIME_MS: Bounds = Bounds {
    min: 1_000,
    max: 21_600_000,
    default: 900_000,
};
pub const MAX_CONSECUTIVE_FAILURES: Bounds = Bounds {
    min: 1,
    max: 10_000,
    default: 25,
};
pub const CONCURRENCY: Bounds = Bounds {
    min: 1,
    max: 64,
    default: 8,
};

/// The effective options of a run, after defaults and clamping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOptions {
    pub job_key: JobKey,
    pub batch_size: u32,
    pub sleep_ms: u32,
    pub max_runtime_ms: u64,
    pub max_consecutive_failures: u32,
    pub concurrency: u32,
    pub mode: Mode,
    pub retry_failed_before_cursor: bool,
    pub reset_cursor: bool,
    pub dry_run: bool,
    pub auto_resume: bool,
}

impl StartOptions {
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
        let number = |field: &str, bounds: Bounds, default: i64| -> Result<i64, String> {
            match present(field) {
                None => Ok(default),
                Some(value) => whole_number(field, value)
                    .map(|value| bounds.clamp(value))
                    .map_err(|_| stored_type_error(field, "a whole number", value)),
            }
        };
        let flag = |field: &str, default: bool| -> Result<bool, String> {
            match present(field) {
                None => Ok(default),
                Some(value) => value
                    .as_bool()
                    .ok_or_else(|| stored_type_error(field, "true or false", value)),
            }
        };
        let mode = match present("mode") {
            None => Mode::default(),
            Some(value) => value
                .as_str()
                .and_then(Mode::parse)
                .ok_or_else(|| stored_type_error("mode", "\"full\" or \"failed-only\"", value))?,
        };
        Ok(StartOptions {
            job_key: JobKey(job_key.to_string()),
            batch_size: number("batch_size", BATCH_SIZE, BATCH_SIZE.default)? as u32,
            sleep_ms: number("sleep_ms", SLEEP_MS, SLEEP_MS.default)? as u32,
            max_runtime_ms: number(
                "max_runtime_ms",
                MAX_RUNTIME_MS,
                MAX_RUNTIME_MS.clamp(max_runtime_default as i64),
            )? as u64,
            max_consecutive_failures: number(
                "max_consecutive_failures",
                MAX_CONSECUTIVE_FAILURES,
                MAX_CONSECUTIVE_FAILURES.default,
            )? as u32,
            concurrency: number("concurrency", CONCURRENCY, CONCURRENCY.default)? as u32,
            mode,
            retry_failed_before_cursor: flag("retry_failed_before_cursor", true)?,
            reset_cursor: flag("reset_cursor", false)?,
            dry_run,
            auto_resume: flag("auto_resume", true)?,
        })
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
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

/// A field whose effective value differs from what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub field: String,
    pub requested: String,
    pub effective: String,
}

/// What a caller sends to `start`: every field optional.
///
/// Its `Deserialize` is written by hand so that a value of the wrong type is a
/// `VALIDATION` error naming its field, not a generic parse failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StartRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runtime_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_consecutive_failures: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_failed_before_cursor: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_cursor: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
}

impl StartRequest {
    /// Applies defaults and clamps numbers into range. `max_runtime_default`
    /// is the configured UI runtime cap. Returns the effective options and
    /// every field whose value was changed.
    pub fn resolve(
        &self,
        max_runtime_default: u64,
    ) -> Result<(StartOptions, Vec<Adjustment>), AppError> {
        let dry_run = self.dry_run.unwrap_or(false);
        let job_key = JobKey::parse(self.job_key.as_deref(), dry_run)?;
        let mut adjustments = Vec::new();
        let mut number =
            |field: &str, requested: Option<i64>, bounds: Bounds, default: i64| -> i64 {
                match requested {
                    None => default,
                    Some(value) => {
                        let effective = bounds.clamp(value);
                        if effective != value {
                            adjustments.push(Adjustment {
                                field: field.to_string(),
                                requested: value.to_string(),
                                effective: effective.to_string(),
                            });
                        }
                        effective
                    }
                }
            };
        let runtime_default = MAX_RUNTIME_MS.clamp(max_runtime_default as i64);
        let options = StartOptions {
            job_key,
            batch_size: number(
                "batch_size",
                self.batch_size,
                BATCH_SIZE,
                BATCH_SIZE.default,
            ) as u32,
            sleep_ms: number("sleep_ms", self.sleep_ms, SLEEP_MS, SLEEP_MS.default) as u32,
            max_runtime_ms: number(
                "max_runtime_ms",
                self.max_runtime_ms,
                MAX_RUNTIME_MS,
                runtime_default,
            ) as u64,
            max_consecutive_failures: number(
                "max_consecutive_failures",
                self.max_consecutive_failures,
                MAX_CONSECUTIVE_FAILURES,
                MAX_CONSECUTIVE_FAILURES.default,
            ) as u32,
            concurrency: number(
                "concurrency",
                self.concurrency,
                CONCURRENCY,
                CONCURRENCY.default,
            ) as u32,
            mode: self.mode.unwrap_or_default(),
            retry_failed_before_cursor: self.retry_failed_before_cursor.unwrap_or(true),
            reset_cursor: self.reset_cursor.unwrap_or(false),
            dry_run,
            auto_resume: self.auto_resume.unwrap_or(true),
        };
        Ok((options, adjustments))
    }
}

/// Every field `start` takes.
pub const START_FIELDS: [&str; 11] = [
    "job_key",
    "batch_size",
    "sleep_ms",
    "max_runtime_ms",
    "max_consecutive_failures",
    "concurrency",
    "mode",
    "retry_failed_before_cursor",
    "reset_cursor",
    "dry_run",
    "auto_resume",
];

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

fn boolean(field: &str, value: &serde_json::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| field_error_message(field, "must be true or false"))
}

impl<'de> Deserialize<'de> for StartRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut request = StartRequest::default();
        for (field, value) in &map {
            if value.is_null() {
                continue;
            }
            let field = field.as_str();
            let result: Result<(), String> = (|| {
                match field {
                    "job_key" => {
                        request.job_key = Some(
                            value
                                .as_str()
                                .ok_or_else(|| field_error_message(field, "must be a string"))?
                                .to_string(),
                        )
                    }
                    "batch_size" => request.batch_size = Some(whole_number(field, value)?),
                    "sleep_ms" => request.sleep_ms = Some(whole_number(field, value)?),
                    "max_runtime_ms" => request.max_runtime_ms = Some(whole_number(field, value)?),
                    "max_consecutive_failures" => {
                        request.max_consecutive_failures = Some(whole_number(field, value)?)
                    }
                    "concurrency" => request.concurrency = Some(whole_number(field, value)?),
                    "mode" => {
                        request.mode =
                            Some(value.as_str().and_then(Mode::parse).ok_or_else(|| {
                                field_error_message(field, "must be \"full\" or \"failed-only\"")
                            })?)
                    }
                    "retry_failed_before_cursor" => {
                        request.retry_failed_before_cursor = Some(boolean(field, value)?)
                    }
                    "reset_cursor" => request.reset_cursor = Some(boolean(field, value)?),
                    "dry_run" => request.dry_run = Some(boolean(field, value)?),
                    "auto_resume" => request.auto_resume = Some(boolean(field, value)?),
                    other => {
                        return Err(field_error_message(
                            other,
                            &format!("unknown field; expected one of {}", START_FIELDS.join(", ")),
                        ))
                    }
                }
                Ok(())
            })();
            result.map_err(de::Error::custom)?;
        }
        Ok(request)
    }
}

/// Users skipped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub dry_run: i64,
    pub deleted: i64,
    pub no_identifiers: i64,
}

/// A job as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_key: String,
    pub status: JobStatus,
    pub dry_run: bool,
    pub mode: Mode,
    pub cursor: i64,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub scanned: i64,
    pub progress_label: String,
    pub skipped_by_reason: SkipCounts,
    pub last_error: Option<String>,
    pub pause_reason: Option<PauseReason>,
    pub stop_requested: bool,
    pub options: StartOptions,
    pub started_by: Option<String>,
    pub stopped_by: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Users handled per second in the current run, while it is active.
    pub throughput_per_sec: Option<f64>,
    /// Estimated seconds to the end of the source table, while active.
    pub eta_secs: Option<i64>,
    /// The highest source user id when the current run started: the
    /// progress bar's 100%. `None` before a run records it.
    pub source_max_id: Option<i64>,
    /// Why the row could not be read, when `status` is `unreadable`.
    pub unreadable_reason: Option<String>,
}

pub fn progress_label(scanned: i64, cursor: i64) -> String {
    format!(
        "{} scanned · cursor {}",
        thousands(scanned),
        thousands(cursor)
    )
}

/// `12340` → `12,340`.
pub fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        out.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub jobs: i64,
    pub active_runs: i64,
    pub default_batch_size: u32,
    pub ui_runtime_cap_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    pub summary: Summary,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartResponse {
    pub started: bool,
    pub running: bool,
    pub job: Job,
    /// Fields that were clamped, with what was asked and what is used.
    pub adjustments: Vec<Adjustment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopResponse {
    pub job: Job,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct FailureRecord {
    pub user_id: i64,
    pub error: String,
    pub attempts: i32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
}

/// One run of a job: who or what started it, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct RunRecord {
    pub id: i64,
    pub trigger: String,
    pub started_by: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub stopped_by: Option<String>,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub owner: String,
}

/// Proof of coverage: whether every user up to the cursor is accounted for.
/// Computed while the job is idle, when its counters and cursor hold still.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Source users with an id at or below the cursor.
    pub users_up_to_cursor: i64,
    /// Of those, the users a real run must write (not deleted, with an identifier).
    pub eligible_up_to_cursor: i64,
    /// Users written to the Identity Graph (the `processed` counter).
    pub written: i64,
    /// Unresolved per-user failures at or below the cursor.
    pub unresolved_failures: i64,
    /// Eligible users neither written nor recorded as failed, by the counters
    /// (for a dry run: users up to the cursor that were not rehearsed).
    pub unaccounted: i64,
    /// `processed + failed + skipped` equals `users_up_to_cursor`.
    pub counters_match: bool,
    /// With the built-in graph: eligible users up to the cursor that the graph
    /// does not hold and that have no unresolved failure.
    pub missing_from_graph: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: Job,
    /// `None` while a run is active, or for an unreadable row.
    pub coverage: Option<Coverage>,
    pub recent_failures: Vec<FailureRecord>,
    pub unresolved_failures: i64,
    pub runs: Vec<RunRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_keys_become_defaults() {
        assert_eq!(
            JobKey::parse(None, false).unwrap().as_str(),
            "identity-graph-users"
        );
        assert_eq!(
            JobKey::parse(Some("  "), true).unwrap().as_str(),
            "identity-graph-users:dry-run"
        );
        assert_eq!(
            JobKey::parse(Some("backfill.2024_q1:retry-2"), false)
                .unwrap()
                .as_str(),
            "backfill.2024_q1:retry-2"
        );
    }

    #[test]
    fn bad_keys_name_the_field() {
        for bad in ["UPPER", "spa ce", "semi;colon", "drop'table", "é"] {
            let error = JobKey::parse(Some(bad), false).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("job_key"), "{bad}");
        }
        assert!(JobKey::parse(Some(&"a".repeat(120)), false).is_ok());
        assert!(JobKey::parse(Some(&"a".repeat(121)), false).is_err());
    }

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
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_340), "12,340");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-48_211), "-48,211");
        assert_eq!(
            progress_label(12_340, 48_211),
            "12,340 scanned · cursor 48,211"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in JobStatus::VISIBLE.into_iter().chain([JobStatus::Archived]) {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("legacy-queued"), None);
    }
}
