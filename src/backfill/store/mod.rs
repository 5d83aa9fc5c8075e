//! Every SQL statement the engine runs against its own tables. Each state
//! change is a guarded update (`WHERE status = …` and, for a runner, `AND owner = me`).
//! Statuses are bound as parameters (`domain::status` maps them to text).

use super::domain::*;
use super::source::SOURCE_MAX_ID;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::BTreeMap;
use std::time::Duration;

mod coverage;
mod failures;
mod job_row;
mod notifications;

pub use coverage::{check_and_store, coverage, store_check_error, Checked};
pub use failures::{failure_classes, failures_page, stream_failures};
pub use job_row::JobRow;
use job_row::JOB_COLUMNS;
pub use notifications::{
    claim_due, mark_attempt_failed, mark_delivered, recent_notifications, PendingNotification,
};

/// A transaction for the console's queries: every statement in it
/// is cancelled after `statement_timeout` (`CONSOLE_STATEMENT_TIMEOUT_MS`),
/// so a slow query answers an error instead of holding a connection.
pub async fn bounded(
    pool: &PgPool,
    statement_timeout: Duration,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_statement_timeout(&mut tx, statement_timeout).await?;
    Ok(tx)
}

/// `SET LOCAL statement_timeout` for the rest of `tx`.
pub async fn set_statement_timeout(
    tx: &mut Transaction<'_, Postgres>,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", statement_timeout.as_millis()))
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Whether `error` is Postgres cancelling a statement for its timeout.
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// The pause reasons the watchdog resumes: all of them.
const RESUMABLE_REASONS: &[PauseReason] = PauseReason::STORED;

/// What a console statement's placeholders take, in order (for the
/// `EXPLAIN` test, which binds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleParam {
    JobKey,
    Limit,
    VisibleStatuses,
    ActiveStatuses,
}

/// A statement the console's polled answers run.
#[derive(Debug, Clone)]
pub struct ConsoleStatement {
    pub name: &'static str,
    pub sql: String,
    pub params: &'static [ConsoleParam],
}

/// Every statement `list`, `job` and `check_coverage` run on the console's
/// pool (the coverage check itself runs on the engine's), each with
/// an index that matches its `WHERE` and `ORDER BY`; `tests/it/scale.rs`
/// checks their plans against a million users.
pub fn console_statements() -> Vec<ConsoleStatement> {
    use ConsoleParam::*;
    vec![
        ConsoleStatement {
            name: "get_job",
            sql: get_job_sql(),
            params: &[JobKey],
        },
        ConsoleStatement {
            name: "list_jobs",
            sql: list_jobs_sql(),
            params: &[VisibleStatuses, ActiveStatuses],
        },
        ConsoleStatement {
            name: "recent_failures",
            sql: RECENT_FAILURES.into(),
            params: &[JobKey, Limit],
        },
        ConsoleStatement {
            name: "unresolved_failure_count",
            sql: UNRESOLVED_FAILURE_COUNT.into(),
            params: &[JobKey],
        },
        ConsoleStatement {
            name: "recent_runs",
            sql: RECENT_RUNS.into(),
            params: &[JobKey, Limit],
        },
        ConsoleStatement {
            name: "recent_tunings",
            sql: RECENT_TUNINGS.into(),
            params: &[JobKey, Limit],
        },
    ]
}

fn get_job_sql() -> String {
    format!("SELECT {JOB_COLUMNS} FROM identity_graph_backfill_jobs WHERE job_key = $1")
}

fn list_jobs_sql() -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM identity_graph_backfill_jobs
         WHERE status = ANY($1)
         ORDER BY (status = ANY($2)) DESC, updated_at DESC, job_key"
    )
}

pub async fn get_job(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&get_job_sql())
        .bind(job_key)
        .fetch_optional(db)
        .await
}

/// Visible jobs only: `archived` and statuses this version does not know stay hidden.
pub async fn list_jobs(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(&list_jobs_sql())
        .bind(&JobStatus::VISIBLE[..])
        .bind(&JobStatus::ACTIVE[..])
        .fetch_all(db)
        .await
}

