//! Sign-in, sessions and the allow-list, against the real app and Postgres.
#![cfg(feature = "ssr")]

mod common;

use common::{add_admins, TestApp, ALLOWED, NOT_ALLOWED};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

#[sqlx::test]
async fn a_good_login_returns_the_admin_and_a_hardened_cookie(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let response = reqwest::Client::new()
        .post(app.url("/api/identity-graph-backfill/login"))
        .json(&json!({"email": " Allowed@Example.com ", "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http is not TLS: {cookie}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"email": "allowed@example.com", "allowed": true})
    );

    let session = cookie.split(';').next().unwrap();
    let (status, me) = app.call(Some(session), "me", json!({})).await;
    assert_eq!(
        (status, me),
        (
            200,
            json!({"email": "allowed@example.com", "allowed": true})
        )
    );
}

#[sqlx::test]
async fn the_cookie_is_secure_behind_tls(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let response = reqwest::Client::new()
        .post(app.url("/api/identity-graph-backfill/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

#[sqlx::test]
async fn a_wrong_password_and_an_unknown_email_look_the_same(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[("LOGIN_MAX_FAILURES_PER_MINUTE", "100")]).await;
    let mut wrong = Duration::ZERO;
    let mut unknown = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let (status_a, cookie_a, body_a) = app.login(ALLOWED.0, "wrong-password").await;
        wrong += started.elapsed();
        let started = Instant::now();
        let (status_b, cookie_b, body_b) = app.login("nobody@example.com", "wrong-password").await;
        unknown += started.elapsed();
        assert_eq!((status_a, status_b), (401, 401));
        assert!(cookie_a.is_none() && cookie_b.is_none());
        assert_eq!(body_a, body_b);
        assert_eq!(body_a["code"], "UNAUTHENTICATED");
        assert_eq!(body_a["message"], "The email or password is incorrect.");
    }
    // Both pay for one argon2 verification; neither answers early.
    let (fast, slow) = if wrong < unknown {
        (wrong, unknown)
    } else {
        (unknown, wrong)
    };
    assert!(
        fast.as_secs_f64() > slow.as_secs_f64() * 0.5,
        "wrong {wrong:?} vs unknown {unknown:?}"
    );
}

#[sqlx::test]
async fn failed_logins_are_rate_limited(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    for _ in 0..5 {
        assert_eq!(app.login(ALLOWED.0, "wrong-password").await.0, 401);
    }
    let (status, cookie, body) = app.login(ALLOWED.0, ALLOWED.1).await;
    assert_eq!(status, 429, "{body}");
    assert!(cookie.is_none());
    assert_eq!(body["code"], "RATE_LIMITED");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Too many failed sign-in attempts"));
    // The client address is limited too: another email from the same address.
    assert_eq!(app.login(NOT_ALLOWED.0, NOT_ALLOWED.1).await.0, 429);
}

#[sqlx::test]
async fn login_rotates_the_session_id(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, first, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    let first = first.unwrap();
    let response = reqwest::Client::new()
        .post(app.url("/api/identity-graph-backfill/login"))
        .header("cookie", &first)
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    let second = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    assert_eq!(
        app.call(Some(&first), "me", json!({})).await.0,
        401,
        "the old id is gone"
    );
    assert_eq!(app.call(Some(&second), "me", json!({})).await.0, 200);
}

#[sqlx::test]
async fn sessions_expire_when_idle_and_absolutely(pool: PgPool) {
    add_admins(&pool).await;
    let idle = TestApp::spawn(&pool, &[("SESSION_IDLE_TIMEOUT_SECS", "1")]).await;
    let (_, cookie, _) = idle.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    assert_eq!(idle.call(Some(&cookie), "me", json!({})).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(idle.call(Some(&cookie), "me", json!({})).await.0, 401);

    let absolute = TestApp::spawn(&pool, &[("SESSION_ABSOLUTE_TIMEOUT_SECS", "2")]).await;
    let (_, cookie, _) = absolute.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            absolute.call(Some(&cookie), "me", json!({})).await.0,
            200,
            "activity keeps it alive until the cap"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(absolute.call(Some(&cookie), "me", json!({})).await.0, 401);
}

#[sqlx::test]
async fn tampered_and_forged_cookies_are_refused(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, cookie, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for forged in [
        tampered,
        format!("igb_session={}", "a".repeat(64)),
        "igb_session=not-hex".to_string(),
        "igb_session=' OR 1=1 --".to_string(),
        "other=1".to_string(),
    ] {
        let (status, body) = app.call(Some(&forged), "list", json!({})).await;
        assert_eq!(status, 401, "{forged}");
        assert_eq!(body["code"], "UNAUTHENTICATED");
    }
}

#[sqlx::test]
async fn logout_destroys_the_session(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, cookie, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    let (status, _) = app.call(Some(&cookie), "logout", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.call(Some(&cookie), "me", json!({})).await.0, 401);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
}

#[sqlx::test]
async fn a_session_survives_a_server_restart(pool: PgPool) {
    add_admins(&pool).await;
    let first = TestApp::spawn(&pool, &[]).await;
    let (_, cookie, _) = first.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    first.stop().await;
    let second = TestApp::spawn(&pool, &[]).await;
    let (status, me) = second.call(Some(&cookie), "me", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], ALLOWED.0);
}

/// Every server function except login, logout and me must refuse a caller
/// without a session (401) and a signed-in admin off the allow-list (403).
#[sqlx::test]
async fn every_job_control_route_is_guarded(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let (_, viewer, _) = app.login(NOT_ALLOWED.0, NOT_ALLOWED.1).await;
    let viewer = viewer.unwrap();
    let open = ["login", "logout", "me"];
    let routes: Vec<String> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, _)| path.to_string())
        .collect();
    let guarded: Vec<&String> = routes
        .iter()
        .filter(|path| !open.iter().any(|name| path.ends_with(&format!("/{name}"))))
        .collect();
    assert!(
        guarded.len() >= 4,
        "expected list, start, stop and job among {routes:?}"
    );
    for path in guarded {
        let endpoint = path.trim_start_matches("/api/identity-graph-backfill/");
        assert!(
            path.starts_with("/api/identity-graph-backfill/"),
            "{path} has no stable endpoint"
        );
        let body = json!({"job_key": "identity-graph-users", "dry_run": true});
        let (status, error) = app.call(None, endpoint, body.clone()).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{path}"
        );
        let (status, error) = app.call(Some(&viewer), endpoint, body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{path}"
        );
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM identity_graph_backfill_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "a refused call changed nothing");
}

