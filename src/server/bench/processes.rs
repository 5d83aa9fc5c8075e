//! The benchmark figures that need processes of their own: (2) the HTTP
//! graph, (3) the tail and (4) the console's latency. Everything here is a
//! child of the benchmark: `bench-graph` processes as the Identity Graph and
//! `serve` replicas on the benchmark's database, one per sink, since the
//! sink is per-process configuration. Runs are started through the API as a
//! signed-in admin, as an operator would.

use super::{plain_load, wait_for_run_end, BenchArgs};
use crate::backfill::{domain::*, sinks::http::MAX_ATTEMPTS, store};
use crate::server::bench_graph::{GraphStats, SLOW_ANSWER};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// The benchmark's admin on its throw-away database.
const ADMIN: (&str, &str) = ("operator@example.com", "velvet-comet-harbor-quinoa-ledger");
/// The console's latency goal, for `list` and `GET /` at p95.
const CONSOLE_P95_GOAL_MS: f64 = 50.0;
/// How long the idle console is sampled.
const IDLE_SAMPLING: Duration = Duration::from_secs(3);
/// The pause between rounds of console samples: an attentive operator's
/// tabs, not a load test of the console.
const SAMPLE_PAUSE: Duration = Duration::from_millis(20);

/// A child process of this binary; SIGTERM on [`ChildProcess::terminate`],
/// SIGKILL when dropped without it.
struct ChildProcess {
    name: String,
    child: tokio::process::Child,
}

impl ChildProcess {
    fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this binary to start {name}: {e}"))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// SIGTERM, as a deployment stops a replica; SIGKILL after 15 s.
    async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not exit 15 s after SIGTERM; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// A graph process (`bench-graph`) and its base URL.
async fn spawn_graph(profile: &str) -> Result<(ChildProcess, String), String> {
    let name = format!("bench-graph --profile {profile}");
    let mut process = ChildProcess::spawn(
        &name,
        &["bench-graph", "--addr", "127.0.0.1:0", "--profile", profile],
        &[],
    )?;
    let stdout = process.child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| format!("{name} did not say where it listens within 30 s"))?
        .map_err(|e| format!("{name}: {e}"))?
        .ok_or_else(|| format!("{name} exited before listening"))?;
    let url = line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("{name} said {line:?}"))?
        .to_string();
    Ok((process, url))
}

async fn graph_stats(url: &str) -> Result<GraphStats, String> {
    reqwest::get(format!("{url}/stats"))
        .await
        .map_err(|e| format!("graph stats: {e}"))?
        .json()
        .await
        .map_err(|e| format!("graph stats: {e}"))
}

/// The console of one `serve` replica, signed in as the benchmark's admin.
struct Console {
    name: &'static str,
    base: String,
    cookie: String,
    client: reqwest::Client,
}

impl Console {
    fn api(&self, endpoint: &str) -> String {
        format!("{}/api/identity-graph-backfill/{endpoint}", self.base)
    }

    async fn call(&self, endpoint: &str, body: Value) -> Result<Value, String> {
        let response = self
            .client
            .post(self.api(endpoint))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{endpoint} on {}: {e}", self.name))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{endpoint} on {}: {status}: {text}", self.name));
        }
        serde_json::from_str(&text).map_err(|e| format!("{endpoint} on {}: {e}", self.name))
    }

    /// Starts a real run at full speed: no sleep, the largest batch, no
    /// retry pass, no resume.
    async fn start_full_speed(
        &self,
        key: &str,
        batch: i64,
        concurrency: i64,
        max_runtime: Duration,
    ) -> Result<(), String> {
        let answer = self
            .call(
                "start",
                json!({
                    "job_key": key, "batch_size": batch, "concurrency": concurrency,
                    "sleep_ms": 0, "max_runtime_ms": max_runtime.as_millis() as i64,
                    "retry_failed_before_cursor": false, "auto_resume": false,
                }),
            )
            .await?;
        if answer["started"] != json!(true) {
            return Err(format!("{key} did not start on {}: {answer}", self.name));
        }
        Ok(())
    }

    /// One `list` call, timed to its last byte.
    async fn time_list(&self) -> Result<Duration, String> {
        let started = Instant::now();
        self.call("list", json!({})).await?;
        Ok(started.elapsed())
    }

    /// One `GET /` as the signed-in admin, timed to its last byte.
    async fn time_page(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("{}/", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .map_err(|e| format!("GET / on {}: {e}", self.name))?;
        let status = response.status();
        response.bytes().await.map_err(|e| e.to_string())?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("GET / on {}: {status}", self.name));
        }
        Ok(started.elapsed())
    }
}

