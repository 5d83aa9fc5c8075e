//! The console at scale: the coverage check runs once when a run ends (and
//! on "Check again"), never on a page load; every console query is bounded
//! by a statement timeout and uses an index.

use crate::harness::*;
use identity_graph_backfill::backfill::domain::JobStatus;
use identity_graph_backfill::backfill::store::{self, ConsoleParam};
use identity_graph_backfill::error::ErrorCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;

/// A real run of `key` over the seeded users, waited for with its check.
async fn run_and_check(pool: &PgPool, admin: &Admin, key: &str) {
    let (status, body) = admin
        .start(json!({"job_key": key, "sleep_ms": 0, "batch_size": 200, "concurrency": 8}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_coverage(pool, key).await;
    admin.wait_until_no_check_runs(key).await;
}

/// A replica's run of `key` over the seeded users, waited for with the
/// check its end begins.
async fn run_on_and_check(pool: &PgPool, replica: &Replica, key: &str) {
    replica
        .run(json!({"job_key": key, "sleep_ms": 0, "batch_size": 200}))
        .await;
    wait_for_coverage(pool, key).await;
    wait_for("the run's own check to end", async || {
        !replica.detail(key).await.unwrap().coverage_checking
    })
    .await;
}

/// Holds `lock` (e.g. `LOCK TABLE users IN ACCESS EXCLUSIVE MODE`) until
/// the returned transaction is dropped or rolled back.
async fn hold(pool: &PgPool, lock: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *tx).await.unwrap();
    tx
}

/// Waits until a statement on `table` waits for a lock.
async fn wait_for_blocked(pool: &PgPool, table: &str) {
    let pattern = format!("%FROM {table}%");
    wait_for("a statement blocked by the lock", async || {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE $1 AND datname = current_database()",
        )
        .bind(&pattern)
        .fetch_one(pool)
        .await
        .unwrap();
        blocked > 0
    })
    .await;
}

#[sqlx::test]
async fn the_coverage_check_runs_once_per_run_end_and_never_on_a_page_load(pool: PgPool) {
    seed(&pool, 600).await;
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let engine = app.state.engine.clone();
    assert_eq!(engine.coverage_checks_begun(), 0);
    run_and_check(&pool, &admin, "scaled").await;
    assert_eq!(engine.coverage_checks_begun(), 1, "one check per run end");

    let (status, first) = admin.job("scaled").await;
    assert_eq!(status, 200, "{first}");
    let coverage = &first["coverage"];
    assert_eq!(coverage["unaccounted"], 0, "{first}");
    assert_eq!(coverage["missing_from_graph"], 0, "{first}");
    assert!(coverage["checked_at"].is_string(), "{first}");

    // Polls of every kind: the job answer, the list, both pages.
    for _ in 0..5 {
        let (status, again) = admin.job("scaled").await;
        assert_eq!(status, 200);
        assert_eq!(again["coverage"], first["coverage"], "the stored result");
    }
    assert_eq!(admin.list().await.0, 200);
    for path in ["/", "/jobs/scaled"] {
        let page = reqwest::Client::new()
            .get(app.url(path))
            .header("cookie", &admin.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status().as_u16(), 200, "{path}");
        let html = page.text().await.unwrap();
        if path == "/jobs/scaled" {
            assert!(html.contains("Check again"), "the page offers a new check");
            assert!(html.contains("Checked "), "the page shows the result's age");
        }
    }
    assert_eq!(
        engine.coverage_checks_begun(),
        1,
        "no page load, job or list call ran the check"
    );

    // A second run's end checks again.
    run_and_check(&pool, &admin, "scaled").await;
    assert_eq!(engine.coverage_checks_begun(), 2);
    app.stop().await;
}

