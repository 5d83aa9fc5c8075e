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
    let job = row.to_job(900_000);

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
    wait_for_cursor(&pool, "stoppable", 30).await;

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
    let job = row.to_job(900_000);
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
    // A named key's rehearsal lives under its `:dry-run` twin.
    wait_until_idle(&pool, "rehearsal:dry-run", Duration::from_secs(30)).await;
    assert_eq!(graph.request_count(), 0);
    assert!(store::get_job(&pool, "rehearsal").await.unwrap().is_none());

    // The watchdog never resumes a dry run, even one that paused on its cap.
    sqlx::query("UPDATE identity_graph_backfill_jobs SET status = 'paused', pause_reason = 'max-runtime' WHERE job_key = 'rehearsal:dry-run'")
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
    wait_for_cursor(&pool, "shared", 1).await;
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
    wait_for_cursor(&pool, "shared", row.cursor + 20 + 1).await;
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
    let lost = lost_users(&pool, &graph).await;
    assert!(lost.is_empty(), "no user lost: {lost:?}");
    let runs = store::recent_runs(&pool, "shared", 10).await.unwrap();
    assert!(
        runs[0].owner.starts_with(b.replica_id()),
        "the run belongs to B"
    );
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
    wait_for_cursor(&pool, "restartable", 50).await;
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

