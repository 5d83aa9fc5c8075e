//! The job-control API over real HTTP, and the built-in Postgres graph.
#![cfg(feature = "ssr")]

mod common;

use common::*;
use identity_graph_backfill::backfill::{
    domain::JobStatus,
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
