//! `bench`: throughput of the engine against its baselines, on a fresh
//! database seeded with N users. A benchmark, not a test: it prints figures.
//!
//! (a) a dry run; (b) the raw keyset scan with no bookkeeping; (c) real runs
//! against a loopback HTTP Identity Graph that answers at once, at
//! concurrency 1, 8 and 32; (d) that server's own capacity at concurrency 32;
//! (e) a real run of every user into the built-in Postgres graph, whose
//! tables are still empty and never analyzed, as on a fresh database.
//! In-process runs use the engine's runtime, as `serve` does.
//!
//! Then, with real `serve` processes and a graph process (`bench-graph`),
//! all children of this one: (2) a run against the graph process beside its
//! capacity under a plain load loop; (3) a run against a graph with a tail
//! (1% slow, 1% failing once) beside the bound Little's law gives; (4) the
//! console's latency, idle and during two runs at full speed, one per sink.
//!
//! (f) follows (e): 1,000 users spread below (e)'s cursor were held back
//! from the seed and arrive after it, as late commits would; the job's next
//! run catches them up, and is timed against a `reset_cursor` rerun of the
//! same job, which rewrites (replaces) every user.

use super::config::Config;
use super::runtime::open_executor;
use crate::backfill::{
    domain::*,
    engine::{Engine, RunExecutor},
    source, store,
};
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

mod processes;

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
    /// Concurrency of the dry run (a) and of the built-in graph run (e).
    #[arg(long, default_value_t = 8)]
    concurrency: i64,
    /// Skip (c) and (d), the HTTP figures.
    #[arg(long)]
    skip_http: bool,
    /// Skip (e), the built-in graph.
    #[arg(long)]
    skip_built_in_graph: bool,
    /// Concurrency of the runs and the load loop of (2), (3) and (4)'s HTTP run.
    #[arg(long, default_value_t = 32)]
    http_concurrency: i64,
    /// Skip (2), the run against the graph process and its capacity.
    #[arg(long)]
    skip_http_graph: bool,
    /// Skip (3), the run against the graph with a tail.
    #[arg(long)]
    skip_tail: bool,
    /// Skip (4), the console's latency.
    #[arg(long)]
    skip_console: bool,
}

/// The graph tables, whose sequential scans (e) reports.
const GRAPH_TABLES: [&str; 3] = [
    "identity_graph_users",
    "identity_graph_identifiers",
    "identity_graph_links",
];

