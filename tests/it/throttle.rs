//! The brake: `max_rate` spreads a run's sends evenly at the rate, and `tune`
//! changes a running job's rate, concurrency and sleep from any replica,
//! with its history kept. (`tune`'s 401 and 403 are checked with every
//! other route in `access::every_job_control_route_is_guarded`.)

use crate::harness::{graph::GraphServer, *};
use identity_graph_backfill::backfill::domain::{JobStatus, TuneRequest};
use identity_graph_backfill::error::ErrorCode;
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Users per second the graph received between `from` and `to`.
fn rate_between(graph: &GraphServer, from: Instant, to: Instant) -> f64 {
    let arrived = graph
        .exchanges()
        .iter()
        .filter(|e| e.arrived >= from && e.arrived < to)
        .count();
    arrived as f64 / (to - from).as_secs_f64()
}

fn tune_request(key: &str, body: serde_json::Value) -> TuneRequest {
    let mut body = body;
    body["job_key"] = json!(key);
    serde_json::from_value(body).unwrap()
}

#[sqlx::test]
async fn max_rate_spreads_sends_evenly_at_the_rate(pool: PgPool) {
    seed(&pool, 500).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let started = replica
        .start(json!({"job_key": "paced", "max_rate": 100, "sleep_ms": 0,
                      "batch_size": 100, "concurrency": 16}))
        .await;
    assert!(started.started);
    let done = wait_until_idle(&pool, "paced").await;
    assert_eq!(done.status(), Some(JobStatus::Completed));
    let mut arrivals: Vec<Instant> = graph.exchanges().iter().map(|e| e.arrived).collect();
    arrivals.sort();
    assert!(arrivals.len() > 400, "{} users", arrivals.len());
    // Over the whole run, and in every second of it: 100 ± 10 users/s.
    let span = (*arrivals.last().unwrap() - arrivals[0]).as_secs_f64();
    let overall = (arrivals.len() - 1) as f64 / span;
    assert!((90.0..=110.0).contains(&overall), "{overall:.1} users/s");
    let first = arrivals[0];
    for second in 0..(span as u64) {
        let from = first + Duration::from_secs(second);
        let rate = rate_between(&graph, from, from + Duration::from_secs(1));
        assert!(
            (85.0..=115.0).contains(&rate),
            "second {second}: {rate} users/s; sends come in bursts"
        );
    }
}

#[sqlx::test]
async fn a_tune_on_another_replica_applies_within_two_seconds(pool: PgPool) {
    seed(&pool, 2_000).await;
    let graph = GraphServer::start().await;
    let runner = Replica::with_graph(&pool, &graph, &[]);
    let other = Replica::with_graph(&pool, &graph, &[]);
    let started = runner
        .start(json!({"job_key": "tuned", "max_rate": 200, "sleep_ms": 0,
                      "batch_size": 100, "concurrency": 8}))
        .await;
    assert!(started.started);
    wait_for_cursor(&pool, "tuned", 300).await;

    let tuned_at = Instant::now();
    let answer = other
        .tune(&tune_request("tuned", json!({"max_rate": 40})), OPERATOR)
        .await
        .unwrap();
    assert_eq!(answer.job.options.max_rate, 40);
    assert_eq!(answer.changes.len(), 1);
    assert_eq!(
        (answer.changes[0].old_value, answer.changes[0].new_value),
        (200, 40)
    );
    assert!(
        !other.is_live("tuned"),
        "the replica that answered does not run it"
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let applied = tuned_at + Duration::from_secs(2);
    let rate = rate_between(&graph, applied, applied + Duration::from_secs(3));
    assert!(
        (34.0..=46.0).contains(&rate),
        "40 users/s ± 15% from 2 s after the tune: {rate:.1}"
    );
    let before = rate_between(&graph, tuned_at - Duration::from_secs(1), tuned_at);
    assert!(
        before > 120.0,
        "the run went at about 200 users/s before: {before:.1}"
    );

    // The change is in the job's history, with who made it.
    let detail = runner.detail("tuned").await.unwrap();
    assert_eq!(detail.tunings.len(), 1);
    assert_eq!(detail.tunings[0].tuned_by, OPERATOR);
    assert_eq!(detail.tunings[0].field, "max_rate");

    // Stopping a run held back by a low rate is still prompt.
    let asked = Instant::now();
    runner.stop("tuned", OPERATOR).await.unwrap();
    wait_until_idle(&pool, "tuned").await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        asked.elapsed()
    );
}

