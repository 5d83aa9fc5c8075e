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
    // Long enough to break every field rule, short enough to pass the 64 KB
    // body limit (a bigger body is a 413, see tests/api.rs).
    let huge = "a".repeat(10_000);
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
        .body(json!({"email": ALLOWED.0, "password": ALLOWED.1}).to_string())
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

// ---------------------------------------------------------------------------
// The access lifecycle: the real binary's `admin` subcommands against the
// test's database, and their effect on live sessions over real HTTP.

/// The test database's URL, for the binary: the server of `DATABASE_URL`
/// with the per-test database `#[sqlx::test]` created.
fn test_database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for #[sqlx::test]");
    let database = pool
        .connect_options()
        .get_database()
        .expect("a test pool names its database")
        .to_string();
    let server = base
        .rsplit_once('/')
        .map(|(server, _)| server)
        .unwrap_or(&base);
    format!("{server}/{database}")
}

struct CliOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `identity-graph-backfill admin …` with `stdin` as its standard input.
async fn admin_cli(pool: &PgPool, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> CliOutput {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-graph-backfill"));
    command
        .arg("admin")
        .args(args)
        .env("DATABASE_URL", test_database_url(pool))
        .env("IDENTITY_GRAPH_BACKFILL_ADMINS", ALLOWED.0)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    CliOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn admin_add_refuses_weak_passwords_and_writes_nothing(pool: PgPool) {
    for (password, why) in [
        ("abc", "too short: 3 characters"),
        ("password1234", "too easy to guess"),
        (
            "Rotating-ops.lead-Keys-2026",
            "contains the part of the email before the @",
        ),
    ] {
        let out = admin_cli(&pool, &["add", "ops.lead@example.com"], password, &[]).await;
        assert!(!out.success, "{password:?} was accepted: {}", out.stdout);
        assert!(out.stderr.contains(why), "{password:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("A password passes when it has at least 12 characters"),
            "says what would pass: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(password),
            "never echoes the password: {}",
            out.stderr
        );
        assert_eq!(
            count(&pool, "SELECT count(*) FROM admins").await,
            0,
            "{password:?} wrote"
        );
    }

    let passphrase = "velvet comet harbor quinoa ledger";
    let out = admin_cli(
        &pool,
        &["add", "Ops.Lead@Example.com"],
        &format!("{passphrase}\n"),
        &[],
    )
    .await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "admin ops.lead@example.com created");
    let app = TestApp::spawn(&pool, &[]).await;
    assert_eq!(app.login("ops.lead@example.com", passphrase).await.0, 200);
}

#[sqlx::test]
async fn admin_remove_ends_the_sessions_of_the_removed_admin(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, cookie, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    let cookie = cookie.unwrap();
    let (_, viewer, _) = app.login(NOT_ALLOWED.0, NOT_ALLOWED.1).await;
    let viewer = viewer.unwrap();
    assert_eq!(app.call(Some(&cookie), "me", json!({})).await.0, 200);
    assert_eq!(app.call(Some(&cookie), "list", json!({})).await.0, 200);

    let out = admin_cli(&pool, &["remove", ALLOWED.0], "", &[]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "admin allowed@example.com removed, 1 session(s) ended"
    );

    for endpoint in ["me", "list"] {
        let (status, body) = app.call(Some(&cookie), endpoint, json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{endpoint}"
        );
    }
    // And a page load from that browser lands on the sign-in page.
    let page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");
    assert_eq!(app.login(ALLOWED.0, ALLOWED.1).await.0, 401);
    assert_eq!(
        app.call(Some(&viewer), "me", json!({})).await.0,
        200,
        "another admin's session is untouched"
    );

    let again = admin_cli(&pool, &["remove", ALLOWED.0], "", &[]).await;
    assert!(!again.success);
    assert!(
        again
            .stderr
            .contains("there is no admin allowed@example.com"),
        "{}",
        again.stderr
    );
}

#[sqlx::test]
async fn admin_add_for_an_existing_admin_rotates_the_password_and_ends_its_sessions(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    let (_, old_session, _) = app.login(ALLOWED.0, ALLOWED.1).await;
    let old_session = old_session.unwrap();
    let (_, viewer, _) = app.login(NOT_ALLOWED.0, NOT_ALLOWED.1).await;
    let viewer = viewer.unwrap();

    let new_password = "marble osprey fennel circuit 58";
    let out = admin_cli(&pool, &["add", ALLOWED.0], new_password, &[]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "admin allowed@example.com: password changed, 1 session(s) ended"
    );

    assert_eq!(app.call(Some(&old_session), "me", json!({})).await.0, 401);
    assert_eq!(
        app.login(ALLOWED.0, ALLOWED.1).await.0,
        401,
        "the old password is gone"
    );
    let (status, new_session, _) = app.login(ALLOWED.0, new_password).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.call(new_session.as_deref(), "list", json!({})).await.0,
        200
    );
    assert_eq!(app.call(Some(&viewer), "me", json!({})).await.0, 200);

    // A refused new password changes nothing: the session and password stand.
    let weak = admin_cli(&pool, &["add", ALLOWED.0], "abc", &[]).await;
    assert!(!weak.success);
    assert_eq!(
        app.call(new_session.as_deref(), "me", json!({})).await.0,
        200
    );
}

