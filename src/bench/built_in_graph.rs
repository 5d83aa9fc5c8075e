//! (e) A real run of every user into the built-in Postgres graph, whose
//! tables are still empty and never analyzed, as on a fresh database: its
//! rate, the rates over the first and the last 100,000 users, the graph
//! tables' sequential scans, and resident memory.

use super::support::{engine, rss_kib, run_seconds};
use crate::backfill::{
    domain::*,
    engine::{Engine, RunExecutor},
    store,
};
use crate::server::runtime::open_executor;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The graph tables, whose sequential scans (e) reports.
const GRAPH_TABLES: [&str; 3] = [
    "identity_graph_users",
    "identity_graph_identifiers",
    "identity_graph_links",
];

/// What (e) measured.
pub(super) struct GraphFigures {
    users: i64,
    seconds: f64,
    first_rate: f64,
    last_rate: f64,
    /// Per graph table: (seq_scan before, after, idx_scan after).
    scans: Vec<(&'static str, i64, i64, i64)>,
    rss_at_first: u64,
    rss_at_end: u64,
    rss_peak: u64,
}

impl GraphFigures {
    pub(super) fn rate(&self) -> f64 {
        self.users as f64 / self.seconds
    }

    fn print(&self, batch: i64, concurrency: i64) {
        println!(
            "(e) built-in graph, batch {batch}, concurrency {concurrency}: {:>9.0} users/s  ({} users in {:.1}s)",
            self.rate(), self.users, self.seconds
        );
        println!(
            "    first 100,000 users: {:.0} users/s; last 100,000: {:.0} users/s",
            self.first_rate, self.last_rate
        );
        for (table, before, after, index_scans) in &self.scans {
            println!(
                "    seq_scan {table:<27} before {before:>4}, after {after:>4}  (idx_scan after: {index_scans})"
            );
        }
        println!(
            "    memory: {} KiB at 100,000 users, {} KiB at the end, {} KiB peak",
            self.rss_at_first, self.rss_at_end, self.rss_peak
        );
    }

    /// Against the goals, and against the dry run's rate.
    pub(super) fn ratios(&self, dry_rate: f64) -> Vec<String> {
        let rate = self.rate();
        let seq_scans: i64 = self
            .scans
            .iter()
            .map(|(_, before, after, _)| after - before)
            .sum();
        let growth = self.rss_at_end as f64 / self.rss_at_first.max(1) as f64;
        vec![
            format!(
                "(e) rate            = {rate:.0} users/s   (goal >= 20000: ratio {:.2})",
                rate / 20_000.0
            ),
            format!(
                "(e) 1,000,000 users = {:.1}s   (goal < 50s: {} users in {:.1}s)",
                1_000_000.0 / rate,
                self.users,
                self.seconds
            ),
            format!("ratio (e)/(a)       = {:.2}   (goal >= 0.3)", rate / dry_rate),
            format!(
                "ratio (e) last 100,000 / first 100,000 = {:.2}   (goal >= 0.8)",
                self.last_rate / self.first_rate
            ),
            format!(
                "(e) graph seq scans = {seq_scans}, {:.4} per user   (goal: none per user, ratio well below 1)",
                seq_scans as f64 / self.users.max(1) as f64
            ),
            format!(
                "(e) memory growth from 100,000 to {} users = {:+} KiB, ratio {growth:.2}   (goal: flat, <= 1.10); peak {} KiB",
                self.users,
                self.rss_at_end as i64 - self.rss_at_first as i64,
                self.rss_peak
            ),
        ]
    }
}

/// `(seq_scan, idx_scan)` of each graph table, as the statistics collector
/// has them. A backend reports its own counts when it goes idle, at most once
/// a second, or when it exits: the run's pool is closed before the second
/// reading, and this connection reports its own scans first.
async fn graph_scans(
    connection: &mut sqlx::PgConnection,
) -> Result<Vec<(String, i64, i64)>, String> {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *connection)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query_as(
        "SELECT relname::text, seq_scan, coalesce(idx_scan, 0)
         FROM pg_stat_user_tables WHERE relname = ANY($1) ORDER BY relname",
    )
    .bind(GRAPH_TABLES)
    .fetch_all(&mut *connection)
    .await
    .map_err(|e| e.to_string())
}

/// The time (seconds since the start) at which `scanned` reached `target`,
/// interpolated between the samples around it.
pub(super) fn time_at(samples: &[(f64, i64)], target: i64) -> f64 {
    let mut previous = (0.0, 0);
    for &(t, scanned) in samples {
        if scanned >= target {
            let (t0, s0) = previous;
            if scanned == s0 {
                return t;
            }
            return t0 + (t - t0) * (target - s0) as f64 / (scanned - s0) as f64;
        }
        previous = (t, scanned);
    }
    previous.0
}

