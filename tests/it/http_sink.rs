//! What the HTTP Identity Graph's answers do to users: rejections, retries,
//! Retry-After, time-outs and redirects, through real runs.

use crate::harness::graph::Reply;
use crate::harness::*;
use identity_graph_backfill::backfill::{domain::JobStatus, store};
use serde_json::json;
use sqlx::PgPool;
use std::{collections::HashSet, time::Duration};

#[sqlx::test]
async fn rejected_users_are_recorded_with_their_error(pool: PgPool) {
    seed(&pool, 400).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.reject(400, |id| id % 10 == 0);
    let row = replica
        .run(json!({"job_key": "rejects", "sleep_ms": 0, "max_consecutive_failures": 10000}))
        .await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    let eligible: HashSet<i64> = eligible_ids(&pool).await.into_iter().collect();
    let rejected: Vec<i64> = eligible.iter().copied().filter(|id| id % 10 == 0).collect();
    assert_eq!(row.failed, rejected.len() as i64);
    for id in &rejected {
        assert_eq!(graph.requests_for(*id).len(), 1, "a 400 is not retried");
    }
    let detail = replica.detail("rejects").await.unwrap();
    assert_eq!(detail.unresolved_failures, rejected.len() as i64);
    let failure = &detail.recent_failures[0];
    assert!(failure.error.contains("HTTP 400"), "{}", failure.error);
    assert_eq!(failure.attempts, 1);
    assert!(row.last_error.unwrap().contains("HTTP 400"));
}

#[sqlx::test]
async fn server_errors_are_retried_and_retry_after_is_honoured(pool: PgPool) {
    seed(&pool, 60).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let eligible = eligible_ids(&pool).await;
    let (always_500, throttled) = (eligible[0], eligible[1]);
    graph.behave(move |id, attempt| match id {
        id if id == always_500 => Reply::Status(500),
        id if id == throttled && attempt == 1 => Reply::TooManyRequests {
            retry_after_secs: 1,
        },
        _ => Reply::Ok,
    });
    let row = replica
        .run(json!({"job_key": "flaky", "sleep_ms": 0}))
        .await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert_eq!(
        graph.requests_for(always_500).len(),
        3,
        "a 500 is retried up to 3 attempts"
    );
    assert_eq!(row.failed, 1);
    let failures = store::recent_failures(&pool, "flaky", 10).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].user_id, always_500);
    assert!(
        failures[0].error.contains("HTTP 500") && failures[0].error.contains("after 3 attempts")
    );

    // The server asked for a second's pause: the retry came no sooner (a
    // lower bound, which a slow machine cannot break).
    let attempts = graph.requests_for(throttled);
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[1] - attempts[0] >= Duration::from_millis(950),
        "waited {:?}",
        attempts[1] - attempts[0]
    );
    assert_eq!(graph.written_counts().get(&throttled), Some(&1));
}

#[sqlx::test]
async fn a_silent_identity_graph_times_out_and_is_recorded(pool: PgPool) {
    seed(&pool, 10).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let eligible = eligible_ids(&pool).await;
    let silent = eligible[0];
    graph.behave(move |id, _| if id == silent { Reply::Hang } else { Reply::Ok });
    let row = replica
        .run(json!({"job_key": "silent", "sleep_ms": 0}))
        .await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert_eq!(row.failed, 1);
    assert!(row.last_error.unwrap().contains("timed out"));
}

#[sqlx::test]
async fn a_redirecting_graph_fails_the_user_with_a_clear_message(pool: PgPool) {
    seed(&pool, 30).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| Reply::Redirect);
    let row = replica
        .run(json!({"job_key": "redirected", "sleep_ms": 0, "max_consecutive_failures": 10000}))
        .await;
    assert_eq!(row.processed, 0);
    let failures = store::recent_failures(&pool, "redirected", 100)
        .await
        .unwrap();
    assert_eq!(failures.len() as i64, row.failed);
    assert!(
        failures[0].error.contains("HTTP 302"),
        "{}",
        failures[0].error
    );
    assert!(failures[0].error.contains("redirects are not followed"));
    let eligible = eligible_ids(&pool).await;
    assert!(
        eligible.iter().all(|id| graph.requests_for(*id).len() == 1),
        "a redirect is not retried and never followed"
    );
}

/// An error body is read only up to 4 KB: one that never ends fails the
/// user at once, with its start in the error, instead of being read until
/// the request's time-out (a minute here).
#[sqlx::test]
async fn an_endless_error_body_is_read_only_to_its_first_4_kb(pool: PgPool) {
    seed(&pool, 20).await;
    let (replica, graph) =
        Replica::and_graph(&pool, &[("IDENTITY_GRAPH_TIMEOUT_MS", "60000")]).await;
    let endless = eligible_ids(&pool).await[0];
    graph.behave(move |id, _| {
        if id == endless {
            Reply::EndlessError(400)
        } else {
            Reply::Ok
        }
    });
    let began = std::time::Instant::now();
    let row = replica
        .run(json!({"job_key": "endless", "sleep_ms": 0}))
        .await;
    let took = began.elapsed();
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?}: the endless body was read for too long"
    );
    let failures = store::recent_failures(&pool, "endless", 10).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].user_id, endless);
    assert!(
        failures[0].error.starts_with("HTTP 400: xxxx"),
        "{}",
        failures[0].error
    );
}
