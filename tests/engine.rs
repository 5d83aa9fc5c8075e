//! The backfill engine, driven the way a replica drives it, against real
//! Postgres and a real HTTP Identity Graph on loopback.
#![cfg(feature = "ssr")]

mod common;

use common::graph::{GraphServer, Reply};
use common::*;
use identity_graph_backfill::backfill::{domain::*, store};
use serde_json::json;
use sqlx::PgPool;
use std::{collections::HashSet, time::Duration};

fn env(graph: &GraphServer, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut vars = graph.sink_env();
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    vars
}

fn as_refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn a_clean_full_run_writes_every_eligible_user_exactly_once(pool: PgPool) {
    seed(&pool, 10_000).await;
    let graph = GraphServer::start().await;
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    let response = engine
        .start(
            &request(json!({"batch_size": 500, "sleep_ms": 0, "concurrency": 16})),
            "ops@example.com",
        )
        .await
        .unwrap();
    assert!(response.started && response.running);
    assert_eq!(response.job.job_key, "identity-graph-users");
    let row = wait_until_idle(&pool, "identity-graph-users", Duration::from_secs(120)).await;
    let job = row.to_job(None);

    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.cursor, 10_000, "the cursor ends at the highest id");
    assert_eq!(job.processed + job.failed + job.skipped, 10_000);
    assert_eq!(job.scanned, 10_000);
    assert_eq!(job.failed, 0);

    let eligible = eligible_ids(&pool).await;
    let written = graph.written_counts();
    assert_eq!(written.len(), eligible.len());
    assert!(
        eligible.iter().all(|id| written.get(id) == Some(&1)),
        "every eligible user exactly once"
    );
    assert_eq!(job.processed, eligible.len() as i64);

    let deleted = count(
        &pool,
        "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL",
    )
    .await;
    let no_identifiers = count(
        &pool,
        "SELECT count(*) FROM users WHERE deleted_at IS NULL AND num_nonnulls(email, phone, signup_ip, last_login_ip, device_id) = 0",
    )
    .await;
    assert!(
        deleted > 0 && no_identifiers > 0,
        "the demo data has both kinds"
    );
    assert_eq!(job.skipped_by_reason.deleted, deleted);
    assert_eq!(job.skipped_by_reason.no_identifiers, no_identifiers);
    assert_eq!(job.skipped_by_reason.dry_run, 0);

    // The request contract: bearer token and the identifiers body.
    assert_eq!(
        graph.authorization().as_deref(),
        Some("Bearer test-token-123")
    );
    let body = graph.body_of(eligible[0]).unwrap();
    assert_eq!(body["user_id"], eligible[0]);
    for key in ["email", "phone", "signup_ip", "last_login_ip", "device_ids"] {
        assert!(body["identifiers"].get(key).is_some(), "identifiers.{key}");
    }
    assert_eq!(engine.active_runs(), 0);
}

#[sqlx::test]
async fn the_runtime_cap_pauses_and_a_resume_continues_from_the_cursor(pool: PgPool) {
    seed(&pool, 600).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Slow(Duration::from_millis(5)));
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    let start = json!({"job_key": "capped", "batch_size": 20, "sleep_ms": 0, "concurrency": 1, "max_runtime_ms": 1000});
    engine
        .start(&request(start.clone()), "ops@example.com")
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "capped", Duration::from_secs(20)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason.as_deref(), Some("max-runtime"));
    let first_cursor = row.cursor;
    assert!(
        first_cursor > 0 && first_cursor < 600,
        "cursor {first_cursor}"
    );

    // An explicit resume, then the watchdog until it completes.
    let resumed = engine
        .start(&request(start), "ops@example.com")
        .await
        .unwrap();
    assert!(resumed.started);
    let mut status = wait_until_idle(&pool, "capped", Duration::from_secs(20)).await;
    assert!(
        status.cursor > first_cursor,
        "the explicit resume continued"
    );
    for _ in 0..20 {
        if status.status().unwrap() == JobStatus::Completed {
            break;
        }
        assert_eq!(status.pause_reason.as_deref(), Some("max-runtime"));
        assert_eq!(
            engine.watchdog_tick().await.unwrap(),
            vec!["capped".to_string()]
        );
        status = wait_until_idle(&pool, "capped", Duration::from_secs(20)).await;
    }
    assert_eq!(status.status().unwrap(), JobStatus::Completed);

    let written = graph.written_counts();
    let eligible = eligible_ids(&pool).await;
    assert!(
        eligible.iter().all(|id| written.get(id) == Some(&1)),
        "union is everyone, nobody twice"
    );
    assert_eq!(written.len(), eligible.len());
    let runs = store::recent_runs(&pool, "capped", 50).await.unwrap();
    assert!(runs.iter().any(|r| r.trigger == "watchdog"));
    assert!(
        runs.iter()
            .filter(|r| r.outcome.as_deref() == Some("paused (max-runtime)"))
            .count()
            >= 2
    );
}

