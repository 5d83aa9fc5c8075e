//! The job-control API over real HTTP, and the built-in Postgres graph.
#![cfg(feature = "ssr")]

mod common;

use common::*;
use identity_graph_backfill::backfill::{
    domain::{start_fields, JobStatus},
    sinks::{postgres::linked_users, postgres::PostgresGraph, IdentityGraph, SourceUser},
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;

async fn signed_in(pool: &PgPool, overrides: &[(&str, &str)]) -> (TestApp, String) {
    add_admins(pool).await;
    let app = TestApp::spawn(pool, overrides).await;
    let (_, cookie, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    (app, cookie.unwrap())
}

async fn job_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM identity_graph_backfill_jobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn out_of_range_numbers_are_clamped_and_echoed(pool: PgPool) {
    seed(&pool, 50).await;
    let (app, cookie) = signed_in(&pool, &[]).await;
    let (status, body) = app
        .call(
            Some(&cookie),
            "start",
            json!({"dry_run": true, "batch_size": 0, "sleep_ms": 999999, "max_runtime_ms": 5,
                   "max_consecutive_failures": 99999999, "concurrency": -4}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["started"], true);
    let options = &body["job"]["options"];
    assert_eq!(options["batch_size"], 1);
    assert_eq!(options["sleep_ms"], 60_000);
    assert_eq!(options["max_runtime_ms"], 1_000);
    assert_eq!(options["max_consecutive_failures"], 10_000);
    assert_eq!(options["concurrency"], 1);
    let adjusted: Vec<&str> = body["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        adjusted,
        [
            "batch_size",
            "sleep_ms",
            "max_runtime_ms",
            "max_consecutive_failures",
            "concurrency"
        ]
    );
    assert_eq!(
        body["adjustments"][0],
        json!({"field": "batch_size", "requested": "0", "effective": "1"})
    );
    app.call(
        Some(&cookie),
        "stop",
        json!({"job_key": "identity-graph-users:dry-run"}),
    )
    .await;
}

#[sqlx::test]
async fn wrong_types_and_bad_keys_are_validation_errors_and_write_nothing(pool: PgPool) {
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let long_key = "k".repeat(121);
    for (body, field) in [
        (json!({"batch_size": "100"}), "batch_size"),
        (json!({"sleep_ms": 1.5}), "sleep_ms"),
        (json!({"concurrency": [8]}), "concurrency"),
        (json!({"dry_run": "true"}), "dry_run"),
        (json!({"reset_cursor": 1}), "reset_cursor"),
        (json!({"mode": "everything"}), "mode"),
        (json!({"job_key": 42}), "job_key"),
        (
            json!({"job_key": "Robert'); DROP TABLE users;--"}),
            "job_key",
        ),
        (json!({"job_key": "has space"}), "job_key"),
        (json!({"job_key": long_key}), "job_key"),
        (json!({"bogus_option": true}), "bogus_option"),
    ] {
        let (status, error) = app.call(Some(&cookie), "start", body.clone()).await;
        assert_eq!(status, 422, "{body} → {error}");
        assert_eq!(error["code"], "VALIDATION", "{body}");
        assert_eq!(error["field"], field, "{body} → {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(job_count(&pool).await, 0, "nothing was written");
    let (status, error) = app
        .call(Some(&cookie), "stop", json!({"job_key": "Bad Key"}))
        .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("job_key")));
    let (status, error) = app.call(Some(&cookie), "job", json!({})).await;
    assert_eq!((status, error["code"].as_str()), (422, Some("VALIDATION")));
}

#[sqlx::test]
async fn a_real_run_without_an_identity_graph_is_refused_with_409(pool: PgPool) {
    let (app, cookie) = signed_in(&pool, &[]).await;
    let (status, error) = app.call(Some(&cookie), "start", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(error["code"], "IDENTITY_GRAPH_NOT_CONFIGURED");
    assert_eq!(job_count(&pool).await, 0);
}

#[sqlx::test]
async fn start_list_job_and_stop_over_http_record_who_did_what(pool: PgPool) {
    seed(&pool, 500).await;
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let (status, started) = app
        .call(
            Some(&cookie),
            "start",
            json!({"job_key": "http-run", "batch_size": 10, "sleep_ms": 200}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["started"], true);
    assert_eq!(started["job"]["started_by"], ALLOWED.0);

    let (status, again) = app
        .call(Some(&cookie), "start", json!({"job_key": "http-run"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["started"].as_bool(), again["running"].as_bool()),
        (Some(false), Some(true))
    );

    let (_, list) = app.call(Some(&cookie), "list", json!({})).await;
    assert_eq!(list["summary"]["jobs"], 1);
    assert_eq!(list["summary"]["active_runs"], 1);
    assert_eq!(list["summary"]["default_batch_size"], 100);
    assert_eq!(list["summary"]["ui_runtime_cap_ms"], 900_000);
    let job: &Value = &list["jobs"][0];
    for field in [
        "job_key",
        "status",
        "dry_run",
        "mode",
        "cursor",
        "processed",
        "failed",
        "skipped",
        "scanned",
        "progress_label",
        "last_error",
        "pause_reason",
        "stop_requested",
        "options",
        "started_by",
        "stopped_by",
        "started_at",
        "updated_at",
        "finished_at",
    ] {
        assert!(job.get(field).is_some(), "Job.{field} is missing");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(job["updated_at"].as_str().unwrap()).is_ok());

    let (status, stopped) = app
        .call(Some(&cookie), "stop", json!({"job_key": "http-run"}))
        .await;
    assert_eq!(status, 200);
    assert!(["stopping", "stopped"].contains(&stopped["job"]["status"].as_str().unwrap()));
    let row = wait_until_idle(&pool, "http-run", Duration::from_secs(5)).await;
    assert_eq!(row.status(), Some(JobStatus::Stopped));

    let (status, detail) = app
        .call(Some(&cookie), "job", json!({"job_key": "http-run"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["job"]["stopped_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["started_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["stopped_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["outcome"], "stopped");
    assert!(detail["recent_failures"].as_array().unwrap().is_empty());

    let (status, missing) = app
        .call(Some(&cookie), "job", json!({"job_key": "no-such-job"}))
        .await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[sqlx::test]
async fn two_tabs_racing_to_start_the_same_key_start_it_once(pool: PgPool) {
    seed(&pool, 200).await;
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let body = json!({"job_key": "raced", "batch_size": 5, "sleep_ms": 300});
    let calls = (0..6).map(|_| app.call(Some(&cookie), "start", body.clone()));
    let results = futures::future::join_all(calls).await;
    let started = results.iter().filter(|(_, r)| r["started"] == true).count();
    assert_eq!(started, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(status, r)| *status == 200 && r["running"] == true));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM identity_graph_backfill_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);
    app.call(Some(&cookie), "stop", json!({"job_key": "raced"}))
        .await;
}

fn user(id: i64, email: &str, device: Option<&str>) -> SourceUser {
    SourceUser {
        id,
        email: Some(email.into()),
        phone: None,
        created_at: chrono::Utc::now(),
        signup_ip: None,
        last_login_ip: None,
        device_id: device.map(str::to_string),
        deleted_at: None,
    }
}

#[sqlx::test]
async fn the_postgres_graph_links_shared_identifiers_idempotently(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    let alice = user(1, "alice@example.com", Some("device-shared"));
    let bob = user(2, "bob@example.com", Some("device-shared"));
    let carol = user(3, "carol@example.com", Some("device-other"));
    for u in [&alice, &bob, &carol] {
        graph.write_user(u).await.unwrap();
    }
    let linked = linked_users(&pool, 1).await.unwrap();
    assert_eq!(
        linked,
        vec![(2, "device".to_string(), "device-shared".to_string())]
    );
    assert!(linked_users(&pool, 3).await.unwrap().is_empty());

    let snapshot = |pool: PgPool| async move {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT row_to_json(t)::text FROM (
                SELECT 'u' AS k, user_id::text AS a, synced_at::text AS b, xmin::text AS c FROM identity_graph_users
                UNION ALL SELECT 'i', id::text, kind || value, xmin::text FROM identity_graph_identifiers
                UNION ALL SELECT 'l', user_id::text, identifier_id::text, xmin::text FROM identity_graph_links
             ) t ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let before = snapshot(pool.clone()).await;
    graph.write_user(&alice).await.unwrap();
    graph.write_user(&bob).await.unwrap();
    assert_eq!(
        snapshot(pool.clone()).await,
        before,
        "writing the same users again changes nothing"
    );

    // Concurrent writers of users that share an identifier still link.
    let writes = (10..40).map(|id| {
        let graph = &graph;
        async move {
            graph
                .write_user(&user(
                    id,
                    &format!("u{id}@example.com"),
                    Some("device-crowd"),
                ))
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    assert_eq!(linked_users(&pool, 10).await.unwrap().len(), 29);
}

#[sqlx::test]
async fn a_real_run_into_the_built_in_graph_links_demo_users(pool: PgPool) {
    seed(&pool, 2_000).await;
    let (engine, _s) = engine(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]);
    engine
        .start(
            &request(json!({"sleep_ms": 0, "batch_size": 500, "concurrency": 16})),
            "ops@example.com",
        )
        .await
        .unwrap();
    let row = wait_until_idle(&pool, "identity-graph-users", Duration::from_secs(60)).await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 0);
    let graph_users: i64 = sqlx::query_scalar("SELECT count(*) FROM identity_graph_users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(graph_users, eligible_ids(&pool).await.len() as i64);
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT identifier_id FROM identity_graph_links GROUP BY 1 HAVING count(*) > 1) s",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(shared > 10, "the demo data shares identifiers: {shared}");
}

async fn graph_user_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM identity_graph_users")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_idle_over_http(app: &TestApp, cookie: &str, key: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = app.call(Some(cookie), "job", json!({"job_key": key})).await;
        assert_eq!(status, 200, "{body}");
        let job_status = body["job"]["status"].as_str().unwrap().to_string();
        if job_status != "running" && job_status != "stopping" {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} still {job_status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test]
async fn a_rehearsal_on_a_named_key_never_moves_the_real_job(pool: PgPool) {
    seed(&pool, 1_000).await;
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let fast = json!({"sleep_ms": 0, "batch_size": 500, "concurrency": 16});

    let mut rehearsal = fast.clone();
    rehearsal["job_key"] = json!("q1");
    rehearsal["dry_run"] = json!(true);
    let (status, body) = app.call(Some(&cookie), "start", rehearsal).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["job"]["job_key"], "q1:dry-run",
        "the answer names the key used"
    );
    let dry = wait_idle_over_http(&app, &cookie, "q1:dry-run").await;
    assert_eq!(dry["job"]["status"], "completed");
    assert_eq!(dry["job"]["dry_run"], true);
    assert_eq!(dry["job"]["cursor"], 1_000);
    assert_eq!(dry["coverage"]["unaccounted"], 0);
    assert_eq!(
        graph_user_count(&pool).await,
        0,
        "a rehearsal writes nothing"
    );

    let mut real = fast.clone();
    real["job_key"] = json!("q1");
    let (status, body) = app.call(Some(&cookie), "start", real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["job_key"], "q1");
    assert_eq!(
        body["job"]["cursor"], 0,
        "the rehearsal did not move the real cursor"
    );
    let done = wait_idle_over_http(&app, &cookie, "q1").await;
    assert_eq!(done["job"]["status"], "completed");
    let eligible = eligible_ids(&pool).await.len() as i64;
    assert_eq!(done["job"]["processed"], eligible);
    assert_eq!(
        graph_user_count(&pool).await,
        eligible,
        "every eligible user written"
    );

    // The coverage check proves it, and notices a user missing from the graph.
    let coverage = &done["coverage"];
    assert_eq!(coverage["users_up_to_cursor"], 1_000);
    assert_eq!(coverage["eligible_up_to_cursor"], eligible);
    assert_eq!(coverage["written"], eligible);
    assert_eq!(coverage["unaccounted"], 0);
    assert_eq!(coverage["missing_from_graph"], 0);
    assert_eq!(coverage["counters_match"], true);
    sqlx::query(
        "DELETE FROM identity_graph_users WHERE user_id = (SELECT min(user_id) FROM identity_graph_users)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, broken) = app
        .call(Some(&cookie), "job", json!({"job_key": "q1"}))
        .await;
    assert_eq!(broken["coverage"]["missing_from_graph"], 1);

    // A real run on a rehearsal key is refused, and writes nothing.
    let jobs_before = job_count(&pool).await;
    let (status, body) = app
        .call(Some(&cookie), "start", json!({"job_key": "x:dry-run"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "job_key");
    assert_eq!(job_count(&pool).await, jobs_before);
    app.stop().await;
}

#[sqlx::test]
async fn admission_checks_size_then_session_then_shape(pool: PgPool) {
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let huge = json!({"job_key": "a".repeat(1024 * 1024)});
    let (status, body) = app.call(Some(&cookie), "start", huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");

    let (status, body) = app
        .call(None, "start", json!({"batch_size": "lots", "surprise": 1}))
        .await;
    assert_eq!(
        status, 401,
        "an anonymous caller learns nothing about the body: {body}"
    );

    for (endpoint, body) in [
        ("stop", json!({"job_key": "k", "force": true})),
        ("job", json!({"job_key": "k", "verbose": 1})),
        ("list", json!({"page": 2})),
        ("me", json!({"x": 1})),
    ] {
        let (status, answer) = app.call(Some(&cookie), endpoint, body).await;
        assert_eq!(status, 422, "{endpoint}: {answer}");
        assert_eq!(answer["code"], "VALIDATION");
    }
    assert_eq!(job_count(&pool).await, 0);

    // A page for a key with dots renders for an allowed admin.
    app.call(
        Some(&cookie),
        "start",
        json!({"job_key": "backfill.2024", "dry_run": true}),
    )
    .await;
    let page = reqwest::Client::new()
        .get(app.url("/jobs/backfill.2024:dry-run"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("backfill.2024:dry-run"),
        "the job page renders"
    );
    assert!(!html.contains("Your session has ended"));
    app.stop().await;
}

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
           "max_consecutive_failures": 30, "concurrency": 3, "mode": "full",
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

    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let (status, list) = app.call(Some(&cookie), "list", json!({})).await;
    assert_eq!(status, 200, "{list}");
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 12);
    let job = |key: &str| jobs.iter().find(|j| j["job_key"] == key).unwrap().clone();
    assert_eq!(job("lacks-batch-size")["options"]["batch_size"], 100);
    assert_eq!(job("lacks-sleep-ms")["options"]["sleep_ms"], 250);
    assert_eq!(
        job("lacks-max-runtime-ms")["options"]["max_runtime_ms"],
        900_000
    );
    assert_eq!(job("lacks-concurrency")["options"]["concurrency"], 8);
    assert_eq!(job("lacks-mode")["options"]["mode"], "full");
    assert_eq!(job("lacks-auto-resume")["options"]["auto_resume"], true);
    assert_eq!(job("extra-field")["options"]["batch_size"], 7);
    assert_eq!(job("empty-options")["status"], "completed");
    assert!(jobs.iter().all(|j| j["status"] != "unreadable"));

    // The watchdog (its pass at start-up) resumes a row that lacks a field,
    // with the default.
    let row = wait_until_status(&pool, "lacks-batch-size", JobStatus::Completed).await;
    let runs = identity_graph_backfill::backfill::store::recent_runs(&pool, "lacks-batch-size", 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, "watchdog");
    assert_eq!(row.cursor, 100);
    assert_eq!(row.run_scanned, 100, "one run scanned every user");

    // A restart keeps the unknown field it cannot read.
    wait_until_status(&pool, "extra-field", JobStatus::Completed).await;
    let (status, body) = app
        .call(
            Some(&cookie),
            "start",
            json!({"job_key": "extra-field", "sleep_ms": 0, "batch_size": 9}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until_idle(&pool, "extra-field", Duration::from_secs(60)).await;
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

    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let (status, list) = app.call(Some(&cookie), "list", json!({})).await;
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
    let (status, detail) = app
        .call(Some(&cookie), "job", json!({"job_key": "bad-number"}))
        .await;
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
        let (status, body) = app
            .call(Some(&cookie), "start", json!({"job_key": key}))
            .await;
        assert_eq!(status, 422, "{key}: {body}");
        assert_eq!(body["field"], "job_key");
        assert!(body["message"].as_str().unwrap().contains("reset_cursor"));
        let (status, body) = app
            .call(
                Some(&cookie),
                "start",
                json!({"job_key": key, "reset_cursor": true, "sleep_ms": 0}),
            )
            .await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(body["started"], true);
        let row = wait_until_idle(&pool, key, Duration::from_secs(60)).await;
        assert_eq!(row.status(), Some(JobStatus::Completed), "{key}");
    }

    for key in ["old-archived", "old-legacy"] {
        let (status, body) = app
            .call(Some(&cookie), "start", json!({"job_key": key}))
            .await;
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
    let (app, cookie) = signed_in(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let (status, list) = app.call(Some(&cookie), "list", json!({})).await;
    assert_eq!(status, 200, "{list}");
    let keys: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"q1:dry-run"),
        "the old rehearsal moved to its own key: {keys:?}"
    );
    assert!(!keys.contains(&"q1"));
    let moved_runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_runs WHERE job_key = 'q1:dry-run'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(moved_runs, 1, "its history moved with it");

    // The real q1 now starts from nothing and writes every eligible user.
    let (status, body) = app
        .call(
            Some(&cookie),
            "start",
            json!({"job_key": "q1", "sleep_ms": 0, "batch_size": 500}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["cursor"], 0);
    let q1 = wait_idle_over_http(&app, &cookie, "q1").await;
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
        let runs = identity_graph_backfill::backfill::store::recent_runs(&pool, key, 10)
            .await
            .unwrap();
        assert_eq!(runs[0].trigger, "watchdog", "{key}");
    }
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_graph_backfill_runs WHERE ended_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "the orphaned run row was closed");
    app.stop().await;
}