#[sqlx::test]
async fn check_again_from_two_tabs_at_once_runs_one_check(pool: PgPool) {
    seed(&pool, 300).await;
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let engine = app.state.engine.clone();
    run_and_check(&pool, &admin, "twice").await;
    let before = engine.coverage_checks_begun();
    let (_, stored) = admin.job("twice").await;

    // The source is locked, so the first check waits on it while the
    // second tab asks.
    let lock = hold(&pool, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let first_tab = admin.check_coverage("twice");
    let first_tab = async {
        let answer = first_tab.await;
        answer
    };
    let (first, second) = tokio::join!(first_tab, async {
        wait_for_blocked(&pool, "users").await;
        let (_, busy) = admin.job("twice").await;
        assert_eq!(busy["coverage_checking"], true, "{busy}");
        let second_tab = admin.check_coverage("twice");
        let release = async {
            // Long enough for the second request to reach the engine, even
            // on a loaded machine.
            tokio::time::sleep(Duration::from_millis(3_000)).await;
            lock.rollback().await.unwrap();
        };
        tokio::join!(second_tab, release).0
    });
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(second.0, 200, "{}", second.1);
    assert_eq!(first.1, second.1, "both tabs get the same result");
    assert_eq!(
        engine.coverage_checks_begun() - before,
        1,
        "two tabs at once run one check"
    );
    assert_ne!(
        first.1["checked_at"], stored["coverage"]["checked_at"],
        "a new check"
    );
    let (_, after) = admin.job("twice").await;
    assert_eq!(after["coverage"], first.1, "the new result is stored");
    assert_eq!(after["coverage_checking"], false);
    app.stop().await;
}

/// Two tabs behind a load balancer reach two replicas: the second check
/// waits for the first (the job's advisory lock) and takes its result.
#[sqlx::test]
async fn check_again_on_two_replicas_at_once_runs_one_check(pool: PgPool) {
    seed(&pool, 300).await;
    let (a, b) = (
        Replica::new(&pool, BUILT_IN_GRAPH),
        Replica::new(&pool, BUILT_IN_GRAPH),
    );
    run_on_and_check(&pool, &a, "shared").await;
    let before = (a.coverage_checks_begun(), b.coverage_checks_begun());
    let stored_before = job_row(&pool, "shared").await.coverage_checked_at;

    // The source is locked: A's check waits on it, holding the job's
    // advisory lock, and B's check waits on that lock.
    let lock = hold(&pool, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let (on_a, on_b) = tokio::join!(a.check_coverage("shared"), async {
        wait_for_blocked(&pool, "users").await;
        let on_b = b.check_coverage("shared");
        let release = async {
            wait_for("B's check to wait for A's", async || {
                // The check's lock: its namespace ("IGBC"), in this test's
                // database (tests run side by side on one server).
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks
                     WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
                       AND classid = x'49474243'::int::oid
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                waiting > 0
            })
            .await;
            lock.rollback().await.unwrap();
        };
        tokio::join!(on_b, release).0
    });
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    assert_eq!(on_a, on_b, "both replicas answer the same result");
    assert_ne!(on_a.checked_at, stored_before, "a new check");
    let first_checked = on_a.checked_at;
    let after = (a.coverage_checks_begun(), b.coverage_checks_begun());
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 0),
        "A counted the source once; B took its result"
    );
    assert_eq!(
        job_row(&pool, "shared").await.stored_coverage(),
        Some(on_a),
        "the result is stored"
    );

    // Alone, B counts for itself.
    let alone = b.check_coverage("shared").await.unwrap();
    assert!(alone.checked_at > first_checked, "a check of its own");
    assert_eq!(b.coverage_checks_begun() - after.1, 1);
}

/// A replica does not wait for another replica's check without end: past
/// six of its statement timeouts it answers that the other check still
/// runs, and records nothing (that check stores its own outcome).
#[sqlx::test]
async fn a_check_that_waits_too_long_for_another_replicas_says_so(pool: PgPool) {
    seed(&pool, 300).await;
    let mut impatient = BUILT_IN_GRAPH.to_vec();
    impatient.push(("COVERAGE_CHECK_TIMEOUT_MS", "1000"));
    let (a, b) = (
        Replica::new(&pool, BUILT_IN_GRAPH),
        Replica::new(&pool, &impatient),
    );
    run_on_and_check(&pool, &a, "busy").await;

    let lock = hold(&pool, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let (on_a, on_b) = tokio::join!(a.check_coverage("busy"), async {
        wait_for_blocked(&pool, "users").await;
        let on_b = b.check_coverage("busy").await;
        let row = job_row(&pool, "busy").await;
        lock.rollback().await.unwrap();
        (on_b, row.coverage_error)
    });
    let (on_b, error_meanwhile) = on_b;
    let refused = on_b.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable, "{}", refused.message);
    assert!(
        refused.message.contains("another replica's coverage check"),
        "{}",
        refused.message
    );
    assert_eq!(
        error_meanwhile, None,
        "the waiting replica recorded nothing"
    );
    assert!(on_a.is_ok(), "A's check ends and stores: {on_a:?}");
    assert_eq!(job_row(&pool, "busy").await.coverage_error, None);
}