/// An engine writing to the built-in graph, on a pool of its own (closed by
/// the caller at the end, so that its backends report their statistics).
pub(super) async fn built_in_graph_engine(
    pool: &PgPool,
    url: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<(RunExecutor, Engine), String> {
    let executor = open_executor(runtime, url, 40)
        .await
        .map_err(|e| e.to_string())?;
    let graph = engine(
        pool,
        &executor,
        &[("IDENTITY_GRAPH_SINK", "postgres".into())],
    )?;
    Ok((executor, graph))
}

/// The run of (e) and (f): every user, flat out, one job.
pub(super) fn built_in_graph_request(
    batch: i64,
    concurrency: i64,
    reset_cursor: bool,
) -> StartRequest {
    StartRequest {
        job_key: Some("bench-built-in-graph".into()),
        batch_size: Some(batch),
        concurrency: Some(concurrency),
        sleep_ms: Some(0),
        max_runtime_ms: Some(MAX_RUNTIME_MS.bounds.max),
        retry_failed_before_cursor: Some(false),
        auto_resume: Some(false),
        reset_cursor: Some(reset_cursor),
        ..Default::default()
    }
}

/// A real run of every user into the built-in graph. The run gets its own
/// pool, closed at the end so that its backends report their statistics.
pub(super) async fn measure(
    pool: &PgPool,
    url: &str,
    runtime: &tokio::runtime::Handle,
    batch: i64,
    concurrency: i64,
) -> Result<GraphFigures, String> {
    let mut stats = pool.acquire().await.map_err(|e| e.to_string())?;
    // Scans the three tables once each (counted in "before").
    let in_graph: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM identity_graph_users) + (SELECT count(*) FROM identity_graph_identifiers)
              + (SELECT count(*) FROM identity_graph_links)",
    )
    .fetch_one(&mut *stats)
    .await
    .map_err(|e| e.to_string())?;
    if in_graph != 0 {
        return Err("the built-in graph is not empty".into());
    }
    let before = graph_scans(&mut stats).await?;
    let (executor, graph) = built_in_graph_engine(pool, url, runtime).await?;
    let started = Instant::now();
    let response = graph
        .start(&built_in_graph_request(batch, concurrency, false), "bench")
        .await
        .map_err(|e| e.to_string())?;
    let key = response.job.job_key;
    // (seconds since the start, users scanned), and resident memory.
    let mut samples: Vec<(f64, i64)> = Vec::new();
    let (mut rss_at_first, mut rss_peak) = (None, 0);
    let row = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let row = store::get_job(pool, &key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        let rss = rss_kib("VmRSS:");
        rss_peak = rss_peak.max(rss);
        samples.push((started.elapsed().as_secs_f64(), row.run_scanned));
        if row.run_scanned >= 100_000 && rss_at_first.is_none() {
            rss_at_first = Some(rss);
        }
        if !row.status().is_some_and(JobStatus::is_active) {
            break row;
        }
    };
    let rss_at_end = rss_kib("VmRSS:");
    if row.status() != Some(JobStatus::Completed) || row.failed != 0 {
        return Err(format!(
            "the built-in graph run ended {:?} with {} failed: {:?}",
            row.status(),
            row.failed,
            row.last_error
        ));
    }
    let seconds = run_seconds(pool, &key).await?;
    let users = row.run_scanned;
    let window = 100_000.min(users);
    let first_rate = window as f64 / time_at(&samples, window);
    let last_rate =
        window as f64 / (time_at(&samples, users) - time_at(&samples, users - window)).max(1e-9);

    drop(graph);
    executor.pool.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = graph_scans(&mut stats).await?;
    let scans = GRAPH_TABLES
        .iter()
        .map(|table| {
            let find = |rows: &[(String, i64, i64)]| {
                rows.iter()
                    .find(|(name, ..)| name == table)
                    .map_or((0, 0), |(_, seq, idx)| (*seq, *idx))
            };
            (*table, find(&before).0, find(&after).0, find(&after).1)
        })
        .collect();
    let figures = GraphFigures {
        users,
        seconds,
        first_rate,
        last_rate,
        scans,
        rss_at_first: rss_at_first.unwrap_or(rss_at_end),
        rss_at_end,
        rss_peak,
    };
    figures.print(batch, concurrency);
    Ok(figures)
}