/// Claims a key for a new run under `token`, the new run's lease. Returns
/// `None` when the key is active, retired, or holds the other kind of run
/// (a job's `dry_run` never changes): the guard is the `WHERE` on the
/// conflicting row. Unknown stored option fields are kept (`||` merges).
///
/// `graph` binds the job to the Identity Graph that writes it (`None` for a
/// dry run). A job bound to another graph is refused, unless `reset_cursor`
/// starts a fresh pass, which rebinds it.
pub async fn claim_for_start(
    tx: &mut Transaction<'_, Postgres>,
    options: &StartOptions,
    token: &str,
    actor: &str,
    graph: Option<&str>,
) -> Result<Option<JobRow>, sqlx::Error> {
    let claimed: Option<JobRow> = sqlx::query_as(&format!(
        "INSERT INTO identity_graph_backfill_jobs AS j
             (job_key, status, dry_run, mode, options, owner, heartbeat_at, started_by, started_at,
              updated_at, run_started_at, source_max_id, graph)
         VALUES ($1, $9, $2, $3, $4, $5, now(), $6, now(), now(), now(), {SOURCE_MAX_ID}, $10)
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
             skipped_no_identifiers = CASE WHEN $7 THEN 0 ELSE j.skipped_no_identifiers END,
             would_write = CASE WHEN $7 THEN 0 ELSE j.would_write END,
             would_skip_deleted = CASE WHEN $7 THEN 0 ELSE j.would_skip_deleted END,
             would_skip_no_identifiers = CASE WHEN $7 THEN 0 ELSE j.would_skip_no_identifiers END,
             dropped_identifiers = CASE WHEN $7 THEN '{{}}'::jsonb ELSE j.dropped_identifiers END,
             graph = CASE WHEN $7 OR j.graph IS NULL THEN EXCLUDED.graph ELSE j.graph END
         WHERE j.status = ANY($8) AND j.dry_run = EXCLUDED.dry_run
           AND ($7 OR j.graph IS NULL OR j.graph IS NOT DISTINCT FROM EXCLUDED.graph)
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(options.job_key.as_str())
    .bind(options.dry_run)
    .bind(options.mode)
    .bind(sqlx::types::Json(options))
    .bind(token)
    .bind(actor)
    .bind(options.reset_cursor)
    .bind(&JobStatus::STARTABLE[..])
    .bind(JobStatus::Running)
    .bind(graph)
    .fetch_optional(&mut **tx)
    .await?;
    if claimed.is_some() && options.reset_cursor {
        // A fresh pass rescans every user, so old failure rows would only be
        // counted twice; they are re-recorded if those users fail again.
        sqlx::query("DELETE FROM identity_graph_backfill_failures WHERE job_key = $1")
            .bind(options.job_key.as_str())
            .execute(&mut **tx)
            .await?;
        // And every user is read again, so no gap below the cursor remains.
        sqlx::query("DELETE FROM identity_graph_backfill_gaps WHERE job_key = $1")
            .bind(options.job_key.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(claimed)
}

/// The watchdog's claim: only a paused, resumable job bound to this
/// replica's graph (`graph`; a job from before bindings is bound now), and
/// only one replica wins.
pub async fn claim_for_resume(
    tx: &mut Transaction<'_, Postgres>,
    job_key: &str,
    token: &str,
    graph: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs SET
             status = $4, owner = $2, heartbeat_at = now(), pause_reason = NULL,
             consecutive_failures = 0, updated_at = now(), run_started_at = now(), run_scanned = 0,
             finished_at = NULL, source_max_id = {SOURCE_MAX_ID}, graph = coalesce(graph, $6)
         WHERE job_key = $1 AND {} AND (graph IS NULL OR graph = $6)
         RETURNING {JOB_COLUMNS}",
        resumable("$3", "$5")
    ))
    .bind(job_key)
    .bind(token)
    .bind(RESUMABLE_REASONS)
    .bind(JobStatus::Running)
    .bind(JobStatus::Paused)
    .bind(graph)
    .fetch_optional(&mut **tx)
    .await
}

/// What the watchdog may resume, given the placeholders that hold the
/// resumable pause reasons and the paused status.
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
    options: &StartOptions,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "UPDATE identity_graph_backfill_runs SET ended_at = now(), outcome = 'lease lost'
         WHERE job_key = $1 AND ended_at IS NULL",
    )
    .bind(job_key)
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO identity_graph_backfill_runs (job_key, trigger, started_by, owner, run_number, options)
         VALUES ($1, $2, $3, $4,
                 (SELECT coalesce(max(run_number), 0) + 1 FROM identity_graph_backfill_runs
                  WHERE job_key = $1),
                 $5)
         RETURNING id",
    )
    .bind(job_key)
    .bind(trigger)
    .bind(actor)
    .bind(token)
    .bind(sqlx::types::Json(options))
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

