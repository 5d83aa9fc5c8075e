//! `bench`: throughput of the engine against its baselines, on a fresh
//! database seeded with N users. A benchmark, not a test: it prints figures.
//!
//! (a) a dry run; (b) the raw keyset scan with no bookkeeping; (c) real runs
//! against a loopback HTTP Identity Graph that answers at once, at
//! concurrency 1, 8 and 32; (d) that server's own capacity at concurrency 32.

use super::config::Config;
use crate::backfill::{domain::*, engine::Engine, source, store};
use axum::{routing::put, Router};
use sqlx::PgPool;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// How many users to seed.
    #[arg(long, default_value_t = 1_000_000)]
    users: i64,
    /// Batch size for the scans.
    #[arg(long, default_value_t = 1_000)]
    batch_size: i64,
    /// How long each HTTP measurement runs, in seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
}

fn rss_kib(field: &str) -> u64 {
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
fn sample_peak_rss() -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
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

async fn fresh_database(base_url: &str) -> Result<(PgPool, String), String> {
    let admin = super::database::connect(base_url, 2)
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
    let pool = super::database::connect(&url, 40)
        .await
        .map_err(|e| e.to_string())?;
    super::database::migrate(&pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok((pool, name))
}

fn engine(pool: &PgPool, sink: &[(&str, String)]) -> Result<Engine, String> {
    let mut vars: Vec<(String, String)> =
        vec![("DATABASE_URL".into(), "postgres://bench/unused".into())];
    vars.extend(sink.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let config =
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .map_err(|e| e.to_string())?;
    Ok(super::http::build_engine(
        &config,
        pool.clone(),
        CancellationToken::new(),
    ))
}

/// Starts a run and waits for it to leave `running`. Returns (users handled,
/// seconds), the duration taken from the run's own start and end timestamps
/// so the polling here neither adds to it nor competes with it much.
async fn timed_run(
    engine: &Engine,
    pool: &PgPool,
    request: StartRequest,
) -> Result<(i64, f64), String> {
    let response = engine
        .start(&request, "bench")
        .await
        .map_err(|e| e.to_string())?;
    let key = response.job.job_key;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let row = store::get_job(pool, &key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        if !row.status().is_some_and(JobStatus::is_active) {
            let seconds: f64 = sqlx::query_scalar(
                "SELECT extract(epoch FROM ended_at - started_at)::float8
                 FROM identity_graph_backfill_runs WHERE job_key = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(&key)
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
            return Ok((row.run_scanned, seconds));
        }
    }
}

async fn loopback_graph() -> Result<String, String> {
    let app = Router::new().route(
        "/users/{id}",
        put(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// (d): the loopback server's own capacity, with a plain request loop.
async fn plain_load(url: &str, concurrency: usize, seconds: u64) -> f64 {
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

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let base = Config::from_env().map_err(|e| e.to_string())?;
    let (pool, name) = fresh_database(&base.database_url).await?;
    println!("benchmark database {name}");

    let seeded = Instant::now();
    super::seed::seed_demo_users(&pool, args.users)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "seeded {} users in {:.1}s",
        args.users,
        seeded.elapsed().as_secs_f64()
    );
    let batch = BATCH_SIZE.bounds.clamp(args.batch_size);

    // (b) the raw keyset scan, no bookkeeping.
    let started = Instant::now();
    let (mut cursor, mut scanned) = (0i64, 0i64);
    loop {
        let users = source::users_after(&pool, cursor, batch as u32)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = users.last() else { break };
        cursor = last.id;
        scanned += users.len() as i64;
    }
    let raw_rate = scanned as f64 / started.elapsed().as_secs_f64();
    println!(
        "(b) raw keyset scan, batch {batch}:           {raw_rate:>10.0} users/s  ({scanned} users)"
    );

    // (a) a dry run through the engine, with memory sampled.
    let dry = engine(&pool, &[])?;
    let rss_before = rss_kib("VmRSS:");
    let (done, peak) = sample_peak_rss();
    let (handled, seconds) = timed_run(
        &dry,
        &pool,
        StartRequest {
            job_key: Some("bench-dry-run".into()),
            dry_run: Some(true),
            batch_size: Some(batch),
            sleep_ms: Some(0),
            max_runtime_ms: Some(MAX_RUNTIME_MS.bounds.max),
            ..Default::default()
        },
    )
    .await?;
    done.store(true, Ordering::Relaxed);
    let dry_peak = peak.await.unwrap_or(0);
    let dry_rate = handled as f64 / seconds;
    println!(
        "(a) dry run, batch {batch}:                   {dry_rate:>10.0} users/s  ({handled} users)"
    );
    println!(
        "    memory during the dry run: {} KiB before, {} KiB peak (+{} KiB over {handled} users)",
        rss_before,
        dry_peak,
        dry_peak.saturating_sub(rss_before)
    );

    // (c) real runs against a loopback Identity Graph, time-boxed.
    let url = loopback_graph().await?;
    let http = engine(
        &pool,
        &[
            ("IDENTITY_GRAPH_SINK", "http".into()),
            ("IDENTITY_GRAPH_URL", url.clone()),
            ("IDENTITY_GRAPH_TOKEN", "bench".into()),
        ],
    )?;
    let mut rate_at_32 = 0.0;
    for concurrency in [1i64, 8, 32] {
        let (handled, seconds) = timed_run(
            &http,
            &pool,
            StartRequest {
                job_key: Some(format!("bench-http-c{concurrency}")),
                batch_size: Some(batch),
                concurrency: Some(concurrency),
                sleep_ms: Some(0),
                max_runtime_ms: Some((args.seconds * 1000) as i64),
                retry_failed_before_cursor: Some(false),
                auto_resume: Some(false),
                ..Default::default()
            },
        )
        .await?;
        let rate = handled as f64 / seconds;
        if concurrency == 32 {
            rate_at_32 = rate;
        }
        println!("(c) real run over HTTP, concurrency {concurrency:>2}:     {rate:>10.0} users/s  ({handled} users in {seconds:.1}s)");
    }

    // (d) the same server, driven by a plain load loop.
    let capacity = plain_load(&url, 32, args.seconds).await;
    println!("(d) loopback server capacity, concurrency 32: {capacity:>9.0} requests/s");

    println!();
    println!(
        "ratio (a)/(b)       = {:.2}   (goal >= 0.5)",
        dry_rate / raw_rate
    );
    println!(
        "ratio (c at 32)/(d) = {:.2}   (goal >= 0.6)",
        rate_at_32 / capacity
    );
    println!(
        "peak memory of the process (VmHWM): {} KiB",
        rss_kib("VmHWM:")
    );

    drop(dry);
    drop(http);
    pool.close().await;
    let admin = super::database::connect(&base.database_url, 1)
        .await
        .map_err(|e| e.to_string())?;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    Ok(())
}
