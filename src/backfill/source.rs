//! The source of the backfill: the `users` table. Every statement that reads
//! it is here, so a deployment that replaces the table with a view (or
//! renames a column) finds everything about the source in one place.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A row of the source `users` table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct SourceUser {
    pub id: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub signup_ip: Option<String>,
    pub last_login_ip: Option<String>,
    pub device_id: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl SourceUser {
    /// The identifiers a user links through, as `(kind, value)`.
    pub fn identifiers(&self) -> Vec<(&'static str, &str)> {
        [
            ("email", self.email.as_deref()),
            ("phone", self.phone.as_deref()),
            ("ip", self.signup_ip.as_deref()),
            ("ip", self.last_login_ip.as_deref()),
            ("device", self.device_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, value)| {
            value
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| (kind, v))
        })
        .collect()
    }
}

/// The highest user id, as a subquery: a run's 100%.
pub const SOURCE_MAX_ID: &str = "(SELECT max(id) FROM users)";

/// A user the runner must write: not deleted, with at least one identifier.
/// Mirrors `SourceUser::identifiers` and the runner's skip rules.
const ELIGIBLE_USER: &str = "deleted_at IS NULL AND num_nonnulls(
    nullif(btrim(email, E' \\t\\r\\n'), ''), nullif(btrim(phone, E' \\t\\r\\n'), ''),
    nullif(btrim(signup_ip, E' \\t\\r\\n'), ''), nullif(btrim(last_login_ip, E' \\t\\r\\n'), ''),
    nullif(btrim(device_id, E' \\t\\r\\n'), '')) > 0";

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

/// Source users with an id at or below `cursor`: all of them, and those a
/// real run must write.
pub async fn users_up_to(pool: &PgPool, cursor: i64) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE {ELIGIBLE_USER}) FROM users WHERE id <= $1"
    ))
    .bind(cursor)
    .fetch_one(pool)
    .await
}

/// Users at or below `cursor` that a real run must write, that the built-in
/// graph does not hold, and that have no unresolved failure on this job.
pub async fn missing_from_built_in_graph(
    pool: &PgPool,
    job_key: &str,
    cursor: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM users u
         WHERE u.id <= $2 AND {ELIGIBLE_USER}
           AND NOT EXISTS (SELECT 1 FROM identity_graph_users g WHERE g.user_id = u.id)
           AND NOT EXISTS (SELECT 1 FROM identity_graph_backfill_failures f
                           WHERE f.job_key = $1 AND f.user_id = u.id AND f.resolved_at IS NULL)"
    ))
    .bind(job_key)
    .bind(cursor)
    .fetch_one(pool)
    .await
}