/// What (e) measured.
struct GraphFigures {
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

async fn fresh_database(base_url: &str) -> Result<(PgPool, String, String), String> {
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
    Ok((pool, name, url))
}

fn engine(
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
    Ok(super::http::build_engine_on(
        &config,
        pool.clone(),
        executor.clone(),
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
    let (row, seconds) = wait_for_run_end(pool, &response.job.job_key).await?;
    Ok((row.run_scanned, seconds))
}

/// Waits for the job to leave `running`; returns its row and how long its
/// latest run took.
async fn wait_for_run_end(pool: &PgPool, key: &str) -> Result<(store::JobRow, f64), String> {
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
async fn run_seconds(pool: &PgPool, key: &str) -> Result<f64, String> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM ended_at - started_at)::float8
         FROM identity_graph_backfill_runs WHERE job_key = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())
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
fn time_at(samples: &[(f64, i64)], target: i64) -> f64 {
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
async fn built_in_graph_engine(
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
fn built_in_graph_request(batch: i64, concurrency: i64, reset_cursor: bool) -> StartRequest {
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

/// (e): a real run of every user into the built-in graph. The run gets its
/// own pool, closed at the end so that its backends report their statistics.
async fn built_in_graph_run(
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
    Ok(GraphFigures {
        users,
        seconds,
        first_rate,
        last_rate,
        scans,
        rss_at_first: rss_at_first.unwrap_or(rss_at_end),
        rss_at_end,
        rss_peak,
    })
}

/// The users (f) holds back from the seed: 1,000 spread over the whole
/// range, so each one leaves a gap below (e)'s cursor.
const LATE_ARRIVALS: &str = "id % (SELECT greatest(max(id) / 1000, 2) FROM users) = 1";

/// Moves the late arrivals out of `users` into `bench_late_arrivals` before
/// (e) runs. Returns how many.
async fn hold_back_late_arrivals(pool: &PgPool) -> Result<i64, String> {
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
struct CatchUpFigures {
    caught_up: i64,
    catch_up_seconds: f64,
    rerun_users: i64,
    rerun_seconds: f64,
}

/// (f): the late arrivals commit; the job's next run catches them up, then
/// a `reset_cursor` run rescans and rewrites every user.
async fn catch_up_run(
    pool: &PgPool,
    url: &str,
    runtime: &tokio::runtime::Handle,
    batch: i64,
    concurrency: i64,
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
    Ok(CatchUpFigures {
        caught_up,
        catch_up_seconds,
        rerun_users,
        rerun_seconds,
    })
}

pub async fn run(args: BenchArgs, runtime: &tokio::runtime::Handle) -> Result<(), String> {
    let base = Config::from_env().map_err(|e| e.to_string())?;
    let (pool, name, url) = fresh_database(&base.database_url).await?;
    println!("benchmark database {name}");
    let result = measure(&args, runtime, &pool, &url).await;
    pool.close().await;
    let admin = super::database::connect(&base.database_url, 1)
        .await
        .map_err(|e| e.to_string())?;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    result
}

async fn measure(
    args: &BenchArgs,
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    url: &str,
) -> Result<(), String> {
    let pool = pool.clone();
    let executor = open_executor(runtime, url, 40)
        .await
        .map_err(|e| e.to_string())?;

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
    let dry = engine(&pool, &executor, &[])?;
    let rss_before = rss_kib("VmRSS:");
    let (done, peak) = sample_peak_rss();
    let (handled, seconds) = timed_run(
        &dry,
        &pool,
        StartRequest {
            job_key: Some("bench-dry-run".into()),
            dry_run: Some(true),
            batch_size: Some(batch),
            concurrency: Some(args.concurrency),
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
        "(a) dry run, batch {batch}, concurrency {}:    {dry_rate:>10.0} users/s  ({handled} users)",
        args.concurrency
    );
    println!(
        "    memory during the dry run: {} KiB before, {} KiB peak (+{} KiB over {handled} users)",
        rss_before,
        dry_peak,
        dry_peak.saturating_sub(rss_before)
    );

    // (c) real runs against a loopback Identity Graph, time-boxed.
    let mut http_figures = None;
    if !args.skip_http {
        let graph_url = loopback_graph().await?;
        let http = engine(
            &pool,
            &executor,
            &[
                ("IDENTITY_GRAPH_SINK", "http".into()),
                ("IDENTITY_GRAPH_URL", graph_url.clone()),
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
        let capacity = plain_load(&graph_url, 32, args.seconds).await;
        println!("(d) loopback server capacity, concurrency 32: {capacity:>9.0} requests/s");
        http_figures = Some((rate_at_32, capacity));
    }

    // (e) opens a pool of its own; leave Postgres the connections for it.
    drop(dry);
    executor.pool.close().await;

    // (e) a real run into the built-in graph, (f) its catch-up.
    let mut graph_figures = None;
    let mut catch_up_figures = None;
    if !args.skip_built_in_graph {
        let held_back = hold_back_late_arrivals(&pool).await?;
        let figures = built_in_graph_run(&pool, url, runtime, batch, args.concurrency).await?;
        let rate = figures.users as f64 / figures.seconds;
        println!(
            "(e) built-in graph, batch {batch}, concurrency {}: {rate:>9.0} users/s  ({} users in {:.1}s)",
            args.concurrency, figures.users, figures.seconds
        );
        println!(
            "    first 100,000 users: {:.0} users/s; last 100,000: {:.0} users/s",
            figures.first_rate, figures.last_rate
        );
        for (table, before, after, index_scans) in &figures.scans {
            println!(
                "    seq_scan {table:<27} before {before:>4}, after {after:>4}  (idx_scan after: {index_scans})"
            );
        }
        println!(
            "    memory: {} KiB at 100,000 users, {} KiB at the end, {} KiB peak",
            figures.rss_at_first, figures.rss_at_end, figures.rss_peak
        );
        graph_figures = Some((rate, figures));
        let figures = catch_up_run(&pool, url, runtime, batch, args.concurrency).await?;
        println!(
            "(f) catch-up of {held_back} late arrivals below the cursor: {:.2}s ({} users); reset_cursor rerun: {:.1}s ({} users, {:.0} users/s replacing each)",
            figures.catch_up_seconds,
            figures.caught_up,
            figures.rerun_seconds,
            figures.rerun_users,
            figures.rerun_users as f64 / figures.rerun_seconds
        );
        catch_up_figures = Some(figures);
    }

    println!();
    println!(
        "ratio (a)/(b)       = {:.2}   (goal >= 0.5)",
        dry_rate / raw_rate
    );
    if let Some((rate_at_32, capacity)) = http_figures {
        println!(
            "ratio (c at 32)/(d) = {:.2}   (goal >= 0.6)",
            rate_at_32 / capacity
        );
    }
    if let Some((rate, figures)) = &graph_figures {
        println!(
            "(e) rate            = {rate:.0} users/s   (goal >= 20000: ratio {:.2})",
            rate / 20_000.0
        );
        println!(
            "(e) 1,000,000 users = {:.1}s   (goal < 50s: {} users in {:.1}s)",
            1_000_000.0 / rate,
            figures.users,
            figures.seconds
        );
        println!(
            "ratio (e)/(a)       = {:.2}   (goal >= 0.3)",
            rate / dry_rate
        );
        println!(
            "ratio (e) last 100,000 / first 100,000 = {:.2}   (goal >= 0.8)",
            figures.last_rate / figures.first_rate
        );
        let seq_scans: i64 = figures
            .scans
            .iter()
            .map(|(_, before, after, _)| after - before)
            .sum();
        println!(
            "(e) graph seq scans = {seq_scans}, {:.4} per user   (goal: none per user, ratio well below 1)",
            seq_scans as f64 / figures.users.max(1) as f64
        );
        let growth = figures.rss_at_end as f64 / figures.rss_at_first.max(1) as f64;
        println!(
            "(e) memory growth from 100,000 to {} users = {:+} KiB, ratio {growth:.2}   (goal: flat, <= 1.10); peak {} KiB",
            figures.users,
            figures.rss_at_end as i64 - figures.rss_at_first as i64,
            figures.rss_peak
        );
    }
    if let Some(figures) = &catch_up_figures {
        println!(
            "ratio (f) catch-up / reset rerun = {:.4}   (goal <= 0.05)",
            figures.catch_up_seconds / figures.rerun_seconds
        );
        println!(
            "(f) rerun rate, replacing every user = {:.0} users/s   (goal >= 20000: ratio {:.2})",
            figures.rerun_users as f64 / figures.rerun_seconds,
            figures.rerun_users as f64 / figures.rerun_seconds / 20_000.0
        );
    }
    println!(
        "peak memory of the process (VmHWM): {} KiB",
        rss_kib("VmHWM:")
    );

    if !(args.skip_http_graph && args.skip_tail && args.skip_console) {
        println!();
        processes::figures(args, runtime, &pool, url, batch).await?;
    }
    Ok(())
}
