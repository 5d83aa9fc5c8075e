//! The brake: `max_rate` spreads a run's sends evenly at the rate; `tune`
//! changes a running job's rate, concurrency and sleep from any replica,
//! with its history kept; a 429 holds every slot; a hold past the cap
//! pauses the run `throttled`; the throttle URL holds every run; adaptive
//! mode holds the graph's latency. (`tune`'s 401 and 403 are checked with
//! every other route in `access::every_job_control_route_is_guarded`.)

use crate::harness::{
    graph::{GraphServer, Reply},
    *,
};
use identity_graph_backfill::backfill::domain::{HeldBy, JobStatus, PauseReason, TuneRequest};
use identity_graph_backfill::error::ErrorCode;
use serde_json::json;
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicBool, AtomicU16, Ordering},
    Arc,
};
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
    // Over the whole run: 100 ± 10 users/s.
    let span = (*arrivals.last().unwrap() - arrivals[0]).as_secs_f64();
    let overall = (arrivals.len() - 1) as f64 / span;
    assert!((90.0..=110.0).contains(&overall), "{overall:.1} users/s");
    // Spread evenly: about 10 in any 100 ms, never a batch (100) at once. A
    // stalled machine only delays sends (the pacer does not catch up), so
    // this bound holds under load and fails on bursts.
    let window = Duration::from_millis(100);
    let densest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|at| **at < arrivals[i] + window)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        densest <= 30,
        "{densest} users reached the graph within 100 ms; sends come in bursts"
    );
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

/// The graph answers one user 429 (then 503) with a `Retry-After`: no other
/// request reaches the graph until the wait is over, and the user is written
/// after it, not failed.
#[sqlx::test]
async fn a_retry_after_holds_every_slot_and_the_user_is_not_failed(pool: PgPool) {
    seed(&pool, 600).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let eligible = eligible_ids(&pool).await;
    let (throttled, unavailable) = (eligible[100], eligible[400]);
    graph.behave(move |id, attempt| match (id, attempt) {
        (id, 1) if id == throttled => Reply::TooManyRequests {
            retry_after_secs: 2,
        },
        (id, 1) if id == unavailable => Reply::Unavailable {
            retry_after_secs: 1,
        },
        _ => Reply::Ok,
    });
    let row = replica
        .run(json!({"job_key": "held", "sleep_ms": 0, "concurrency": 16, "batch_size": 100}))
        .await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 0, "a throttled user is retried, not failed");
    assert_eq!(row.consecutive_failures, 0);
    let exchanges = graph.exchanges();
    for (user, wait) in [(throttled, 2.0), (unavailable, 1.0)] {
        let attempts = graph.requests_for(user);
        assert_eq!(attempts.len(), 2, "user {user}");
        assert_eq!(graph.written_counts().get(&user), Some(&1));
        let refused = exchanges
            .iter()
            .find(|e| e.user_id == user)
            .expect("the refused request")
            .answered;
        // Requests already on their way when the answer came (at most the
        // other 15 slots' users) may still arrive just after it, later on a
        // loaded machine; none may be sent once the run knows. A run whose
        // other slots ignore the hold sends hundreds in this time.
        let arrived_between = |from: f64, to: f64| -> Vec<i64> {
            exchanges
                .iter()
                .filter(|e| {
                    e.arrived > refused + Duration::from_secs_f64(from)
                        && e.arrived < refused + Duration::from_secs_f64(to)
                })
                .map(|e| e.user_id)
                .collect()
        };
        let during = arrived_between(0.0, wait - 0.05);
        assert!(
            during.len() < 16,
            "{} requests reached the graph during user {user}'s {wait} s hold: {during:?}",
            during.len()
        );
        let late = arrived_between(wait / 2.0, wait - 0.05);
        assert!(
            late.is_empty(),
            "requests reached the graph in the second half of user {user}'s {wait} s hold: {late:?}"
        );
        assert!(attempts[1] - attempts[0] >= Duration::from_secs_f64(wait - 0.05));
    }
}

/// A graph that throttles every request for longer than the hold cap:
/// the run pauses `throttled` with nothing failed, and the watchdog
/// resumes it once the graph takes writes again; no user is lost.
#[sqlx::test]
async fn a_hold_past_the_cap_pauses_throttled_and_the_watchdog_resumes_it(pool: PgPool) {
    seed(&pool, 300).await;
    let (replica, graph) =
        Replica::and_graph(&pool, &[("IDENTITY_GRAPH_HOLD_CAP_MS", "1000")]).await;
    let throttling = Arc::new(AtomicBool::new(true));
    let switch = throttling.clone();
    graph.behave(move |_, _| {
        if switch.load(Ordering::SeqCst) {
            Reply::TooManyRequests {
                retry_after_secs: 1,
            }
        } else {
            Reply::Ok
        }
    });
    let started = Instant::now();
    let paused = replica
        .run(json!({"job_key": "capped", "sleep_ms": 0, "concurrency": 8}))
        .await;
    assert_eq!(paused.status(), Some(JobStatus::Paused));
    assert_eq!(paused.pause_reason(), Some(PauseReason::Throttled));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "paused after {:?}",
        started.elapsed()
    );
    assert_eq!(paused.failed, 0, "held users are not failures");
    assert!(paused.last_error.unwrap().contains("hold cap"));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM identity_graph_backfill_failures"
        )
        .await,
        0
    );

    throttling.store(false, Ordering::SeqCst);
    let resumed = replica.watchdog_tick().await.unwrap();
    assert_eq!(resumed, ["capped"]);
    let done = wait_until_idle(&pool, "capped").await;
    assert_eq!(done.status(), Some(JobStatus::Completed));
    assert_eq!(lost_users(&pool, &graph).await, Vec::<i64>::new());
}

