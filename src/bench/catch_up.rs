//! (f) Late arrivals. Before (e), 1,000 users spread below what will be its
//! cursor are held back from the seed; after (e) they arrive, as late
//! commits would. The job's next run catches them up, and is timed against
//! a `reset_cursor` rerun of the same job, which rewrites (replaces) every
//! user.

use super::built_in_graph::{built_in_graph_engine, built_in_graph_request};
use super::support::timed_run;
use sqlx::PgPool;

/// The users (f) holds back from the seed: 1,000 spread over the whole
/// range, so each one leaves a gap below (e)'s cursor.
const LATE_ARRIVALS: &str = "id % (SELECT greatest(max(id) / 1000, 2) FROM users) = 1";

/// Moves the late arrivals out of `users` into `bench_late_arrivals` before
/// (e) runs. Returns how many.
pub(super) async fn hold_back_late_arrivals(pool: &PgPool) -> Result<i64, String> {
    let db = |e: sqlx::Error| e.to_string();
    sqlx::query("CREATE TABLE bench_late_arrivals (LIKE users)")
        .execute(pool)
        .await
        .map_err(db)?;
    sqlx::query(&format!(
        "WITH late AS (DELETE FROM users WHERE {LATE_ARRIVALS} RETURNING *)
         INSERT INTO bench_late_arrivals SELECT * FROM late"
    ))
    .execute(pool)
    .await
    .map_err(db)?;
    sqlx::query_scalar("SELECT count(*) FROM bench_late_arrivals")
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// What (f) measured.
pub(super) struct CatchUpFigures {
    catch_up_seconds: f64,
    rerun_users: i64,
    rerun_seconds: f64,
}

impl CatchUpFigures {
    pub(super) fn ratios(&self) -> Vec<String> {
        let rerun_rate = self.rerun_users as f64 / self.rerun_seconds;
        vec![
            format!(
                "ratio (f) catch-up / reset rerun = {:.4}   (goal <= 0.05)",
                self.catch_up_seconds / self.rerun_seconds
            ),
            format!(
                "(f) rerun rate, replacing every user = {rerun_rate:.0} users/s   (goal >= 20000: ratio {:.2})",
                rerun_rate / 20_000.0
            ),
        ]
    }
}

/// The late arrivals commit; the job's next run catches them up, then a
/// `reset_cursor` run rescans and rewrites every user.
pub(super) async fn measure(
    pool: &PgPool,
    url: &str,
    runtime: &tokio::runtime::Handle,
    batch: i64,
    concurrency: i64,
    held_back: i64,
) -> Result<CatchUpFigures, String> {
    sqlx::query("INSERT INTO users SELECT * FROM bench_late_arrivals")
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let (executor, graph) = built_in_graph_engine(pool, url, runtime).await?;
    let request = |reset_cursor| built_in_graph_request(batch, concurrency, reset_cursor);
    let (caught_up, catch_up_seconds) = timed_run(&graph, pool, request(false)).await?;
    let (rerun_users, rerun_seconds) = timed_run(&graph, pool, request(true)).await?;
    drop(graph);
    executor.pool.close().await;
    println!(
        "(f) catch-up of {held_back} late arrivals below the cursor: {catch_up_seconds:.2}s ({caught_up} users); reset_cursor rerun: {rerun_seconds:.1}s ({rerun_users} users, {:.0} users/s replacing each)",
        rerun_users as f64 / rerun_seconds
    );
    Ok(CatchUpFigures {
        catch_up_seconds,
        rerun_users,
        rerun_seconds,
    })
}
