//! Every SQL statement the engine runs against its own tables. Each state
//! change is a guarded update (`WHERE status = …` and, for a runner, `AND owner = me`).

use super::domain::*;
use super::sinks::SourceUser;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

const JOB_COLUMNS: &str =
    "job_key, status, dry_run, mode, options, cursor, processed, failed, skipped,
    skipped_dry_run, skipped_deleted, skipped_no_identifiers, consecutive_failures, last_error,
    pause_reason, stop_requested, started_by, stopped_by, started_at, updated_at, finished_at,
    owner, heartbeat_at, run_started_at, run_scanned, retry_position, retry_until, source_max_id";

/// A user the runner must write: not deleted, with at least one identifier.
/// Mirrors `SourceUser::identifiers` and the runner's skip rules.
pub const ELIGIBLE_USER: &str = "deleted_at IS NULL AND num_nonnulls(
    nullif(btrim(email, E' \\t\\r\\n'), ''), nullif(btrim(phone, E' \\t\\r\\n'), ''),
    nullif(btrim(signup_ip, E' \\t\\r\\n'), ''), nullif(btrim(last_login_ip, E' \\t\\r\\n'), ''),
    nullif(btrim(device_id, E' \\t\\r\\n'), '')) > 0";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub job_key: String,
    pub status: String,
    pub dry_run: bool,
    pub mode: String,
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
    pub pause_reason: Option<String>,
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
}

impl JobRow {
    pub fn status(&self) -> Option<JobStatus> {
        JobStatus::parse(&self.status)
    }

    /// The options the runner uses for this row: stored fields, defaults for
    /// missing ones. `Err` says why the row cannot be read.
    pub fn effective_options(&self, runtime_default: u64) -> Result<StartOptions, String> {
        if Mode::parse(&self.mode).is_none() {
            return Err(format!(
                "its mode {:?} is not one this version knows",
                self.mode
            ));
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
        let active = status.is_active();
        let throughput_per_sec = self.run_started_at.filter(|_| active).and_then(|since| {
            let elapsed = (Utc::now() - since).num_milliseconds() as f64 / 1000.0;
            (elapsed >= 1.0).then(|| self.run_scanned as f64 / elapsed)
        });
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
            mode: Mode::parse(&self.mode).unwrap_or_default(),
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
            pause_reason: self.pause_reason.as_deref().and_then(PauseReason::parse),
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
        }
    }
}

fn status_list(statuses: &[JobStatus]) -> Vec<String> {
    statuses.iter().map(|s| s.as_str().to_string()).collect()
}

fn pause_reasons() -> Vec<&'static str> {
    PauseReason::ALL.iter().map(|r| r.as_str()).collect()
}

pub async fn get_job(pool: &PgPool, job_key: &str) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM identity_graph_backfill_jobs WHERE job_key = $1"
    ))
    .bind(job_key)
    .fetch_optional(pool)
    .await
}

/// Visible jobs only: `archived` and statuses this version does not know stay hidden.
pub async fn list_jobs(pool: &PgPool) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM identity_graph_backfill_jobs
         WHERE status = ANY($1)
         ORDER BY (status = ANY($2)) DESC, updated_at DESC, job_key"
    ))
    .bind(status_list(&JobStatus::VISIBLE))
    .bind(status_list(&JobStatus::ACTIVE))
    .fetch_all(pool)
    .await
}

