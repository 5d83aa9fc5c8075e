//! The engine as an operator uses it: start, stop, resume, rehearse, against
//! real Postgres and the HTTP test graph. The run happens in the engine's
//! background task, so these tests wait for its status.

use crate::harness::graph::{GraphServer, Reply};
use crate::harness::*;
use identity_graph_backfill::{
    backfill::{domain::*, store},
    error::ErrorCode,
};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

#[sqlx::test]
async fn a_clean_full_run_writes_every_eligible_user_exactly_once(pool: PgPool) {
    seed(&pool, 10_000).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let started = replica
        .start(json!({"batch_size": 500, "sleep_ms": 0, "concurrency": 16}))
        .await;
    assert!(started.started && started.running);
    assert_eq!(started.job.job_key, "identity-graph-users");
    let job = wait_until_idle(&pool, "identity-graph-users")
        .await
        .to_job(900_000);

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
    assert_eq!(replica.active_runs(), 0);
}

#[sqlx::test]
async fn the_runtime_cap_pauses_and_a_resume_continues_from_the_cursor(pool: PgPool) {
    seed(&pool, 600).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| Reply::Slow(Duration::from_millis(5)));
    let start = json!({"job_key": "capped", "batch_size": 20, "sleep_ms": 0, "concurrency": 1, "max_runtime_ms": 1000});
    let row = replica.run(start.clone()).await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason(), Some(PauseReason::MaxRuntime));
    let first_cursor = row.cursor;
    assert!(
        first_cursor > 0 && first_cursor < 600,
        "cursor {first_cursor}"
    );

    // An explicit resume, then the watchdog until it completes.
    let mut status = replica.run(start).await;
    assert!(
        status.cursor > first_cursor,
        "the explicit resume continued"
    );
    for _ in 0..20 {
        if status.status().unwrap() == JobStatus::Completed {
            break;
        }
        assert_eq!(status.pause_reason(), Some(PauseReason::MaxRuntime));
        assert_eq!(
            replica.watchdog_tick().await.unwrap(),
            vec!["capped".to_string()]
        );
        status = wait_until_idle(&pool, "capped").await;
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
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let start =
        json!({"job_key": "stoppable", "batch_size": 10, "sleep_ms": 150, "concurrency": 2});
    replica.start(start.clone()).await;
    wait_for_cursor(&pool, "stoppable", 30).await;

    let again = replica
        .engine
        .start(&request(start), "other@example.com")
        .await
        .unwrap();
    assert!(
        !again.started && again.running,
        "a second start changes nothing"
    );

    let stopped = replica.stop("stoppable", OPERATOR).await.unwrap();
    assert!(matches!(
        stopped.job.status,
        JobStatus::Stopping | JobStatus::Stopped
    ));
    assert!(stopped.job.stop_requested);
    let row = wait_until_idle(&pool, "stoppable").await;
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert_eq!(row.stopped_by.as_deref(), Some(OPERATOR));
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

    let rerun = replica
        .start(json!({"job_key": "stoppable", "batch_size": 200, "sleep_ms": 0}))
        .await;
    assert!(rerun.started);
    assert_eq!(
        rerun.job.cursor, cursor,
        "it continues from the saved cursor"
    );
    let done = wait_until_idle(&pool, "stoppable").await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    let written = graph.written_counts();
    assert!(eligible.iter().all(|id| written.get(id) == Some(&1)));
}

/// A stop drops users in flight even when the graph never answers (see
/// `runner::a_stop_within_a_step_drops_users_in_flight_and_keeps_the_prefix`
/// for the semantics): the run ends stopped without waiting for the
/// graph's 60 s time-out, and nothing was handled.
#[sqlx::test]
async fn a_stop_lands_even_when_the_graph_hangs(pool: PgPool) {
    seed(&pool, 500).await;
    let (replica, graph) =
        Replica::and_graph(&pool, &[("IDENTITY_GRAPH_TIMEOUT_MS", "60000")]).await;
    graph.behave(|_, _| Reply::Hang);
    replica
        .start(json!({"job_key": "hanging", "concurrency": 4}))
        .await;
    wait_for("the four users in flight", async || {
        graph.request_count() >= 4
    })
    .await;
    let asked = Instant::now();
    replica.stop("hanging", OPERATOR).await.unwrap();
    let row = wait_until_idle(&pool, "hanging").await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the stop landed {took:?} after it was asked for; the promise is within about a second, 2 s at most"
    );
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert_eq!(row.cursor, 0, "no user was handled, so the cursor stays");
    assert_eq!(row.processed + row.failed + row.skipped, 0);
    assert_eq!(row.last_error, None, "no user timed out");
}