/// Jobs the watchdog may resume, with the graph each is bound to.
pub async fn resumable_jobs(pool: &PgPool) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT job_key, graph FROM identity_graph_backfill_jobs WHERE {} ORDER BY updated_at",
        resumable("$1", "$2")
    ))
    .bind(RESUMABLE_REASONS)
    .bind(JobStatus::Paused)
    .fetch_all(pool)
    .await
}

/// A stop request: `running → stopping`, `paused → stopped` (nobody is running it).
/// Every statement is bounded by `statement_timeout` (the console's).
pub async fn request_stop(
    pool: &PgPool,
    job_key: &str,
    actor: &str,
    statement_timeout: Duration,
) -> Result<Option<JobRow>, sqlx::Error> {
    let mut tx = bounded(pool, statement_timeout).await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs SET
             stop_requested = true, stopped_by = $2, updated_at = now(),
             status = CASE WHEN status = $4 THEN $5 ELSE $6 END,
             pause_reason = CASE WHEN status = $4 THEN NULL ELSE pause_reason END,
             finished_at = CASE WHEN status = $4 THEN now() ELSE finished_at END
         WHERE job_key = $1 AND status = ANY($3)
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(job_key)
    .bind(actor)
    .bind(&JobStatus::STOPPABLE[..])
    // Nobody runs a paused job, so it stops at once; a running one stops at its next user.
    .bind(JobStatus::Paused)
    .bind(JobStatus::Stopped)
    .bind(JobStatus::Stopping)
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

/// What a heartbeat reads back from the job row: a stop requested from any
/// replica, and the knobs as `tune` last set them (`None` where the stored
/// options do not hold a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct HeartbeatAnswer {
    pub stop_requested: bool,
    pub max_rate: Option<i64>,
    pub concurrency: Option<i64>,
    pub sleep_ms: Option<i64>,
    /// Users the run has handled so far (its checkpoints): the chart's rate.
    pub run_scanned: i64,
}

/// The knobs of a job row's stored options, as numbers or NULL.
const STORED_KNOBS: &str = "stop_requested,
    CASE WHEN jsonb_typeof(options -> 'max_rate') = 'number' THEN (options ->> 'max_rate')::numeric::int8 END AS max_rate,
    CASE WHEN jsonb_typeof(options -> 'concurrency') = 'number' THEN (options ->> 'concurrency')::numeric::int8 END AS concurrency,
    CASE WHEN jsonb_typeof(options -> 'sleep_ms') = 'number' THEN (options ->> 'sleep_ms')::numeric::int8 END AS sleep_ms";

/// Renews the run's lease (when `renew`) and records the run's brake as
/// it stands (`throttle`, shown on the job page). `None` means the run no
/// longer owns the job.
pub async fn heartbeat(
    pool: &PgPool,
    job_key: &str,
    token: &str,
    renew: bool,
    throttle: &ThrottleView,
) -> Result<Option<HeartbeatAnswer>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs
         SET heartbeat_at = CASE WHEN $4 THEN now() ELSE heartbeat_at END, throttle = $5
         WHERE job_key = $1 AND owner = $2 AND status = ANY($3)
         RETURNING {STORED_KNOBS}, run_scanned"
    ))
    .bind(job_key)
    .bind(token)
    .bind(&JobStatus::ACTIVE[..])
    .bind(renew)
    .bind(sqlx::types::Json(throttle))
    .fetch_optional(pool)
    .await
}

/// How `tune` went.
#[derive(Debug)]
pub enum Tuned {
    /// The knobs were changed (or already had these values).
    Changed {
        row: JobRow,
        changes: Vec<TuningRecord>,
    },
    /// The job is not running: nothing was changed.
    NotRunning(JobRow),
    NoSuchJob,
}