/// Claims a key for a new run under `token`, the new run's lease. Returns
/// `None` when the key is active, retired, or holds the other kind of run
/// (a job's `dry_run` never changes): the guard is the `WHERE` on the
/// conflicting row. Unknown stored option fields are kept (`||` merges).
pub async fn claim_for_start(
    tx: &mut Transaction<'_, Postgres>,
    options: &StartOptions,
    token: &str,
    actor: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let claimed: Option<JobRow> = sqlx::query_as(&format!(
        "INSERT INTO identity_graph_backfill_jobs AS j
             (job_key, status, dry_run, mode, options, owner, heartbeat_at, started_by, started_at,
              updated_at, run_started_at, source_max_id)
         VALUES ($1, $9, $2, $3, $4, $5, now(), $6, now(), now(), now(), (SELECT max(id) FROM users))
         ON CONFLICT (job_key) DO UPDATE SET
             status = EXCLUDED.status, mode = EXCLUDED.mode,
             options = CASE WHEN jsonb_typeof(j.options) = 'object' AND NOT $7
                            THEN j.options || EXCLUDED.options ELSE EXCLUDED.options END,
             owner = EXCLUDED.owner, heartbeat_at = now(),
             started_by = EXCLUDED.started_by, started_at = now(), updated_at = now(),
             run_started_at = now(), run_scanned = 0, finished_at = NULL, stopped_by = NULL,
             stop_requested = false, pause_reason = NULL, consecutive_failures = 0,
             source_max_id = EXCLUDED.source_max_id,
             retry_position = CASE WHEN $7 THEN NULL ELSE j.retry_position END,
             retry_until = CASE WHEN $7 THEN NULL ELSE j.retry_until END,
             cursor = CASE WHEN $7 THEN 0 ELSE j.cursor END,
             processed = CASE WHEN $7 THEN 0 ELSE j.processed END,
             failed = CASE WHEN $7 THEN 0 ELSE j.failed END,
             skipped = CASE WHEN $7 THEN 0 ELSE j.skipped END,
             skipped_dry_run = CASE WHEN $7 THEN 0 ELSE j.skipped_dry_run END,
             skipped_deleted = CASE WHEN $7 THEN 0 ELSE j.skipped_deleted END,
             skipped_no_identifiers = CASE WHEN $7 THEN 0 ELSE j.skipped_no_identifiers END
         WHERE j.status = ANY($8) AND j.dry_run = EXCLUDED.dry_run
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(options.job_key.as_str())
    .bind(options.dry_run)
    .bind(options.mode.as_str())
    .bind(sqlx::types::Json(options))
    .bind(token)
    .bind(actor)
    .bind(options.reset_cursor)
    .bind(status_list(&JobStatus::STARTABLE))
    .bind(JobStatus::Running.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if claimed.is_some() && options.reset_cursor {
        // A fresh pass rescans every user, so old failure rows would only be
        // counted twice; they are re-recorded if those users fail again.
        sqlx::query("DELETE FROM identity_graph_backfill_failures WHERE job_key = $1")
            .bind(options.job_key.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(claimed)
}

/// The watchdog's claim: only a paused, resumable job, and only one replica wins.
pub async fn claim_for_resume(
    tx: &mut Transaction<'_, Postgres>,
    job_key: &str,
    token: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs SET
             status = $4, owner = $2, heartbeat_at = now(), pause_reason = NULL,
             consecutive_failures = 0, updated_at = now(), run_started_at = now(), run_scanned = 0,
             finished_at = NULL, source_max_id = (SELECT max(id) FROM users)
         WHERE job_key = $1 AND {}
         RETURNING {JOB_COLUMNS}",
        resumable("$3", "$5")
    ))
    .bind(job_key)
    .bind(token)
    .bind(pause_reasons())
    .bind(JobStatus::Running.as_str())
    .bind(JobStatus::Paused.as_str())
    .fetch_optional(&mut **tx)
    .await
}

/// What the watchdog may resume, given the placeholders that hold the
/// resumable pause reasons and the status 'paused'.
fn resumable(reasons: &str, paused: &str) -> String {
    format!(
        "status = {paused} AND pause_reason = ANY({reasons}) AND NOT dry_run
         AND NOT stop_requested
         AND (jsonb_typeof(options) <> 'object'
              OR coalesce(options -> 'auto_resume', 'true'::jsonb) <> 'false'::jsonb)"
    )
}

/// Opens the run's audit row. Any run row of this key still open belonged to
/// a run that can no longer write (its lease is gone), so it is closed here:
/// at most one run row per key is ever open.
pub async fn insert_run(
    tx: &mut Transaction<'_, Postgres>,
    job_key: &str,
    trigger: &str,
    actor: Option<&str>,
    token: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "UPDATE identity_graph_backfill_runs SET ended_at = now(), outcome = 'lease lost'
         WHERE job_key = $1 AND ended_at IS NULL",
    )
    .bind(job_key)
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO identity_graph_backfill_runs (job_key, trigger, started_by, owner)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(job_key)
    .bind(trigger)
    .bind(actor)
    .bind(token)
    .fetch_one(&mut **tx)
    .await
}

/// Closes a run row whose run lost its lease, if nobody closed it yet.
pub async fn close_run_after_lost_lease(pool: &PgPool, run_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_graph_backfill_runs SET ended_at = now(), outcome = 'lease lost'
         WHERE id = $1 AND ended_at IS NULL",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .map(drop)
}

pub async fn resumable_job_keys(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT job_key FROM identity_graph_backfill_jobs WHERE {} ORDER BY updated_at",
        resumable("$1", "$2")
    ))
    .bind(pause_reasons())
    .bind(JobStatus::Paused.as_str())
    .fetch_all(pool)
    .await
}

