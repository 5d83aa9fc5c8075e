//! The job-control API over real HTTP: validation, clamping, admission,
//! who did what, and rehearsals.

use crate::harness::*;
use identity_graph_backfill::backfill::domain::JobStatus;
use serde_json::{json, Value};
use sqlx::PgPool;

const JOBS: &str = "SELECT count(*) FROM identity_graph_backfill_jobs";

#[sqlx::test]
async fn out_of_range_numbers_are_clamped_and_echoed(pool: PgPool) {
    seed(&pool, 50).await;
    let (_app, admin) = app_with_admin(&pool, &[]).await;
    let (status, body) = admin
        .start(
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
    assert_eq!(
        strings(&body["adjustments"], "field"),
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
    admin.stop("identity-graph-users:dry-run").await;
}

#[sqlx::test]
async fn wrong_types_and_bad_keys_are_validation_errors_and_write_nothing(pool: PgPool) {
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
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
        let (status, error) = admin.start(body.clone()).await;
        assert_eq!(status, 422, "{body} → {error}");
        assert_eq!(error["code"], "VALIDATION", "{body}");
        assert_eq!(error["field"], field, "{body} → {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(count(&pool, JOBS).await, 0, "nothing was written");
    let (status, error) = admin.stop("Bad Key").await;
    assert_eq!((status, error["field"].as_str()), (422, Some("job_key")));
    let (status, error) = admin.send("job", json!({})).await;
    assert_eq!((status, error["code"].as_str()), (422, Some("VALIDATION")));
}

#[sqlx::test]
async fn a_real_run_without_an_identity_graph_is_refused_with_409(pool: PgPool) {
    let (_app, admin) = app_with_admin(&pool, &[]).await;
    let (status, error) = admin.start(json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(error["code"], "IDENTITY_GRAPH_NOT_CONFIGURED");
    assert_eq!(count(&pool, JOBS).await, 0);
}

#[sqlx::test]
async fn start_list_job_and_stop_over_http_record_who_did_what(pool: PgPool) {
    seed(&pool, 500).await;
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, started) = admin
        .start(json!({"job_key": "http-run", "batch_size": 10, "sleep_ms": 200}))
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["started"], true);
    assert_eq!(started["job"]["started_by"], ALLOWED.0);

    let (status, again) = admin.start(json!({"job_key": "http-run"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["started"].as_bool(), again["running"].as_bool()),
        (Some(false), Some(true))
    );

    let (_, list) = admin.list().await;
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

    let (status, stopped) = admin.stop("http-run").await;
    assert_eq!(status, 200);
    assert!(["stopping", "stopped"].contains(&stopped["job"]["status"].as_str().unwrap()));
    let row = wait_until_idle(&pool, "http-run").await;
    assert_eq!(row.status(), Some(JobStatus::Stopped));

    let (status, detail) = admin.job("http-run").await;
    assert_eq!(status, 200);
    assert_eq!(detail["job"]["stopped_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["started_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["stopped_by"], ALLOWED.0);
    assert_eq!(detail["runs"][0]["outcome"], "stopped");
    assert!(detail["recent_failures"].as_array().unwrap().is_empty());

    let (status, missing) = admin.job("no-such-job").await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[sqlx::test]
async fn two_tabs_racing_to_start_the_same_key_start_it_once(pool: PgPool) {
    seed(&pool, 200).await;
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let body = json!({"job_key": "raced", "batch_size": 5, "sleep_ms": 300});
    let calls = (0..6).map(|_| admin.start(body.clone()));
    let results = futures::future::join_all(calls).await;
    let started = results.iter().filter(|(_, r)| r["started"] == true).count();
    assert_eq!(started, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(status, r)| *status == 200 && r["running"] == true));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_backfill_runs").await,
        1
    );
    admin.stop("raced").await;
}

const GRAPH_USERS: &str = "SELECT count(*) FROM identity_graph_users";

#[sqlx::test]
async fn a_rehearsal_on_a_named_key_never_moves_the_real_job(pool: PgPool) {
    seed(&pool, 1_000).await;
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let fast = json!({"sleep_ms": 0, "batch_size": 500, "concurrency": 16});

    let mut rehearsal = fast.clone();
    rehearsal["job_key"] = json!("q1");
    rehearsal["dry_run"] = json!(true);
    let (status, body) = admin.start(rehearsal).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["job"]["job_key"], "q1:dry-run",
        "the answer names the key used"
    );
    wait_for_coverage(&pool, "q1:dry-run").await;
    let (_, dry) = admin.job("q1:dry-run").await;
    assert_eq!(dry["job"]["status"], "completed");
    assert_eq!(dry["job"]["dry_run"], true);
    assert_eq!(dry["job"]["cursor"], 1_000);
    assert_eq!(dry["coverage"]["unaccounted"], 0);
    assert_eq!(
        count(&pool, GRAPH_USERS).await,
        0,
        "a rehearsal writes nothing"
    );

    let mut real = fast.clone();
    real["job_key"] = json!("q1");
    let (status, body) = admin.start(real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["job_key"], "q1");
    assert_eq!(
        body["job"]["cursor"], 0,
        "the rehearsal did not move the real cursor"
    );
    // The run's end checks its coverage in the background, once.
    wait_for_coverage(&pool, "q1").await;
    admin.wait_until_no_check_runs("q1").await;
    let (_, done) = admin.job("q1").await;
    assert_eq!(done["job"]["status"], "completed");
    let eligible = eligible_ids(&pool).await.len() as i64;
    assert_eq!(done["job"]["processed"], eligible);
    assert_eq!(
        count(&pool, GRAPH_USERS).await,
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
    let (_, stored) = admin.job("q1").await;
    assert_eq!(
        stored["coverage"]["missing_from_graph"], 0,
        "a page shows the stored check; it counts nothing"
    );
    let (status, broken) = admin.check_coverage("q1").await;
    assert_eq!(status, 200, "{broken}");
    assert_eq!(broken["missing_from_graph"], 1);
    let (_, stored) = admin.job("q1").await;
    assert_eq!(
        stored["coverage"], broken,
        "\"Check again\" stores its result"
    );

    // A real run on a rehearsal key is refused, and writes nothing.
    let jobs_before = count(&pool, JOBS).await;
    let (status, body) = admin.start(json!({"job_key": "x:dry-run"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "job_key");
    assert_eq!(count(&pool, JOBS).await, jobs_before);
    app.stop().await;
}

#[sqlx::test]
async fn admission_checks_size_then_session_then_shape(pool: PgPool) {
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let huge = json!({"job_key": "a".repeat(1024 * 1024)});
    let (status, body) = admin.start(huge).await;
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
        let (status, answer) = admin.send(endpoint, body).await;
        assert_eq!(status, 422, "{endpoint}: {answer}");
        assert_eq!(answer["code"], "VALIDATION");
    }
    assert_eq!(count(&pool, JOBS).await, 0);

    // A page for a key with dots renders the job for an allowed admin.
    let (status, body) = admin
        .start(json!({"job_key": "backfill.2024", "dry_run": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["started"], true, "{body}");
    assert_eq!(body["job"]["job_key"], "backfill.2024:dry-run");
    assert_eq!(body["job"]["dry_run"], true);
    wait_until_idle(&pool, "backfill.2024:dry-run").await;
    let page = |path: &'static str| {
        let request = reqwest::Client::new()
            .get(app.url(path))
            .header("cookie", &admin.cookie);
        async move {
            let page = request.send().await.unwrap();
            assert_eq!(page.status().as_u16(), 200, "{path}");
            page.text().await.unwrap()
        }
    };
    // Only a loaded job shows who started it and its dry-run marker; the
    // key alone is printed from the URL (breadcrumb, heading) for any key.
    let loaded = [
        format!(r#"title="{}" class="who""#, ALLOWED.0),
        r#"<span class="marker">dry run</span>"#.to_string(),
    ];
    let html = page("/jobs/backfill.2024:dry-run").await;
    for shown in &loaded {
        assert!(html.contains(shown.as_str()), "the job page shows {shown}");
    }
    assert!(!html.contains("Your session has ended"));
    let missing = page("/jobs/backfill.2025:dry-run").await;
    assert!(missing.contains("backfill.2025:dry-run"));
    for shown in &loaded {
        assert!(
            !missing.contains(shown.as_str()),
            "a job that does not exist shows no {shown}"
        );
    }
    app.stop().await;
}

/// An `INTERNAL` error answers 500 with a request id and nothing of the
/// cause; the cause is in the server's log under that id. Through the real
/// binary, whose log is the one an operator reads.
#[sqlx::test]
async fn an_internal_error_shows_only_a_request_id_and_logs_the_cause(pool: PgPool) {
    add_admins(&pool).await;
    let server = ServerProcess::spawn_logged(&pool, BUILT_IN_GRAPH).await;
    let admin = server.signed_in().await;
    sqlx::query("ALTER TABLE identity_graph_backfill_jobs RENAME TO jobs_moved_away")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = admin.list().await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "INTERNAL");
    let id = body["request_id"]
        .as_str()
        .expect("a request id")
        .to_string();
    assert!(id.len() >= 8, "{body}");
    assert_eq!(
        body["message"],
        format!("Something went wrong on the server (request id {id}).")
    );
    let text = body.to_string();
    for secret in [
        "identity_graph_backfill_jobs",
        "does not exist",
        "relation",
        "sqlx",
    ] {
        assert!(
            !text.contains(secret),
            "the answer shows {secret:?}: {text}"
        );
    }
    let mut line = None;
    wait_for("the cause in the log", async || {
        line = server
            .log()
            .lines()
            .find(|line| line.contains(&id) && line.contains("internal error"))
            .map(str::to_string);
        line.is_some()
    })
    .await;
    let line = line.unwrap();
    assert!(
        line.contains("identity_graph_backfill_jobs") && line.contains("does not exist"),
        "{line}"
    );
}

/// The API takes JSON only: a form, or no content type, is 415; an empty,
/// malformed or non-object body is 422 naming `body`; never a 500.
#[sqlx::test]
async fn only_json_objects_are_accepted_and_bad_bodies_are_never_500(pool: PgPool) {
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let post = |endpoint: &str, content_type: Option<&str>, body: &'static str| {
        let mut request = reqwest::Client::new()
            .post(app.api_url(endpoint))
            .header("cookie", &admin.cookie)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };
    for endpoint in ["list", "start", "job", "me"] {
        for (content_type, body) in [
            (Some("application/x-www-form-urlencoded"), ""),
            (Some("application/x-www-form-urlencoded"), "job_key=x"),
            (Some("text/plain"), "{}"),
            (None, "{}"),
        ] {
            let (status, answer) = post(endpoint, content_type, body).await;
            assert_eq!(status, 415, "{endpoint} {content_type:?}: {answer}");
            assert_eq!(answer["code"], "UNSUPPORTED_MEDIA_TYPE", "{answer}");
            assert!(answer["message"]
                .as_str()
                .unwrap()
                .contains("application/json"));
        }
        for body in ["", "  ", "{", "not json", "[]", "42", "null"] {
            let (status, answer) = post(endpoint, Some("application/json"), body).await;
            assert_eq!(status, 422, "{endpoint} {body:?}: {answer}");
            assert_eq!(answer["code"], "VALIDATION", "{answer}");
            assert_eq!(answer["field"], "body", "{answer}");
            assert!(!answer["message"].as_str().unwrap().is_empty());
        }
    }
    let (status, answer) = post("list", Some("application/json; charset=utf-8"), "{}").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(count(&pool, JOBS).await, 0);
    app.stop().await;
}
