//! (2) The HTTP graph in a process of its own (`bench-graph --profile
//! instant`): its capacity under a plain load loop beside a real run on a
//! `serve` replica at the same concurrency, time-boxed.

use super::processes::Console;
use super::support::{plain_load, verdict, wait_for_run_end};
use sqlx::PgPool;
use std::time::Duration;

/// Prints the figure; returns its summary line.
pub(super) async fn measure(
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    console: &Console,
    graph_url: &str,
    batch: i64,
    concurrency: i64,
    seconds: Duration,
) -> Result<String, String> {
    println!(
        "(2) HTTP graph in a process of its own (bench-graph --profile instant), concurrency {concurrency}:"
    );
    let capacity = {
        let url = graph_url.to_string();
        let load_seconds = seconds.as_secs();
        // On this process's multi-thread runtime, as the replica's run is on its own.
        runtime
            .spawn(async move { plain_load(&url, concurrency as usize, load_seconds).await })
            .await
            .map_err(|e| e.to_string())?
    };
    println!("    its capacity under a plain load loop:  {capacity:>9.0} requests/s");
    console
        .start_full_speed("bench-http-graph", batch, concurrency, seconds)
        .await?;
    let (row, run_seconds) = wait_for_run_end(pool, "bench-http-graph").await?;
    let rate = row.processed as f64 / run_seconds;
    println!(
        "    a real run on a serve replica:         {rate:>9.0} users/s  ({} users written in {run_seconds:.1}s; {} scanned)",
        row.processed, row.run_scanned
    );
    let ratio = rate / capacity;
    Ok(format!(
        "ratio (2) run / graph capacity = {ratio:.2}   (goal >= 0.9: {})",
        verdict(ratio >= 0.9)
    ))
}