/// Sets `knobs` (field → value, already checked) on a running job's stored
/// options, where the heartbeat of its run reads them, and records each
/// change with `actor`. Guarded by the status, in one transaction that
/// holds the row, every statement bounded by `statement_timeout`.
pub async fn tune(
    pool: &PgPool,
    job_key: &str,
    knobs: &[(&'static str, i64)],
    current: impl FnOnce(&JobRow) -> Vec<(&'static str, i64)>,
    actor: &str,
    statement_timeout: Duration,
) -> Result<Tuned, sqlx::Error> {
    let mut tx = bounded(pool, statement_timeout).await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM identity_graph_backfill_jobs WHERE job_key = $1 FOR UPDATE"
    ))
    .bind(job_key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Tuned::NoSuchJob);
    };
    if row.status() != Some(JobStatus::Running) {
        return Ok(Tuned::NotRunning(row));
    }
    let before = current(&row);
    let changed: Vec<(&str, i64, i64)> = knobs
        .iter()
        .filter_map(|(field, new)| {
            let old = before.iter().find(|(f, _)| f == field).map(|(_, v)| *v)?;
            (old != *new).then_some((*field, old, *new))
        })
        .collect();
    let patch: serde_json::Map<String, serde_json::Value> = knobs
        .iter()
        .map(|(field, value)| (field.to_string(), serde_json::json!(value)))
        .collect();
    let row: JobRow = sqlx::query_as(&format!(
        "UPDATE identity_graph_backfill_jobs SET options = options || $2, updated_at = now()
         WHERE job_key = $1 RETURNING {JOB_COLUMNS}"
    ))
    .bind(job_key)
    .bind(sqlx::types::Json(&patch))
    .fetch_one(&mut *tx)
    .await?;
    let (fields, (olds, news)): (Vec<&str>, (Vec<i64>, Vec<i64>)) = changed
        .iter()
        .map(|(field, old, new)| (*field, (*old, *new)))
        .unzip();
    let changes: Vec<TuningRecord> = sqlx::query_as(
        "INSERT INTO identity_graph_backfill_tunings (job_key, tuned_by, field, old_value, new_value)
         SELECT $1, $2, field, old_value, new_value
         FROM unnest($3::text[], $4::int8[], $5::int8[]) AS t(field, old_value, new_value)
         RETURNING tuned_by, tuned_at, field, old_value, new_value",
    )
    .bind(job_key)
    .bind(actor)
    .bind(&fields)
    .bind(&olds)
    .bind(&news)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Tuned::Changed { row, changes })
}

const RECENT_TUNINGS: &str =
    "SELECT tuned_by, tuned_at, field, old_value, new_value FROM identity_graph_backfill_tunings
     WHERE job_key = $1 ORDER BY id DESC LIMIT $2";

