//! (a) A dry run through the engine, with resident memory sampled.

use super::support::{engine, rss_kib, sample_peak_rss, timed_run};
use crate::backfill::{domain::*, engine::RunExecutor};
use sqlx::PgPool;
use std::sync::atomic::Ordering;

/// Runs every user dry; returns users per second.
pub(super) async fn measure(
    pool: &PgPool,
    executor: &RunExecutor,
    batch: i64,
    concurrency: i64,
) -> Result<f64, String> {
    let dry = engine(pool, executor, &[])?;
    let rss_before = rss_kib("VmRSS:");
    let (done, peak) = sample_peak_rss();
    let (handled, seconds) = timed_run(
        &dry,
        pool,
        StartRequest {
            job_key: Some("bench-dry-run".into()),
            dry_run: Some(true),
            batch_size: Some(batch),
            concurrency: Some(concurrency),
            sleep_ms: Some(0),
            max_runtime_ms: Some(MAX_RUNTIME_MS.bounds.max),
            ..Default::default()
        },
    )
    .await?;
    done.store(true, Ordering::Relaxed);
    let dry_peak = peak.await.unwrap_or(0);
    let rate = handled as f64 / seconds;
    println!(
        "(a) dry run, batch {batch}, concurrency {concurrency}:    {rate:>10.0} users/s  ({handled} users)"
    );
    println!(
        "    memory during the dry run: {} KiB before, {} KiB peak (+{} KiB over {handled} users)",
        rss_before,
        dry_peak,
        dry_peak.saturating_sub(rss_before)
    );
    Ok(rate)
}
