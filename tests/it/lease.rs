//! Replicas sharing one database: leases, the watchdog, shutdown, database
//! trouble, and the real binary under SIGTERM. Runs here happen in other
//! tasks and other processes, so these tests wait for what they observe.

use crate::harness::graph::{GraphServer, Reply};
use crate::harness::*;
use identity_graph_backfill::backfill::{domain::*, store};
use serde_json::json;
use sqlx::PgPool;
use std::{collections::HashSet, time::Duration};

#[sqlx::test]
async fn two_replicas_share_one_database_safely(pool: PgPool) {
    seed(&pool, 3_000).await;
    let graph = GraphServer::start().await;
    let lease = [("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "3000")];
    let a = Replica::with_graph(&pool, &graph, &lease);
    let b = Replica::with_graph(&pool, &graph, &lease);
    assert_ne!(a.replica_id(), b.replica_id());
    let slow = json!({"job_key": "shared", "batch_size": 10, "sleep_ms": 100, "concurrency": 2});

    // Only one of them runs a key.
    assert!(a.start(slow.clone()).await.started);
    let on_b = b.start(slow.clone()).await;
    assert!(!on_b.started && on_b.running);
    assert!(a.is_live("shared") && !b.is_live("shared"));

    // A stop sent through B reaches the run on A (through its heartbeat).
    wait_for_cursor(&pool, "shared", 1).await;
    b.stop("shared", OPERATOR).await.unwrap();
    let row = wait_until_idle(&pool, "shared").await;
    assert_eq!(row.status().unwrap(), JobStatus::Stopped);
    assert_eq!(row.stopped_by.as_deref(), Some(OPERATOR));
    assert!(row.cursor < 3_000, "the run on A stopped before the end");
    wait_for("the run on A to exit", async || !a.is_live("shared")).await;

    // A dies without cleanup; its lease expires; B's watchdog resumes the job.
    assert!(a.start(slow).await.started);
    wait_for_cursor(&pool, "shared", row.cursor + 20 + 1).await;
    a.kill_without_cleanup();
    let abandoned = job_row(&pool, "shared").await;
    assert_eq!(
        abandoned.status().unwrap(),
        JobStatus::Running,
        "the row still names the dead owner"
    );
    assert!(
        b.watchdog_tick().await.unwrap().is_empty(),
        "the lease has not expired yet"
    );
    sqlx::query("UPDATE identity_graph_backfill_jobs SET options = jsonb_set(jsonb_set(options, '{sleep_ms}', '0'), '{batch_size}', '500') WHERE job_key = 'shared'")
        .execute(&pool)
        .await
        .unwrap();
    // Nothing renews the dead run's lease: B's watchdog takes the job once it expires.
    wait_for("B's watchdog to take over the expired lease", async || {
        b.watchdog_tick().await.unwrap() == ["shared"]
    })
    .await;
    assert!(b.is_live("shared"));
    let done = wait_until_idle(&pool, "shared").await;
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
    let first = Replica::with_graph(&pool, &graph, &[]);
    first
        .start(json!({"job_key": "restartable", "batch_size": 10, "sleep_ms": 50}))
        .await;
    wait_for_cursor(&pool, "restartable", 50).await;
    first.shutdown.cancel();
    first.wait_for_runs(Duration::from_secs(5)).await;
    let row = job_row(&pool, "restartable").await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason(), Some(PauseReason::Interrupted));
    assert!(row.owner.is_none());

    let second = Replica::with_graph(&pool, &graph, &[]);
    assert_eq!(
        second.watchdog_tick().await.unwrap(),
        vec!["restartable".to_string()]
    );
    let done = wait_until_idle(&pool, "restartable").await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    let written = graph.written_counts();
    assert!(eligible_ids(&pool)
        .await
        .iter()
        .all(|id| written.contains_key(id)));
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
    // Long enough that a heartbeat slowed by a loaded machine does not fence
    // a healthy run; short enough that the test does not wait long.
    let lease = [("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "3000")];
    let a = Replica::with_graph(&pool, &graph, &lease);
    let b = Replica::with_graph(&pool, &graph, &lease);
    let one_at_a_time =
        json!({"job_key": "fenced", "batch_size": 20, "sleep_ms": 0, "concurrency": 1});
    assert!(a.start(one_at_a_time).await.started);

    for watchdog in [&a, &b] {
        wait_for("the run to write", async || graph.request_count() > 20).await;
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
        wait_for("the resumed run to write", async || {
            graph.request_count() > counts_before + 20
        })
        .await;
        assert_eq!(
            open_runs(&pool, "fenced").await,
            1,
            "only one run row is open"
        );
    }
    let done = wait_until_idle(&pool, "fenced").await;
    assert_eq!(done.status().unwrap(), JobStatus::Completed);
    assert_eq!(
        graph.max_in_flight(),
        1,
        "the graph never saw two runners of one key at once"
    );
    assert_eq!(open_runs(&pool, "fenced").await, 0);
    let runs = store::recent_runs(&pool, "fenced", 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|run| run.ended_at.is_some()));
    let lost = lost_users(&pool, &graph).await;
    assert!(lost.is_empty(), "no user lost: {lost:?}");
    let job = done.to_job(900_000);
    assert_eq!(job.scanned, 600, "each user counted once");
    // Each run row counts what its own run handled: a lapsed run's users
    // were either checkpointed under its lease or read again by its
    // successor, never both, so the three rows add up to the job exactly.
    let per_run: Vec<(i64, i64, i64)> = runs
        .iter()
        .map(|run| (run.processed, run.failed, run.skipped))
        .collect();
    let summed = per_run.iter().fold((0, 0, 0), |(p, f, s), run| {
        (p + run.0, f + run.1, s + run.2)
    });
    assert_eq!(
        summed,
        (done.processed, done.failed, done.skipped),
        "the run rows {per_run:?} add up to the job's counters"
    );
    assert_eq!(summed.0 + summed.1 + summed.2, 600);
}

/// Database trouble pauses the run `interrupted`, and the run wakes the
/// watchdog about a second later. The watchdog's interval is an hour here
/// (its start-up pass found nothing), so only that wake can finish the job
/// within the test's 30 s. The trouble lasts until the run has paused and
/// 1.5 s more, so the woken pass meets it too and must try again soon.
#[sqlx::test]
async fn database_trouble_pauses_interrupted_and_the_woken_watchdog_finishes_the_job(pool: PgPool) {
    seed(&pool, 4_000).await;
    let graph = GraphServer::start().await;
    let replica = Replica::with_graph(
        &pool,
        &graph,
        &[
            ("IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS", "3600000"),
            ("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", "3000"),
        ],
    );
    replica.start_watchdog();
    replica
        .start(json!({"job_key": "weathered", "batch_size": 50, "sleep_ms": 5}))
        .await;
    wait_for_cursor(&pool, "weathered", 1).await;
    // The run holds its options; a resumed run reads these and finishes
    // fast, so the 30 s below measure the wake (the interval is an hour),
    // not the work.
    sqlx::query("UPDATE identity_graph_backfill_jobs SET options = jsonb_set(jsonb_set(jsonb_set(options, '{sleep_ms}', '0'), '{batch_size}', '500'), '{concurrency}', '32') WHERE job_key = 'weathered'")
        .execute(&pool)
        .await
        .unwrap();

    // Terminate every connection the app holds, again and again, until the
    // run has paused `interrupted`, and 1.5 s longer.
    let mut killer = pool.acquire().await.unwrap();
    let mut statuses = HashSet::new();
    let trouble_began = std::time::Instant::now();
    let mut paused_at = None;
    while paused_at.is_none_or(|at: std::time::Instant| at.elapsed() < Duration::from_millis(1500))
    {
        assert!(
            trouble_began.elapsed() < Duration::from_secs(30),
            "the run never paused under 30 s of trouble: {statuses:?}"
        );
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
            if status == "paused" && paused_at.is_none() {
                paused_at = Some(std::time::Instant::now());
            }
            statuses.insert(status);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    drop(killer);

    let trouble_over = std::time::Instant::now();
    let woken_runs = async || {
        count(
            &pool,
            "SELECT count(*) FROM identity_graph_backfill_runs
             WHERE job_key = 'weathered' AND trigger = 'watchdog' AND ended_at IS NULL",
        )
        .await
    };
    let mut resumed = None;
    let mut row = job_row(&pool, "weathered").await;
    while row.status() != Some(JobStatus::Completed)
        && trouble_over.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if resumed.is_none() && woken_runs().await > 0 {
            resumed = Some(trouble_over.elapsed());
        }
        row = job_row(&pool, "weathered").await;
        statuses.insert(row.status.to_string());
    }
    let took = trouble_over.elapsed();
    // The woken pass retries a second after it meets trouble: resumed
    // within 5 s (or already before the trouble ended).
    if let Some(resumed) = resumed {
        assert!(
            resumed < Duration::from_secs(5),
            "the watchdog resumed the job {resumed:?} after the trouble ended"
        );
    }
    let outcomes: Vec<_> = store::recent_runs(&pool, "weathered", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.trigger, run.outcome))
        .collect();
    assert!(
        row.status() == Some(JobStatus::Completed) && took < Duration::from_secs(30),
        "{took:?} after the trouble ended the job is {} ({:?}, {:?}, owner {:?}); \
         statuses seen: {statuses:?}; a woken run seen open {resumed:?} after it; \
         runs, newest first: {outcomes:?}. Only the wake after trouble resumes a job this soon",
        row.status,
        row.pause_reason,
        row.last_error,
        row.owner,
    );
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
    let done = job_row(&pool, "weathered").await;
    assert_eq!(done.processed + done.failed + done.skipped, 4_000);
}

/// The real binary: SIGTERM drops the users in flight (the graph hangs for a
/// minute), checkpoints and pauses; a replica that starts resumes the job in
/// its start-up watchdog pass, not after its interval (an hour here).
#[sqlx::test]
async fn sigterm_with_a_hanging_graph_pauses_and_a_restart_resumes_at_once(pool: PgPool) {
    seed(&pool, 500).await;
    add_admins(&pool).await;
    let graph = GraphServer::start().await;
    graph.behave(|_, _| Reply::Hang);
    let no_time_out = [("IDENTITY_GRAPH_TIMEOUT_MS", "60000"), ("RUST_LOG", "warn")];
    let replica = ServerProcess::with_graph(&pool, &graph, &no_time_out).await;
    let admin = replica.signed_in().await;
    let (status, body) = admin
        .start(json!({"job_key": "hung", "concurrency": 4}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for("the four users in flight", async || {
        graph.request_count() >= 4
    })
    .await;

    let signalled = std::time::Instant::now();
    let exit = replica.terminate().await;
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "the binary exited {took:?} after SIGTERM; it waits at most 4 s for its runs"
    );
    let row = job_row(&pool, "hung").await;
    assert_eq!(row.status().unwrap(), JobStatus::Paused);
    assert_eq!(row.pause_reason(), Some(PauseReason::Interrupted));
    assert_eq!(
        row.cursor, 0,
        "nothing was handled, so nothing was checkpointed"
    );
    assert_eq!(row.last_error, None, "no user waited for its time-out");

    graph.behave(|_, _| Reply::Ok);
    let _restarted = ServerProcess::with_graph(&pool, &graph, &no_time_out).await;
    let done = wait_until_status(&pool, "hung", JobStatus::Completed).await;
    assert_eq!(done.cursor, 500);
    let runs = store::recent_runs(&pool, "hung", 10).await.unwrap();
    assert_eq!(
        runs[0].trigger, "watchdog",
        "the start-up pass resumed it: the interval is an hour"
    );
}
