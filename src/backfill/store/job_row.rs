//! A job's row as stored, and the API's view of it.

use crate::backfill::domain::*;
use chrono::{DateTime, Utc};

/// The columns of `identity_graph_backfill_jobs`, in `JobRow`'s order.
pub(super) const JOB_COLUMNS: &str =
    "job_key, status, dry_run, mode, options, cursor, processed, failed, skipped,
    skipped_dry_run, skipped_deleted, skipped_no_identifiers, consecutive_failures, last_error,
    pause_reason, stop_requested, started_by, stopped_by, started_at, updated_at, finished_at,
    owner, heartbeat_at, run_started_at, run_scanned, retry_position, retry_until, source_max_id,
    dropped_identifiers, graph, throttle, coverage, coverage_checked_at, coverage_error,
    would_write, would_skip_deleted, would_skip_no_identifiers";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_key: String,
    pub status: Stored<JobStatus>,
    pub dry_run: bool,
    pub mode: Stored<Mode>,
    /// Read as plain JSON: rows written by other releases must still load.
    pub options: sqlx::types::Json<serde_json::Value>,
    pub cursor: i64,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub skipped_dry_run: i64,
    pub skipped_deleted: i64,
    pub skipped_no_identifiers: i64,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub pause_reason: Option<Stored<PauseReason>>,
    pub stop_requested: bool,
    pub started_by: Option<String>,
    pub stopped_by: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub run_started_at: Option<DateTime<Utc>>,
    pub run_scanned: i64,
    pub retry_position: Option<i64>,
    pub retry_until: Option<i64>,
    pub source_max_id: Option<i64>,
    /// `"kind: reason"` → values normalization dropped.
    pub dropped_identifiers: sqlx::types::Json<std::collections::BTreeMap<String, i64>>,
    /// The Identity Graph the job writes to (`sinks::GraphBinding`).
    pub graph: Option<String>,
    /// The run's brake as its heartbeat last wrote it (`ThrottleView`).
    pub throttle: Option<sqlx::types::Json<serde_json::Value>>,
    /// The last coverage check's result (`Coverage`), as plain JSON: a
    /// shape this release cannot read shows as not checked.
    pub coverage: Option<sqlx::types::Json<serde_json::Value>>,
    /// When that check read the source.
    pub coverage_checked_at: Option<DateTime<Utc>>,
    /// Why the last check did not finish, if it did not.
    pub coverage_error: Option<String>,
    pub would_write: i64,
    pub would_skip_deleted: i64,
    pub would_skip_no_identifiers: i64,
}

impl JobRow {
    /// `None` for a status this version does not know (a retired row).
    pub fn status(&self) -> Option<JobStatus> {
        self.status.known()
    }

    /// Why the job paused, when it did and this version knows the reason.
    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.pause_reason.as_ref().and_then(Stored::known)
    }

    /// The options the runner uses for this row: stored fields, defaults for
    /// missing ones. `Err` says why the row cannot be read.
    pub fn effective_options(&self, runtime_default: u64) -> Result<StartOptions, String> {
        if let Stored::Unknown(mode) = &self.mode {
            return Err(format!("its mode {mode:?} is not one this version knows"));
        }
        StartOptions::from_stored(
            &self.options.0,
            &self.job_key,
            self.dry_run,
            runtime_default,
        )
    }

    /// The API shape. `runtime_default` fills a missing `max_runtime_ms`
    /// exactly as the runner would.
    pub fn to_job(&self, runtime_default: u64) -> Job {
        let readable = self.effective_options(runtime_default);
        let status = match (&readable, self.status()) {
            (_, Some(status)) if status.is_active() => status,
            (Err(_), _) => JobStatus::Unreadable,
            (Ok(_), status) => status.unwrap_or(JobStatus::Archived),
        };
        let options = readable.as_ref().cloned().unwrap_or_else(|_| {
            StartOptions::from_stored(
                &serde_json::Value::Object(Default::default()),
                &self.job_key,
                self.dry_run,
                runtime_default,
            )
            .expect("empty options read as defaults")
        });
        let scanned = self.processed + self.failed + self.skipped;
        let throughput_per_sec = self.throughput_per_sec(status);
        let eta_secs = match (throughput_per_sec, self.source_max_id) {
            (Some(rate), Some(max_id)) if rate > 0.0 && options.mode == Mode::Full => {
                Some(((max_id - self.cursor).max(0) as f64 / rate).ceil() as i64)
            }
            _ => None,
        };
        Job {
            job_key: self.job_key.clone(),
            status,
            dry_run: self.dry_run,
            mode: self.mode.known().unwrap_or_default(),
            cursor: self.cursor,
            processed: self.processed,
            failed: self.failed,
            skipped: self.skipped,
            scanned,
            progress_label: progress_label(scanned, self.cursor),
            skipped_by_reason: SkipCounts {
                dry_run: self.skipped_dry_run,
                deleted: self.skipped_deleted,
                no_identifiers: self.skipped_no_identifiers,
            },
            last_error: self.last_error.clone(),
            pause_reason: self.pause_reason(),
            stop_requested: self.stop_requested,
            options,
            started_by: self.started_by.clone(),
            stopped_by: self.stopped_by.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            throughput_per_sec,
            eta_secs,
            source_max_id: self.source_max_id,
            unreadable_reason: readable.err(),
            dropped_identifiers: self.dropped_identifiers.0.clone(),
            graph: self.graph.clone(),
            // Another release's shape reads as none rather than breaking the page.
            throttle: self
                .throttle
                .as_ref()
                .filter(|_| status.is_active())
                .and_then(|json| serde_json::from_value(json.0.clone()).ok()),
            would_write: self.dry_run.then_some(self.would_write),
            would_skip_deleted: self.dry_run.then_some(self.would_skip_deleted),
            would_skip_no_identifiers: self.dry_run.then_some(self.would_skip_no_identifiers),
            last_run: None,
            samples: Vec::new(),
        }
    }

    /// The stored coverage check, with its `checked_at`; `None` before the
    /// first check finished.
    pub fn stored_coverage(&self) -> Option<Coverage> {
        let mut coverage: Coverage =
            serde_json::from_value(self.coverage.as_ref()?.0.clone()).ok()?;
        coverage.checked_at = self.coverage_checked_at;
        Some(coverage)
    }

    /// Users handled per second by the current run, while it is active and
    /// has run for at least a second.
    fn throughput_per_sec(&self, status: JobStatus) -> Option<f64> {
        let since = self.run_started_at.filter(|_| status.is_active())?;
        let elapsed = (Utc::now() - since).num_milliseconds() as f64 / 1000.0;
        (elapsed >= 1.0).then(|| self.run_scanned as f64 / elapsed)
    }
}
