//! Rows written by other releases, and the upgrade from the previous
//! release: the app lists, starts and resumes them.

use crate::harness::*;
use identity_graph_backfill::backfill::{
    domain::{start_fields, JobStatus},
    store,
};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Inserts a job row the way another release might have written it.
async fn insert_row(pool: &PgPool, key: &str, status: &str, options: Value) {
    sqlx::query(
        "INSERT INTO identity_graph_backfill_jobs (job_key, status, options, pause_reason, cursor)
         VALUES ($1, $2, $3, CASE WHEN $2 = 'paused' THEN 'max-runtime' END, 0)",
    )
    .bind(key)
    .bind(status)
    .bind(options)
    .execute(pool)
    .await
    .unwrap();
}

fn full_options(key: &str) -> Value {
    json!({"job_key": key, "batch_size": 7, "sleep_ms": 0, "max_runtime_ms": 600000,
           "max_consecutive_failures": 30, "concurrency": 3, "max_rate": 0, "mode": "full",
           "retry_failed_before_cursor": true, "reset_cursor": false, "dry_run": false,
           "auto_resume": true})
}

#[sqlx::test]
async fn rows_from_other_releases_read_with_defaults_and_resume(pool: PgPool) {
    seed(&pool, 100).await;
    // Every start option but the key, which a row always carries as a column.
    for field in start_fields().into_iter().filter(|f| *f != "job_key") {
        let key = format!("lacks-{}", field.replace('_', "-"));
        let mut options = full_options(&key);
        options.as_object_mut().unwrap().remove(field);
        insert_row(&pool, &key, "paused", options).await;
    }
    let mut extra = full_options("extra-field");
    extra["from_the_future"] = json!({"shards": 4});
    insert_row(&pool, "extra-field", "paused", extra).await;
    insert_row(&pool, "empty-options", "completed", json!({})).await;

    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, list) = admin.list().await;
    assert_eq!(status, 200, "{list}");
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), start_fields().len() + 1);
    let job = |key: &str| jobs.iter().find(|j| j["job_key"] == key).unwrap().clone();
    assert_eq!(job("lacks-batch-size")["options"]["batch_size"], 100);
    assert_eq!(job("lacks-sleep-ms")["options"]["sleep_ms"], 250);
    assert_eq!(
        job("lacks-max-runtime-ms")["options"]["max_runtime_ms"],
        900_000
    );
    assert_eq!(job("lacks-concurrency")["options"]["concurrency"], 8);
    // A row from before max_rate runs without a limit, as it did.
    assert_eq!(job("lacks-max-rate")["options"]["max_rate"], 0);
    assert_eq!(job("lacks-mode")["options"]["mode"], "full");
    assert_eq!(job("lacks-auto-resume")["options"]["auto_resume"], true);
    assert_eq!(job("extra-field")["options"]["batch_size"], 7);
    assert_eq!(job("empty-options")["status"], "completed");
    assert!(jobs.iter().all(|j| j["status"] != "unreadable"));

    // The watchdog (its pass at start-up) resumes a row that lacks a field,
    // with the default.
    let row = wait_until_status(&pool, "lacks-batch-size", JobStatus::Completed).await;
    let runs = store::recent_runs(&pool, "lacks-batch-size", 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, "watchdog");
    assert_eq!(row.cursor, 100);
    assert_eq!(row.run_scanned, 100, "one run scanned every user");

    // A restart keeps the unknown field it cannot read.
    wait_until_status(&pool, "extra-field", JobStatus::Completed).await;
    let (status, body) = admin
        .start(json!({"job_key": "extra-field", "sleep_ms": 0, "batch_size": 9}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until_idle(&pool, "extra-field").await;
    let stored: Value = sqlx::query_scalar(
        "SELECT options FROM identity_graph_backfill_jobs WHERE job_key = 'extra-field'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored["from_the_future"], json!({"shards": 4}));
    assert_eq!(stored["batch_size"], 9, "the known fields were rewritten");
    app.stop().await;
}

#[sqlx::test]
async fn an_unreadable_row_is_listed_as_such_and_needs_a_reset(pool: PgPool) {
    seed(&pool, 50).await;
    insert_row(&pool, "fine", "completed", full_options("fine")).await;
    for (key, options) in [
        ("as-array", json!([])),
        ("as-string", json!("x")),
        ("bad-number", json!({"batch_size": "many"})),
    ] {
        insert_row(&pool, key, "paused", options).await;
    }
    insert_row(
        &pool,
        "old-archived",
        "archived",
        full_options("old-archived"),
    )
    .await;
    insert_row(&pool, "old-legacy", "legacy", full_options("old-legacy")).await;

    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, list) = admin.list().await;
    assert_eq!(status, 200, "{list}");
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(
        list["summary"]["jobs"], 4,
        "archived and legacy rows stay hidden"
    );
    for job in jobs {
        let key = job["job_key"].as_str().unwrap();
        if key == "fine" {
            assert_eq!(job["status"], "completed");
        } else {
            assert_eq!(job["status"], "unreadable", "{key}");
            assert!(
                job["unreadable_reason"]
                    .as_str()
                    .unwrap()
                    .contains("option"),
                "{job}"
            );
        }
    }
    let (status, detail) = admin.job("bad-number").await;
    assert_eq!(status, 200);
    assert!(detail["job"]["unreadable_reason"]
        .as_str()
        .unwrap()
        .contains("batch_size"));
    assert!(
        app.state.engine.watchdog_tick().await.unwrap().is_empty(),
        "never resumed"
    );

    for key in ["as-array", "as-string", "bad-number"] {
        let (status, body) = admin.start(json!({"job_key": key})).await;
        assert_eq!(status, 422, "{key}: {body}");
        assert_eq!(body["field"], "job_key");
        assert!(body["message"].as_str().unwrap().contains("reset_cursor"));
        let (status, body) = admin
            .start(json!({"job_key": key, "reset_cursor": true, "sleep_ms": 0}))
            .await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(body["started"], true);
        let row = wait_until_idle(&pool, key).await;
        assert_eq!(row.status(), Some(JobStatus::Completed), "{key}");
    }

    for key in ["old-archived", "old-legacy"] {
        let (status, body) = admin.start(json!({"job_key": key})).await;
        assert_eq!(status, 422, "{key}: {body}");
        assert_eq!(body["field"], "job_key");
        assert!(
            body["message"].as_str().unwrap().contains("retired"),
            "{body}"
        );
        let runs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM identity_graph_backfill_runs WHERE job_key = $1",
        )
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(runs, 0, "nothing written for {key}");
    }
    app.stop().await;
}

