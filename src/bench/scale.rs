//! (6) Scale (`--scale`, with `--users 10000000`): the console, the
//! coverage check and the database stay quick at tens of millions of users.
//!
//! On the benchmark's seeded users (set-based SQL), through one `serve`
//! replica writing to the built-in graph, as an operator would:
//! - a dry run over every user, and its rate;
//! - a real run into the built-in graph over every user, and its rate over
//!   the first and the last 1,000,000 users;
//! - the background coverage check that run's end begins, and a "Check
//!   again" (`check_coverage`), timed;
//! - the p95 of `list`, `job` and `GET /jobs/<key>`, idle and while 10
//!   simulated tabs poll the job page;
//! - the replica's peak memory after the dry run and at the end.
//!
//! The baseline (before the check was stored): the `job` call took
//! 3.6 s p50 / 3.9 s p95 at 10,000,000 users, `GET /jobs/<key>` 3.6 s p50.

use super::built_in_graph::time_at;
use super::console_latency::CONSOLE_P95_GOAL_MS;
use super::processes::{spawn_replica, ChildProcess, Console};
use super::support::{percentile_ms, verdict, wait_for_run_end};
use crate::backfill::{domain::*, store};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The `job` call's p50 and p95 at 10,000,000 users before (issue 22).
const BASELINE_USERS: i64 = 10_000_000;
const BASELINE_JOB_P50_MS: f64 = 3_600.0;
const BASELINE_JOB_P95_MS: f64 = 3_900.0;
/// The coverage check's goal.
const COVERAGE_GOAL: Duration = Duration::from_secs(30);
/// The seeding goal at 10,000,000 users.
pub(super) const SEED_GOAL: Duration = Duration::from_secs(60);
/// How many tabs poll the job page under load, and how often each does.
const TABS: usize = 10;
const TAB_POLL: Duration = Duration::from_millis(500);
/// How long each console sampling lasts.
const SAMPLING: Duration = Duration::from_secs(5);
/// A million users: the span the graph's rate is measured over.
const MILLION: i64 = 1_000_000;

const DRY_KEY: &str = "bench-scale";
const REAL_KEY: &str = "bench-scale-graph";

#[derive(Default)]
struct Latencies {
    list: Vec<Duration>,
    job: Vec<Duration>,
    page: Vec<Duration>,
}

impl Latencies {
    fn p95s(&self) -> [f64; 3] {
        [
            percentile_ms(&self.list, 0.95),
            percentile_ms(&self.job, 0.95),
            percentile_ms(&self.page, 0.95),
        ]
    }

    fn print(&self, label: &str) {
        println!(
            "    {label:<22} list {:>6.1} / {:>6.1}   job {:>6.1} / {:>6.1}   GET /jobs/<key> {:>6.1} / {:>6.1}   ({} samples each)",
            percentile_ms(&self.list, 0.5),
            percentile_ms(&self.list, 0.95),
            percentile_ms(&self.job, 0.5),
            percentile_ms(&self.job, 0.95),
            percentile_ms(&self.page, 0.5),
            percentile_ms(&self.page, 0.95),
            self.list.len()
        );
    }
}

