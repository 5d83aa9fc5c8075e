//! The coverage check: whether every user up to a job's cursor is accounted
//! for, by its counters, its failures and (with the built-in graph) the graph.

use super::JobRow;
use crate::backfill::domain::Coverage;
use crate::backfill::identifiers::Normalizer;
use crate::backfill::source::{self, SourceUser};
use futures::TryStreamExt;
use sqlx::PgPool;

/// The coverage of an idle job (see `Coverage`). `graph_is_built_in` says
/// whether the job's own graph is the built-in one, whichever replica asks.
pub async fn coverage(
    pool: &PgPool,
    row: &JobRow,
    normalizer: &Normalizer,
    graph_is_built_in: bool,
) -> Result<Coverage, sqlx::Error> {
    let users_up_to_cursor = source::users_up_to(pool, row.cursor).await?;
    let eligible_up_to_cursor = count_eligible(
        pool,
        normalizer,
        source::UP_TO_CURSOR,
        &row.job_key,
        row.cursor,
    )
    .await?;
    let late_arrivals = source::late_arrivals(pool, &row.job_key, row.cursor).await?;
    let unresolved_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures
         WHERE job_key = $1 AND resolved_at IS NULL AND user_id <= $2",
    )
    .bind(&row.job_key)
    .bind(row.cursor)
    .fetch_one(pool)
    .await?;
    let missing_from_graph = if graph_is_built_in && !row.dry_run {
        Some(
            count_eligible(
                pool,
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
    })
}

/// Counts the users of `users u` that match `condition` and that a real run
/// must write (not deleted, with an identifier after normalization): the SQL
/// counts the certain ones, the normalizer decides the rest row by row.
/// `$1` and `$2` in `condition` are bound to `job_key` and `cursor`.
async fn count_eligible(
    pool: &PgPool,
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
    .fetch_one(pool)
    .await?;
    let query = format!(
        "SELECT {} FROM users u WHERE ({condition}) AND {}",
        source::USER_COLUMNS,
        source::maybe_eligible()
    );
    let mut rows = sqlx::query_as::<_, SourceUser>(&query)
        .bind(job_key)
        .bind(cursor)
        .fetch(pool);
    let mut maybe = 0;
    while let Some(user) = rows.try_next().await? {
        if normalizer.has_identifiers(&user) {
            maybe += 1;
        }
    }
    Ok(certain + maybe)
}
