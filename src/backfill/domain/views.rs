//! The shapes the API returns: jobs, their details, the list and the
//! answers to start and stop.

use super::failures::{FailureClassCount, FailureRecord};
use super::notifications::NotificationRecord;
use super::options::{Adjustment, StartOptions};
use super::status::{JobStatus, Mode, PauseReason};
use super::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// Users skipped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub dry_run: i64,
    pub deleted: i64,
    pub no_identifiers: i64,
}

/// A dry run's users, by what a real run would do with the same users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WouldCounts {
    pub write: i64,
    pub skip_deleted: i64,
    pub skip_no_identifiers: i64,
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
    pub started_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Users handled per second in the current run, while it is active.
    pub throughput_per_sec: Option<f64>,
    /// Estimated seconds to the end of the source table, while active.
    pub eta_secs: Option<i64>,
    /// The highest source user id when the current run started: the
    /// progress bar's 100%. `None` before a run records it.
    pub source_max_id: Option<i64>,
    /// Why the row could not be read, when `status` is `unreadable`.
    pub unreadable_reason: Option<String>,
    /// Source values that normalization dropped, by `"kind: reason"` (for
    /// example `"email: not an address"`), over the job's first reads.
    #[serde(default)]
    pub dropped_identifiers: std::collections::BTreeMap<String, i64>,
    /// The Identity Graph the job is bound to: `postgres`, or `http <url>`.
    /// `None` for a dry run, or a job no real run has started yet.
    #[serde(default)]
    pub graph: Option<String>,
    /// The run's brake as its replica last reported it (about once a
    /// second), while a run is active.
    #[serde(default)]
    pub throttle: Option<ThrottleView>,
    /// A dry run's users a real run would write (`None` on a real job).
    #[serde(default)]
    pub would_write: Option<i64>,
    /// A dry run's users a real run would skip as deleted.
    #[serde(default)]
    pub would_skip_deleted: Option<i64>,
    /// A dry run's users a real run would skip for having no identifier.
    #[serde(default)]
    pub would_skip_no_identifiers: Option<i64>,
    /// The job's latest run (with its duration and average rate once it
    /// ended), in `list` and `job` answers.
    #[serde(default)]
    pub last_run: Option<RunRecord>,
    /// The latest run's chart, oldest first: in `job` answers, and in
    /// `list` answers for active jobs.
    #[serde(default)]
    pub samples: Vec<RunSample>,
}

impl Job {
    /// What a real run would do with a dry run's users; `None` on a real job.
    pub fn would(&self) -> Option<WouldCounts> {
        Some(WouldCounts {
            write: self.would_write?,
            skip_deleted: self.would_skip_deleted?,
            skip_no_identifiers: self.would_skip_no_identifiers?,
        })
    }
}

/// One point of a run's chart: the rate and the graph's p95 at an instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct RunSample {
    pub run_id: i64,
    pub sampled_at: Timestamp,
    /// Users handled per second.
    pub rate: f64,
    /// The Identity Graph's p95 answer time; `None` when the run did not
    /// call it (a dry run, or a wait).
    pub latency_p95_ms: Option<f64>,
}

/// What holds a run back, when something does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeldBy {
    /// The graph answered 429 (or 503 with `Retry-After`): every slot waits.
    GraphThrottled,
    /// A streak of timeouts and 5xx: every slot backs off.
    GraphErrors,
    /// `IDENTITY_GRAPH_THROTTLE_URL` answers anything but 2xx.
    ThrottleUrl,
    /// Adaptive mode keeps fewer users in flight: the graph's p95 is near
    /// or over the target.
    Latency,
    /// Sends wait for their turn under `max_rate`.
    MaxRate,
}

impl HeldBy {
    pub fn describe(self) -> &'static str {
        match self {
            HeldBy::GraphThrottled => "the Identity Graph's 429 / 503 (Retry-After)",
            HeldBy::GraphErrors => "a streak of timeouts and 5xx from the Identity Graph",
            HeldBy::ThrottleUrl => "the throttle URL",
            HeldBy::Latency => "the graph's latency, over or near the target",
            HeldBy::MaxRate => "max rate",
        }
    }
}

/// A running job's brake: how fast it goes, what limits it, and how the
/// Identity Graph answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleView {
    /// Users written per second over the last few seconds.
    pub rate: f64,
    /// 0: no limit.
    pub max_rate: u32,
    pub in_flight: u32,
    /// `concurrency`, or less in adaptive mode.
    pub in_flight_limit: u32,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub held_by: Option<HeldBy>,
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

