//! (5) The brake against a graph of bounded capacity. `bench-graph
//! --profile capacity` serves `--workers` requests at once, each for
//! `--service-ms`; past that its answer time grows as a queue, and past
//! `--queue` waiting it answers 429 with `Retry-After: 1`. Beside every
//! run, a realtime client sends steady traffic at a tenth of the graph's
//! capacity and measures its own p99, standing for the signups and logins
//! that reach the graph all day.
//!
//! - (a) the graph's capacity, and the realtime p99 with the graph otherwise idle;
//! - (b) a static run at concurrency 64;
//! - (c) an adaptive run, its target twice the graph's idle answer time;
//! - (d) `max_rate` 2,000 against a fast graph (the instant profile), so
//!   the limiter alone sets the rate;
//! - (e) a `tune` from 5,000 to 1,000 mid-run, timed from the graph's side.

use super::graph_process::GraphStats;
use super::processes::{graph_stats, http_sink, spawn_graph_with, spawn_replica, Console};
use super::support::{percentile_ms, plain_load, verdict, wait_for_run_end};
use serde_json::json;
use sqlx::PgPool;
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// The capacity graph: 24 workers × 10 ms is 2,400 requests/s.
const WORKERS: usize = 24;
const SERVICE_MS: u64 = 10;
const QUEUE: usize = 24;
/// The static run's concurrency, well past the graph's workers.
const STATIC_CONCURRENCY: i64 = 64;
/// The limiter figures' rates.
const MAX_RATE: i64 = 2_000;
const TUNE_FROM: i64 = 5_000;
const TUNE_TO: i64 = 1_000;

