//! The coverage check: whether every user up to a job's cursor is accounted
//! for, by its counters, its failures and (with the built-in graph) the graph.
//!
//! It counts the source, so it costs a scan of every user up to the cursor:
//! it runs once when a run ends and on "Check again", in the background on
//! the engine's pool (`engine::coverage_check`), and its result is stored on
//! the job row. Nothing the console polls runs it.

use super::JobRow;
use crate::backfill::domain::{Coverage, JobStatus};
use crate::backfill::identifiers::Normalizer;
use crate::backfill::source::{self, SourceUser};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;

/// What a check found.
#[derive(Debug)]
pub enum Checked {
    /// The result, as of `checked_at`, now stored on the row.
    Stored(Coverage),
    /// Another check of the job (on another replica) was running; this one
    /// waited for it and took the result it stored, counting nothing.
    Joined(Coverage),
    /// Another replica's check of the job held it for longer than this one
    /// waits; nothing was counted.
    Busy(Duration),
    /// Runs kept beginning and ending while it counted, so no count was
    /// current when it ended; nothing was stored.
    Overtaken,
    /// The job is active again (or unreadable): its counters move, so
    /// nothing was counted; the run's own end checks it.
    Active,
    NoSuchJob,
}

/// The first key of the check's two-key advisory lock ("IGBC" in ASCII),
/// apart from the sign-in limit's; the second is the job key's hash.
const CHECK_LOCK_NAMESPACE: i32 = 0x4947_4243;

/// How many of the holder's statements a waiting check waits for: the
/// holder runs a handful, each bounded by the check's timeout, and stores
/// its result. Bounded, so a replica frozen while it holds the lock does not
/// hold up the others forever.
const LOCK_WAIT_STATEMENTS: u32 = 6;

/// How often a check counts again when a run came and went while it
/// counted (its result would be older than that run).
const RECOUNTS: usize = 3;

/// Runs the check for `job_key` in one read-only snapshot, every statement
/// bounded by `timeout`, and stores its result on the row, unless a run
/// began since the snapshot: if that run is still active, its end checks
/// the job; if it already ended, the check counts again. `built_in_graph`
/// is the built-in graph's binding: a job bound to it also counts the users
/// the graph does not hold.
///
/// One check per job runs at a time across every replica: a check holds a
/// session advisory lock from before it counts until its result is stored.
/// A check that finds it held waits, and takes the result the holder stored;
/// if the holder stored none (it timed out, or its replica stopped), it
/// counts. The check uses one connection, closed when the check ends or is
/// dropped, so the lock never outlives the check in the pool.
pub async fn check_and_store(
    pool: &PgPool,
    job_key: &str,
    normalizer: &Normalizer,
    timeout: Duration,
    built_in_graph: &str,
    runtime_default: u64,
) -> Result<Checked, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    set_session_timeout(&mut conn, timeout).await?;
    let stored_before: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT coverage_checked_at FROM identity_graph_backfill_jobs WHERE job_key = $1",
    )
    .bind(job_key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(stored_before) = stored_before else {
        return Ok(Checked::NoSuchJob);
    };
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(CHECK_LOCK_NAMESPACE)
        .bind(job_key)
        .fetch_one(&mut *conn)
        .await?;
    if !free {
        let wait = timeout * LOCK_WAIT_STATEMENTS;
        set_session_timeout(&mut conn, wait).await?;
        let waited = sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind(CHECK_LOCK_NAMESPACE)
            .bind(job_key)
            .execute(&mut *conn)
            .await;
        match waited {
            Err(error) if super::is_statement_timeout(&error) => {
                return Ok(Checked::Busy(wait));
            }
            waited => waited.map(drop)?,
        }
        set_session_timeout(&mut conn, timeout).await?;
        let joined = super::get_job(&mut *conn, job_key)
            .await?
            .filter(|row| row.coverage_checked_at != stored_before)
            .and_then(|row| row.stored_coverage());
        if let Some(coverage) = joined {
            return Ok(Checked::Joined(coverage));
        }
    }
    for _ in 0..RECOUNTS {
        let counted = count_once(
            &mut conn,
            job_key,
            normalizer,
            built_in_graph,
            runtime_default,
        )
        .await?;
        if let Counted::Done(checked) = counted {
            return Ok(checked);
        }
    }
    Ok(Checked::Overtaken)
}

/// What one count came to.
enum Counted {
    Done(Checked),
    /// A run began and ended while it counted: its result is out of date.
    Overtaken,
}

