//! The notification outbox (`identity_graph_backfill_notifications`): the
//! trigger of its migration writes a row each time a job comes to rest; a
//! notifier claims due rows, delivers them, and records the outcome.

use crate::backfill::domain::{NotificationRecord, Timestamp};
use sqlx::PgPool;
use std::time::Duration;

/// An event to deliver, as the trigger snapshot it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingNotification {
    pub id: i64,
    pub job_key: String,
    pub event: String,
    pub pause_reason: Option<String>,
    pub dry_run: bool,
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cursor: i64,
    pub source_max_id: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub attempts: i32,
}

/// Claims up to `limit` due events for one attempt each: their next attempt
/// moves `lease` ahead, so another replica's notifier skips them meanwhile,
/// and an attempt cut short by a crash is made again once the lease passes.
/// Pending events older than `max_age` are marked expired instead.
pub async fn claim_due(
    pool: &PgPool,
    lease: Duration,
    max_age: Duration,
    limit: i64,
) -> Result<Vec<PendingNotification>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE identity_graph_backfill_notifications
         SET state = 'expired', last_outcome = coalesce(last_outcome || '; ', '') || 'expired undelivered'
         WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)",
    )
    .bind(max_age.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    let claimed = sqlx::query_as(
        "UPDATE identity_graph_backfill_notifications n
         SET next_attempt_at = now() + make_interval(secs => $1),
             attempts = n.attempts + 1, last_attempt_at = now()
         FROM (SELECT id FROM identity_graph_backfill_notifications
               WHERE state = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) due
         WHERE n.id = due.id
         RETURNING n.id, n.job_key, n.event, n.pause_reason, n.dry_run, n.processed, n.failed,
                   n.skipped, n.cursor, n.source_max_id, n.last_error, n.created_at, n.attempts",
    )
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// The receiver took it.
pub async fn mark_delivered(pool: &PgPool, id: i64, outcome: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_graph_backfill_notifications
         SET state = 'delivered', delivered_at = now(), last_outcome = $2
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(outcome)
    .execute(pool)
    .await
    .map(drop)
}

/// The attempt failed; the next one waits `retry_in`.
pub async fn mark_attempt_failed(
    pool: &PgPool,
    id: i64,
    outcome: &str,
    retry_in: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_graph_backfill_notifications
         SET next_attempt_at = now() + make_interval(secs => $3), last_outcome = $2
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(outcome)
    .bind(retry_in.as_secs_f64())
    .execute(pool)
    .await
    .map(drop)
}

/// A job's most recent notifications, newest first.
pub async fn recent_notifications(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    limit: i64,
) -> Result<Vec<NotificationRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event, pause_reason, created_at, state, attempts, last_outcome, delivered_at
         FROM identity_graph_backfill_notifications
         WHERE job_key = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(job_key)
    .bind(limit)
    .fetch_all(db)
    .await
}
