//! What several figures share: the throw-away database, in-process engines,
//! timed runs, memory readings, a plain HTTP load loop and percentiles.

use crate::backfill::{
    domain::*,
    engine::{Engine, RunExecutor},
    store,
};
use crate::server::{config::Config, database, http};
use sqlx::PgPool;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// A resident-memory field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in KiB.
pub(super) fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples resident memory while a measurement runs; returns the peak in KiB.
pub(super) fn sample_peak_rss() -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = tokio::spawn(async move {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib("VmRSS:"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak.max(rss_kib("VmRSS:"))
    });
    (done, handle)
}

/// A database of its own, migrated: `(pool, name, url)`.
pub(super) async fn fresh_database(base_url: &str) -> Result<(PgPool, String, String), String> {
    let admin = database::connect(base_url, 2)
        .await
        .map_err(|e| e.to_string())?;
    let name = format!("igb_bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    let (prefix, _) = base_url
        .rsplit_once('/')
        .ok_or("DATABASE_URL has no database name")?;
    let url = format!("{prefix}/{name}");
    let pool = database::connect(&url, 40)
        .await
        .map_err(|e| e.to_string())?;
    database::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok((pool, name, url))
}

/// Drops the benchmark's database, whatever is still connected to it.
pub(super) async fn drop_database(base_url: &str, name: &str) -> Result<(), String> {
    let admin = database::connect(base_url, 1)
        .await
        .map_err(|e| e.to_string())?;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    Ok(())
}

/// An in-process engine on `executor`, configured by `sink`'s variables as
/// `serve` would be.
pub(super) fn engine(
    pool: &PgPool,
    executor: &RunExecutor,
    sink: &[(&str, String)],
) -> Result<Engine, String> {
    let mut vars: Vec<(String, String)> =
        vec![("DATABASE_URL".into(), "postgres://bench/unused".into())];
    vars.extend(sink.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let config =
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .map_err(|e| e.to_string())?;
    Ok(http::build_engine_on(
        &config,
        pool.clone(),
        executor.clone(),
        CancellationToken::new(),
    ))
}

/// Starts a run and waits for it to leave `running`. Returns (users handled,
/// seconds), the duration taken from the run's own start and end timestamps
/// so the polling here neither adds to it nor competes with it much.
pub(super) async fn timed_run(
    engine: &Engine,
    pool: &PgPool,
    request: StartRequest,
) -> Result<(i64, f64), String> {
    let response = engine
        .start(&request, "bench")
        .await
        .map_err(|e| e.to_string())?;
    let (row, seconds) = wait_for_run_end(pool, &response.job.job_key).await?;
    Ok((row.run_scanned, seconds))
}

/// Waits for the job to leave `running`; returns its row and how long its
/// latest run took.
pub(super) async fn wait_for_run_end(
    pool: &PgPool,
    key: &str,
) -> Result<(store::JobRow, f64), String> {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let row = store::get_job(pool, key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        if !row.status().is_some_and(JobStatus::is_active) {
            let seconds = run_seconds(pool, key).await?;
            return Ok((row, seconds));
        }
    }
}

/// How long the job's latest run took, from its own start and end times.
pub(super) async fn run_seconds(pool: &PgPool, key: &str) -> Result<f64, String> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM ended_at - started_at)::float8
         FROM identity_graph_backfill_runs WHERE job_key = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())
}

/// An HTTP server's capacity under a plain request loop: `PUT`s per second
/// acknowledged with a 2xx, `concurrency` in flight for `seconds`.
pub(super) async fn plain_load(url: &str, concurrency: usize, seconds: u64) -> f64 {
    let client = reqwest::Client::new();
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let body = serde_json::json!({"user_id": 1, "email": "user1@example.com", "identifiers": {"email": "user1@example.com"}});
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, count, body) = (client.clone(), count.clone(), body.clone());
            let url = format!("{url}/users/{worker}");
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if let Ok(response) = client
                        .put(&url)
                        .bearer_auth("bench")
                        .json(&body)
                        .send()
                        .await
                    {
                        if response.status().is_success() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The `p`-th percentile (nearest rank), in milliseconds.
pub(super) fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

pub(super) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