#[sqlx::test]
async fn a_dry_run_sends_nothing_and_never_moves_the_real_cursor(pool: PgPool) {
    seed(&pool, 1_500).await;
    let graph = GraphServer::start().await;
    // No Identity Graph configured at all.
    let unconfigured = Replica::new(&pool, &[]);
    let refused = unconfigured.try_start(json!({})).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::IdentityGraphNotConfigured);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_backfill_jobs").await,
        0,
        "nothing changed"
    );

    let rehearsed = unconfigured
        .start(json!({"dry_run": true, "job_key": "  ", "sleep_ms": 0, "batch_size": 300}))
        .await;
    assert_eq!(rehearsed.job.job_key, "identity-graph-users:dry-run");
    let job = wait_until_idle(&pool, "identity-graph-users:dry-run")
        .await
        .to_job(900_000);
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
    let configured = Replica::with_graph(&pool, &graph, &[]);
    // A named key's rehearsal lives under its `:dry-run` twin.
    let rehearsal = configured
        .run(json!({"dry_run": true, "job_key": "rehearsal", "sleep_ms": 0, "batch_size": 1000}))
        .await;
    assert_eq!(rehearsal.job_key, "rehearsal:dry-run");
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
async fn a_failure_streak_pauses_and_the_watchdog_resumes_retrying_old_failures_first(
    pool: PgPool,
) {
    seed(&pool, 300).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Status(503));
    let replica = Replica::with_graph(&pool, &graph, &[]);
    let row = replica
        .run(json!({"job_key": "streak", "sleep_ms": 0, "batch_size": 20, "concurrency": 4, "max_consecutive_failures": 6}))
        .await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason(), Some(PauseReason::ConsecutiveFailures));
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
        replica.watchdog_tick().await.unwrap(),
        vec!["streak".to_string()]
    );
    let row = wait_until_idle(&pool, "streak").await;
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
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.reject(422, |id| id % 5 == 0);
    let first = replica
        .run(json!({"job_key": "retryable", "sleep_ms": 0, "max_consecutive_failures": 10000}))
        .await;
    assert!(first.failed > 0);
    // New users appear after the cursor; failed-only must not reach them.
    seed(&pool, 50).await;

    graph.behave(|_, _| Reply::Ok);
    let second = replica
        .run(json!({"job_key": "retryable", "mode": "failed-only", "sleep_ms": 0}))
        .await;
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

/// The black-box view of the retry pass's time share; `runner` tests the
/// share itself with a manual clock.
#[sqlx::test]
async fn a_backlog_of_failing_users_never_starves_the_scan(pool: PgPool) {
    seed(&pool, 3_000).await;
    let (replica, graph) = Replica::and_graph(&pool, &[("IDENTITY_GRAPH_TIMEOUT_MS", "150")]).await;
    graph.reject(422, |id| id <= 2_000);
    let first = replica
        .run(json!({"job_key": "backlog", "batch_size": 500, "sleep_ms": 0, "concurrency": 32, "max_consecutive_failures": 10000}))
        .await;
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
        let row = replica
            .run(json!({"job_key": "backlog", "batch_size": 100, "sleep_ms": 0, "concurrency": 8, "max_runtime_ms": 1000, "max_consecutive_failures": 10000}))
            .await;
        assert_eq!(
            row.pause_reason(),
            Some(PauseReason::MaxRuntime),
            "run {run}"
        );
        assert!(
            row.cursor > cursor,
            "run {run}: the cursor moved past {cursor}"
        );
        assert!(row.retry_position.is_some(), "the pass is saved mid-way");
        cursor = row.cursor;
    }
    let retried_twice = count(
        &pool,
        "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = 'backlog' AND attempts > 2",
    )
    .await;
    assert_eq!(
        retried_twice, 0,
        "no old failure was retried twice in one pass"
    );
    let retried = count(
        &pool,
        "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = 'backlog' AND attempts = 2",
    )
    .await;
    assert!(retried >= 4 * 8, "every run retried its share: {retried}");
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
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    let list = replica.list().await.unwrap();
    let keys: Vec<&str> = list.jobs.iter().map(|j| j.job_key.as_str()).collect();
    assert_eq!(keys, ["paused-job"]);
    assert_eq!(list.summary.jobs, 1);

    let stopped = replica.stop("paused-job", OPERATOR).await.unwrap();
    assert_eq!(stopped.job.status, JobStatus::Stopped);
    assert!(replica.watchdog_tick().await.unwrap().is_empty());
    for hidden in ["old-archived", "no-such-job"] {
        assert_eq!(
            replica.stop(hidden, OPERATOR).await.unwrap_err().code,
            ErrorCode::NotFound,
            "{hidden}"
        );
    }
    let archived = replica
        .try_start(json!({"job_key": "old-archived"}))
        .await
        .unwrap_err();
    assert_eq!(archived.field.as_deref(), Some("job_key"));
}