#[sqlx::test]
async fn oversized_and_hostile_credentials_are_validation_errors(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let huge = "a".repeat(1_000_000);
    for (email, password, field) in [
        (format!("{huge}@example.com"), "pw".to_string(), "email"),
        (ALLOWED.0.to_string(), huge.clone(), "password"),
        ("x' OR '1'='1".to_string(), "pw".to_string(), "email"),
        (
            "a@b.io; DROP TABLE admins; --".to_string(),
            "pw".to_string(),
            "email",
        ),
    ] {
        let (status, body) = app
            .call(None, "login", json!({"email": email, "password": password}))
            .await;
        assert_eq!(status, 422, "{field}");
        assert_eq!(body["code"], "VALIDATION");
        assert_eq!(body["field"], field);
    }
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM admins")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (failures, sessions, admins),
        (0, 0, 2),
        "nothing was written"
    );
}

#[sqlx::test]
async fn no_response_leaks_a_hash_or_sql(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, cookie, login) = app.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    let mut bodies = vec![login.to_string()];
    for (endpoint, body) in [
        ("me", json!({})),
        ("list", json!({})),
        ("job", json!({"job_key": "missing"})),
        ("job", json!({"job_key": "Bad Key"})),
        ("start", json!({"batch_size": "x"})),
        ("stop", json!({"job_key": "nope"})),
    ] {
        bodies.push(app.call(Some(&cookie), endpoint, body).await.1.to_string());
    }
    for body in bodies {
        assert!(!body.contains("$argon2"), "{body}");
        for sql in ["SELECT", "INSERT", "UPDATE", "password_hash", "sqlx"] {
            assert!(!body.contains(sql), "{sql} in {body}");
        }
    }
}

#[sqlx::test]
async fn requests_not_from_the_app_are_refused(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let client = reqwest::Client::new();
    let plain = client
        .post(app.url("/api/identity-graph-backfill/login"))
        .header("content-type", "text/plain")
        .body(r#"{"email":"allowed@example.com","password":"allowed-password-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    let foreign = client
        .post(app.url("/api/identity-graph-backfill/login"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(foreign.headers().get("set-cookie").is_none());
    let same_site = client
        .post(app.url("/api/identity-graph-backfill/login"))
        .header("origin", format!("http://{}", app.addr))
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), 200);
}

#[sqlx::test]
async fn pages_need_a_session_and_healthz_reports_the_database(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok", "database": "ok"})
    );
    pool.close().await;
    let down = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(down.status(), 503);
}
