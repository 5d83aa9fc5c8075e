//! A job's unresolved failures by class: the grouped counts, keyset pages
//! under a filter, and the export's stream of them.

use crate::backfill::domain::{FailureClassCount, FailureFilter, FailureRecord};
use crate::backfill::source::{bind_failure_filter, failure_filter_predicate};
use sqlx::PgPool;

/// Unresolved failures by class, largest first.
pub async fn failure_classes(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
) -> Result<Vec<FailureClassCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT class, unresolved AS count FROM identity_graph_backfill_failure_counts
         WHERE job_key = $1 AND unresolved > 0
         ORDER BY unresolved DESC, class",
    )
    .bind(job_key)
    .fetch_all(db)
    .await
}

/// Up to `limit` failures matching `filter` after `after_user_id`, in user
/// id order.
pub async fn failures_page(
    db: impl sqlx::PgExecutor<'_>,
    job_key: &str,
    filter: &FailureFilter,
    after_user_id: i64,
    limit: i64,
) -> Result<Vec<FailureRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT user_id, class, error, attempts, first_failed_at, last_failed_at
         FROM identity_graph_backfill_failures f
         WHERE {} AND f.user_id > $5
         ORDER BY f.user_id LIMIT $6",
        failure_filter_predicate(filter)
    );
    bind_failure_filter(sqlx::query_as(&sql), job_key, filter)
        .bind(after_user_id)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The failures matching `filter`, in user id order, a keyset page of
/// `page` rows at a time: the export's memory is one page, however many
/// rows there are. Each page reads the table as it is then, so a failure
/// resolved during an export may be left out, and none is written twice.
pub fn stream_failures(
    pool: PgPool,
    job_key: String,
    filter: FailureFilter,
    page: i64,
    statement_timeout: std::time::Duration,
) -> impl futures::Stream<Item = Result<Vec<FailureRecord>, sqlx::Error>> + Send + 'static {
    futures::stream::try_unfold(Some(0_i64), move |after| {
        let (pool, job_key, filter) = (pool.clone(), job_key.clone(), filter.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            // Each page is a console query like any other: bounded, so a
            // locked or overloaded table ends the export instead of holding
            // a connection.
            let mut tx = super::bounded(&pool, statement_timeout).await?;
            let rows = failures_page(&mut *tx, &job_key, &filter, after, page).await?;
            tx.commit().await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next = (rows.len() as i64 == page).then(|| rows[rows.len() - 1].user_id);
            Ok(Some((rows, next)))
        }
    })
}