/// Rows of `identity_graph_backfill_runs` for a key that are still open.
async fn open_runs(pool: &PgPool, key: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_runs WHERE job_key = $1 AND ended_at IS NULL",
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_run_whose_lease_lapsed_never_writes_beside_its_successor(pool: PgPool) {
    seed(&pool, 600).await;
    let graph = GraphServer::start().await;
    // Each write takes a while, so two runners would overlap at the graph.
    graph.behave(|_, _| Reply::Slow(Duration::from_millis(15)));
    let vars = env(&graph, &[("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "1200")]);
    let (a, _sa) = engine(&pool, &as_refs(&vars));
    let (b, _sb) = engine(&pool, &as_refs(&vars));
    let one_at_a_time =
        json!({"job_key": "fenced", "batch_size": 20, "sleep_ms": 0, "concurrency": 1});
    assert!(
        a.start(&request(one_at_a_time), "ops@example.com")
            .await
            .unwrap()
            .started
    );

    for watchdog in [&a, &b] {
        wait_for(Duration::from_secs(10), async || graph.request_count() > 20).await;
        // The run is alive, but its lease looks expired (a stalled heartbeat).
        // Its own heartbeat may renew it before the tick reads it; then the
        // tick rightly takes nothing, and the lapse is staged again.
        let mut resumed = Vec::new();
        for _ in 0..5 {
            sqlx::query(
                "UPDATE identity_graph_backfill_jobs SET heartbeat_at = now() - interval '1 hour'
                 WHERE job_key = 'fenced'",
            )
            .execute(&pool)
            .await
            .unwrap();
            resumed = watchdog.watchdog_tick().await.unwrap();
            if !resumed.is_empty() {
                break;
            }
        }
        assert_eq!(resumed, vec!["fenced".to_string()]);
        assert!(open_runs(&pool, "fenced").await <= 1);
        let counts_before = graph.request_count();
        wait_for(Duration::from_secs(10), async || {
            graph.request_count() > counts_before + 20
        })
        .await;
        assert_eq!(
            open_runs(&pool, "fenced").await,
            1,
            "only one run row is open"
        );
    }
    let done = wait_until_idle(&pool, "fenced", Duration::from_secs(60)).await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    assert_eq!(
        graph.max_in_flight(),
        1,
        "the graph never saw two runners of one key at once"
    );
    assert_eq!(open_runs(&pool, "fenced").await, 0);
    let runs = store::recent_runs(&pool, "fenced", 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|run| run.ended_at.is_some()
        && run.processed >= 0
        && run.failed >= 0
        && run.skipped >= 0));
    let lost = lost_users(&pool, &graph).await;
    assert!(lost.is_empty(), "no user lost: {lost:?}");
    let job = done.to_job(900_000);
    assert_eq!(job.scanned, 600, "each user counted once");
}

#[sqlx::test]
async fn database_trouble_pauses_interrupted_and_the_watchdog_finishes_the_job(pool: PgPool) {
    seed(&pool, 4_000).await;
    let graph = GraphServer::start().await;
    let vars = env(
        &graph,
        &[
            ("IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS", "300"),
            ("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "3000"),
        ],
    );
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine.start_watchdog();
    engine
        .start(
            &request(json!({"job_key": "weathered", "batch_size": 50, "sleep_ms": 5})),
            "ops@example.com",
        )
        .await
        .unwrap();
    wait_for_cursor(&pool, "weathered", 1).await;

    // For two seconds, terminate every connection the app holds, again and again.
    let mut killer = pool.acquire().await.unwrap();
    let mut statuses = HashSet::new();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut *killer)
        .await
        .unwrap();
        if let Some(status) = sqlx::query_scalar::<_, String>(
            "SELECT status FROM identity_graph_backfill_jobs WHERE job_key = 'weathered'",
        )
        .fetch_optional(&mut *killer)
        .await
        .unwrap()
        {
            statuses.insert(status);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    drop(killer);

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let row = store::get_job(&pool, "weathered").await.unwrap().unwrap();
        statuses.insert(row.status.to_string());
        if row.status == "completed" {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "still {}", row.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!statuses.contains("failed"), "never failed: {statuses:?}");
    let runs = store::recent_runs(&pool, "weathered", 50).await.unwrap();
    assert!(
        runs.iter()
            .any(|run| run.outcome.as_deref() == Some("paused (interrupted)")),
        "went through paused (interrupted): {:?}",
        runs.iter().map(|r| r.outcome.clone()).collect::<Vec<_>>()
    );
    assert!(runs.iter().any(|run| run.trigger == "watchdog"));
    let lost = lost_users(&pool, &graph).await;
    assert!(lost.is_empty(), "no user lost: {lost:?}");
    assert_eq!(done.processed + done.failed + done.skipped, 4_000);
}

#[sqlx::test]
async fn a_backlog_of_failing_users_never_starves_the_scan(pool: PgPool) {
    seed(&pool, 3_000).await;
    let graph = GraphServer::start().await;
    graph.behave(|id, _| {
        if id <= 2_000 {
            Reply::Status(422)
        } else {
            Reply::Ok
        }
    });
    let vars = env(&graph, &[("IDENTITY_GRAPH_TIMEOUT_MS", "150")]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(json!({"job_key": "backlog", "batch_size": 500, "sleep_ms": 0, "concurrency": 32, "max_consecutive_failures": 10000})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let first = wait_until_idle(&pool, "backlog", Duration::from_secs(60)).await;
    assert_eq!(first.status().unwrap(), JobStatus::Completed);
    let backlog = store::unresolved_failure_count(&pool, "backlog")
        .await
        .unwrap();
    assert!(backlog > 1_500, "{backlog} old failures");

    // Old failures now time out; new users keep arriving after the cursor.
    graph.behave(|id, _| if id <= 2_000 { Reply::Hang } else { Reply::Ok });
    seed(&pool, 2_000).await;
    let mut cursor = first.cursor;
    for run in 0..4 {
        engine
            .start(
                &request(json!({"job_key": "backlog", "batch_size": 100, "sleep_ms": 0, "concurrency": 8, "max_runtime_ms": 1000, "max_consecutive_failures": 10000})),
                "ops@example.com",
            )
            .await
            .unwrap();
        let row = wait_until_idle(&pool, "backlog", Duration::from_secs(30)).await;
        assert_eq!(
            row.pause_reason.as_deref(),
            Some("max-runtime"),
            "run {run}"
        );
        assert!(
            row.cursor > cursor,
            "run {run}: the cursor moved past {cursor}"
        );
        assert!(row.retry_position.is_some(), "the pass is saved mid-way");
        cursor = row.cursor;
    }
    let retried_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = 'backlog' AND attempts > 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        retried_twice, 0,
        "no old failure was retried twice in one pass"
    );
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = 'backlog' AND attempts = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(retried >= 4 * 8, "every run retried its share: {retried}");
}

#[sqlx::test]
async fn a_stop_is_prompt_even_when_the_graph_hangs(pool: PgPool) {
    seed(&pool, 500).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Hang);
    let vars = env(&graph, &[("IDENTITY_GRAPH_TIMEOUT_MS", "60000")]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(json!({"job_key": "hanging", "concurrency": 4})),
            "ops@example.com",
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), async || graph.request_count() >= 4).await;
    let asked = std::time::Instant::now();
    engine.stop("hanging", "ops@example.com").await.unwrap();
    let row = wait_until_idle(&pool, "hanging", Duration::from_secs(2)).await;
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert_eq!(row.cursor, 0, "no user was handled, so the cursor stays");
    assert_eq!(row.processed + row.failed + row.skipped, 0);
}

#[sqlx::test]
async fn a_redirecting_graph_fails_the_user_with_a_clear_message(pool: PgPool) {
    seed(&pool, 30).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Redirect);
    let vars = env(&graph, &[]);
    let (engine, _shutdown) = engine(&pool, &as_refs(&vars));
    engine
        .start(
            &request(
                json!({"job_key": "redirected", "sleep_ms": 0, "max_consecutive_failures": 10000}),
            ),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "redirected", Duration::from_secs(30)).await;
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

/// The database URL of a test pool, for a server process of its own.
fn database_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary serving on its own port: a replica as production runs it.
async fn spawn_replica(pool: &PgPool, graph: &GraphServer, port: u16) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_identity-graph-backfill"))
        .arg("serve")
        .env("DATABASE_URL", database_url(pool))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("IDENTITY_GRAPH_SINK", "http")
        .env("IDENTITY_GRAPH_URL", &graph.url)
        .env("IDENTITY_GRAPH_TIMEOUT_MS", "60000")
        .env("IDENTITY_GRAPH_BACKFILL_ADMINS", ALLOWED.0)
        .env("IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS", "3600000")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let health = format!("http://127.0.0.1:{port}/healthz");
    wait_for(Duration::from_secs(20), async || {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    child
}

#[sqlx::test]
async fn sigterm_with_a_hanging_graph_exits_fast_and_a_restart_resumes_at_once(pool: PgPool) {
    seed(&pool, 500).await;
    add_admins(&pool).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Hang);
    let port = free_port();
    let mut replica = spawn_replica(&pool, &graph, port).await;

    let api =
        |endpoint: &str| format!("http://127.0.0.1:{port}/api/identity-graph-backfill/{endpoint}");
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = client
        .post(api("login"))
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success());
    let started = client
        .post(api("start"))
        .json(&json!({"job_key": "hung", "concurrency": 4}))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success());
    wait_for(Duration::from_secs(10), async || graph.request_count() >= 4).await;

    let asked = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &replica.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || replica.wait().unwrap())
        .await
        .unwrap();
    let took = asked.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let row = store::get_job(&pool, "hung").await.unwrap().unwrap();
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason.as_deref(), Some("interrupted"));
    assert_eq!(
        row.cursor, 0,
        "nothing was handled, so nothing was checkpointed"
    );

    // A replica that starts resumes it within a second, without waiting for
    // its watchdog interval (an hour here).
    graph.behave(|_, _| Reply::Ok);
    let mut replica = spawn_replica(&pool, &graph, free_port()).await;
    let restarted = std::time::Instant::now();
    wait_for(Duration::from_secs(5), async || {
        let row = store::get_job(&pool, "hung").await.unwrap().unwrap();
        row.status().is_some_and(|s| s != JobStatus::Paused)
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(1),
        "resumed after {:?}",
        restarted.elapsed()
    );
    let done = wait_until_idle(&pool, "hung", Duration::from_secs(60)).await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    replica.kill().unwrap();
    let _ = replica.wait();
}