/// A stop request: `running → stopping`, `paused → stopped` (nobody is running it).
pub async fn request_stop(
    pool: &PgPool,
    job_key: &str,
    actor: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs SET
             stop_requested = true, stopped_by = $2, updated_at = now(),
             status = CASE status WHEN 'paused' THEN 'stopped' ELSE 'stopping' END,
             pause_reason = CASE status WHEN 'paused' THEN NULL ELSE pause_reason END,
             finished_at = CASE status WHEN 'paused' THEN now() ELSE finished_at END
         WHERE job_key = $1 AND status IN ('running', 'stopping', 'paused')
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(job_key)
    .bind(actor)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        sqlx::query(
            "UPDATE identity_graph_backfill_runs SET stopped_by = $2, stopped_at = now()
             WHERE id = (SELECT max(id) FROM identity_graph_backfill_runs WHERE job_key = $1)
               AND stopped_by IS NULL",
        )
        .bind(job_key)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Renews the run's lease. `None` means the run no longer owns the job.
pub async fn heartbeat(
    pool: &PgPool,
    job_key: &str,
    token: &str,
    renew: bool,
) -> Result<Option<bool>, sqlx::Error> {
    if renew {
        sqlx::query_scalar(
            "UPDATE identity_graph_backfill_jobs SET heartbeat_at = now()
             WHERE job_key = $1 AND owner = $2 AND status IN ('running', 'stopping')
             RETURNING stop_requested",
        )
        .bind(job_key)
        .bind(token)
        .fetch_optional(pool)
        .await
    } else {
        sqlx::query_scalar(
            "SELECT stop_requested FROM identity_graph_backfill_jobs
             WHERE job_key = $1 AND owner = $2 AND status IN ('running', 'stopping')",
        )
        .bind(job_key)
        .bind(token)
        .fetch_optional(pool)
        .await
    }
}

/// Jobs whose run stopped heartbeating: `running → paused (interrupted)`,
/// `stopping → stopped`, and the run's audit row is closed. Returns the keys
/// it interrupted.
pub async fn interrupt_expired_leases(
    pool: &PgPool,
    ttl: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH expired AS (
             SELECT job_key, owner, status FROM identity_graph_backfill_jobs
             WHERE status IN ('running', 'stopping')
               AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1))
             FOR UPDATE SKIP LOCKED),
         interrupted AS (
             UPDATE identity_graph_backfill_jobs j SET
                 status = CASE e.status WHEN 'running' THEN 'paused' ELSE 'stopped' END,
                 pause_reason = CASE e.status WHEN 'running' THEN 'interrupted' ELSE NULL END,
                 finished_at = CASE e.status WHEN 'stopping' THEN now() ELSE j.finished_at END,
                 last_error = CASE e.status WHEN 'running'
                     THEN 'the run stopped renewing its lease (its replica died or lost the database); the watchdog resumes it'
                     ELSE j.last_error END,
                 owner = NULL, heartbeat_at = NULL, updated_at = now()
             FROM expired e WHERE j.job_key = e.job_key
             RETURNING j.job_key),
         closed AS (
             UPDATE identity_graph_backfill_runs r SET ended_at = now(),
                 outcome = CASE e.status WHEN 'running' THEN 'paused (interrupted)' ELSE 'stopped' END
             FROM expired e WHERE r.job_key = e.job_key AND r.owner = e.owner AND r.ended_at IS NULL)
         SELECT job_key FROM interrupted",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// The next batch after the cursor, in id order (the keyset scan).
