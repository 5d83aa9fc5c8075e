//! `/metrics` drops the series of a job idle for longer than
//! `METRICS_JOB_IDLE_SECS` (here 2 s), and keeps a busy job's.
//!
//! A test binary of its own, because the metrics recorder, with its idle
//! time, is installed once per process: in `tests/it` the other tests'
//! runs would share it with the default hour.
#![cfg(feature = "ssr")]

#[allow(dead_code)]
#[path = "it/harness.rs"]
mod harness;

use harness::*;
use identity_graph_backfill::server::metrics;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Whether any sample of the body is labelled with `job_key`.
fn reports(body: &str, job_key: &str) -> bool {
    let label = format!(r#"job_key="{job_key}""#);
    body.lines()
        .any(|line| !line.starts_with('#') && line.contains(&label))
}

#[sqlx::test]
async fn the_series_of_an_idle_job_leave_metrics_after_the_idle_time(pool: PgPool) {
    metrics::install_with(Duration::from_secs(2));
    assert_eq!(metrics::job_idle(), Duration::from_secs(2));
    let shutdown = CancellationToken::new();
    let addr = metrics::spawn(
        "127.0.0.1:0".parse().unwrap(),
        pool.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    seed(&pool, 200).await;
    let (replica, _graph) = Replica::and_graph(&pool, &[]).await;
    replica
        .run(json!({"job_key": "idle-job", "sleep_ms": 0, "batch_size": 50}))
        .await;
    let fresh = scrape(addr).await;
    assert!(reports(&fresh, "idle-job"), "{fresh}");
    assert!(
        fresh.contains(r#"identity_graph_request_duration_seconds_count{job_key="idle-job""#),
        "the latency histogram is there: {fresh}"
    );

    // A busy job keeps its series while the idle one's age past 2 s.
    replica
        .start(json!({"job_key": "busy-job", "sleep_ms": 300, "batch_size": 5}))
        .await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let _ = scrape(addr).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = scrape(addr).await;
    assert!(
        !reports(&later, "idle-job"),
        "every series of the idle job is gone: {later}"
    );
    assert!(
        later.contains(r#"identity_graph_request_duration_seconds_count{job_key="busy-job""#),
        "{later}"
    );
    assert!(reports(&later, "busy-job"), "{later}");

    // A new run brings the idle job back.
    replica.stop("busy-job", OPERATOR).await.unwrap();
    wait_until_idle(&pool, "busy-job").await;
    replica
        .run(json!({"job_key": "idle-job", "sleep_ms": 0, "batch_size": 50, "reset_cursor": true}))
        .await;
    assert!(reports(&scrape(addr).await, "idle-job"));
    shutdown.cancel();
}