/// One run of a job: who or what started it, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct RunRecord {
    pub id: i64,
    /// 1 for the job's first run, 2 for its second, …
    pub run_number: i32,
    pub trigger: String,
    pub started_by: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub outcome: Option<String>,
    pub stopped_by: Option<String>,
    /// When `stopped_by` asked the run to stop.
    #[serde(default)]
    pub stopped_at: Option<Timestamp>,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub owner: String,
    /// The options the run started with; `None` for runs recorded before
    /// runs kept them, or written by a release whose options this one
    /// cannot read.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", sqlx(skip))]
    pub options: Option<StartOptions>,
}

impl RunRecord {
    pub fn scanned(&self) -> i64 {
        self.processed + self.failed + self.skipped
    }

    /// Seconds from start to end, once the run ended.
    pub fn duration_secs(&self) -> Option<f64> {
        let ended = self.ended_at?;
        let millis = ended.timestamp_millis() - self.started_at.timestamp_millis();
        Some(millis.max(0) as f64 / 1000.0)
    }

    /// Users handled per second over the whole run, once it ended.
    pub fn average_rate(&self) -> Option<f64> {
        let secs = self.duration_secs()?;
        Some(if secs > 0.0 {
            self.scanned() as f64 / secs
        } else {
            0.0
        })
    }
}

/// Proof of coverage: whether every user up to the cursor is accounted for.
/// Computed while the job is idle, when its counters and cursor hold still:
/// once when a run ends, and on `check_coverage`; the `job` answer carries
/// the stored result.
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
    /// Users at or below the cursor that arrived after the scan passed their
    /// id (a late commit, an import with a low id); counted in
    /// `users_up_to_cursor`, and caught up by the job's next run.
    #[serde(default)]
    pub late_arrivals: i64,
    /// When the check read the source: the figures are as of this time.
    #[serde(default)]
    pub checked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: Job,
    /// The stored coverage check (see `Coverage::checked_at`). `None` while
    /// a run is active (the job's live figures are its own), for an
    /// unreadable row, and before the first check finished.
    pub coverage: Option<Coverage>,
    /// A coverage check of this job is running on the replica that answered.
    #[serde(default)]
    pub coverage_checking: bool,
    /// Why the last coverage check did not finish, when it did not.
    #[serde(default)]
    pub coverage_error: Option<String>,
    pub recent_failures: Vec<FailureRecord>,
    pub unresolved_failures: i64,
    /// Unresolved failures by class, largest first.
    #[serde(default)]
    pub failure_classes: Vec<FailureClassCount>,
    /// The latest runs, newest first: [`super::HISTORY_RUNS`], and one more
    /// when there are more (see [`super::job_history`]).
    pub runs: Vec<RunRecord>,
    /// The latest changes `tune` made to the job's knobs, newest first
    /// ([`super::HISTORY_TUNINGS`], and one more when there are more).
    #[serde(default)]
    pub tunings: Vec<TuningRecord>,
    /// The job's latest notifications, newest first
    /// ([`super::HISTORY_NOTIFICATIONS`], and one more when there are more).
    #[serde(default)]
    pub notifications: Vec<NotificationRecord>,
    /// Whether the replica that answered has `NOTIFY_WEBHOOK_URL` set.
    #[serde(default)]
    pub webhook_configured: bool,
}

impl JobDetail {
    /// Runs, stops, pauses, resumes, tunes and notifications in one
    /// timeline, newest first.
    pub fn history(&self) -> super::History {
        super::job_history(
            &self.runs,
            &self.tunings,
            &self.notifications,
            self.webhook_configured,
        )
    }
}

/// What a caller sends to `tune`: the job, and any of the knobs a running
/// job takes. Values are checked and clamped like `start`'s; a value of the
/// wrong type is a `VALIDATION` error naming its field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuneRequest {
    pub job_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneResponse {
    pub job: Job,
    /// Values that were clamped into range.
    pub adjustments: Vec<Adjustment>,
    /// What changed (a value equal to the current one records nothing).
    pub changes: Vec<TuningRecord>,
}

/// One knob changed by `tune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct TuningRecord {
    pub tuned_by: String,
    pub tuned_at: Timestamp,
    pub field: String,
    pub old_value: i64,
    pub new_value: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
