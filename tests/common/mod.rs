//! Test support: the real app on a loopback port against a fresh database
//! (from `#[sqlx::test]`), and an HTTP Identity Graph test server.
#![allow(dead_code)]

pub mod graph;

use identity_graph_backfill::{
    backfill::{domain::*, engine::Engine, store},
    server::{http, AppState, Config},
};
use serde_json::Value;
use sqlx::PgPool;
use std::{net::SocketAddr, time::Duration};
use tokio_util::sync::CancellationToken;

// Passwords that pass the password policy (12+ characters, no email local
// part, zxcvbn score >= 3): `upsert_admin` refuses anything weaker.
pub const ALLOWED: (&str, &str) = ("allowed@example.com", "quartz-lantern-orbit-mosaic-17");
pub const NOT_ALLOWED: (&str, &str) = ("viewer@example.com", "saffron-glacier-tundra-beacon-42");

/// A configuration with test defaults and `overrides` on top.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), "postgres://unused-in-tests/x".into()),
        ("IDENTITY_GRAPH_BACKFILL_ADMINS".into(), ALLOWED.0.into()),
        (
            "IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS".into(),
            "3600000".into(),
        ),
    ];
    for (key, value) in overrides {
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_string(), value.to_string()));
    }
    Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("test config")
}

/// An engine as one replica would run it, without the HTTP server.
pub fn engine(pool: &PgPool, overrides: &[(&str, &str)]) -> (Engine, CancellationToken) {
    let shutdown = CancellationToken::new();
    let engine = http::build_engine(&config(overrides), pool.clone(), shutdown.clone());
    (engine, shutdown)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn spawn(pool: &PgPool, overrides: &[(&str, &str)]) -> TestApp {
        let shutdown = CancellationToken::new();
        let state = http::build_state(config(overrides), pool.clone(), shutdown.clone());
        let app = http::router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
        });
        TestApp {
            addr,
            state,
            shutdown,
            server,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.state
            .engine
            .wait_for_runs(Duration::from_secs(5))
            .await;
        let _ = self.server.await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs JSON to an API endpoint; returns the status and the JSON body.
    pub async fn call(&self, cookie: Option<&str>, endpoint: &str, body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(self.url(&format!("/api/identity-graph-backfill/{endpoint}")))
            .json(&body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Signs in and returns the `name=value` session cookie.
    pub async fn login(&self, email: &str, password: &str) -> (u16, Option<String>, Value) {
        let response = reqwest::Client::new()
            .post(self.url("/api/identity-graph-backfill/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("igb_session="))
            .map(|v| v.split(';').next().unwrap().to_string());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, cookie, body)
    }
}

pub async fn add_admins(pool: &PgPool) {
    use identity_graph_backfill::access::ssr::upsert_admin;
    upsert_admin(pool, ALLOWED.0, ALLOWED.1).await.unwrap();
    upsert_admin(pool, NOT_ALLOWED.0, NOT_ALLOWED.1)
        .await
        .unwrap();
}

pub async fn seed(pool: &PgPool, users: i64) {
    identity_graph_backfill::server::seed::seed_demo_users(pool, users)
        .await
        .unwrap();
}

/// Waits until the job is no longer running or stopping.
pub async fn wait_until_idle(pool: &PgPool, key: &str, limit: Duration) -> store::JobRow {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let row = store::get_job(pool, key)
            .await
            .unwrap()
            .expect("job exists");
        if !row.status().is_some_and(JobStatus::is_active) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {key} still {} after {limit:?}",
            row.status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn wait_for(limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn request(json: Value) -> StartRequest {
    serde_json::from_value(json).expect("valid start request")
}

/// Ids the runner must write: not deleted, with at least one identifier.
pub async fn eligible_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT id FROM users WHERE deleted_at IS NULL
           AND num_nonnulls(email, phone, signup_ip, last_login_ip, device_id) > 0 ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until the job's cursor has passed `at_least`.
pub async fn wait_for_cursor(pool: &PgPool, key: &str, at_least: i64) {
    wait_for(Duration::from_secs(10), async || {
        store::get_job(pool, key)
            .await
            .unwrap()
            .is_some_and(|row| row.cursor >= at_least)
    })
    .await
}

/// Eligible users the graph server never acknowledged: must be empty.
pub async fn lost_users(pool: &PgPool, graph: &graph::GraphServer) -> Vec<i64> {
    let written = graph.written_counts();
    eligible_ids(pool)
        .await
        .into_iter()
        .filter(|id| !written.contains_key(id))
        .collect()
}

/// Waits until the job reaches `status` (a resume may still be on its way).
pub async fn wait_until_status(pool: &PgPool, key: &str, status: JobStatus) -> store::JobRow {
    wait_for(Duration::from_secs(60), async || {
        store::get_job(pool, key)
            .await
            .unwrap()
            .is_some_and(|row| row.status() == Some(status))
    })
    .await;
    store::get_job(pool, key).await.unwrap().unwrap()
}