/// The last migration of the release before run-scoped leases.
const PREVIOUS_RELEASE_LAST_MIGRATION: i64 = 20261129000004;

#[sqlx::test(migrations = false)]
async fn an_upgrade_from_the_previous_release_keeps_every_job_working(pool: PgPool) {
    let current = sqlx::migrate!("./migrations");
    let mut previous = sqlx::migrate!("./migrations");
    previous.migrations = std::borrow::Cow::Owned(
        current
            .migrations
            .iter()
            .filter(|m| m.version <= PREVIOUS_RELEASE_LAST_MIGRATION)
            .cloned()
            .collect(),
    );
    previous.run(&pool).await.unwrap();
    seed(&pool, 500).await;

    // Rows as the previous release wrote them: a rehearsal recorded on the
    // named key itself (with a failure and a run), a paused real job, and a
    // job whose replica died mid-run (owner = a replica id, stale heartbeat).
    let options = |key: &str, dry_run: bool| {
        let mut options = full_options(key);
        options["dry_run"] = json!(dry_run);
        options["batch_size"] = json!(100);
        options
    };
    sqlx::query(
        "INSERT INTO identity_graph_backfill_jobs (job_key, status, dry_run, options, cursor, skipped, skipped_dry_run)
         VALUES ('q1', 'completed', true, $1, 500, 500, 500),
                ('paused-real', 'paused', false, $2, 200, 200, 0),
                ('orphaned', 'running', false, $3, 100, 100, 0)",
    )
    .bind(options("q1", true))
    .bind(options("paused-real", false))
    .bind(options("orphaned", false))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(
        "UPDATE identity_graph_backfill_jobs SET pause_reason = 'max-runtime' WHERE job_key = 'paused-real';
         UPDATE identity_graph_backfill_jobs SET owner = 'old-host-1-abc', heartbeat_at = now() - interval '1 hour'
             WHERE job_key = 'orphaned';
         UPDATE identity_graph_backfill_jobs SET processed = skipped, skipped = 0
             WHERE job_key IN ('paused-real', 'orphaned');
         INSERT INTO identity_graph_backfill_runs (job_key, trigger, owner, ended_at, outcome)
             VALUES ('q1', 'operator', 'old-host-1-abc', now(), 'completed');
         INSERT INTO identity_graph_backfill_runs (job_key, trigger, owner)
             VALUES ('orphaned', 'operator', 'old-host-1-abc');",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The paused and orphaned jobs wrote their first users before the upgrade.
    sqlx::query("INSERT INTO identity_graph_users (user_id) SELECT id FROM users WHERE id <= 200")
        .execute(&pool)
        .await
        .unwrap();

    current.run(&pool).await.unwrap();
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, list) = admin.list().await;
    assert_eq!(status, 200, "{list}");
    let keys = strings(&list["jobs"], "job_key");
    assert!(
        keys.contains(&"q1:dry-run"),
        "the old rehearsal moved to its own key: {keys:?}"
    );
    assert!(!keys.contains(&"q1"));
    let moved_runs = count(
        &pool,
        "SELECT count(*) FROM identity_graph_backfill_runs WHERE job_key = 'q1:dry-run'",
    )
    .await;
    assert_eq!(moved_runs, 1, "its history moved with it");

    // The real q1 now starts from nothing and writes every eligible user.
    let (status, body) = admin
        .start(json!({"job_key": "q1", "sleep_ms": 0, "batch_size": 500}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["cursor"], 0);
    wait_for_coverage(&pool, "q1").await;
    let (_, q1) = admin.job("q1").await;
    assert_eq!(q1["job"]["status"], "completed");
    assert_eq!(
        q1["job"]["processed"],
        eligible_ids(&pool).await.len() as i64
    );
    assert_eq!(q1["coverage"]["unaccounted"], 0);

    // The watchdog's pass at start-up resumes the paused job and, once it has
    // marked its lease expired, the orphaned one.
    for key in ["orphaned", "paused-real"] {
        let row = wait_until_status(&pool, key, JobStatus::Completed).await;
        assert_eq!(row.cursor, 500);
        let runs = store::recent_runs(&pool, key, 10).await.unwrap();
        assert_eq!(runs[0].trigger, "watchdog", "{key}");
    }
    let open = count(
        &pool,
        "SELECT count(*) FROM identity_graph_backfill_runs WHERE ended_at IS NULL",
    )
    .await;
    assert_eq!(open, 0, "the orphaned run row was closed");
    app.stop().await;
}
