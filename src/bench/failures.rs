//! (7) The failures workbench (`--failures`, with e.g. `--failure-rows
//! 1000000`): a job with a million unresolved failures, read through one
//! `serve` replica as the job page reads it:
//! - the grouped view: the `job` call, which carries `failure_classes` and
//!   the unresolved total;
//! - a filtered page: `failures` with a class, walking pages by keyset;
//! - a search: `failures` with `q`, a word of the message and a user id;
//! - the CSV export of every row: its rate, and the replica's peak memory
//!   before and after it (flat: it streams a page at a time).
//!
//! Goals (issue 23): every p95 < 50 ms; the export ≥ 200,000 rows/s with
//! memory flat. Before the counts were kept by a trigger, the grouped view
//! counted the rows on every call: about 210 ms for the classes and 130 ms
//! for the total at 1,000,000 rows (measured here with psql, `\timing`).

use super::console_latency::CONSOLE_P95_GOAL_MS;
use super::processes::{spawn_replica, ChildProcess, Console};
use super::support::{percentile_ms, verdict};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};

const KEY: &str = "bench-failures";
/// How many times each console read is timed.
const SAMPLES: usize = 200;
/// The export's goal, in rows per second.
const EXPORT_GOAL_ROWS_PER_SEC: f64 = 200_000.0;
/// The grouped view's time per call before the counts were kept (see above).
const BASELINE_GROUPED_MS: f64 = 340.0;

/// The classes and messages the seeded failures get, in proportion: most
/// fail one way, a few others (as a real run's failures do).
const SEEDED: &str = "
    INSERT INTO identity_graph_backfill_jobs (job_key, status, options, cursor, processed, failed)
    VALUES ($1, 'failed', '{}', $2, 0, $2);
    INSERT INTO identity_graph_backfill_failures
        (job_key, user_id, class, error, attempts, first_failed_at, last_failed_at)
    SELECT $1, g,
           (ARRAY['http 500', 'http 500', 'http 500', 'http 422', 'http 422', 'timeout', 'connection'])[g % 7 + 1],
           (ARRAY['Identity Graph answered HTTP 500: upstream store unavailable',
                  'Identity Graph answered HTTP 500: upstream store unavailable',
                  'Identity Graph answered HTTP 500: upstream store unavailable',
                  'Identity Graph answered HTTP 422: phone number rejected for user ',
                  'Identity Graph answered HTTP 422: email domain rejected for user ',
                  'no answer from the Identity Graph within 10 s',
                  'connection refused by the Identity Graph'])[g % 7 + 1]
             || CASE WHEN g % 7 IN (3, 4) THEN g::text ELSE '' END,
           1 + g % 3, now() - interval '2 hours', now() - (g % 3600) * interval '1 second'
    FROM generate_series(1, $2) AS g";

fn peak_mib(replica: &ChildProcess) -> f64 {
    replica.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
}