/// Errors an operator must fix end the job `failed`, with the cause in
/// `last_error`, and the watchdog leaves a failed job alone.
async fn assert_failed_and_left_alone(replica: &Replica, pool: &PgPool, key: &str, cause: &str) {
    let row = wait_until_idle(pool, key).await;
    assert_eq!(
        row.status().unwrap(),
        JobStatus::Failed,
        "{key}: {:?}",
        row.last_error
    );
    let error = row.last_error.clone().unwrap_or_default();
    assert!(error.contains(cause), "{key}: {error}");
    assert_eq!(
        replica.watchdog_tick().await.unwrap(),
        Vec::<String>::new(),
        "{key}: the watchdog resumes nothing"
    );
    assert_eq!(
        job_row(pool, key).await.status().unwrap(),
        JobStatus::Failed,
        "{key}: still failed after a watchdog pass"
    );
}

#[sqlx::test]
async fn errors_an_operator_must_fix_fail_the_job_and_the_watchdog_leaves_it(pool: PgPool) {
    seed(&pool, 2_000).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| Reply::Slow(Duration::from_millis(2)));
    let slow = |key: &str| json!({"job_key": key, "batch_size": 20, "sleep_ms": 50});

    // The source table disappears mid-run.
    replica.start(slow("missing")).await;
    wait_for_cursor(&pool, "missing", 1).await;
    sqlx::query("ALTER TABLE users RENAME TO users_elsewhere")
        .execute(&pool)
        .await
        .unwrap();
    assert_failed_and_left_alone(&replica, &pool, "missing", "users").await;
    sqlx::query("ALTER TABLE users_elsewhere RENAME TO users")
        .execute(&pool)
        .await
        .unwrap();

    // A column the runner reads changes its type mid-run.
    replica.start(slow("retyped")).await;
    wait_for_cursor(&pool, "retyped", 1).await;
    sqlx::query("ALTER TABLE users ALTER COLUMN email TYPE integer USING NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert_failed_and_left_alone(&replica, &pool, "retyped", "reading source users").await;
}

#[sqlx::test]
async fn permission_denied_on_the_source_fails_the_job(pool: PgPool) {
    // The run's own role loses the right to read `users` mid-run.
    seed(&pool, 200).await;
    let database = pool
        .connect_options()
        .get_database()
        .unwrap()
        .to_lowercase();
    let role = format!("igb_limited_{}", &database[database.len() - 12..]);
    for statement in [
        // Left over by an earlier run of this test that failed half-way.
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    let limited = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(pool.connect_options().as_ref().clone().username(&role))
        .await
        .unwrap();
    let graph = GraphServer::start().await;
    let replica = Replica::with_graph(&limited, &graph, &[]);
    let started = replica
        .start(json!({"job_key": "denied", "batch_size": 10, "sleep_ms": 50}))
        .await;
    assert!(started.started);
    wait_for_cursor(&pool, "denied", 1).await;
    sqlx::query(&format!("REVOKE SELECT ON users FROM {role}"))
        .execute(&pool)
        .await
        .unwrap();
    assert_failed_and_left_alone(&replica, &pool, "denied", "permission denied").await;

    drop(replica);
    limited.close().await;
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
}

/// `auto_resume: false` keeps the watchdog away from a paused job; the
/// same pause with the default is resumed (the control).
#[sqlx::test]
async fn auto_resume_false_keeps_the_watchdog_away(pool: PgPool) {
    seed(&pool, 600).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| Reply::Slow(Duration::from_millis(5)));
    let capped = |key: &str, auto_resume: bool| {
        json!({"job_key": key, "batch_size": 20, "sleep_ms": 0, "concurrency": 1,
               "max_runtime_ms": 1000, "auto_resume": auto_resume})
    };
    for key in ["manual", "automatic"] {
        let row = replica.run(capped(key, key == "automatic")).await;
        assert_eq!(row.pause_reason(), Some(PauseReason::MaxRuntime), "{key}");
    }
    assert_eq!(
        replica.watchdog_tick().await.unwrap(),
        vec!["automatic".to_string()]
    );
    wait_until_idle(&pool, "automatic").await;
    assert_eq!(replica.watchdog_tick().await.unwrap(), ["automatic"]);
    let manual = job_row(&pool, "manual").await;
    assert_eq!(manual.status().unwrap(), JobStatus::Paused);
    assert_eq!(
        store::recent_runs(&pool, "manual", 10).await.unwrap().len(),
        1,
        "no watchdog run"
    );

    // A stalled run's expired lease is interrupted, but not resumed either.
    replica
        .start(json!({"job_key": "manual", "auto_resume": false}))
        .await;
    wait_for_cursor(&pool, "manual", manual.cursor + 1).await;
    replica.kill_without_cleanup();
    let other = Replica::with_graph(&pool, &graph, &[]);
    sqlx::query(
        "UPDATE identity_graph_backfill_jobs SET heartbeat_at = now() - interval '1 hour'
         WHERE job_key = 'manual'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(!other
        .watchdog_tick()
        .await
        .unwrap()
        .contains(&"manual".to_string()));
    let row = job_row(&pool, "manual").await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason(), Some(PauseReason::Interrupted));
}

