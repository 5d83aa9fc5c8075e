//! Sign-in, sessions, the allow-list guard, housekeeping and the audit
//! log, against the app and Postgres.

use crate::harness::*;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test]
async fn a_good_login_returns_the_admin_and_a_hardened_cookie(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
    let response = app.sign_in(" Allowed@Example.com ", ALLOWED.1, &[]).await;
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
    let app = TestApp::with_admins(&pool, &[]).await;
    let response = app
        .sign_in(ALLOWED.0, ALLOWED.1, &[("x-forwarded-proto", "https")])
        .await;
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

/// The answers match here; that both cost one argon2 verification is
/// counted in `tests/sign_in_cost.rs`, a process of its own.
#[sqlx::test]
async fn a_wrong_password_and_an_unknown_email_look_the_same(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[("LOGIN_MAX_FAILURES_PER_MINUTE", "100")]).await;
    let (status_a, cookie_a, body_a) = app.login(ALLOWED.0, "wrong-password").await;
    let (status_b, cookie_b, body_b) = app.login("nobody@example.com", "wrong-password").await;
    assert_eq!((status_a, status_b), (401, 401));
    assert!(cookie_a.is_none() && cookie_b.is_none());
    assert_eq!(body_a, body_b);
    assert_eq!(body_a["code"], "UNAUTHENTICATED");
    assert_eq!(body_a["message"], "The email or password is incorrect.");
}

#[sqlx::test]
async fn session_cookie_secure_forces_secure_on_plain_http(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[("SESSION_COOKIE_SECURE", "true")]).await;
    let response = app.sign_in(ALLOWED.0, ALLOWED.1, &[]).await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.split("; ").any(|attribute| attribute == "Secure"),
        "{cookie}"
    );
}

#[sqlx::test]
async fn login_rotates_the_session_id(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
    let first = app.session(ALLOWED).await;
    let response = app
        .sign_in(ALLOWED.0, ALLOWED.1, &[("cookie", &first)])
        .await;
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

/// A fresh sign-in of the allowed admin as its only session, and a way to
/// age that session: set when it was created and last seen, in seconds
/// before the database's `now()`. Expiry compares those times with the
/// database clock, so the tests move the times rather than race the clock.
async fn only_session(app: &TestApp, pool: &PgPool) -> (String, impl AsyncFn(i64, i64)) {
    sqlx::query("DELETE FROM admin_sessions")
        .execute(pool)
        .await
        .unwrap();
    let cookie = app.session(ALLOWED).await;
    let pool = pool.clone();
    let age = async move |created_ago: i64, seen_ago: i64| {
        let updated = sqlx::query(
            "UPDATE admin_sessions SET created_at = now() - make_interval(secs => $1),
                                       last_seen_at = now() - make_interval(secs => $2)",
        )
        .bind(created_ago as f64)
        .bind(seen_ago as f64)
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(updated, 1, "one session");
    };
    (cookie, age)
}

async fn last_seen_secs_ago(pool: &PgPool) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - last_seen_at)::float8 FROM admin_sessions",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Idle timeout 1,800 s and cap 43,200 s (the defaults).
#[sqlx::test]
async fn sessions_expire_when_idle_and_absolutely(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
    let me = async |cookie: &str| app.call(Some(cookie), "me", json!({})).await.0;

    // Idle: alive 10 s before the timeout, gone 1 s after it.
    let (cookie, age) = only_session(&app, &pool).await;
    age(1_790, 1_790).await;
    assert_eq!(me(&cookie).await, 200);
    age(1_801, 1_801).await;
    assert_eq!(me(&cookie).await, 401, "idle for longer than the timeout");

    // Absolute: activity keeps a session alive until the cap, not after.
    let (cookie, age) = only_session(&app, &pool).await;
    age(43_190, 100).await;
    assert_eq!(me(&cookie).await, 200, "in use, 10 s before the cap: alive");
    age(43_201, 0).await;
    assert_eq!(me(&cookie).await, 401, "in use, 1 s after the cap: expired");
}