#[sqlx::test]
async fn tune_checks_and_clamps_what_it_is_sent(pool: PgPool) {
    seed(&pool, 2_000).await;
    let (replica, _graph) = Replica::and_graph(&pool, &[]).await;
    replica
        .start(json!({"job_key": "knobs", "max_rate": 50, "sleep_ms": 0, "concurrency": 2}))
        .await;

    let clamped = replica
        .tune(
            &tune_request("knobs", json!({"concurrency": 500, "sleep_ms": 10})),
            OPERATOR,
        )
        .await
        .unwrap();
    assert_eq!(clamped.job.options.concurrency, 64);
    assert_eq!(clamped.adjustments.len(), 1);
    assert_eq!(clamped.adjustments[0].field, "concurrency");
    assert_eq!(clamped.adjustments[0].effective, "64");
    let fields: Vec<&str> = clamped.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["concurrency", "sleep_ms"]);

    let again = replica
        .tune(&tune_request("knobs", json!({"sleep_ms": 10})), OPERATOR)
        .await
        .unwrap();
    assert!(again.changes.is_empty(), "the same value records nothing");

    for (body, field) in [
        (json!({"max_rate": "fast"}), "max_rate"),
        (json!({"concurrency": 2.5}), "concurrency"),
        (json!({}), "max_rate"),
    ] {
        let error = replica
            .tune(&tune_request("knobs", body.clone()), OPERATOR)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation, "{body}");
        assert_eq!(
            error.field.as_deref(),
            Some(field),
            "{body}: {}",
            error.message
        );
    }
    let missing = replica
        .tune(&tune_request("nobody", json!({"max_rate": 5})), OPERATOR)
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    replica.stop("knobs", OPERATOR).await.unwrap();
    let stopped = wait_until_idle(&pool, "knobs").await;
    let error = replica
        .tune(&tune_request("knobs", json!({"max_rate": 5})), OPERATOR)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Validation);
    assert!(error.message.contains("not running"), "{}", error.message);
    // Nothing changed on the stopped job.
    assert_eq!(
        job_row(&pool, "knobs").await.options.0["max_rate"],
        stopped.options.0["max_rate"]
    );
    // A resumed run starts with the tuned knobs: they are the job's options now.
    assert_eq!(stopped.options.0["concurrency"], 64);
}

#[sqlx::test]
async fn tune_over_http_answers_the_change(pool: PgPool) {
    seed(&pool, 2_000).await;
    let graph = GraphServer::start().await;
    let (app, admin) = app_with_admin(&pool, &graph.sink_env()).await;
    let (status, started) = admin
        .start(json!({"job_key": "over-http", "max_rate": 20, "sleep_ms": 0}))
        .await;
    assert_eq!(status, 200, "{started}");
    let (status, answer) = admin
        .send("tune", json!({"job_key": "over-http", "max_rate": 30}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["job"]["options"]["max_rate"], 30);
    assert_eq!(answer["changes"][0]["new_value"], 30);
    let (status, error) = admin
        .send("tune", json!({"job_key": "over-http", "speed": 30}))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "speed");
    let (_, job) = admin.job("over-http").await;
    assert_eq!(job["tunings"][0]["tuned_by"], ALLOWED.0);
    admin.stop("over-http").await;
    wait_until_idle(&pool, "over-http").await;
    app.stop().await;
}