pub async fn recent_tunings(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    limit: i64,
) -> Result<Vec<TuningRecord>, sqlx::Error> {
    sqlx::query_as(RECENT_TUNINGS)
        .bind(job_key)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Jobs whose run stopped heartbeating: `running → paused (interrupted)`,
/// `stopping → stopped`, and the run's audit row is closed. Returns the keys
/// it interrupted.
pub async fn interrupt_expired_leases(
    pool: &PgPool,
    ttl: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    let interrupted = RunEnd::paused(PauseReason::Interrupted);
    sqlx::query_scalar(
        "WITH expired AS (
             SELECT job_key, owner, status FROM identity_graph_backfill_jobs
             WHERE status = ANY($2)
               AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1))
             FOR UPDATE SKIP LOCKED),
         interrupted AS (
             UPDATE identity_graph_backfill_jobs j SET
                 status = CASE WHEN e.status = $3 THEN $4 ELSE $5 END,
                 pause_reason = CASE WHEN e.status = $3 THEN $6 ELSE NULL END,
                 finished_at = CASE WHEN e.status = $3 THEN j.finished_at ELSE now() END,
                 last_error = CASE WHEN e.status = $3
                     THEN 'the run stopped renewing its lease (its replica died or lost the database); the watchdog resumes it'
                     ELSE j.last_error END,
                 owner = NULL, heartbeat_at = NULL, updated_at = now()
             FROM expired e WHERE j.job_key = e.job_key
             RETURNING j.job_key),
         closed AS (
             UPDATE identity_graph_backfill_runs r SET ended_at = now(),
                 outcome = CASE WHEN e.status = $3 THEN $7 ELSE $8 END
             FROM expired e WHERE r.job_key = e.job_key AND r.owner = e.owner AND r.ended_at IS NULL)
         SELECT job_key FROM interrupted",
    )
    .bind(ttl.as_secs_f64())
    .bind(&JobStatus::ACTIVE[..])
    // A running job pauses (interrupted) for the watchdog; a stopping one is stopped.
    .bind(JobStatus::Running)
    .bind(JobStatus::Paused)
    .bind(JobStatus::Stopped)
    .bind(PauseReason::Interrupted)
    .bind(interrupted.outcome(JobStatus::Paused))
    .bind(RunEnd::Stopped.outcome(JobStatus::Stopped))
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
/// A user's failure to record: its class (`http 400`, `timeout` …) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFailure {
    pub user_id: i64,
    pub class: String,
    pub message: String,
}

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
    pub failures: Vec<NewFailure>,
    pub resolved: Vec<i64>,
    /// Ids the scan found absent, `(after, before)` exclusive, to remember.
    pub gaps: Vec<(i64, i64)>,
    /// Late arrivals handled by the catch-up: each splits the gap it was in.
    pub caught_up: Vec<i64>,
    /// Values normalization dropped, by `"kind: reason"`.
    pub dropped: BTreeMap<String, i64>,
    /// A dry run's users, by what a real run would do with them.
    pub would: WouldCounts,
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
                 would_write = would_write + $22, would_skip_deleted = would_skip_deleted + $23,
                 would_skip_no_identifiers = would_skip_no_identifiers + $24,
                 consecutive_failures = $10, last_error = coalesce($11, last_error),
                 run_scanned = run_scanned + $12, heartbeat_at = now(), updated_at = now(),
                 retry_position = CASE WHEN $17 THEN $18 ELSE retry_position END,
                 retry_until = CASE WHEN $17 THEN $19 ELSE retry_until END,
                 dropped_identifiers = CASE WHEN $21::jsonb = '{}'::jsonb THEN dropped_identifiers
                     ELSE (SELECT jsonb_object_agg(key, total) FROM (
                               SELECT key, sum(value::int8) AS total
                               FROM (SELECT * FROM jsonb_each_text(dropped_identifiers)
                                     UNION ALL SELECT * FROM jsonb_each_text($21::jsonb)) AS both_sides
                               GROUP BY key) AS sums) END
             WHERE job_key = $1 AND owner = $2 AND status = ANY($20)
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
    .bind(retry_until)
    .bind(&JobStatus::ACTIVE[..])
    .bind(sqlx::types::Json(&batch.dropped))
    .bind(batch.would.write)
    .bind(batch.would.skip_deleted)
    .bind(batch.would.skip_no_identifiers);
    if batch.failures.is_empty()
        && batch.resolved.is_empty()
        && batch.gaps.is_empty()
        && batch.caught_up.is_empty()
    {
        return Ok(counters.fetch_one(pool).await? == 1);
    }
    let mut tx = pool.begin().await?;
    if counters.fetch_one(&mut *tx).await? == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if !batch.failures.is_empty() {
        let ids: Vec<i64> = batch.failures.iter().map(|f| f.user_id).collect();
        let classes: Vec<&str> = batch.failures.iter().map(|f| f.class.as_str()).collect();
        let errors: Vec<&str> = batch.failures.iter().map(|f| f.message.as_str()).collect();
        sqlx::query(
            "INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error)
             SELECT $1, user_id, class, error
             FROM unnest($2::bigint[], $3::text[], $4::text[]) AS t(user_id, class, error)
             ON CONFLICT (job_key, user_id) DO UPDATE SET
                 class = EXCLUDED.class, error = EXCLUDED.error, last_failed_at = now(),
                 resolved_at = NULL, attempts = identity_graph_backfill_failures.attempts + 1",
        )
        .bind(job_key)
        .bind(&ids)
        .bind(&classes)
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
    insert_gaps(&mut tx, job_key, &batch.gaps).await?;
    if !batch.caught_up.is_empty() {
        split_gaps(&mut tx, job_key, &batch.caught_up).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Splits the job's gaps around the late arrivals `caught_up` (sorted): the
/// gap `(a, b)` holding users `h1 < … < hk` becomes `(a, h1) … (hk, b)`,
/// keeping only the pieces that can still hold an id.
async fn split_gaps(
    tx: &mut Transaction<'_, Postgres>,
    job_key: &str,
    caught_up: &[i64],
) -> Result<(), sqlx::Error> {
    let holding: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT g.after_id, g.before_id
         FROM unnest($2::int8[]) AS h(id)
         CROSS JOIN LATERAL (
             SELECT after_id, before_id FROM identity_graph_backfill_gaps
             WHERE job_key = $1 AND after_id < h.id
             ORDER BY after_id DESC LIMIT 1) g
         WHERE g.before_id > h.id
         ORDER BY g.after_id",
    )
    .bind(job_key)
    .bind(caught_up)
    .fetch_all(&mut **tx)
    .await?;
    let mut pieces: Vec<(i64, i64)> = Vec::new();
    for &(after, before) in &holding {
        let mut previous = after;
        for &id in caught_up.iter().filter(|id| **id > after && **id < before) {
            if id > previous + 1 {
                pieces.push((previous, id));
            }
            previous = id;
        }
        if before > previous + 1 {
            pieces.push((previous, before));
        }
    }
    let gone: Vec<i64> = holding.iter().map(|(after, _)| *after).collect();
    sqlx::query(
        "DELETE FROM identity_graph_backfill_gaps WHERE job_key = $1 AND after_id = ANY($2)",
    )
    .bind(job_key)
    .bind(&gone)
    .execute(&mut **tx)
    .await?;
    insert_gaps(tx, job_key, &pieces).await
}

/// Records `gaps`, `(after, before)` exclusive, for the job. A gap already
/// recorded from the same id takes the new end.
async fn insert_gaps(
    tx: &mut Transaction<'_, Postgres>,
    job_key: &str,
    gaps: &[(i64, i64)],
) -> Result<(), sqlx::Error> {
    if gaps.is_empty() {
        return Ok(());
    }
    let (after, before): (Vec<i64>, Vec<i64>) = gaps.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO identity_graph_backfill_gaps (job_key, after_id, before_id)
         SELECT $1, after_id, before_id FROM unnest($2::int8[], $3::int8[]) AS t(after_id, before_id)
         ON CONFLICT (job_key, after_id) DO UPDATE SET before_id = EXCLUDED.before_id",
    )
    .bind(job_key)
    .bind(&after)
    .bind(&before)
    .execute(&mut **tx)
    .await
    .map(drop)
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

    /// The status this ending asks for (a pending stop may still win).
    fn status(&self) -> JobStatus {
        match self {
            RunEnd::Completed => JobStatus::Completed,
            RunEnd::Paused { .. } => JobStatus::Paused,
            RunEnd::Stopped => JobStatus::Stopped,
            RunEnd::Failed(_) => JobStatus::Failed,
        }
    }

    /// The run row's outcome once the job's status `written` is known:
    /// `paused (max-runtime)`, `stopped`, …
    fn outcome(&self, written: JobStatus) -> String {
        match (written, self) {
            (JobStatus::Paused, RunEnd::Paused { reason, .. }) => format!("{written} ({reason})"),
            _ => written.to_string(),
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
    let (reason, error) = match end {
        RunEnd::Paused { reason, error } => (Some(*reason), error.as_deref()),
        RunEnd::Failed(error) => (None, Some(error.as_str())),
        RunEnd::Completed | RunEnd::Stopped => (None, None),
    };
    let mut tx = pool.begin().await?;
    // A stop requested while the run was ending wins: the job is `stopped`.
    let written: Option<JobStatus> = sqlx::query_scalar(
        "UPDATE identity_graph_backfill_jobs SET
             status = CASE WHEN stop_requested OR status = $6 THEN $7 ELSE $3 END,
             pause_reason = CASE WHEN stop_requested OR status = $6 THEN NULL ELSE $4 END,
             finished_at = CASE WHEN (stop_requested OR status = $6 OR $3 <> $8) THEN now() ELSE NULL END,
             last_error = coalesce($5, last_error),
             owner = NULL, heartbeat_at = NULL, updated_at = now()
         WHERE job_key = $1 AND owner = $2 AND status = ANY($9)
         RETURNING status",
    )
    .bind(job_key)
    .bind(token)
    .bind(end.status())
    .bind(reason)
    .bind(error)
    .bind(JobStatus::Stopping)
    .bind(JobStatus::Stopped)
    .bind(JobStatus::Paused)
    .bind(&JobStatus::ACTIVE[..])
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(status) = written {
        sqlx::query(
            "UPDATE identity_graph_backfill_runs SET ended_at = now(), outcome = $2 WHERE id = $1",
        )
        .bind(run_id)
        .bind(end.outcome(status))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(written)
}

/// Uses `identity_graph_backfill_failures_recent`, which matches its order.
const RECENT_FAILURES: &str =
    "SELECT user_id, class, error, attempts, first_failed_at, last_failed_at
     FROM identity_graph_backfill_failures
     WHERE job_key = $1 AND resolved_at IS NULL
     ORDER BY last_failed_at DESC, user_id DESC LIMIT $2";

pub async fn recent_failures(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    limit: i64,
) -> Result<Vec<FailureRecord>, sqlx::Error> {
    sqlx::query_as(RECENT_FAILURES)
        .bind(job_key)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Reads the counts a trigger keeps (migration `…_failure_counts.sql`):
/// counting a million unresolved rows on every poll took about 130 ms.
const UNRESOLVED_FAILURE_COUNT: &str =
    "SELECT coalesce(sum(unresolved), 0)::bigint FROM identity_graph_backfill_failure_counts
     WHERE job_key = $1 AND unresolved > 0";

pub async fn unresolved_failure_count(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(UNRESOLVED_FAILURE_COUNT)
        .bind(job_key)
        .fetch_one(db)
        .await
}

/// Uses `identity_graph_backfill_runs_job_id`, which matches its order.
const RECENT_RUNS: &str = "SELECT id, coalesce(run_number, 0) AS run_number, trigger, started_by, started_at, ended_at, outcome, stopped_by, stopped_at, processed, failed, skipped, owner, options
     FROM identity_graph_backfill_runs WHERE job_key = $1 ORDER BY id DESC LIMIT $2";

pub async fn recent_runs(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    limit: i64,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct WithOptions {
        #[sqlx(flatten)]
        run: RunRecord,
        options: Option<sqlx::types::Json<serde_json::Value>>,
    }
    let rows: Vec<WithOptions> = sqlx::query_as(RECENT_RUNS)
        .bind(job_key)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| RunRecord {
            // Read as a job's stored options are: a field another release
            // added is ignored, one it dropped takes its default; options
            // this release cannot read at all are left out of the history
            // rather than failing the page.
            options: row.options.and_then(|json| {
                let dry_run = json.0.get("dry_run").and_then(|v| v.as_bool()) == Some(true);
                StartOptions::from_stored(
                    &json.0,
                    job_key,
                    dry_run,
                    MAX_RUNTIME_MS.bounds.default as u64,
                )
                .ok()
            }),
            ..row.run
        })
        .collect())
}

/// The latest run of each of `job_keys`.
pub async fn last_runs(
    pool: &PgPool,
    job_keys: &[String],
) -> Result<Vec<(String, RunRecord)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Keyed {
        job_key: String,
        #[sqlx(flatten)]
        run: RunRecord,
    }
    let rows: Vec<Keyed> = sqlx::query_as(
        "SELECT DISTINCT ON (job_key) job_key, id, coalesce(run_number, 0) AS run_number, trigger,
                started_by, started_at, ended_at, outcome, stopped_by, stopped_at, processed, failed,
                skipped, owner
         FROM identity_graph_backfill_runs WHERE job_key = ANY($1)
         ORDER BY job_key, id DESC",
    )
    .bind(job_keys)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.job_key, row.run)).collect())
}

/// Records one point of a run's chart.
pub async fn record_sample(
    pool: &PgPool,
    run_id: i64,
    rate: f64,
    latency_p95_ms: Option<f64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_graph_backfill_run_samples (run_id, rate, latency_p95_ms)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(rate)
    .bind(latency_p95_ms)
    .execute(pool)
    .await
    .map(drop)
}

/// The chart's points of the runs `run_ids`, oldest first.
pub async fn run_samples(pool: &PgPool, run_ids: &[i64]) -> Result<Vec<RunSample>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, sampled_at, rate, latency_p95_ms FROM identity_graph_backfill_run_samples
         WHERE run_id = ANY($1) ORDER BY run_id, sampled_at",
    )
    .bind(run_ids)
    .fetch_all(pool)
    .await
}
