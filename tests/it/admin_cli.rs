//! The access lifecycle: the real binary's `admin` subcommands against the
//! test's database, and their effect on live sessions over real HTTP.

use crate::harness::*;
use serde_json::json;
use sqlx::PgPool;

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
        .env("DATABASE_URL", database_url(pool))
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
    let app = TestApp::with_admins(&pool, &[]).await;
    let cookie = app.session(ALLOWED).await;
    let viewer = app.session(NOT_ALLOWED).await;
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
    let app = TestApp::with_admins(&pool, &[]).await;
    let old_session = app.session(ALLOWED).await;
    let viewer = app.session(NOT_ALLOWED).await;

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
    let app = TestApp::with_admins(&pool, &[]).await;
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