/// A `serve` replica on the benchmark's database, signed in.
async fn spawn_replica(
    name: &'static str,
    database_url: &str,
    max_connections: i64,
    sink: &[(&str, String)],
) -> Result<(ChildProcess, Console), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("no free port for the {name} replica: {e}"))?
        .port();
    let mut env = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}")),
        ("IDENTITY_GRAPH_BACKFILL_ADMINS", ADMIN.0.to_string()),
        (
            "IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS",
            "3600000".to_string(),
        ),
        ("DATABASE_MAX_CONNECTIONS", max_connections.to_string()),
    ];
    env.extend(sink.iter().cloned());
    let process = ChildProcess::spawn(&format!("the {name} replica"), &["serve"], &env)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            return Err(format!(
                "the {name} replica did not answer /healthz in 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("{base}/api/identity-graph-backfill/login"))
        .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .map_err(|e| format!("sign-in on the {name} replica: {e}"))?;
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("igb_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| format!("sign-in on the {name} replica: {}", response.status()))?;
    Ok((
        process,
        Console {
            name,
            base,
            cookie,
            client,
        },
    ))
}

#[derive(Default)]
struct Latencies {
    list: Vec<Duration>,
    page: Vec<Duration>,
}

/// The `p`-th percentile (nearest rank), in milliseconds.
fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
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

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// (2), (3) and (4), each printed as it is measured, then their ratios.
pub(super) async fn figures(
    args: &BenchArgs,
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    database_url: &str,
    batch: i64,
) -> Result<(), String> {
    crate::access::ssr::upsert_admin(pool, ADMIN.0, ADMIN.1)
        .await
        .map_err(|e| format!("cannot create the benchmark's admin: {e}"))?;
    let concurrency = CONCURRENCY.bounds.clamp(args.http_concurrency);
    let seconds = Duration::from_secs(args.seconds.max(1));
    // Two pools per replica (the console's and the engine's); room for the
    // run's concurrency, and under Postgres's 100 connections with two
    // replicas and this process.
    let http_connections = 12;
    let built_in_connections = (args.concurrency + 4).clamp(12, 30);
    let mut summary = Vec::new();

    let mut instant = None;
    if !(args.skip_http_graph && args.skip_console) {
        let (graph, graph_url) = spawn_graph("instant").await?;
        let sink = http_sink(&graph_url);
        let (replica, console) =
            spawn_replica("http", database_url, http_connections, &sink).await?;
        instant = Some((graph, graph_url, replica, console));
    }

    if let (false, Some((_, graph_url, _, console))) = (args.skip_http_graph, &instant) {
        println!(
            "(2) HTTP graph in a process of its own (bench-graph --profile instant), concurrency {concurrency}:"
        );
        let capacity = {
            let url = graph_url.clone();
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
        summary.push(format!(
            "ratio (2) run / graph capacity = {ratio:.2}   (goal >= 0.9: {})",
            verdict(ratio >= 0.9)
        ));
    }

    if !args.skip_tail {
        let (graph, graph_url) = spawn_graph("tail").await?;
        let (replica, console) = spawn_replica(
            "tail",
            database_url,
            http_connections,
            &http_sink(&graph_url),
        )
        .await?;
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
        summary.push(format!(
            "ratio (3) run / Little's bound = {ratio:.2}   (goal >= 0.7: {})",
            verdict(ratio >= 0.7)
        ));
    }

    if let (false, Some((_, _, _, http_console))) = (args.skip_console, &instant) {
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
            .start_full_speed(BUILT_IN_KEY, batch, args.concurrency, no_cap)
            .await?;
        http_console
            .start_full_speed(HTTP_KEY, batch, concurrency, no_cap)
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
            "    during the load: the built-in graph run at {:.0} users/s (concurrency {}), the HTTP graph run at {:.0} users/s (concurrency {concurrency}), over {load_seconds:.1}s{}",
            rate(0),
            args.concurrency,
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
        summary.push(format!(
            "(4) console p95 under load, worst replica = list {list_p95:.1} ms, GET / {page_p95:.1} ms   (goal < {CONSOLE_P95_GOAL_MS} ms: ratio {:.2}, {})",
            list_p95.max(page_p95) / CONSOLE_P95_GOAL_MS,
            verdict(list_p95.max(page_p95) < CONSOLE_P95_GOAL_MS)
        ));
    }

    if let Some((graph, _, replica, _)) = instant {
        replica.terminate().await;
        graph.terminate().await;
    }
    println!();
    for line in summary {
        println!("{line}");
    }
    Ok(())
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

fn http_sink(graph_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IDENTITY_GRAPH_SINK", "http".to_string()),
        ("IDENTITY_GRAPH_URL", graph_url.to_string()),
        ("IDENTITY_GRAPH_TOKEN", "bench".to_string()),
    ]
}