#[sqlx::test]
async fn admin_list_shows_allow_list_last_sign_in_and_live_sessions_but_no_hash(pool: PgPool) {
    add_admins(&pool).await;
    let app = TestApp::spawn(&pool, &[]).await;
    app.login(ALLOWED.0, ALLOWED.1).await.1.unwrap();
    app.login(ALLOWED.0, ALLOWED.1).await.1.unwrap();
    // An expired session is not live.
    sqlx::query(
        "INSERT INTO admin_sessions (token_hash, admin_id, created_at, last_seen_at)
         SELECT '\\x00', id, now() - interval '2 days', now() - interval '2 days' FROM admins WHERE email = $1",
    )
    .bind(ALLOWED.0)
    .execute(&pool)
    .await
    .unwrap();

    let out = admin_cli(&pool, &["list"], "", &[]).await;
    assert!(out.success, "{}", out.stderr);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert_eq!(rows[0][..2], [ALLOWED.0, "yes"], "{}", out.stdout);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(rows[0][2], today, "{}", out.stdout);
    assert_eq!(rows[0].last(), Some(&"2"), "{}", out.stdout);
    assert_eq!(
        rows[1],
        [NOT_ALLOWED.0, "no", "never", "0"],
        "{}",
        out.stdout
    );
    for secret in ["$argon2", ALLOWED.1, NOT_ALLOWED.1] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    }
}

// ---------------------------------------------------------------------------
// Sign-in under attack.

/// The real server binary (`serve`), as a replica runs in production, on a
/// free loopback port against the test's database; killed when dropped.
struct ServerProcess {
    child: tokio::process::Child,
    base: String,
}

impl ServerProcess {
    async fn spawn(pool: &PgPool, env: &[(&str, &str)]) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-graph-backfill"));
        command
            .arg("serve")
            .env("DATABASE_URL", test_database_url(pool))
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("IDENTITY_GRAPH_BACKFILL_ADMINS", ALLOWED.0)
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let server = ServerProcess {
            child: command.spawn().expect("the server binary starts"),
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", server.base))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn login_url(&self) -> String {
        format!("{}/api/identity-graph-backfill/login", self.base)
    }

    /// The server's peak resident memory so far, in MiB (Linux `VmHWM`).
    fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib / 1024
    }
}