/// A run that begins (and ends) while a check counts makes that count out
/// of date: the check counts again, and what it stores is as of after the
/// run began, so the run's own end check, which waits for it, is not handed
/// an older figure.
#[sqlx::test]
async fn a_check_overtaken_by_a_run_counts_again(pool: PgPool) {
    seed(&pool, 300).await;
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    run_on_and_check(&pool, &replica, "overtaken").await;
    let before = replica.coverage_checks_begun();

    let lock = hold(&pool, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let (checked, run_began) = tokio::join!(replica.check_coverage("overtaken"), async {
        // The check has read the job in its snapshot and waits on the source.
        wait_for_blocked(&pool, "users").await;
        // A run begins and ends meanwhile: its start is what moves.
        let run_began: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "UPDATE identity_graph_backfill_jobs SET run_started_at = now()
             WHERE job_key = 'overtaken' RETURNING run_started_at",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        lock.rollback().await.unwrap();
        run_began
    });
    let checked = checked.unwrap();
    assert!(
        checked.checked_at.unwrap() > run_began,
        "the stored figure is as of {:?}, before the run that began at {run_began}",
        checked.checked_at
    );
    assert_eq!(
        job_row(&pool, "overtaken").await.stored_coverage(),
        Some(checked)
    );
    assert_eq!(replica.coverage_checks_begun() - before, 1, "one check");
}

#[sqlx::test]
async fn a_coverage_check_past_its_timeout_is_reported_and_the_old_result_kept(pool: PgPool) {
    seed(&pool, 200).await;
    let (app, admin) = app_with_admin(
        &pool,
        &[
            ("IDENTITY_GRAPH_SINK", "postgres"),
            ("COVERAGE_CHECK_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    run_and_check(&pool, &admin, "slow-check").await;
    let (_, stored) = admin.job("slow-check").await;

    let lock = hold(&pool, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await;
    let (status, error) = admin.check_coverage("slow-check").await;
    lock.rollback().await.unwrap();
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["code"], "UNAVAILABLE");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("COVERAGE_CHECK_TIMEOUT_MS"), "{message}");

    let (_, after) = admin.job("slow-check").await;
    assert_eq!(
        after["coverage"], stored["coverage"],
        "the last result stays"
    );
    assert!(
        after["coverage_error"]
            .as_str()
            .is_some_and(|e| e.contains("timeout")),
        "{after}"
    );
    app.stop().await;
}

#[sqlx::test]
async fn a_console_query_past_its_statement_timeout_answers_unavailable_in_place(pool: PgPool) {
    seed(&pool, 100).await;
    let (app, admin) = app_with_admin(&pool, &[("CONSOLE_STATEMENT_TIMEOUT_MS", "300")]).await;
    let (status, body) = admin
        .start(json!({"job_key": "bounded", "dry_run": true, "sleep_ms": 0}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_coverage(&pool, "bounded:dry-run").await;

    let lock = hold(
        &pool,
        "LOCK TABLE identity_graph_backfill_jobs IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let (status, error) = admin.job("bounded:dry-run").await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["code"], "UNAVAILABLE");
    let message = error["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("Reading the job took longer"),
        "{message}"
    );
    assert!(message.contains("300 ms"), "{message}");
    let (status, error) = admin.list().await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{error}"
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Listing jobs"));

    // The job page shows the same message where the job would be.
    let page = reqwest::Client::new()
        .get(app.url("/jobs/bounded:dry-run"))
        .header("cookie", &admin.cookie)
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    lock.rollback().await.unwrap();
    assert!(html.contains("Could not load this job."), "{html}");
    assert!(html.contains("CONSOLE_STATEMENT_TIMEOUT_MS"), "{html}");
    assert!(!html.contains("request id"), "not an internal error");

    let (status, body) = admin.job("bounded:dry-run").await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

/// Binds a console statement's placeholders for the plan.
fn bound<'q>(
    mut query: sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
    params: &[ConsoleParam],
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments> {
    for param in params {
        query = match param {
            ConsoleParam::JobKey => query.bind("job-3"),
            ConsoleParam::Limit => query.bind(50_i64),
            ConsoleParam::VisibleStatuses => query.bind(&JobStatus::VISIBLE[..]),
            ConsoleParam::ActiveStatuses => query.bind(&JobStatus::ACTIVE[..]),
        };
    }
    query
}

#[sqlx::test]
async fn no_console_statement_scans_users_the_failures_or_the_graph(pool: PgPool) {
    // A million users, ten jobs, 100,000 failures (a seventh resolved),
    // 10,000 runs and a graph of 100,000 users: set-based, in seconds.
    sqlx::raw_sql(
        "INSERT INTO users (id, email, device_id)
             SELECT g, 'u' || g || '@example.com', CASE WHEN g % 3 = 0 THEN 'd' || g / 7 END
             FROM generate_series(1, 1000000) g;
         INSERT INTO identity_graph_backfill_jobs (job_key, status, options, cursor, processed)
             SELECT 'job-' || j, 'completed', '{}', 1000000, 900000 FROM generate_series(0, 9) j;
         INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error, last_failed_at, resolved_at)
             SELECT 'job-' || g % 10, g, (ARRAY['http 500', 'http 400', 'timeout'])[g % 3 + 1],
                    'HTTP 500', now() - g * interval '1 second',
                    CASE WHEN g % 7 = 0 THEN now() END
             FROM generate_series(1, 100000) g;
         INSERT INTO identity_graph_backfill_runs (job_key, trigger, owner)
             SELECT 'job-' || g % 10, 'operator', 'replica/run-' || g FROM generate_series(1, 10000) g;
         INSERT INTO identity_graph_users (user_id) SELECT g FROM generate_series(1, 100000) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    for table in [
        "users",
        "identity_graph_backfill_jobs",
        "identity_graph_backfill_failures",
        "identity_graph_backfill_runs",
        "identity_graph_backfill_tunings",
        "identity_graph_users",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let forbidden = [
        "users",
        "identity_graph_backfill_failures",
        "identity_graph_users",
        "identity_graph_links",
        "identity_graph_identifiers",
    ];
    let statements = store::console_statements();
    assert!(statements.len() >= 6, "{statements:?}");
    for statement in statements {
        let explain = format!("EXPLAIN {}", statement.sql);
        let plan: Vec<String> = bound(sqlx::query_scalar(&explain), statement.params)
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", statement.name));
        let plan = plan.join("\n");
        for table in forbidden {
            assert!(
                !plan.contains(&format!("Seq Scan on {table} "))
                    && !plan.ends_with(&format!("Seq Scan on {table}")),
                "{} scans {table}:\n{plan}",
                statement.name
            );
        }
        // The failures and the runs are read through an index that matches.
        if statement.sql.contains("identity_graph_backfill_failures")
            || statement.sql.contains("identity_graph_backfill_runs")
        {
            assert!(plan.contains("Index"), "{}:\n{plan}", statement.name);
        }
    }
    // And the answers themselves are quick at this size.
    let (app, admin) = app_with_admin(&pool, &[]).await;
    let started = std::time::Instant::now();
    let (status, body) = admin.job("job-3").await;
    assert_eq!(status, 200, "{}", Value::to_string(&body));
    let unresolved = count(
        &pool,
        "SELECT count(*) FROM identity_graph_backfill_failures
         WHERE job_key = 'job-3' AND resolved_at IS NULL",
    )
    .await;
    assert_eq!(body["unresolved_failures"], unresolved);
    assert!(body["coverage"].is_null(), "never checked: nothing counted");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}
