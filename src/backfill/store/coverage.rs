//! The coverage check: whether every user up to a job's cursor is accounted
//! for, by its counters, its failures and (with the built-in graph) the graph.

use super::JobRow;
use crate::backfill::domain::Coverage;
use crate::backfill::source;
use sqlx::PgPool;

/// The coverage of an idle job (see `Coverage`).
pub async fn coverage(
    pool: &PgPool,
    row: &JobRow,
    with_built_in_graph: bool,
) -> Result<Coverage, sqlx::Error> {
    let (users_up_to_cursor, eligible_up_to_cursor) = source::users_up_to(pool, row.cursor).await?;
    let unresolved_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures
         WHERE job_key = $1 AND resolved_at IS NULL AND user_id <= $2",
    )
    .bind(&row.job_key)
    .bind(row.cursor)
    .fetch_one(pool)
    .await?;
    let missing_from_graph = if with_built_in_graph && !row.dry_run {
        Some(source::missing_from_built_in_graph(pool, &row.job_key, row.cursor).await?)
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
