//! (4) The console's latency: p50 and p95 of `list` and `GET /` over HTTP
//! as a signed-in admin, on a `postgres` and an `http` replica, idle and
//! while each replica runs a job at full speed.

use super::processes::{spawn_replica, Console};
use super::support::{percentile_ms, verdict, wait_for_run_end};
use crate::backfill::{domain::*, store};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The console's latency goal at p95.
pub(super) const CONSOLE_P95_GOAL_MS: f64 = 50.0;
/// How long the idle console is sampled.
const IDLE_SAMPLING: Duration = Duration::from_secs(3);
/// The pause between rounds of console samples: an attentive operator's
/// tabs, not a load test of the console.
const SAMPLE_PAUSE: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Latencies {
    list: Vec<Duration>,
    page: Vec<Duration>,
}

/// Samples `list` and `GET /` of each console in turn, for `duration` or
/// until `keep_going` (asked twice a second) says no.
async fn sample_consoles(
    consoles: &[&Console],
    duration: Duration,
    mut keep_going: impl AsyncFnMut() -> Result<bool, String>,
) -> Result<Vec<Latencies>, String> {
    let mut latencies: Vec<Latencies> = consoles.iter().map(|_| Latencies::default()).collect();
    let started = Instant::now();
    let mut next_check = started;
    while started.elapsed() < duration {
        if Instant::now() >= next_check {
            if !keep_going().await? {
                break;
            }
            next_check += Duration::from_millis(500);
        }
        for (console, latencies) in consoles.iter().zip(&mut latencies) {
            latencies.list.push(console.time_list().await?);
            latencies.page.push(console.time_page().await?);
        }
        tokio::time::sleep(SAMPLE_PAUSE).await;
    }
    Ok(latencies)
}

fn print_latencies(label: &str, console: &Console, latencies: &Latencies) {
    println!(
        "    {label:<11} {:<9} {:>7.1} {:>7.1}   {:>7.1} {:>7.1}   {:>5}",
        console.name,
        percentile_ms(&latencies.list, 0.5),
        percentile_ms(&latencies.list, 0.95),
        percentile_ms(&latencies.page, 0.5),
        percentile_ms(&latencies.page, 0.95),
        latencies.list.len(),
    );
}

async fn job_rows(pool: &PgPool, keys: [&str; 2]) -> Result<[store::JobRow; 2], String> {
    let mut rows = Vec::with_capacity(2);
    for key in keys {
        rows.push(
            store::get_job(pool, key)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("job {key} vanished"))?,
        );
    }
    rows.try_into()
        .map_err(|_| "two keys give two rows".to_string())
}

/// What a run of (4) is given: the `http` replica's console, and how the
/// `postgres` replica and both runs are shaped.
pub(super) struct ConsoleLoad<'a> {
    pub(super) http_console: &'a Console,
    pub(super) built_in_connections: i64,
    pub(super) batch: i64,
    pub(super) built_in_concurrency: i64,
    pub(super) http_concurrency: i64,
    pub(super) seconds: Duration,
}

/// Starts the `postgres` replica beside the `http` one; prints the figure
/// and returns its summary line.
pub(super) async fn measure(
    pool: &PgPool,
    database_url: &str,
    load: ConsoleLoad<'_>,
) -> Result<String, String> {
    let ConsoleLoad {
        http_console,
        built_in_connections,
        batch,
        built_in_concurrency,
        http_concurrency,
        seconds,
    } = load;
    let (replica, built_in_console) = spawn_replica(
        "postgres",
        database_url,
        built_in_connections,
        &[("IDENTITY_GRAPH_SINK", "postgres".to_string())],
    )
    .await?;
    let consoles = [&built_in_console, http_console];
    println!("(4) console latency over HTTP as a signed-in admin, in ms, on each replica:");
    println!("                          list p50     p95   GET / p50     p95   samples");
    let idle = sample_consoles(&consoles, IDLE_SAMPLING, async || Ok(true)).await?;
    for (console, latencies) in consoles.iter().zip(&idle) {
        print_latencies("idle", console, latencies);
    }

    const BUILT_IN_KEY: &str = "bench-console-built-in";
    const HTTP_KEY: &str = "bench-console-http";
    let no_cap = Duration::from_millis(MAX_RUNTIME_MS.bounds.max as u64);
    built_in_console
        .start_full_speed(BUILT_IN_KEY, batch, built_in_concurrency, no_cap)
        .await?;
    http_console
        .start_full_speed(HTTP_KEY, batch, http_concurrency, no_cap)
        .await?;
    let keys = [BUILT_IN_KEY, HTTP_KEY];
    let rows = async || job_rows(pool, keys).await;
    let both_running = |rows: &[store::JobRow; 2]| {
        rows.iter()
            .all(|row| row.status() == Some(JobStatus::Running))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_start = loop {
        let now = rows().await?;
        if now.iter().all(|row| row.processed > 0) || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let load_started = Instant::now();
    let loaded = sample_consoles(&consoles, seconds, async || {
        Ok(both_running(&rows().await?))
    })
    .await?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let at_end = rows().await?;
    for key in keys {
        built_in_console
            .call("stop", json!({"job_key": key}))
            .await?;
    }
    for (console, latencies) in consoles.iter().zip(&loaded) {
        print_latencies("under load", console, latencies);
    }
    let rate = |i: usize| (at_end[i].processed - at_start[i].processed) as f64 / load_seconds;
    println!(
        "    during the load: the built-in graph run at {:.0} users/s (concurrency {built_in_concurrency}), the HTTP graph run at {:.0} users/s (concurrency {http_concurrency}), over {load_seconds:.1}s{}",
        rate(0),
        rate(1),
        if both_running(&at_end) { "" } else { " (a run ended before the sampling did)" }
    );
    for key in keys {
        wait_for_run_end(pool, key).await?;
    }
    replica.terminate().await;
    let worst = |pick: fn(&Latencies) -> &Vec<Duration>| {
        loaded
            .iter()
            .map(|latencies| percentile_ms(pick(latencies), 0.95))
            .fold(0.0, f64::max)
    };
    let (list_p95, page_p95) = (worst(|l| &l.list), worst(|l| &l.page));
    Ok(format!(
        "(4) console p95 under load, worst replica = list {list_p95:.1} ms, GET / {page_p95:.1} ms   (goal < {CONSOLE_P95_GOAL_MS} ms: ratio {:.2}, {})",
        list_p95.max(page_p95) / CONSOLE_P95_GOAL_MS,
        verdict(list_p95.max(page_p95) < CONSOLE_P95_GOAL_MS)
    ))
}