/// Activity slides the idle timeout; a request writes the slide only when
/// the last one is older than the touch interval, so polling only reads.
#[sqlx::test]
async fn use_slides_the_idle_timeout_and_writes_it_at_most_once_per_interval(pool: PgPool) {
    use identity_graph_backfill::access::ssr::touch_interval;
    let app = TestApp::with_admins(&pool, &[]).await;
    let me = async |cookie: &str| app.call(Some(cookie), "me", json!({})).await.0;

    // Three times in a row, a request 10 s before the idle timeout keeps
    // the session: it has outlived its 1,800 s idle timeout three times over.
    let (cookie, age) = only_session(&app, &pool).await;
    for round in 1..=3 {
        age(round * 1_790, 1_790).await;
        assert_eq!(me(&cookie).await, 200, "round {round}");
        let seen = last_seen_secs_ago(&pool).await;
        assert!(
            seen < 60.0,
            "round {round}: the slide was written ({seen} s ago)"
        );
    }

    assert_eq!(
        touch_interval(Duration::from_secs(1800)),
        Duration::from_secs(60)
    );
    let cookie = app.session(ALLOWED).await;
    let row_version = || async {
        sqlx::query_as::<_, (String, chrono::DateTime<chrono::Utc>)>(
            "SELECT s.xmin::text, s.last_seen_at FROM admin_sessions s
             JOIN admins a ON a.id = s.admin_id WHERE a.email = $1
             ORDER BY s.created_at DESC LIMIT 1",
        )
        .bind(ALLOWED.0)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let signed_in = row_version().await;
    for _ in 0..3 {
        assert_eq!(app.call(Some(&cookie), "me", json!({})).await.0, 200);
    }
    assert_eq!(row_version().await, signed_in, "fresh: requests only read");

    sqlx::query("UPDATE admin_sessions SET last_seen_at = now() - interval '61 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.call(Some(&cookie), "me", json!({})).await.0, 200);
    let (_, slid) = row_version().await;
    assert!(
        slid > chrono::Utc::now() - chrono::Duration::seconds(5),
        "a stale slide is written: {slid}"
    );
}

#[sqlx::test]
async fn tampered_and_forged_cookies_are_refused(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
    let cookie = app.session(ALLOWED).await;
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
    let app = TestApp::with_admins(&pool, &[]).await;
    let cookie = app.session(ALLOWED).await;
    let (status, _) = app.call(Some(&cookie), "logout", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.call(Some(&cookie), "me", json!({})).await.0, 401);
    let sessions = count(&pool, "SELECT count(*) FROM admin_sessions").await;
    assert_eq!(sessions, 0);
}

#[sqlx::test]
async fn a_session_survives_a_server_restart(pool: PgPool) {
    let first = TestApp::with_admins(&pool, &[]).await;
    let cookie = first.session(ALLOWED).await;
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
    let app = TestApp::with_admins(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")]).await;
    let viewer = app.session(NOT_ALLOWED).await;
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
    let jobs = count(&pool, "SELECT count(*) FROM identity_graph_backfill_jobs").await;
    assert_eq!(jobs, 0, "a refused call changed nothing");
}

#[sqlx::test]
async fn oversized_and_hostile_credentials_are_validation_errors(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
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
    let failures = count(&pool, "SELECT count(*) FROM login_failures").await;
    let sessions = count(&pool, "SELECT count(*) FROM admin_sessions").await;
    let admins = count(&pool, "SELECT count(*) FROM admins").await;
    assert_eq!(
        (failures, sessions, admins),
        (0, 0, 2),
        "nothing was written"
    );
}

#[sqlx::test]
async fn no_response_leaks_a_hash_or_sql(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
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
    let app = TestApp::with_admins(&pool, &[]).await;
    let client = reqwest::Client::new();
    let plain = client
        .post(app.api_url("login"))
        .header("content-type", "text/plain")
        .body(json!({"email": ALLOWED.0, "password": ALLOWED.1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    let foreign = app
        .sign_in(ALLOWED.0, ALLOWED.1, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(foreign.status(), 403);
    assert!(foreign.headers().get("set-cookie").is_none());
    let same_site = app
        .sign_in(
            ALLOWED.0,
            ALLOWED.1,
            &[("origin", &format!("http://{}", app.addr))],
        )
        .await;
    assert_eq!(same_site.status(), 200);
}

#[sqlx::test]
async fn pages_need_a_session_and_healthz_reports_the_database(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Every page path is gated, dotted or not; only the asset prefix and
    // the icon are served without a session.
    for path in [
        "/",
        "/jobs/q1.json",
        "/jobs/notes.txt",
        "/jobs/backfill.2024",
        "/x.js",
    ] {
        let page = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 303, "{path}");
        assert_eq!(page.headers()["location"], "/login", "{path}");
    }
    let icon = client.get(app.url("/favicon.svg")).send().await.unwrap();
    assert_ne!(icon.status(), 303, "the icon needs no session");
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