/// Prints the figure; returns its summary lines.
pub(super) async fn measure(
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    database_url: &str,
    connections: i64,
    batch: i64,
    seconds: Duration,
) -> Result<Vec<String>, String> {
    let (graph, graph_url) = spawn_graph_with(
        "capacity",
        &[
            "--workers",
            &WORKERS.to_string(),
            "--service-ms",
            &SERVICE_MS.to_string(),
            "--queue",
            &QUEUE.to_string(),
        ],
    )
    .await?;
    println!(
        "(5) a graph of bounded capacity (bench-graph --profile capacity: {WORKERS} workers × {SERVICE_MS} ms, 429 with Retry-After: 1 past {QUEUE} waiting), beside a realtime client at a tenth of its capacity:"
    );
    let capacity = {
        let url = graph_url.clone();
        let load_seconds = seconds.as_secs();
        runtime
            .spawn(async move { plain_load(&url, WORKERS, load_seconds).await })
            .await
            .map_err(|e| e.to_string())?
    };
    let realtime_rate = (capacity / 10.0).round().max(1.0);
    let idle = Realtime::start(runtime, &graph_url, realtime_rate);
    tokio::time::sleep(seconds).await;
    let idle = idle.finish().await;
    println!(
        "(5a) the graph's capacity (plain load loop, {WORKERS} in flight): {capacity:>7.0} requests/s"
    );
    println!(
        "     realtime traffic at {realtime_rate:.0} requests/s, graph otherwise idle: p50 {:.1} ms, p99 {:.1} ms",
        idle.p50_ms(),
        idle.p99_ms()
    );

    let (replica, console) = spawn_replica(
        "capacity",
        database_url,
        connections,
        &http_sink(&graph_url),
    )
    .await?;
    let static_run = RunBeside::measure(
        runtime,
        pool,
        &console,
        &graph_url,
        realtime_rate,
        "bench-capacity-static",
        json!({"batch_size": batch, "concurrency": STATIC_CONCURRENCY}),
        seconds,
    )
    .await?;
    static_run.print(
        &format!("(5b) static run, concurrency {STATIC_CONCURRENCY}:"),
        capacity,
        &idle,
    );

    // Whole milliseconds, at least the graph's service time twice over.
    let target_ms = (2.0 * idle.p50_ms()).ceil().max(2.0 * SERVICE_MS as f64) as i64;
    let adaptive = RunBeside::measure(
        runtime,
        pool,
        &console,
        &graph_url,
        realtime_rate,
        "bench-capacity-adaptive",
        json!({
            "batch_size": batch, "concurrency": STATIC_CONCURRENCY,
            "adaptive": true, "target_latency_ms": target_ms,
        }),
        seconds,
    )
    .await?;
    adaptive.print(
        &format!(
            "(5c) adaptive run, target_latency_ms {target_ms} (twice the idle p50), concurrency ceiling {STATIC_CONCURRENCY}:"
        ),
        capacity,
        &idle,
    );
    replica.terminate().await;
    graph.terminate().await;

    let (fast_graph, fast_url) = spawn_graph_with("instant", &[]).await?;
    let (replica, console) =
        spawn_replica("brake", database_url, connections, &http_sink(&fast_url)).await?;
    let limited = limited_rate(pool, &console, batch, seconds).await?;
    println!(
        "(5d) max_rate {MAX_RATE} against the instant graph, concurrency 32: {limited:>7.0} users/s achieved"
    );
    let settled = tune_down(pool, &console, &fast_url, batch).await?;
    match settled {
        Some(after) => println!(
            "(5e) tune max_rate {TUNE_FROM} → {TUNE_TO} mid-run: the graph's rate over 250 ms windows is within 10% of {TUNE_TO} {:.0} ms after tune answered",
            after.as_secs_f64() * 1000.0
        ),
        None => println!(
            "(5e) tune max_rate {TUNE_FROM} → {TUNE_TO} mid-run: the rate did not come within 10% of {TUNE_TO} in 5 s"
        ),
    }
    replica.terminate().await;
    fast_graph.terminate().await;

    let throughput_ratio = adaptive.rate / capacity;
    let p99_ratio = adaptive.realtime.p99_ms() / idle.p99_ms();
    let throttled_share = adaptive.throttled_share();
    let limited_ratio = limited / MAX_RATE as f64;
    Ok(vec![
        format!(
            "ratio (5c) adaptive run / capacity      = {throughput_ratio:.2}   (goal >= 0.85: {}; static run {:.2})",
            verdict(throughput_ratio >= 0.85),
            static_run.rate / capacity
        ),
        format!(
            "ratio (5c) realtime p99 / idle p99       = {p99_ratio:.2}   (goal <= 2: {}; static run {:.2})",
            verdict(p99_ratio <= 2.0),
            static_run.realtime.p99_ms() / idle.p99_ms()
        ),
        format!(
            "(5c) 429s / the run's requests          = {:.2}%  (goal <= 1%: {}; static run {:.2}%)",
            throttled_share * 100.0,
            verdict(throttled_share <= 0.01),
            static_run.throttled_share() * 100.0
        ),
        format!(
            "ratio (5d) achieved / max_rate {MAX_RATE}     = {limited_ratio:.3}  (goal within ±5%: {})",
            verdict((limited_ratio - 1.0).abs() <= 0.05)
        ),
        format!(
            "(5e) tune {TUNE_FROM} → {TUNE_TO}, time to within 10%   = {}  (goal <= 1 s: {})",
            settled.map_or("over 5 s".to_string(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            verdict(settled.is_some_and(|d| d <= Duration::from_secs(1)))
        ),
    ])
}

/// A run started through the console beside realtime traffic, and what
/// the graph and the realtime client saw while it ran.
struct RunBeside {
    /// Users written per second, from the run's own counters and times.
    rate: f64,
    /// The run's requests and 429s: the graph's counts less the realtime client's.
    requests: u64,
    throttled: u64,
    realtime: RealtimeFigures,
}

impl RunBeside {
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        runtime: &tokio::runtime::Handle,
        pool: &PgPool,
        console: &Console,
        graph_url: &str,
        realtime_rate: f64,
        key: &str,
        options: serde_json::Value,
        seconds: Duration,
    ) -> Result<Self, String> {
        let before = graph_stats(graph_url).await?;
        let realtime = Realtime::start(runtime, graph_url, realtime_rate);
        start(console, key, options, seconds).await?;
        let (row, run_seconds) = wait_for_run_end(pool, key).await?;
        let realtime = realtime.finish().await;
        let seen: GraphStats = graph_stats(graph_url).await?.since(&before);
        Ok(Self {
            rate: row.processed as f64 / run_seconds,
            requests: seen.requests.saturating_sub(realtime.requests),
            throttled: seen.throttled.saturating_sub(realtime.throttled),
            realtime,
        })
    }

    fn throttled_share(&self) -> f64 {
        self.throttled as f64 / (self.requests.max(1)) as f64
    }

    fn print(&self, title: &str, capacity: f64, idle: &RealtimeFigures) {
        println!("{title}");
        println!(
            "     throughput {:>7.0} users/s ({:.2} of capacity); realtime p99 {:.1} ms ({:.2}× idle); 429s {} of {} requests ({:.2}%); realtime answered 429 {} times and failed {} times",
            self.rate,
            self.rate / capacity,
            self.realtime.p99_ms(),
            self.realtime.p99_ms() / idle.p99_ms(),
            self.throttled,
            self.requests,
            self.throttled_share() * 100.0,
            self.realtime.throttled,
            self.realtime.failed
        );
    }
}

/// Starts a time-boxed real run with no sleep, no retry pass and no resume.
async fn start(
    console: &Console,
    key: &str,
    options: serde_json::Value,
    seconds: Duration,
) -> Result<(), String> {
    let mut body = json!({
        "job_key": key, "sleep_ms": 0,
        "max_runtime_ms": seconds.as_millis() as i64,
        "retry_failed_before_cursor": false, "auto_resume": false,
    });
    for (field, value) in options.as_object().into_iter().flatten() {
        body[field] = value.clone();
    }
    let answer = console.call("start", body).await?;
    if answer["started"] != json!(true) {
        return Err(format!("{key} did not start: {answer}"));
    }
    Ok(())
}

/// (d): the rate a run achieves with `max_rate` set and nothing else in the way.
async fn limited_rate(
    pool: &PgPool,
    console: &Console,
    batch: i64,
    seconds: Duration,
) -> Result<f64, String> {
    start(
        console,
        "bench-max-rate",
        json!({"batch_size": batch, "concurrency": 32, "max_rate": MAX_RATE}),
        seconds,
    )
    .await?;
    let (row, run_seconds) = wait_for_run_end(pool, "bench-max-rate").await?;
    Ok(row.processed as f64 / run_seconds)
}

/// (e): starts at `TUNE_FROM`, tunes to `TUNE_TO` after two seconds, and
/// reads the graph's counter every 50 ms. Returns how long after `tune`
/// answered the rate over the last 250 ms first came within 10% of
/// `TUNE_TO`, or `None` if it did not within 5 s.
async fn tune_down(
    pool: &PgPool,
    console: &Console,
    graph_url: &str,
    batch: i64,
) -> Result<Option<Duration>, String> {
    let key = "bench-tune";
    start(
        console,
        key,
        json!({"batch_size": batch, "concurrency": 32, "max_rate": TUNE_FROM}),
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = console
        .call("tune", json!({"job_key": key, "max_rate": TUNE_TO}))
        .await?;
    let tuned_at = Instant::now();
    if answer["job"]["status"] != json!("running") {
        return Err(format!("{key} was not running when tuned: {answer}"));
    }
    let window = Duration::from_millis(250);
    let mut readings: Vec<(Instant, u64)> = vec![(tuned_at, graph_stats(graph_url).await?.users)];
    let mut settled = None;
    while tuned_at.elapsed() < Duration::from_secs(5) && settled.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = (Instant::now(), graph_stats(graph_url).await?.users);
        readings.push(now);
        let Some(&(then, users_then)) = readings
            .iter()
            .rev()
            .find(|(at, _)| now.0.duration_since(*at) >= window)
        else {
            continue;
        };
        let rate = (now.1 - users_then) as f64 / now.0.duration_since(then).as_secs_f64();
        if (rate / TUNE_TO as f64 - 1.0).abs() <= 0.10 {
            settled = Some(now.0.duration_since(tuned_at));
        }
    }
    console.call("stop", json!({"job_key": key})).await?;
    wait_for_run_end(pool, key).await?;
    Ok(settled)
}

/// Steady, open-loop traffic: one request every 1/rate seconds whatever the
/// answers, so a slow graph shows as latency rather than as fewer requests.
struct Realtime {
    running: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<Answer>>>,
}

#[derive(Clone, Copy)]
enum Answer {
    Acknowledged(Duration),
    Throttled,
    Failed,
}

struct RealtimeFigures {
    latencies: Vec<Duration>,
    requests: u64,
    throttled: u64,
    failed: u64,
}

impl RealtimeFigures {
    fn p50_ms(&self) -> f64 {
        percentile_ms(&self.latencies, 0.50)
    }
    fn p99_ms(&self) -> f64 {
        percentile_ms(&self.latencies, 0.99)
    }
}

impl Realtime {
    fn start(runtime: &tokio::runtime::Handle, graph_url: &str, rate: f64) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let client = reqwest::Client::new();
        let base = graph_url.to_string();
        let flag = running.clone();
        let every = Duration::from_secs_f64(1.0 / rate);
        let handle = runtime.clone();
        let sender = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = Vec::new();
            // Realtime users are far above the seeded ids, so they never
            // share a user with the backfill.
            let mut user_id = 1_000_000_000_i64;
            while flag.load(Ordering::Relaxed) {
                ticks.tick().await;
                user_id += 1;
                let (client, url) = (client.clone(), format!("{base}/users/{user_id}"));
                sent.push(handle.spawn(async move {
                    let body = json!({"user_id": user_id, "identifiers": {"email": format!("rt{user_id}@example.com")}});
                    let started = Instant::now();
                    match client.put(&url).bearer_auth("bench").json(&body).send().await {
                        Ok(r) if r.status().is_success() => Answer::Acknowledged(started.elapsed()),
                        Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => Answer::Throttled,
                        _ => Answer::Failed,
                    }
                }));
            }
            sent
        });
        Self { running, sender }
    }

    async fn finish(self) -> RealtimeFigures {
        self.running.store(false, Ordering::Relaxed);
        let sent = self.sender.await.unwrap_or_default();
        let mut answers = Vec::with_capacity(sent.len());
        for request in sent {
            if let Ok(answer) = request.await {
                answers.push(answer);
            }
        }
        let mut figures = RealtimeFigures {
            latencies: Vec::new(),
            requests: answers.len() as u64,
            throttled: 0,
            failed: 0,
        };
        for answer in answers {
            match answer {
                Answer::Acknowledged(took) => figures.latencies.push(took),
                Answer::Throttled => figures.throttled += 1,
                Answer::Failed => figures.failed += 1,
            }
        }
        figures
    }
}