/// Fires `attempts` wrong-password sign-ins at once, spread over `servers`,
/// for `email(i)`; returns how many got each status.
async fn flood(
    servers: &[&ServerProcess],
    attempts: usize,
    email: impl Fn(usize) -> String,
) -> std::collections::BTreeMap<u16, usize> {
    let client = reqwest::Client::new();
    let requests = (0..attempts).map(|i| {
        let request = client
            .post(servers[i % servers.len()].login_url())
            .json(&json!({"email": email(i), "password": format!("wrong-guess-{i}")}));
        async move {
            request
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
    });
    let mut statuses = std::collections::BTreeMap::new();
    for status in futures::future::join_all(requests).await {
        *statuses.entry(status).or_insert(0) += 1;
    }
    statuses
}

#[sqlx::test]
async fn three_hundred_parallel_wrong_sign_ins_get_at_most_five_verifications(pool: PgPool) {
    add_admins(&pool).await;
    let server = ServerProcess::spawn(&pool, &[]).await;
    let statuses = flood(&[&server], 300, |_| ALLOWED.0.to_string()).await;
    // A wrong-password 401 can only come after a verification, so the 401s
    // count the verifications; every other attempt must have been refused first.
    let verified = statuses.get(&401).copied().unwrap_or(0);
    let limited = statuses.get(&429).copied().unwrap_or(0);
    assert!(verified <= 5, "{verified} verifications: {statuses:?}");
    assert_eq!(verified + limited, 300, "{statuses:?}");
    let recorded = count(
        &pool,
        "SELECT count(*) FROM login_failures WHERE subject = 'email:allowed@example.com'",
    )
    .await;
    assert_eq!(
        recorded, verified as i64,
        "one failure row per verification"
    );
    let peak = server.peak_rss_mib();
    println!("300 parallel wrong sign-ins: {statuses:?}; server peak RSS {peak} MiB");
    assert!(peak < 200, "server peak RSS {peak} MiB");
    // While the limit holds, the right password is refused too.
    let right = reqwest::Client::new()
        .post(server.login_url())
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
}

#[sqlx::test]
async fn the_failure_limit_holds_across_two_replicas(pool: PgPool) {
    add_admins(&pool).await;
    let first = ServerProcess::spawn(&pool, &[]).await;
    let second = ServerProcess::spawn(&pool, &[]).await;
    let statuses = flood(&[&first, &second], 200, |_| ALLOWED.0.to_string()).await;
    let verified = statuses.get(&401).copied().unwrap_or(0);
    assert!(
        verified <= 5,
        "{verified} verifications across replicas: {statuses:?}"
    );
    assert_eq!(
        verified + statuses.get(&429).copied().unwrap_or(0),
        200,
        "{statuses:?}"
    );
}

#[sqlx::test]
async fn argon2_work_is_bounded_so_memory_stays_flat(pool: PgPool) {
    add_admins(&pool).await;
    // Limits high enough that every attempt reaches argon2: only the gate bounds them.
    let server = ServerProcess::spawn(&pool, &[("LOGIN_MAX_FAILURES_PER_MINUTE", "10000")]).await;
    let statuses = flood(&[&server], 64, |i| format!("flood-{i}@example.com")).await;
    assert_eq!(statuses.get(&401), Some(&64), "{statuses:?}");
    let peak = server.peak_rss_mib();
    println!("64 parallel argon2 verifications: server peak RSS {peak} MiB");
    // Unbounded, 64 argon2 runs of 19 MiB each would need over 1.2 GiB.
    assert!(peak < 200, "server peak RSS {peak} MiB");
}

fn next_unique_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[sqlx::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(pool: PgPool) {
    add_admins(&pool).await;
    // Each attempt names another email, so only the per-address limit can refuse it.
    async fn wrong_sign_in(app: &TestApp, forwarded_for: &str) -> u16 {
        let email = format!("nobody-{}@example.com", next_unique_number());
        reqwest::Client::new()
            .post(app.url("/api/identity-graph-backfill/login"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"email": email, "password": "wrong-password"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    async fn ip_subjects(pool: &PgPool) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT DISTINCT subject FROM login_failures WHERE subject LIKE 'ip:%' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    let direct = TestApp::spawn(&pool, &[]).await;
    assert_eq!(wrong_sign_in(&direct, "203.0.113.7").await, 401);
    assert_eq!(
        ip_subjects(&pool).await,
        ["ip:127.0.0.1"],
        "the header is ignored"
    );
    direct.stop().await;
    sqlx::query("DELETE FROM login_failures")
        .execute(&pool)
        .await
        .unwrap();

    let proxied = TestApp::spawn(&pool, &[("TRUSTED_PROXY", "127.0.0.1")]).await;
    // A client-supplied entry on the left is not believed; the proxy's own is.
    assert_eq!(
        wrong_sign_in(&proxied, "198.51.100.1, 203.0.113.7").await,
        401
    );
    assert_eq!(ip_subjects(&pool).await, ["ip:203.0.113.7"]);
    // So the per-address limit falls on that client, not on every client of the proxy.
    for _ in 0..4 {
        assert_eq!(wrong_sign_in(&proxied, "203.0.113.7").await, 401);
    }
    assert_eq!(wrong_sign_in(&proxied, "203.0.113.7").await, 429);
    let other_client = reqwest::Client::new()
        .post(proxied.url("/api/identity-graph-backfill/login"))
        .header("x-forwarded-for", "203.0.113.8")
        .json(&json!({"email": ALLOWED.0, "password": ALLOWED.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_client.status(), 200);
}

// ---------------------------------------------------------------------------
// Housekeeping and the allow-list check.

#[sqlx::test]
async fn purge_removes_expired_sessions_and_old_failures_only(pool: PgPool) {
    use identity_graph_backfill::access::ssr::housekeeping::{purge_expired, Purged};
    add_admins(&pool).await;
    sqlx::query(
        "INSERT INTO admin_sessions (token_hash, admin_id, created_at, last_seen_at)
         SELECT v.token::bytea, a.id, now() - v.age, now() - v.idle
         FROM admins a, (VALUES ('live', interval '1 hour', interval '1 minute'),
                                ('idle', interval '1 hour', interval '31 minutes'),
                                ('too-old', interval '13 hours', interval '1 minute')) AS v(token, age, idle)
         WHERE a.email = $1",
    )
    .bind(ALLOWED.0)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO login_failures (subject, failed_at)
         VALUES ('email:a@b.io', now() - interval '5 minutes'), ('email:a@b.io', now() - interval '2 hours')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let purged = purge_expired(
        &pool,
        Duration::from_secs(1800),
        Duration::from_secs(43_200),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(
        purged,
        Purged {
            sessions: 2,
            login_failures: 1
        }
    );
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM admin_sessions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [b"live".to_vec()]);
    assert_eq!(count(&pool, "SELECT count(*) FROM login_failures").await, 1);
}

#[sqlx::test]
async fn the_allow_list_check_finds_a_list_naming_nobody_with_an_account(pool: PgPool) {
    use identity_graph_backfill::access::{
        ssr::allow_list_check::{
            account_warning, allowed_emails_with_accounts, entry_warnings, AllowListWarning,
        },
        AllowList,
    };
    add_admins(&pool).await;
    let typo = AllowList::parse("alowed@example.com,,not-an-email");
    assert_eq!(
        entry_warnings(&typo),
        [AllowListWarning::NotAnEmail("not-an-email".into())]
    );
    let accounts = allowed_emails_with_accounts(&pool, &typo).await.unwrap();
    assert_eq!(
        account_warning(&typo, &accounts),
        Some(AllowListWarning::NobodyHasAnAccount)
    );
    let right = AllowList::parse(&format!("{},not-an-email", ALLOWED.0));
    let accounts = allowed_emails_with_accounts(&pool, &right).await.unwrap();
    assert_eq!(accounts, [ALLOWED.0]);
    assert_eq!(account_warning(&right, &accounts), None);
}

// ---------------------------------------------------------------------------
// The audit log.

/// Everything logged under the `audit` target by this test process.
fn audit_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter("audit=info")
            .with_ansi(false)
            .with_writer(move || Sink(writer.clone()))
            .try_init()
            .expect("no other subscriber in this test binary");
        log
    })
    .clone()
}

#[sqlx::test]
async fn sign_ins_failures_and_sign_outs_are_audited_without_passwords(pool: PgPool) {
    let log = audit_log();
    // An email no other test uses, since the log is shared by the whole binary.
    let (email, password) = ("auditor@example.com", "plum sextant harbor violet 73");
    identity_graph_backfill::access::ssr::upsert_admin(&pool, email, password)
        .await
        .unwrap();
    let app = TestApp::spawn(&pool, &[]).await;
    assert_eq!(app.login(email, "the-wrong-guess-99").await.0, 401);
    let (status, cookie, _) = app.login(email, password).await;
    assert_eq!(status, 200);
    assert_eq!(
        app.call(cookie.as_deref(), "logout", json!({})).await.0,
        200
    );

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(email)).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, event) in lines.iter().zip(["sign-in-failed", "sign-in", "sign-out"]) {
        assert!(
            line.contains(&format!("event=\"{event}\"")),
            "{event}: {line}"
        );
        assert!(line.contains("client=127.0.0.1"), "{line}");
    }
    assert!(lines[0].contains("wrong password"), "{}", lines[0]);
    assert!(
        !text.contains(password) && !text.contains("the-wrong-guess-99"),
        "{text}"
    );
}
