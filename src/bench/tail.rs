//! (3) Tail latency: a run against `bench-graph --profile tail` (1% of
//! users answered slowly, 1% answered 500 once) beside the bound Little's
//! law gives from the graph's own mean answer time.

use super::graph_process::SLOW_ANSWER;
use super::processes::{graph_stats, http_sink, spawn_graph, spawn_replica};
use super::support::{verdict, wait_for_run_end};
use crate::backfill::sinks::http::MAX_ATTEMPTS;
use sqlx::PgPool;
use std::time::Duration;

/// Prints the figure; returns its summary line.
pub(super) async fn measure(
    pool: &PgPool,
    database_url: &str,
    connections: i64,
    batch: i64,
    concurrency: i64,
    seconds: Duration,
) -> Result<String, String> {
    let (graph, graph_url) = spawn_graph("tail").await?;
    let (replica, console) =
        spawn_replica("tail", database_url, connections, &http_sink(&graph_url)).await?;
    println!(
        "(3) HTTP graph with a tail (1% of users answered after {} ms, 1% answered 500 once and then 2xx), concurrency {concurrency}:",
        SLOW_ANSWER.as_millis()
    );
    let before = graph_stats(&graph_url).await?;
    console
        .start_full_speed("bench-tail", batch, concurrency, seconds)
        .await?;
    let (row, run_seconds) = wait_for_run_end(pool, "bench-tail").await?;
    let answered = graph_stats(&graph_url).await?.since(&before);
    replica.terminate().await;
    graph.terminate().await;
    let mean = answered.mean_answer_seconds();
    let bound = concurrency as f64 / mean;
    println!(
        "    the graph's mean answer time per user: {:.3} ms  ({} users, {} requests; a 500's user counts from its first request to its acknowledged retry, so the sink's back-off is in it)",
        mean * 1000.0,
        answered.users,
        answered.requests
    );
    println!(
        "    Little's law bound = {concurrency} / {:.3} ms = {bound:.0} users/s",
        mean * 1000.0
    );
    let rate = row.processed as f64 / run_seconds;
    println!(
        "    a real run on a serve replica:         {rate:>9.0} users/s  ({} users written in {run_seconds:.1}s, {} failed; the sink tries a user up to {MAX_ATTEMPTS} times)",
        row.processed, row.failed
    );
    let ratio = rate / bound;
    Ok(format!(
        "ratio (3) run / Little's bound = {ratio:.2}   (goal >= 0.7: {})",
        verdict(ratio >= 0.7)
    ))
}
