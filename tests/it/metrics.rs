//! `/metrics`: served on a listener of its own, scraped during a run, and
//! agreeing with the job row.

use crate::harness::*;
use identity_graph_backfill::server::metrics;
use serde_json::json;
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample `name{…}` whose labels include every one of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(name)
                && labels.iter().all(|label| line.contains(label))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[sqlx::test]
async fn a_scrape_during_a_run_matches_the_job_row(pool: PgPool) {
    seed(&pool, 2_000).await;
    let shutdown = CancellationToken::new();
    let addr = metrics::spawn(
        "127.0.0.1:0".parse().unwrap(),
        pool.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.reject(400, |id| id % 50 == 0);
    let key = r#"job_key="metered""#;
    replica
        .start(json!({"job_key": "metered", "batch_size": 100, "sleep_ms": 30, "concurrency": 4}))
        .await;

    wait_for_cursor(&pool, "metered", 300).await;
    let during = scrape(addr).await;
    assert_eq!(
        sample(&during, "identity_graph_backfill_active_runs", &[key]),
        Some(1.0),
        "{during}"
    );
    let heartbeat = sample(
        &during,
        "identity_graph_backfill_heartbeat_age_seconds",
        &[key],
    );
    assert!(
        heartbeat.is_some_and(|age| (0.0..30.0).contains(&age)),
        "{during}"
    );
    let cursor = sample(&during, "identity_graph_backfill_cursor", &[key]).unwrap();
    assert!(cursor >= 300.0, "{during}");
    let calls = sample(
        &during,
        "identity_graph_request_duration_seconds_count",
        &[key, r#"outcome="ok""#],
    );
    assert!(calls.is_some_and(|count| count > 0.0), "{during}");

    let row = wait_until_idle(&pool, "metered").await;
    let after = scrape(addr).await;
    let users = |outcome: &str| {
        let outcome = format!(r#"outcome="{outcome}""#);
        sample(&after, "identity_graph_backfill_users", &[key, &outcome])
    };
    assert_eq!(users("processed"), Some(row.processed as f64), "{after}");
    assert_eq!(users("failed"), Some(row.failed as f64), "{after}");
    assert_eq!(users("skipped"), Some(row.skipped as f64), "{after}");
    assert!(row.failed > 0, "the graph rejected some users");
    assert_eq!(
        sample(&after, "identity_graph_backfill_cursor", &[key]),
        Some(row.cursor as f64)
    );
    assert_eq!(
        sample(&after, "identity_graph_backfill_active_runs", &[key]),
        Some(0.0)
    );
    assert!(sample(
        &after,
        "identity_graph_request_duration_seconds_count",
        &[key, r#"outcome="failed""#]
    )
    .is_some_and(|count| count > 0.0));

    // A fresh pass zeroes the job's totals; the figures follow them down.
    replica
        .start(
            json!({"job_key": "metered", "reset_cursor": true, "batch_size": 10, "sleep_ms": 200}),
        )
        .await;
    wait_for_cursor(&pool, "metered", 10).await;
    replica
        .engine
        .stop("metered", "ops@example.com")
        .await
        .unwrap();
    let reset = wait_until_idle(&pool, "metered").await;
    assert!(
        reset.processed < row.processed,
        "the rerun was stopped early"
    );
    let again = scrape(addr).await;
    assert_eq!(
        sample(
            &again,
            "identity_graph_backfill_users",
            &[key, r#"outcome="processed""#]
        ),
        Some(reset.processed as f64),
        "{again}"
    );
    assert_eq!(
        sample(&again, "identity_graph_backfill_cursor", &[key]),
        Some(reset.cursor as f64)
    );
    shutdown.cancel();
}
