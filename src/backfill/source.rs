//! The source of the backfill: the `users` table. Every statement that reads
//! it is here, so a deployment that replaces the table with a view (or
//! renames a column) finds everything about the source in one place.

use super::domain::FailureFilter;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A row of the source `users` table, with the database time it was read.
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
    /// `statement_timestamp()` of the read: a write carries it so that a
    /// graph keeps the newest read of a user (docs/graph-contract.md, "observed_at").
    pub observed_at: DateTime<Utc>,
}

/// The columns of `SourceUser`, read from `users u`.
pub const USER_COLUMNS: &str = "u.id, u.email, u.phone, u.created_at, u.signup_ip, u.last_login_ip,
    u.device_id, u.deleted_at, statement_timestamp() AS observed_at";

/// The highest user id, as a subquery: a run's 100%.
pub const SOURCE_MAX_ID: &str = "(SELECT max(id) FROM users)";

/// The characters `str::trim` removes (Unicode `White_Space`): the SQL here
/// trims with exactly these, so it agrees with `identifiers` on what is blank.
pub const UNICODE_WHITESPACE: &[char] = &[
    '\u{0009}', '\u{000A}', '\u{000B}', '\u{000C}', '\u{000D}', '\u{0020}', '\u{0085}', '\u{00A0}',
    '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}',
    '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}',
    '\u{3000}',
];

/// `column` of `users u`, trimmed exactly as `str::trim` trims.
fn trimmed(column: &str) -> String {
    let whitespace: String = UNICODE_WHITESPACE.iter().collect();
    format!("btrim(u.{column}, '{whitespace}')")
}

/// Users of `users u` that the runner certainly writes: not deleted, with
/// an email `identifiers` keeps or a device id. Decided in SQL, so the
/// coverage check counts most users without reading them.
pub fn certainly_eligible() -> String {
    let email = trimmed("email");
    // coalesce: a NULL column makes the comparison NULL, and `NOT NULL` would
    // drop the row from `maybe_eligible` as well.
    format!(
        "coalesce(u.deleted_at IS NULL AND (({email}) LIKE '%_@_%' AND ({email}) NOT LIKE '%@%@%'
                                            OR {device} <> ''), false)",
        device = trimmed("device_id")
    )
}

/// Users that are not deleted and not certainly eligible but hold a phone
/// or an IP: only `identifiers::Normalizer` can tell whether one is valid.
pub fn maybe_eligible() -> String {
    format!(
        "(u.deleted_at IS NULL AND NOT {certain}
          AND coalesce({phone} <> '' OR {signup} <> '' OR {last} <> '', false))",
        certain = certainly_eligible(),
        phone = trimmed("phone"),
        signup = trimmed("signup_ip"),
        last = trimmed("last_login_ip"),
    )
}

/// The next batch after the cursor, in id order (the keyset scan).
pub async fn users_after(
    pool: &PgPool,
    cursor: i64,
    limit: u32,
) -> Result<Vec<SourceUser>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.id > $1 ORDER BY u.id LIMIT $2"
    ))
    .bind(cursor)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Users with an unresolved failure on this job that `filter` takes, after
/// `after_user_id` and at most `up_to`.
pub async fn failed_users_after(
    pool: &PgPool,
    job_key: &str,
    filter: &FailureFilter,
    after_user_id: i64,
    up_to: i64,
    limit: u32,
) -> Result<Vec<SourceUser>, sqlx::Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS}
         FROM identity_graph_backfill_failures f
         JOIN users u ON u.id = f.user_id
         WHERE {} AND f.user_id > $5 AND f.user_id <= $6
         ORDER BY f.user_id LIMIT $7",
        failure_filter_predicate(filter)
    );
    bind_failure_filter(sqlx::query_as(&sql), job_key, filter)
        .bind(after_user_id)
        .bind(up_to)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
}