pub async fn users_after(
    pool: &PgPool,
    cursor: i64,
    limit: u32,
) -> Result<Vec<SourceUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, phone, created_at, signup_ip, last_login_ip, device_id, deleted_at
         FROM users WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(cursor)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Users with an unresolved failure on this job, after `after_user_id` and at
/// most `up_to`.
pub async fn failed_users_after(
    pool: &PgPool,
    job_key: &str,
    after_user_id: i64,
    up_to: i64,
    limit: u32,
) -> Result<Vec<SourceUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.email, u.phone, u.created_at, u.signup_ip, u.last_login_ip, u.device_id, u.deleted_at
         FROM identity_graph_backfill_failures f
         JOIN users u ON u.id = f.user_id
         WHERE f.job_key = $1 AND f.resolved_at IS NULL AND f.user_id > $2 AND f.user_id <= $3
         ORDER BY f.user_id LIMIT $4",
    )
    .bind(job_key)
    .bind(after_user_id)
    .bind(up_to)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Where the retry-old-failures pass stands, as the job row keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPass {
    /// The last failed user id this pass handled.
    pub position: i64,
    /// The pass covers failures at or below this id (the cursor when it began).
    pub until: i64,
}

/// How a checkpoint changes the saved retry pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryPassUpdate {
    #[default]
    Unchanged,
    At(RetryPass),
    /// The pass reached its end; the next run begins a new one.
    Done,
}

/// Outcomes of one run, for its audit row. Never negative.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunCounts {
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
}

/// What one batch changed, written in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Checkpoint {
    pub cursor: Option<i64>,
    pub retry_pass: RetryPassUpdate,
    /// Changes to the job's counters. `failed` goes down when a recorded
    /// failure is retried, so the counters keep counting distinct users.
    pub processed: i64,
    pub failed: i64,
    pub skipped: SkipCounts,
    pub run: RunCounts,
    pub scanned: i64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub failures: Vec<(i64, String)>,
    pub resolved: Vec<i64>,
}