/// Samples `list`, `job` and the job page in turn for `duration`.
async fn sample(console: &Console, key: &str, duration: Duration) -> Result<Latencies, String> {
    let mut latencies = Latencies::default();
    let started = Instant::now();
    let path = format!("/jobs/{key}");
    while started.elapsed() < duration {
        latencies.list.push(console.time_list().await?);
        latencies
            .job
            .push(console.time_call("job", json!({"job_key": key})).await?);
        latencies.page.push(console.time_get(&path).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(latencies)
}

/// `TABS` tabs polling the job page (the `job` call and the page) until
/// `until` is cancelled; returns how many polls they made.
async fn poll_like_tabs(
    console: &Console,
    key: &str,
    until: tokio_util::sync::CancellationToken,
) -> Result<u64, String> {
    let path = format!("/jobs/{key}");
    let tab = |_| {
        let (path, until) = (path.clone(), until.clone());
        async move {
            let mut polls = 0u64;
            while !until.is_cancelled() {
                console.time_call("job", json!({"job_key": key})).await?;
                console.time_get(&path).await?;
                polls += 1;
                tokio::select! {
                    _ = tokio::time::sleep(TAB_POLL) => {}
                    _ = until.cancelled() => {}
                }
            }
            Ok::<u64, String>(polls)
        }
    };
    futures::future::join_all((0..TABS).map(tab))
        .await
        .into_iter()
        .sum()
}

fn peak_mib(replica: &ChildProcess) -> f64 {
    replica.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
}

/// Waits for the job's stored coverage check of its last run; returns it.
async fn wait_for_stored_check(pool: &PgPool, key: &str) -> Result<store::JobRow, String> {
    loop {
        let row = store::get_job(pool, key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        if row
            .coverage_checked_at
            .is_some_and(|at| at >= row.updated_at)
        {
            return Ok(row);
        }
        if let Some(error) = &row.coverage_error {
            return Err(format!("the coverage check of {key} failed: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs figure (6) on the seeded database; prints it and returns its
/// summary lines.
pub(super) async fn measure(
    pool: &PgPool,
    database_url: &str,
    users: i64,
    batch: i64,
    concurrency: i64,
) -> Result<Vec<String>, String> {
    println!("(6) scale: {users} users, one serve replica writing to the built-in graph");
    let (replica, console) = spawn_replica(
        "scale",
        database_url,
        20,
        &[("IDENTITY_GRAPH_SINK", "postgres".to_string())],
    )
    .await?;
    let no_cap = MAX_RUNTIME_MS.bounds.max;
    let mut summary = Vec::new();

    // The dry run over every user.
    console
        .call(
            "start",
            json!({"job_key": DRY_KEY, "dry_run": true, "batch_size": batch,
                   "concurrency": concurrency, "sleep_ms": 0, "max_runtime_ms": no_cap}),
        )
        .await?;
    let dry_key = format!("{DRY_KEY}:dry-run");
    let (row, seconds) = wait_for_run_end(pool, &dry_key).await?;
    let dry_rate = row.run_scanned as f64 / seconds;
    println!(
        "    dry run: {} users in {seconds:.1}s = {dry_rate:.0} users/s",
        row.run_scanned
    );
    let after_dry_mib = peak_mib(&replica);

    // The real run into the built-in graph, sampled for its first and last million.
    console
        .start_full_speed(
            REAL_KEY,
            batch,
            concurrency,
            Duration::from_millis(no_cap as u64),
        )
        .await?;
    let started = Instant::now();
    let mut samples: Vec<(f64, i64)> = Vec::new();
    let row = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let row = store::get_job(pool, REAL_KEY)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("job vanished")?;
        samples.push((started.elapsed().as_secs_f64(), row.run_scanned));
        if !row.status().is_some_and(JobStatus::is_active) {
            break row;
        }
    };
    let total = row.run_scanned;
    let span = MILLION.min(total / 2).max(1);
    let first = span as f64 / time_at(&samples, span);
    let last = span as f64 / (time_at(&samples, total) - time_at(&samples, total - span)).max(1e-9);
    println!(
        "    built-in graph: {total} users handled ({} written, {} failed), the first {span} at {first:.0} users/s, the last {span} at {last:.0} users/s (last/first {:.2})",
        row.processed,
        row.failed,
        last / first
    );
    let run_ended = Instant::now();

    // The coverage check the run's end began, in the background.
    let checked = wait_for_stored_check(pool, REAL_KEY).await?;
    let background = run_ended.elapsed();
    let coverage = checked.stored_coverage().ok_or("no stored coverage")?;
    println!(
        "    coverage check after the run (background): stored {:.1}s after the run ended; unaccounted {}, missing from the graph {:?}",
        background.as_secs_f64(),
        coverage.unaccounted,
        coverage.missing_from_graph
    );

    // The console, idle, then with 10 tabs polling.
    println!("    console latency in ms, p50 / p95:");
    let idle = sample(&console, REAL_KEY, SAMPLING).await?;
    idle.print("idle");
    let until = tokio_util::sync::CancellationToken::new();
    let (polls, loaded) = tokio::join!(poll_like_tabs(&console, REAL_KEY, until.clone()), async {
        let loaded = sample(&console, REAL_KEY, SAMPLING).await;
        until.cancel();
        loaded
    });
    let (polls, loaded) = (polls?, loaded?);
    loaded.print(&format!("{TABS} tabs polling"));
    println!("    ({polls} tab polls of the job page during the sampling)");

    // "Check again", timed, while the tabs are quiet.
    let check_started = Instant::now();
    console
        .call("check_coverage", json!({"job_key": REAL_KEY}))
        .await?;
    let check = check_started.elapsed();
    println!(
        "    \"Check again\" (check_coverage): {:.1}s",
        check.as_secs_f64()
    );
    let end_mib = peak_mib(&replica);
    println!(
        "    the replica's peak memory (VmHWM): {after_dry_mib:.0} MiB after the dry run, {end_mib:.0} MiB at the end"
    );
    replica.terminate().await;

    let worst = |l: &Latencies| l.p95s().into_iter().fold(0.0, f64::max);
    for (label, latencies) in [("idle", &idle), ("under load", &loaded)] {
        let [list, job, page] = latencies.p95s();
        let worst = worst(latencies);
        summary.push(format!(
            "(6) console p95 {label} at {users} users: list {list:.1}, job {job:.1}, GET /jobs/<key> {page:.1} ms   (goal < {CONSOLE_P95_GOAL_MS} ms: ratio {:.2}, {})",
            worst / CONSOLE_P95_GOAL_MS,
            verdict(worst < CONSOLE_P95_GOAL_MS)
        ));
    }
    let job_p50 = percentile_ms(&idle.job, 0.5);
    let job_p95 = percentile_ms(&idle.job, 0.95);
    let baseline = if users >= BASELINE_USERS {
        format!(
            "{:.0}× / {:.0}× faster",
            BASELINE_JOB_P50_MS / job_p50,
            BASELINE_JOB_P95_MS / job_p95
        )
    } else {
        "no ratio: the baseline is at 10,000,000 users".to_string()
    };
    summary.push(format!(
        "(6) job call idle: p50 {job_p50:.1} ms, p95 {job_p95:.1} ms; before (issue 22, 10,000,000 users): {BASELINE_JOB_P50_MS:.0} / {BASELINE_JOB_P95_MS:.0} ms, {baseline}"
    ));
    let slowest_check = check.max(background);
    summary.push(format!(
        "(6) coverage check: {:.1}s in the background after the run, {:.1}s on \"Check again\"   (goal < {}s: ratio {:.2}, {})",
        background.as_secs_f64(),
        check.as_secs_f64(),
        COVERAGE_GOAL.as_secs(),
        slowest_check.as_secs_f64() / COVERAGE_GOAL.as_secs_f64(),
        verdict(slowest_check < COVERAGE_GOAL)
    ));
    summary.push(format!(
        "(6) dry run {dry_rate:.0} users/s; built-in graph first/last {span} {first:.0} / {last:.0} users/s (ratio {:.2}); replica peak memory {after_dry_mib:.0} → {end_mib:.0} MiB (goal: flat; ratio {:.2})",
        last / first,
        end_mib / after_dry_mib.max(1.0)
    ));
    Ok(summary)
}