async fn seed(pool: &PgPool, rows: i64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    for statement in SEEDED.split(";\n").filter(|s| !s.trim().is_empty()) {
        sqlx::query(statement)
            .bind(KEY)
            .bind(rows)
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("seeding the failures: {e}"))?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    sqlx::query("VACUUM ANALYZE identity_graph_backfill_failures")
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// Times `SAMPLES` calls of `failures` with `body`, following
/// `next_after_user_id` from page to page (back to the first at the end).
async fn time_pages(console: &Console, body: Value) -> Result<(Vec<Duration>, usize), String> {
    let mut times = Vec::with_capacity(SAMPLES);
    let mut after: Option<i64> = None;
    let mut rows = 0;
    for _ in 0..SAMPLES {
        let mut request = body.clone();
        if let Some(after) = after {
            request["after_user_id"] = json!(after);
        }
        let started = Instant::now();
        let page = console.call("failures", request).await?;
        times.push(started.elapsed());
        rows = rows.max(page["failures"].as_array().map_or(0, Vec::len));
        after = page["next_after_user_id"].as_i64();
    }
    Ok((times, rows))
}

/// Runs figure (7); prints it and returns its summary lines.
pub(super) async fn measure(
    pool: &PgPool,
    database_url: &str,
    rows: i64,
) -> Result<Vec<String>, String> {
    println!("(7) failures workbench: {rows} unresolved failures on one job, one serve replica");
    let seeding = seed(pool, rows).await?;
    println!("    seeded in {:.1}s", seeding.as_secs_f64());
    let (replica, console) = spawn_replica(
        "failures",
        database_url,
        12,
        &[("IDENTITY_GRAPH_SINK", "postgres".to_string())],
    )
    .await?;

    let mut grouped = Vec::with_capacity(SAMPLES);
    let mut classes = Value::Null;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let detail = console.call("job", json!({"job_key": KEY})).await?;
        grouped.push(started.elapsed());
        classes = detail["failure_classes"].clone();
    }
    let (filtered, page_rows) = time_pages(
        &console,
        json!({"job_key": KEY, "class": "http 422", "limit": 50}),
    )
    .await?;
    let (searched, search_rows) = time_pages(
        &console,
        json!({"job_key": KEY, "q": "email domain", "limit": 50}),
    )
    .await?;
    let (by_user, _) = time_pages(&console, json!({"job_key": KEY, "q": "424242"})).await?;
    println!("    grouped: {classes}");
    println!(
        "    ms p50 / p95: grouped view (the job call) {:.1} / {:.1}; class page ({page_rows} rows) {:.1} / {:.1}; search \"email domain\" ({search_rows} rows) {:.1} / {:.1}; user id {:.1} / {:.1}   ({SAMPLES} calls each)",
        percentile_ms(&grouped, 0.5),
        percentile_ms(&grouped, 0.95),
        percentile_ms(&filtered, 0.5),
        percentile_ms(&filtered, 0.95),
        percentile_ms(&searched, 0.5),
        percentile_ms(&searched, 0.95),
        percentile_ms(&by_user, 0.5),
        percentile_ms(&by_user, 0.95),
    );

    let before_export_mib = peak_mib(&replica);
    let (lines, took) = console
        .stream_lines(&format!(
            "/api/identity-graph-backfill/failures.csv?job_key={KEY}"
        ))
        .await?;
    let exported = lines.saturating_sub(1);
    let export_rate = exported as f64 / took.as_secs_f64();
    let after_export_mib = peak_mib(&replica);
    println!(
        "    export: {exported} rows in {:.1}s = {export_rate:.0} rows/s; the replica's peak memory {before_export_mib:.0} MiB before, {after_export_mib:.0} MiB after",
        took.as_secs_f64()
    );
    replica.terminate().await;
    if exported != rows as u64 {
        return Err(format!("the export held {exported} rows, not {rows}"));
    }

    let mut summary = Vec::new();
    for (label, times) in [
        ("grouped view (job)", &grouped),
        ("class page", &filtered),
        ("search by message", &searched),
        ("search by user id", &by_user),
    ] {
        let p95 = percentile_ms(times, 0.95);
        let baseline = if label.starts_with("grouped") {
            format!(
                "; counted per call before: ~{BASELINE_GROUPED_MS:.0} ms, {:.0}× faster",
                BASELINE_GROUPED_MS / percentile_ms(times, 0.5).max(0.01)
            )
        } else {
            String::new()
        };
        summary.push(format!(
            "(7) {label} p95 at {rows} failures: {p95:.1} ms   (goal < {CONSOLE_P95_GOAL_MS} ms: ratio {:.2}, {}){baseline}",
            p95 / CONSOLE_P95_GOAL_MS,
            verdict(p95 < CONSOLE_P95_GOAL_MS)
        ));
    }
    let growth = after_export_mib / before_export_mib.max(1.0);
    summary.push(format!(
        "(7) export {export_rate:.0} rows/s   (goal >= {EXPORT_GOAL_ROWS_PER_SEC:.0}: ratio {:.2}, {}); replica peak memory {before_export_mib:.0} → {after_export_mib:.0} MiB over {rows} rows (goal: flat; ratio {growth:.2}, {})",
        export_rate / EXPORT_GOAL_ROWS_PER_SEC,
        verdict(export_rate >= EXPORT_GOAL_ROWS_PER_SEC),
        verdict(growth < 1.25)
    ));
    Ok(summary)
}