/// The filter's predicate on `f`, over the parameters [`bind_failure_filter`]
/// binds: `$1` the job key, `$2` the class, `$3` the search as an `ILIKE`
/// pattern, `$4` the search as a user id. Only the parts the filter uses are
/// written, so each shape of filter is a statement of its own, planned for
/// the indexes it can use (a generic plan of `$2 IS NULL OR …` could not).
pub fn failure_filter_predicate(filter: &FailureFilter) -> String {
    let mut predicate = "f.job_key = $1 AND f.resolved_at IS NULL".to_string();
    if filter.class.is_some() {
        predicate.push_str(" AND f.class = $2");
    }
    if filter.search_user_id().is_some() {
        predicate.push_str(" AND f.user_id = $4");
    } else if filter.search.is_some() {
        predicate.push_str(" AND f.error ILIKE $3");
    }
    predicate
}

/// Binds `$1` to `$4` of [`failure_filter_predicate`].
pub fn bind_failure_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    job_key: &'q str,
    filter: &FailureFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(job_key)
        .bind(filter.class.clone())
        .bind(filter.search_pattern())
        .bind(filter.search_user_id())
}

/// Users that arrived below the cursor after the scan passed them: users in
/// the job's gaps (ids the scan found absent), after `after_user_id`, in id
/// order. The gaps are walked in order from the one holding `after_user_id`,
/// so a page stops as soon as it is full.
pub async fn late_users_after(
    pool: &PgPool,
    job_key: &str,
    after_user_id: i64,
    limit: u32,
) -> Result<Vec<SourceUser>, sqlx::Error> {
    // `ORDER BY g.after_id, late.id` is id order (the gaps are disjoint),
    // and the gaps' index yields it by `after_id`, so only the users of the
    // gaps reached are sorted and the LIMIT stops the walk early.
    sqlx::query_as(&format!(
        "SELECT late.* FROM identity_graph_backfill_gaps g
         CROSS JOIN LATERAL (
             SELECT {USER_COLUMNS} FROM users u
             WHERE u.id > greatest(g.after_id, $2) AND u.id < g.before_id
             ORDER BY u.id LIMIT $3) late
         WHERE g.job_key = $1 AND g.before_id > $2 + 1
           AND g.after_id >= coalesce(
               (SELECT max(p.after_id) FROM identity_graph_backfill_gaps p
                WHERE p.job_key = $1 AND p.after_id <= $2), $2)
         ORDER BY g.after_id, late.id
         LIMIT $3"
    ))
    .bind(job_key)
    .bind(after_user_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// Source users with an id at or below `cursor`.
pub async fn users_up_to(db: impl sqlx::PgExecutor<'_>, cursor: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE id <= $1")
        .bind(cursor)
        .fetch_one(db)
        .await
}

/// Users in the job's gaps at or below `cursor`: they arrived (committed
/// late, or were inserted with a low id) after the scan passed their id, and
/// the next run catches them up.
pub async fn late_arrivals(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    cursor: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(late.n), 0)::int8 FROM identity_graph_backfill_gaps g
         CROSS JOIN LATERAL (SELECT count(*) AS n FROM users u
                             WHERE u.id > g.after_id AND u.id < g.before_id AND u.id <= $2) late
         WHERE g.job_key = $1 AND g.after_id < $2",
    )
    .bind(job_key)
    .bind(cursor)
    .fetch_one(db)
    .await
}

/// The condition, for `count_eligible`, of users at or below the cursor.
pub const UP_TO_CURSOR: &str = "u.id <= $2 AND $1::text IS NOT NULL";

/// The condition, for `count_eligible`, of users at or below the cursor that
/// the built-in graph does not hold and that have no unresolved failure on
/// the job.
pub const MISSING_FROM_BUILT_IN_GRAPH: &str = "u.id <= $2
    AND NOT EXISTS (SELECT 1 FROM identity_graph_users g WHERE g.user_id = u.id)
    AND NOT EXISTS (SELECT 1 FROM identity_graph_backfill_failures f
                    WHERE f.job_key = $1 AND f.user_id = u.id AND f.resolved_at IS NULL)";
