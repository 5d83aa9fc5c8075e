//! The engine on a runtime of its own, as `serve` runs it: runs, heartbeats
//! and the watchdog on the engine's multi-thread runtime with a pool opened
//! there, while the caller (here the test, in `serve` the console) stays on
//! its own runtime. A run still completes, stops, pauses on shutdown, and
//! vanishes on a simulated crash.

use crate::harness::*;
use identity_graph_backfill::{
    backfill::{domain::*, engine::Engine},
    server::{
        http,
        runtime::{open_executor, EngineRuntime},
        Config,
    },
};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An engine writing to the built-in graph, with its work on `runtime`.
async fn engine_on(pool: &PgPool, runtime: &EngineRuntime, shutdown: &CancellationToken) -> Engine {
    let vars = [
        ("DATABASE_URL", database_url(pool)),
        ("IDENTITY_GRAPH_SINK", "postgres".to_string()),
    ];
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    let executor = open_executor(runtime.handle(), &config.database_url, 8)
        .await
        .unwrap();
    http::build_engine_on(&config, pool.clone(), executor, shutdown.clone())
}

/// A run slow enough to watch: ten users a batch, a pause after each.
fn slow_run(key: &str) -> StartRequest {
    request(json!({"job_key": key, "batch_size": 10, "sleep_ms": 20, "concurrency": 1}))
}

async fn cursor(pool: &PgPool, key: &str) -> i64 {
    job_row(pool, key).await.cursor
}

#[sqlx::test]
async fn runs_live_on_the_engine_runtime(pool: PgPool) {
    seed(&pool, 5_000).await;
    let runtime = EngineRuntime::start(2).unwrap();
    let shutdown = CancellationToken::new();
    let engine = engine_on(&pool, &runtime, &shutdown).await;

    // The run moves while the caller's thread is blocked: it is not on it.
    engine.start(&slow_run("moving"), OPERATOR).await.unwrap();
    wait_for_cursor(&pool, "moving", 10).await;
    let before = cursor(&pool, "moving").await;
    // On the caller's runtime it would not move at all; two batches prove it
    // moved, whatever the machine's load.
    std::thread::sleep(Duration::from_secs(3));
    let after = cursor(&pool, "moving").await;
    assert!(
        after - before >= 20,
        "the run moved from {before} to {after} while the caller's thread was blocked"
    );

    // A stop reaches it, and it ends stopped.
    engine.stop("moving", OPERATOR).await.unwrap();
    let stopped = wait_until_idle(&pool, "moving").await;
    assert_eq!(stopped.status().unwrap(), JobStatus::Stopped);
    wait_for("the stopped run to leave the live map", async || {
        !engine.is_live("moving")
    })
    .await;

    // A run at full speed completes, every eligible user in the graph.
    engine
        .start(
            &request(json!({"job_key": "complete", "batch_size": 500, "sleep_ms": 0})),
            OPERATOR,
        )
        .await
        .unwrap();
    let completed = wait_until_idle(&pool, "complete").await;
    assert_eq!(completed.status().unwrap(), JobStatus::Completed);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_users").await,
        eligible_ids(&pool).await.len() as i64
    );

    // Shutdown: the run checkpoints and pauses, interrupted.
    engine.start(&slow_run("paused"), OPERATOR).await.unwrap();
    wait_for_cursor(&pool, "paused", 10).await;
    shutdown.cancel();
    engine.wait_for_runs(Duration::from_secs(5)).await;
    let paused = job_row(&pool, "paused").await;
    assert_eq!(paused.status().unwrap(), JobStatus::Paused);
    assert_eq!(paused.pause_reason(), Some(PauseReason::Interrupted));
    assert!(paused.owner.is_none());

    drop(engine);
    tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
}

#[sqlx::test]
async fn a_crash_leaves_the_run_row_to_the_watchdog(pool: PgPool) {
    seed(&pool, 5_000).await;
    let runtime = EngineRuntime::start(2).unwrap();
    let shutdown = CancellationToken::new();
    let engine = engine_on(&pool, &runtime, &shutdown).await;
    engine.start(&slow_run("crashing"), OPERATOR).await.unwrap();
    wait_for_cursor(&pool, "crashing", 10).await;

    engine.kill_without_cleanup();
    assert!(!engine.is_live("crashing"));
    // The task on the other runtime is gone: nothing moves or releases the row.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let frozen = job_row(&pool, "crashing").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = job_row(&pool, "crashing").await;
    assert_eq!(later.status().unwrap(), JobStatus::Running);
    assert!(later.owner.is_some(), "the dead run still holds the lease");
    assert_eq!(later.cursor, frozen.cursor, "no checkpoint after the crash");

    drop(engine);
    tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
}

/// `ENGINE_NICE`: every engine thread runs at the nice value it was given
/// (or lower priority, if the process already had it), and the caller's
/// thread (the console's) keeps its own.
#[tokio::test]
async fn engine_threads_run_at_their_nice_value() {
    fn this_threads_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name, which may hold spaces: state is the
        // 3rd field of the line and nice the 19th.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(19 - 3).unwrap().parse().unwrap()
    }
    let console = this_threads_nice();
    let runtime = EngineRuntime::start_niced(2, 7).unwrap();
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(
            runtime
                .handle()
                .spawn(async { this_threads_nice() })
                .await
                .unwrap(),
        );
    }
    let expected = console.max(7);
    assert!(
        seen.iter().all(|nice| *nice == expected),
        "{seen:?}, console {console}"
    );
    assert_eq!(
        this_threads_nice(),
        console,
        "the caller's thread is untouched"
    );
    tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
}