/// A small HTTP server whose status an test sets: the throttle URL.
async fn throttle_signal(status: Arc<AtomicU16>) -> String {
    use axum::{http::StatusCode, routing::get, Router};
    let app = Router::new().route(
        "/throttle",
        get(move || {
            let status = status.clone();
            async move { StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/throttle", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[sqlx::test]
async fn a_throttle_url_answering_503_holds_the_run_until_it_answers_200(pool: PgPool) {
    seed(&pool, 3_000).await;
    let status = Arc::new(AtomicU16::new(200));
    let url = throttle_signal(status.clone()).await;
    let (replica, graph) = Replica::and_graph(
        &pool,
        &[
            ("IDENTITY_GRAPH_THROTTLE_URL", &url),
            ("IDENTITY_GRAPH_THROTTLE_POLL_MS", "200"),
        ],
    )
    .await;
    replica
        .start(json!({"job_key": "signalled", "max_rate": 300, "sleep_ms": 0, "batch_size": 50}))
        .await;
    wait_for_cursor(&pool, "signalled", 200).await;

    status.store(503, Ordering::SeqCst);
    let held_at = Instant::now();
    // One poll (200 ms) and the sends in flight: the run is held well within
    // a second, even on a loaded machine; unheld, it sends 300 in the next.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let quiet_from = held_at + Duration::from_millis(1_000);
    let sent_while_held = graph
        .exchanges()
        .iter()
        .filter(|e| e.arrived > quiet_from)
        .count();
    assert_eq!(
        sent_while_held, 0,
        "requests went out while the throttle URL said 503"
    );
    wait_for("the page to name the throttle URL", async || {
        let job = replica.detail("signalled").await.unwrap().job;
        job.throttle.and_then(|t| t.held_by) == Some(HeldBy::ThrottleUrl)
    })
    .await;

    status.store(200, Ordering::SeqCst);
    let released_at = Instant::now();
    wait_for("a request after the release", async || {
        graph.exchanges().iter().any(|e| e.arrived > released_at)
    })
    .await;
    assert!(
        released_at.elapsed() < Duration::from_secs(2),
        "the run went on {:?} after the 200",
        released_at.elapsed()
    );
    let row = job_row(&pool, "signalled").await;
    assert_eq!(
        row.status(),
        Some(JobStatus::Running),
        "a held run is not paused"
    );
    replica.stop("signalled", OPERATOR).await.unwrap();
    wait_until_idle(&pool, "signalled").await;
}

/// A graph with 16 workers, each call taking 50 ms: past 16 calls in
/// flight the answer time grows as a queue. Adaptive mode with a 100 ms
/// target keeps about as many calls in flight as there are workers (up to
/// twice as many, where the queue reaches the target), holds the p95 near
/// the target, and never drives the graph to a 429. The times are long
/// enough that a busy test machine's scheduling delays, a few ms, do not
/// read as the graph slowing down.
#[sqlx::test]
async fn adaptive_mode_holds_the_latency_target_of_a_loaded_graph(pool: PgPool) {
    seed(&pool, 3_000).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.limit_workers(16);
    let queue_limit = 32;
    let watched = graph.clone();
    graph.behave(move |_, _| {
        if watched.in_flight() > 16 + queue_limit {
            Reply::TooManyRequests {
                retry_after_secs: 1,
            }
        } else {
            Reply::Work(Duration::from_millis(50))
        }
    });
    replica
        .start(
            json!({"job_key": "adaptive", "sleep_ms": 0, "batch_size": 200,
                      "concurrency": 64, "adaptive": true, "target_latency_ms": 100}),
        )
        .await;
    let mut limits = Vec::new();
    let mut p95s = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let job = replica.detail("adaptive").await.unwrap().job;
        if !job.status.is_active() {
            break;
        }
        if let Some(brake) = job.throttle.filter(|_| job.processed > 800) {
            limits.push(f64::from(brake.in_flight_limit));
            p95s.extend(brake.latency_p95_ms);
        }
    }
    let row = job_row(&pool, "adaptive").await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 0);
    let requests = graph.request_count();
    let throttled = requests - graph.written_counts().values().sum::<usize>();
    assert!(
        throttled * 100 <= requests,
        "{throttled} of {requests} requests were throttled"
    );
    assert!(limits.len() >= 4, "{limits:?}");
    let mean = limits.iter().sum::<f64>() / limits.len() as f64;
    assert!(
        (12.0..=48.0).contains(&mean),
        "the in-flight limit settled at {mean:.1} ({limits:?}), not near the 16 workers"
    );
    assert!(
        limits.iter().all(|l| *l < 64.0),
        "the limit reached the ceiling: {limits:?}"
    );
    let mut sorted = p95s.clone();
    sorted.sort_by(f64::total_cmp);
    let median_p95 = sorted[sorted.len() / 2];
    assert!(
        median_p95 <= 100.0 * 1.5,
        "the graph's p95 was {median_p95:.1} ms against a 100 ms target ({p95s:?})"
    );
}

#[sqlx::test]
async fn stopping_a_held_run_is_prompt(pool: PgPool) {
    seed(&pool, 200).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| Reply::TooManyRequests {
        retry_after_secs: 30,
    });
    replica
        .start(json!({"job_key": "held-stop", "sleep_ms": 0}))
        .await;
    wait_for("the graph's first 429", async || graph.request_count() > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    replica.stop("held-stop", OPERATOR).await.unwrap();
    let row = wait_until_idle(&pool, "held-stop").await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        asked.elapsed()
    );
    assert_eq!(row.status(), Some(JobStatus::Stopped));
    assert_eq!(row.failed, 0);
}