#[sqlx::test]
async fn a_stop_goes_stopping_then_stopped_and_a_rerun_continues(pool: PgPool) {
    seed(&pool, 2_000).await;
    let graph = GraphServer::start().await;
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    let start = request(
        json!({"job_key": "stoppable", "batch_size": 10, "sleep_ms": 150, "concurrency": 2}),
    );
    engine.start(&start, "ops@example.com").await.unwrap();
    wait_for(Duration::from_secs(10), async || {
        store::get_job(&pool, "stoppable")
            .await
            .unwrap()
            .unwrap()
            .cursor
            >= 30
    })
    .await;

    let again = engine.start(&start, "other@example.com").await.unwrap();
    assert!(
        !again.started && again.running,
        "a second start changes nothing"
    );

    let stopped = engine.stop("stoppable", "ops@example.com").await.unwrap();
    assert!(matches!(
        stopped.job.status,
        JobStatus::Stopping | JobStatus::Stopped
    ));
    assert!(stopped.job.stop_requested);
    let row = wait_until_idle(&pool, "stoppable", Duration::from_secs(5)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert_eq!(row.stopped_by.as_deref(), Some("ops@example.com"));
    let cursor = row.cursor;
    assert!(cursor < 2_000);

    // The cursor covers exactly the handled users: nothing above it was sent.
    let written = graph.written_counts();
    let eligible = eligible_ids(&pool).await;
    for id in &eligible {
        assert_eq!(
            written.contains_key(id),
            *id <= cursor,
            "user {id} vs cursor {cursor}"
        );
    }

    let rerun = engine
        .start(
            &request(json!({"job_key": "stoppable", "batch_size": 200, "sleep_ms": 0})),
            "ops@example.com",
        )
        .await
        .unwrap();
    assert!(rerun.started);
    assert_eq!(
        rerun.job.cursor, cursor,
        "it continues from the saved cursor"
    );
    let done = wait_until_idle(&pool, "stoppable", Duration::from_secs(30)).await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    let written = graph.written_counts();
    assert!(eligible.iter().all(|id| written.get(id) == Some(&1)));
}

#[sqlx::test]
async fn a_dry_run_sends_nothing_and_never_moves_the_real_cursor(pool: PgPool) {
    seed(&pool, 1_500).await;
    let graph = GraphServer::start().await;
    // No Identity Graph configured at all.
    let (unconfigured, _s1) = engine(&pool, &[]);
    let refused = unconfigured
        .start(&request(json!({})), "ops@example.com")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code,
        identity_graph_backfill::error::ErrorCode::IdentityGraphNotConfigured
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_backfill_jobs").await,
        0,
        "nothing changed"
    );

    let response = unconfigured
        .start(
            &request(json!({"dry_run": true, "job_key": "  ", "sleep_ms": 0, "batch_size": 300})),
            "ops@example.com",
        )
        .await
        .unwrap();
    assert_eq!(response.job.job_key, "identity-graph-users:dry-run");
    let row = wait_until_idle(
        &pool,
        "identity-graph-users:dry-run",
        Duration::from_secs(30),
    )
    .await;
    let job = row.to_job(None);
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!((job.processed, job.failed, job.skipped), (0, 0, 1_500));
    assert_eq!(job.skipped_by_reason.dry_run, 1_500);
    assert!(
        store::get_job(&pool, "identity-graph-users")
            .await
            .unwrap()
            .is_none(),
        "the real job is untouched"
    );

    // Configured, a dry run still sends nothing.
    let vars = env(&graph, &[]);
    let (configured, _s2) = engine(&pool, &as_refs(&vars));
    configured
        .start(
            &request(
                json!({"dry_run": true, "job_key": "rehearsal", "sleep_ms": 0, "batch_size": 1000}),
            ),
            "ops@example.com",
        )
        .await
        .unwrap();
    wait_until_idle(&pool, "rehearsal", Duration::from_secs(30)).await;
    assert_eq!(graph.request_count(), 0);

    // The watchdog never resumes a dry run, even one that paused on its cap.
    sqlx::query("UPDATE identity_graph_backfill_jobs SET status = 'paused', pause_reason = 'max-runtime' WHERE job_key = 'rehearsal'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(configured.watchdog_tick().await.unwrap().is_empty());
}

#[sqlx::test]
async fn rejected_users_are_recorded_with_their_error(pool: PgPool) {
    seed(&pool, 400).await;
    let graph = GraphServer::start().await;
    graph.behave(|id, _| {
        if id % 10 == 0 {
            Reply::Status(400)
        } else {
            Reply::Ok
        }
    });
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(
                json!({"job_key": "rejects", "sleep_ms": 0, "max_consecutive_failures": 10000}),
            ),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "rejects", Duration::from_secs(30)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    let eligible: HashSet<i64> = eligible_ids(&pool).await.into_iter().collect();
    let rejected: Vec<i64> = eligible.iter().copied().filter(|id| id % 10 == 0).collect();
    assert_eq!(row.failed, rejected.len() as i64);
    for id in &rejected {
        assert_eq!(graph.requests_for(*id).len(), 1, "a 400 is not retried");
    }
    let detail = engine.detail("rejects").await.unwrap();
    assert_eq!(detail.unresolved_failures, rejected.len() as i64);
    let failure = &detail.recent_failures[0];
    assert!(failure.error.contains("HTTP 400"), "{}", failure.error);
    assert_eq!(failure.attempts, 1);
    assert!(row.last_error.unwrap().contains("HTTP 400"));
}

#[sqlx::test]
async fn server_errors_are_retried_and_retry_after_is_honoured(pool: PgPool) {
    seed(&pool, 60).await;
    let graph = GraphServer::start().await;
    let eligible = eligible_ids(&pool).await;
    let (always_500, throttled) = (eligible[0], eligible[1]);
    graph.behave(move |id, attempt| match id {
        id if id == always_500 => Reply::Status(500),
        id if id == throttled && attempt == 1 => Reply::TooManyRequests {
            retry_after_secs: 1,
        },
        _ => Reply::Ok,
    });
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(json!({"job_key": "flaky", "sleep_ms": 0})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "flaky", Duration::from_secs(30)).await;
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
    let graph = GraphServer::start().await;
    let eligible = eligible_ids(&pool).await;
    let silent = eligible[0];
    graph.behave(move |id, _| if id == silent { Reply::Hang } else { Reply::Ok });
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(json!({"job_key": "silent", "sleep_ms": 0})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "silent", Duration::from_secs(30)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert_eq!(row.failed, 1);
    assert!(row.last_error.unwrap().contains("timed out"));
}

#[sqlx::test]
async fn a_failure_streak_pauses_and_the_watchdog_resumes_retrying_old_failures_first(
    pool: PgPool,
) {
    seed(&pool, 300).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Status(503));
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(json!({"job_key": "streak", "sleep_ms": 0, "batch_size": 20, "concurrency": 4, "max_consecutive_failures": 6})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "streak", Duration::from_secs(30)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason.as_deref(), Some("consecutive-failures"));
    let failed_before: Vec<i64> = store::recent_failures(&pool, "streak", 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.user_id)
        .collect();
    assert!(!failed_before.is_empty());

    // The Identity Graph recovers; the watchdog resumes the job.
    graph.behave(|_, _| Reply::Ok);
    assert_eq!(
        engine.watchdog_tick().await.unwrap(),
        vec!["streak".to_string()]
    );
    let row = wait_until_idle(&pool, "streak", Duration::from_secs(30)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert_eq!(row.failed, 0, "retried failures moved to processed");
    let eligible = eligible_ids(&pool).await;
    assert_eq!(row.processed, eligible.len() as i64);
    assert_eq!(
        store::unresolved_failure_count(&pool, "streak")
            .await
            .unwrap(),
        0
    );

    // Old failures went first: each was written before any user above the old cursor.
    let first_new_write = eligible
        .iter()
        .filter(|id| !failed_before.contains(id))
        .filter_map(|id| graph.requests_for(*id).last().copied())
        .min()
        .unwrap();
    for id in &failed_before {
        let last = *graph.requests_for(*id).last().unwrap();
        assert!(
            last <= first_new_write,
            "failure {id} retried before new users"
        );
    }
}

#[sqlx::test]
async fn failed_only_mode_retries_failures_and_leaves_the_cursor(pool: PgPool) {
    seed(&pool, 200).await;
    let graph = GraphServer::start().await;
    graph.behave(|id, _| {
        if id % 5 == 0 {
            Reply::Status(422)
        } else {
            Reply::Ok
        }
    });
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    let base = json!({"job_key": "retryable", "sleep_ms": 0, "max_consecutive_failures": 10000});
    engine
        .start(&request(base), "ops@example.com")
        .await
        .unwrap();
    let first = wait_until_idle(&pool, "retryable", Duration::from_secs(30)).await;
    assert!(first.failed > 0);
    // New users appear after the cursor; failed-only must not reach them.
    seed(&pool, 50).await;

    graph.behave(|_, _| Reply::Ok);
    engine
        .start(
            &request(json!({"job_key": "retryable", "mode": "failed-only", "sleep_ms": 0})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let second = wait_until_idle(&pool, "retryable", Duration::from_secs(30)).await;
    assert_eq!(second.status().unwrap(), JobStatus::Completed);
    assert_eq!(second.cursor, first.cursor, "failed-only touches no cursor");
    assert_eq!(second.failed, 0);
    assert_eq!(second.processed, first.processed + first.failed);
    assert_eq!(
        store::unresolved_failure_count(&pool, "retryable")
            .await
            .unwrap(),
        0
    );
    for id in 201..=250 {
        assert!(
            graph.requests_for(id).is_empty(),
            "user {id} is beyond the cursor"
        );
    }
}

#[sqlx::test]
async fn two_replicas_share_one_database_safely(pool: PgPool) {
    seed(&pool, 3_000).await;
    let graph = GraphServer::start().await;
    let vars = env(&graph, &[("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "1500")]);
    let (a, _sa) = engine(&pool, &as_refs(&vars));
    let (b, _sb) = engine(&pool, &as_refs(&vars));
    assert_ne!(a.replica_id(), b.replica_id());
    let slow = json!({"job_key": "shared", "batch_size": 10, "sleep_ms": 100, "concurrency": 2});

    // Only one of them runs a key.
    assert!(
        a.start(&request(slow.clone()), "ops@example.com")
            .await
            .unwrap()
            .started
    );
    let on_b = b
        .start(&request(slow.clone()), "ops@example.com")
        .await
        .unwrap();
    assert!(!on_b.started && on_b.running);
    assert!(a.is_live("shared") && !b.is_live("shared"));

    // A stop sent through B reaches the run on A within about 2 s.
    wait_for(Duration::from_secs(10), async || {
        store::get_job(&pool, "shared")
            .await
            .unwrap()
            .unwrap()
            .cursor
            > 0
    })
    .await;
    let asked = std::time::Instant::now();
    b.stop("shared", "ops@example.com").await.unwrap();
    let row = wait_until_idle(&pool, "shared", Duration::from_secs(5)).await;
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert!(
        asked.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        asked.elapsed()
    );
    wait_for(Duration::from_secs(2), async || !a.is_live("shared")).await;

    // A dies without cleanup; its lease expires; B's watchdog resumes the job.
    assert!(
        a.start(&request(slow), "ops@example.com")
            .await
            .unwrap()
            .started
    );
    wait_for(Duration::from_secs(10), async || {
        store::get_job(&pool, "shared")
            .await
            .unwrap()
            .unwrap()
            .cursor
            > row.cursor + 20
    })
    .await;
    a.kill_without_cleanup();
    let abandoned = store::get_job(&pool, "shared").await.unwrap().unwrap();
    assert_eq!(
        abandoned.status().unwrap(),
        JobStatus::Running,
        "the row still names the dead owner"
    );
    assert!(
        b.watchdog_tick().await.unwrap().is_empty(),
        "the lease has not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    sqlx::query("UPDATE identity_graph_backfill_jobs SET options = jsonb_set(jsonb_set(options, '{sleep_ms}', '0'), '{batch_size}', '500') WHERE job_key = 'shared'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(b.watchdog_tick().await.unwrap(), vec!["shared".to_string()]);
    assert!(b.is_live("shared"));
    let done = wait_until_idle(&pool, "shared", Duration::from_secs(60)).await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    let written = graph.written_counts();
    let lost: Vec<i64> = eligible_ids(&pool)
        .await
        .into_iter()
        .filter(|id| !written.contains_key(id))
        .collect();
    assert!(lost.is_empty(), "no user lost: {lost:?}");
    let runs = store::recent_runs(&pool, "shared", 10).await.unwrap();
    assert_eq!(runs[0].owner, b.replica_id());
}

#[sqlx::test]
async fn shutdown_checkpoints_and_pauses_interrupted_then_resumes(pool: PgPool) {
    seed(&pool, 1_000).await;
    let graph = GraphServer::start().await;
    let vars = env(&graph, &[]);
    let (first, shutdown) = engine(&pool, &as_refs(&vars));
    first
        .start(
            &request(json!({"job_key": "restartable", "batch_size": 10, "sleep_ms": 50})),
            "ops@example.com",
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), async || {
        store::get_job(&pool, "restartable")
            .await
            .unwrap()
            .unwrap()
            .cursor
            >= 50
    })
    .await;
    shutdown.cancel();
    first.wait_for_runs(Duration::from_secs(5)).await;
    let row = store::get_job(&pool, "restartable").await.unwrap().unwrap();
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason.as_deref(), Some("interrupted"));
    assert!(row.owner.is_none());

    let (second, _s) = engine(&pool, &as_refs(&vars));
    assert_eq!(
        second.watchdog_tick().await.unwrap(),
        vec!["restartable".to_string()]
    );
    let done = wait_until_idle(&pool, "restartable", Duration::from_secs(60)).await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    let written = graph.written_counts();
    assert!(eligible_ids(&pool)
        .await
        .iter()
        .all(|id| written.contains_key(id)));
}

#[sqlx::test]
async fn a_stop_on_a_paused_job_is_immediate_and_the_list_hides_archived_and_legacy_rows(
    pool: PgPool,
) {
    for (key, status) in [
        ("paused-job", "paused"),
        ("old-archived", "archived"),
        ("legacy-row", "queued-v1"),
    ] {
        sqlx::query(
            "INSERT INTO identity_graph_backfill_jobs (job_key, status, options, pause_reason)
             VALUES ($1, $2, $3, 'max-runtime')",
        )
        .bind(key)
        .bind(status)
        .bind(
            serde_json::to_value(request(json!({"job_key": key})).resolve(900_000).unwrap().0)
                .unwrap(),
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    let (engine, _s) = engine(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]);
    let list = engine.list().await.unwrap();
    let keys: Vec<&str> = list.jobs.iter().map(|j| j.job_key.as_str()).collect();
    assert_eq!(keys, ["paused-job"]);
    assert_eq!(list.summary.jobs, 1);

    let stopped = engine.stop("paused-job", "ops@example.com").await.unwrap();
    assert_eq!(stopped.job.status, JobStatus::Stopped);
    assert!(engine.watchdog_tick().await.unwrap().is_empty());
    assert_eq!(
        engine
            .stop("old-archived", "ops@example.com")
            .await
            .unwrap_err()
            .code,
        identity_graph_backfill::error::ErrorCode::NotFound
    );
    assert_eq!(
        engine
            .stop("no-such-job", "ops@example.com")
            .await
            .unwrap_err()
            .code,
        identity_graph_backfill::error::ErrorCode::NotFound
    );
    let archived = engine
        .start(
            &request(json!({"job_key": "old-archived"})),
            "ops@example.com",
        )
        .await
        .unwrap_err();
    assert_eq!(archived.field.as_deref(), Some("job_key"));
}
