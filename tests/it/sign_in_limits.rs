//! Sign-in under attack: the failure limit per email and per address, under
//! a flood of parallel attempts, across two replicas (the real binary), and
//! behind a trusted proxy.

use crate::harness::*;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn failed_logins_are_rate_limited(pool: PgPool) {
    let app = TestApp::with_admins(&pool, &[]).await;
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
            .post(servers[i % servers.len()].api_url("login"))
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
    let right = server.sign_in(ALLOWED.0, ALLOWED.1, &[]).await;
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
        app.sign_in(
            &email,
            "wrong-password",
            &[("x-forwarded-for", forwarded_for)],
        )
        .await
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
    let other_client = proxied
        .sign_in(ALLOWED.0, ALLOWED.1, &[("x-forwarded-for", "203.0.113.8")])
        .await;
    assert_eq!(other_client.status(), 200);
}