/// Writes a batch's checkpoint, guarded by the run's lease token. `false`
/// means the lease was lost and nothing was written.
pub async fn checkpoint(
    pool: &PgPool,
    job_key: &str,
    token: &str,
    run_id: i64,
    batch: &Checkpoint,
) -> Result<bool, sqlx::Error> {
    let skipped_total =
        batch.skipped.dry_run + batch.skipped.deleted + batch.skipped.no_identifiers;
    let (set_retry, retry_position, retry_until) = match batch.retry_pass {
        RetryPassUpdate::Unchanged => (false, None, None),
        RetryPassUpdate::At(pass) => (true, Some(pass.position), Some(pass.until)),
        RetryPassUpdate::Done => (true, None, None),
    };
    // The job row and the run row move together in one statement; only a
    // batch with failure rows to write needs a transaction around more.
    let counters = sqlx::query_scalar::<_, i64>(
        "WITH job AS (
             UPDATE identity_graph_backfill_jobs SET
                 cursor = coalesce($3, cursor),
                 processed = processed + $4, failed = failed + $5, skipped = skipped + $6,
                 skipped_dry_run = skipped_dry_run + $7, skipped_deleted = skipped_deleted + $8,
                 skipped_no_identifiers = skipped_no_identifiers + $9,
                 consecutive_failures = $10, last_error = coalesce($11, last_error),
                 run_scanned = run_scanned + $12, heartbeat_at = now(), updated_at = now(),
                 retry_position = CASE WHEN $17 THEN $18 ELSE retry_position END,
                 retry_until = CASE WHEN $17 THEN $19 ELSE retry_until END
             WHERE job_key = $1 AND owner = $2 AND status IN ('running', 'stopping')
             RETURNING job_key),
         run AS (
             UPDATE identity_graph_backfill_runs SET processed = processed + $14,
                 failed = failed + $15, skipped = skipped + $16
             WHERE id = $13 AND EXISTS (SELECT 1 FROM job))
         SELECT count(*) FROM job",
    )
    .bind(job_key)
    .bind(token)
    .bind(batch.cursor)
    .bind(batch.processed)
    .bind(batch.failed)
    .bind(skipped_total)
    .bind(batch.skipped.dry_run)
    .bind(batch.skipped.deleted)
    .bind(batch.skipped.no_identifiers)
    .bind(batch.consecutive_failures as i32)
    .bind(&batch.last_error)
    .bind(batch.scanned)
    .bind(run_id)
    .bind(batch.run.processed)
    .bind(batch.run.failed)
    .bind(batch.run.skipped)
    .bind(set_retry)
    .bind(retry_position)
    .bind(retry_until);
    if batch.failures.is_empty() && batch.resolved.is_empty() {
        return Ok(counters.fetch_one(pool).await? == 1);
    }
    let mut tx = pool.begin().await?;
    if counters.fetch_one(&mut *tx).await? == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if !batch.failures.is_empty() {
        let (ids, errors): (Vec<i64>, Vec<String>) = batch.failures.iter().cloned().unzip();
        sqlx::query(
            "INSERT INTO identity_graph_backfill_failures (job_key, user_id, error)
             SELECT $1, user_id, error FROM unnest($2::bigint[], $3::text[]) AS t(user_id, error)
             ON CONFLICT (job_key, user_id) DO UPDATE SET
                 error = EXCLUDED.error, last_failed_at = now(), resolved_at = NULL,
                 attempts = identity_graph_backfill_failures.attempts + 1",
        )
        .bind(job_key)
        .bind(&ids)
        .bind(&errors)
        .execute(&mut *tx)
        .await?;
    }
    if !batch.resolved.is_empty() {
        sqlx::query(
            "UPDATE identity_graph_backfill_failures SET resolved_at = now()
             WHERE job_key = $1 AND user_id = ANY($2) AND resolved_at IS NULL",
        )
        .bind(job_key)
        .bind(&batch.resolved)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// How a run ended, as it is written to the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    /// Paused; `error`, when set, becomes the job's `last_error` (why the run
    /// was interrupted).
    Paused {
        reason: PauseReason,
        error: Option<String>,
    },
    Stopped,
    Failed(String),
}

impl RunEnd {
    pub fn paused(reason: PauseReason) -> Self {
        RunEnd::Paused {
            reason,
            error: None,
        }
    }
}