/// One count in one snapshot, and its result stored if no run began since.
async fn count_once(
    conn: &mut PgConnection,
    job_key: &str,
    normalizer: &Normalizer,
    built_in_graph: &str,
    runtime_default: u64,
) -> Result<Counted, sqlx::Error> {
    let mut tx = conn.begin().await?;
    // One snapshot: the counters, the failures and the source are read as
    // of the same instant, `checked_at`.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some(row) = super::get_job(&mut *tx, job_key).await? else {
        return Ok(Counted::Done(Checked::NoSuchJob));
    };
    let idle = row
        .status()
        .is_some_and(|status| !status.is_active() && status != JobStatus::Archived)
        && row.effective_options(runtime_default).is_ok();
    if !idle {
        return Ok(Counted::Done(Checked::Active));
    }
    let checked_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let built_in = row.graph.as_deref() == Some(built_in_graph);
    let mut result = coverage(&mut tx, &row, normalizer, built_in).await?;
    tx.commit().await?;
    result.checked_at = Some(checked_at);
    let stored = store_result(conn, &row, &result, checked_at).await?;
    Ok(if stored {
        Counted::Done(Checked::Stored(result))
    } else {
        Counted::Overtaken
    })
}

/// Sets `statement_timeout` for the rest of the session (the check's
/// connection is closed after it, so nothing else inherits it).
async fn set_session_timeout(
    conn: &mut PgConnection,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
        .bind(format!("{}ms", timeout.as_millis()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a check's result, unless a run began since the snapshot that
/// `counted` was read in (its `run_started_at` moved).
async fn store_result(
    conn: &mut PgConnection,
    counted: &JobRow,
    result: &Coverage,
    checked_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let stored = sqlx::query(
        "UPDATE identity_graph_backfill_jobs
         SET coverage = $2, coverage_checked_at = $3, coverage_error = NULL
         WHERE job_key = $1 AND NOT (status = ANY($4))
           AND run_started_at IS NOT DISTINCT FROM $5",
    )
    .bind(&counted.job_key)
    .bind(sqlx::types::Json(result))
    .bind(checked_at)
    .bind(&JobStatus::ACTIVE[..])
    .bind(counted.run_started_at)
    .execute(conn)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// Records why the last check did not finish; the stored result, if any,
/// stays (with its own `checked_at`).
pub async fn store_check_error(
    pool: &PgPool,
    job_key: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE identity_graph_backfill_jobs SET coverage_error = $2 WHERE job_key = $1")
        .bind(job_key)
        .bind(error)
        .execute(pool)
        .await
        .map(drop)
}

/// The coverage of an idle job (see `Coverage`), read through `db` (one
/// snapshot). `graph_is_built_in` says whether the job's own graph is the
/// built-in one, whichever replica asks. `checked_at` is left to the caller.
pub async fn coverage(
    db: &mut PgConnection,
    row: &JobRow,
    normalizer: &Normalizer,
    graph_is_built_in: bool,
) -> Result<Coverage, sqlx::Error> {
    let users_up_to_cursor = source::users_up_to(&mut *db, row.cursor).await?;
    let eligible_up_to_cursor = count_eligible(
        db,
        normalizer,
        source::UP_TO_CURSOR,
        &row.job_key,
        row.cursor,
    )
    .await?;
    let late_arrivals = source::late_arrivals(&mut *db, &row.job_key, row.cursor).await?;
    let unresolved_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures
         WHERE job_key = $1 AND resolved_at IS NULL AND user_id <= $2",
    )
    .bind(&row.job_key)
    .bind(row.cursor)
    .fetch_one(&mut *db)
    .await?;
    let missing_from_graph = if graph_is_built_in && !row.dry_run {
        Some(
            count_eligible(
                db,
                normalizer,
                source::MISSING_FROM_BUILT_IN_GRAPH,
                &row.job_key,
                row.cursor,
            )
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
        late_arrivals,
        checked_at: None,
    })
}

/// Counts the users of `users u` that match `condition` and that a real run
/// must write (not deleted, with an identifier after normalization): the SQL
/// counts the certain ones, the normalizer decides the rest row by row.
/// `$1` and `$2` in `condition` are bound to `job_key` and `cursor`.
async fn count_eligible(
    db: &mut PgConnection,
    normalizer: &Normalizer,
    condition: &str,
    job_key: &str,
    cursor: i64,
) -> Result<i64, sqlx::Error> {
    let certain: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM users u WHERE ({condition}) AND {}",
        source::certainly_eligible()
    ))
    .bind(job_key)
    .bind(cursor)
    .fetch_one(&mut *db)
    .await?;
    let query = format!(
        "SELECT {} FROM users u WHERE ({condition}) AND {}",
        source::USER_COLUMNS,
        source::maybe_eligible()
    );
    let mut rows = sqlx::query_as::<_, SourceUser>(&query)
        .bind(job_key)
        .bind(cursor)
        .fetch(&mut *db);
    let mut maybe = 0;
    while let Some(user) = rows.try_next().await? {
        if normalizer.has_identifiers(&user) {
            maybe += 1;
        }
    }
    Ok(certain + maybe)
}