/// The window holds at most 10,000 users past a late one (the batch here
/// is 100, so four batches are less): a user whose write never ends stops
/// the run from reading further, and a stop ends it with the cursor before
/// that user.
#[sqlx::test]
async fn the_window_waits_after_10_000_users_past_a_late_one(pool: PgPool) {
    seed(&pool, 12_500).await;
    let (replica, graph) =
        Replica::and_graph(&pool, &[("IDENTITY_GRAPH_TIMEOUT_MS", "60000")]).await;
    let first_id: i64 = count(&pool, "SELECT min(id) FROM users").await;
    let late = eligible_ids(&pool).await[0];
    graph.behave(move |id, _| if id == late { Reply::Hang } else { Reply::Ok });
    replica
        .start(json!({"job_key": "late", "batch_size": 100, "sleep_ms": 0, "concurrency": 32}))
        .await;
    // The run reads on to about 10,000 users past the late one…
    let reach = |id: Option<i64>| id.map_or(0, |id| id - first_id + 1);
    wait_for("the window to reach 9,900 users", async || {
        reach(graph.highest_requested()) >= 9_900
    })
    .await;
    // …and no further, however long it waits: the graph sees nothing new
    // for a second, then for two more.
    let mut requests = graph.request_count();
    wait_for("the window to wait", async || {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = graph.request_count();
        std::mem::replace(&mut requests, now) == now
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reached = reach(graph.highest_requested());
    assert!(
        reached <= 10_000,
        "the window reached {reached} users from the first, past the late user {late}"
    );
    assert_eq!(
        graph.request_count(),
        requests,
        "nothing more is sent while the late user is in flight"
    );
    assert!(job_row(&pool, "late").await.cursor < late);
    replica.stop("late", OPERATOR).await.unwrap();
    let row = wait_until_idle(&pool, "late").await;
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert!(
        row.cursor < late,
        "cursor {} before the late user {late}",
        row.cursor
    );
}

/// `reset_cursor` starts over from the first user and drops the job's
/// failure rows (and only this job's).
#[sqlx::test]
async fn reset_cursor_drops_the_jobs_failure_rows(pool: PgPool) {
    seed(&pool, 300).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.reject(400, |id| id % 7 == 0);
    for key in ["reset", "kept"] {
        let row = replica
            .run(json!({"job_key": key, "sleep_ms": 0, "max_consecutive_failures": 10000}))
            .await;
        assert_eq!(row.status().unwrap(), JobStatus::Completed);
        assert!(row.failed > 0);
    }
    let failures_of = async |key: &str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM identity_graph_backfill_failures WHERE job_key = $1",
        )
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let kept = failures_of("kept").await;
    assert!(kept > 0 && failures_of("reset").await == kept);

    // Nothing fails now, so any failure row left after the reset is an old one.
    graph.behave(|_, _| Reply::Ok);
    let started = replica
        .start(json!({"job_key": "reset", "reset_cursor": true, "sleep_ms": 0}))
        .await;
    assert!(started.started);
    assert_eq!(started.job.cursor, 0);
    assert_eq!(started.job.failed, 0);
    let row = wait_until_idle(&pool, "reset").await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    assert_eq!(failures_of("reset").await, 0, "the reset dropped them");
    assert_eq!(failures_of("kept").await, kept, "another job's rows stay");
}