/// Releases the lease with the run's final status. A pending stop wins over
/// every other ending. Returns the status written, or `None` if the lease was lost.
pub async fn finish_run(
    pool: &PgPool,
    job_key: &str,
    token: &str,
    run_id: i64,
    end: &RunEnd,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let (status, reason, error) = match end {
        RunEnd::Completed => (JobStatus::Completed, None, None),
        RunEnd::Paused { reason, error } => {
            (JobStatus::Paused, Some(reason.as_str()), error.as_deref())
        }
        RunEnd::Stopped => (JobStatus::Stopped, None, None),
        RunEnd::Failed(error) => (JobStatus::Failed, None, Some(error.as_str())),
    };
    let mut tx = pool.begin().await?;
    let written: Option<String> = sqlx::query_scalar(
        "UPDATE identity_graph_backfill_jobs SET
             status = CASE WHEN stop_requested OR status = 'stopping' THEN 'stopped' ELSE $3 END,
             pause_reason = CASE WHEN stop_requested OR status = 'stopping' THEN NULL ELSE $4 END,
             finished_at = CASE WHEN (stop_requested OR status = 'stopping' OR $3 <> 'paused') THEN now() ELSE NULL END,
             last_error = coalesce($5, last_error),
             owner = NULL, heartbeat_at = NULL, updated_at = now()
         WHERE job_key = $1 AND owner = $2 AND status IN ('running', 'stopping')
         RETURNING status",
    )
    .bind(job_key)
    .bind(token)
    .bind(status.as_str())
    .bind(reason)
    .bind(error)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(final_status) = &written {
        let outcome = match (final_status.as_str(), reason) {
            ("paused", Some(reason)) => format!("paused ({reason})"),
            (other, _) => other.to_string(),
        };
        sqlx::query(
            "UPDATE identity_graph_backfill_runs SET ended_at = now(), outcome = $2 WHERE id = $1",
        )
        .bind(run_id)
        .bind(outcome)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(written.as_deref().and_then(JobStatus::parse))
}

/// The coverage check of an idle job (see `Coverage`).
pub async fn coverage(
    pool: &PgPool,
    row: &JobRow,
    with_built_in_graph: bool,
) -> Result<Coverage, sqlx::Error> {
    let (users_up_to_cursor, eligible_up_to_cursor, unresolved_failures): (i64, i64, i64) =
        sqlx::query_as(&format!(
            "SELECT
                 (SELECT count(*) FROM users WHERE id <= $2),
                 (SELECT count(*) FROM users WHERE id <= $2 AND {ELIGIBLE_USER}),
                 (SELECT count(*) FROM identity_graph_backfill_failures
                  WHERE job_key = $1 AND resolved_at IS NULL AND user_id <= $2)"
        ))
        .bind(&row.job_key)
        .bind(row.cursor)
        .fetch_one(pool)
        .await?;
    let missing_from_graph = if with_built_in_graph && !row.dry_run {
        Some(
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM users u
                 WHERE u.id <= $2 AND {ELIGIBLE_USER}
                   AND NOT EXISTS (SELECT 1 FROM identity_graph_users g WHERE g.user_id = u.id)
                   AND NOT EXISTS (SELECT 1 FROM identity_graph_backfill_failures f
                                   WHERE f.job_key = $1 AND f.user_id = u.id AND f.resolved_at IS NULL)"
            ))
            .bind(&row.job_key)
            .bind(row.cursor)
            .fetch_one(pool)
            .await?,
        )
    } else {
        None
    };
    let unaccounted = if row.dry_run {
        users_up_to_cursor - row.skipped_dry_run
    } else {
        eligible_up_to_cursor - row.processed - unresolved_failures
    };
    Ok(Coverage {
        users_up_to_cursor,
        eligible_up_to_cursor,
        written: if row.dry_run { 0 } else { row.processed },
        unresolved_failures,
        unaccounted,
        counters_match: row.processed + row.failed + row.skipped == users_up_to_cursor,
        missing_from_graph,
    })
}

pub async fn recent_failures(
    pool: &PgPool,
    job_key: &str,
    limit: i64,
) -> Result<Vec<FailureRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, error, attempts, first_failed_at, last_failed_at
         FROM identity_graph_backfill_failures
         WHERE job_key = $1 AND resolved_at IS NULL
         ORDER BY last_failed_at DESC, user_id DESC LIMIT $2",
    )
    .bind(job_key)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn unresolved_failure_count(pool: &PgPool, job_key: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = $1 AND resolved_at IS NULL",
    )
    .bind(job_key)
    .fetch_one(pool)
    .await
}

pub async fn recent_runs(
    pool: &PgPool,
    job_key: &str,
    limit: i64,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, trigger, started_by, started_at, ended_at, outcome, stopped_by, processed, failed, skipped, owner
         FROM identity_graph_backfill_runs WHERE job_key = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(job_key)
    .bind(limit)
    .fetch_all(pool)
    .await
}
