//! The one test harness. Each test gets a fresh database from
//! `#[sqlx::test]`; on it the harness builds:
//!
//! - the app ([`TestApp::spawn`]) on a loopback port, and a signed-in admin
//!   ([`Serving::signed_in`]) with `start`, `stop`, `list` and `job`;
//! - an engine as one replica runs it ([`Replica`]), with
//!   [`Replica::run`] = start a job and wait until it is idle;
//! - the real binary as a process ([`ServerProcess`]);
//! - the HTTP Identity Graph test server ([`graph::GraphServer`]);
//! - the waits a run in the background needs ([`wait_until_idle`],
//!   [`wait_until_status`], [`wait_for_cursor`], [`wait_for`]). They poll,
//!   because the run is another task or another process; nothing else does.

// Explicit paths, so that a test binary of its own can include this file
// with `#[path]` (tests/sign_in_cost.rs).
#[path = "harness/freezing_proxy.rs"]
pub mod freezing_proxy;
#[path = "harness/graph.rs"]
pub mod graph;

use graph::GraphServer;
use identity_graph_backfill::{
    backfill::{domain::*, engine::Engine, store},
    error::AppError,
    server::{http, AppState, Config},
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{net::SocketAddr, ops::Deref, time::Duration};
use tokio_util::sync::CancellationToken;

// Passwords that pass the password policy (12+ characters, no email local
// part, zxcvbn score >= 3): `upsert_admin` refuses anything weaker.
pub const ALLOWED: (&str, &str) = ("allowed@example.com", "quartz-lantern-orbit-mosaic-17");
pub const NOT_ALLOWED: (&str, &str) = ("viewer@example.com", "saffron-glacier-tundra-beacon-42");

/// Who starts and stops runs in engine-level tests.
pub const OPERATOR: &str = "ops@example.com";

/// Settings for real runs into the built-in Postgres identity graph.
pub const BUILT_IN_GRAPH: &[(&str, &str)] = &[("IDENTITY_GRAPH_SINK", "postgres")];

/// How long a wait may take before the test fails: a guard against a hang,
/// not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// A configuration with test defaults and `overrides` on top.
fn config(overrides: &[(&str, &str)]) -> Config {
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

/// The settings that point a server at `graph`, with `extra` on top.
fn graph_settings<'a>(
    graph: &'a GraphServer,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut vars = graph.sink_env();
    vars.extend_from_slice(extra);
    vars
}

pub fn request(json: Value) -> StartRequest {
    serde_json::from_value(json).expect("valid start request")
}

/// An engine as one replica runs it, without the HTTP server. Derefs to
/// the [`Engine`].
pub struct Replica {
    pub engine: Engine,
    pub shutdown: CancellationToken,
    /// The pool the API uses (the test's database).
    pub pool: PgPool,
}

impl Replica {
    /// The one place the tests build an engine from settings.
    pub fn new(pool: &PgPool, overrides: &[(&str, &str)]) -> Replica {
        let shutdown = CancellationToken::new();
        let engine = http::build_engine(&config(overrides), pool.clone(), shutdown.clone());
        Replica {
            engine,
            shutdown,
            pool: pool.clone(),
        }
    }

    /// A replica whose runs, heartbeats and watchdog query `engine_pool`
    /// (the API still uses `pool`): to put something between the runs and
    /// the database.
    pub fn with_engine_pool(
        pool: &PgPool,
        engine_pool: PgPool,
        overrides: &[(&str, &str)],
    ) -> Replica {
        let shutdown = CancellationToken::new();
        let executor = identity_graph_backfill::backfill::engine::RunExecutor::current(engine_pool);
        let engine =
            http::build_engine_on(&config(overrides), pool.clone(), executor, shutdown.clone());
        Replica {
            engine,
            shutdown,
            pool: pool.clone(),
        }
    }

    /// A new HTTP test graph, and a replica that writes to it.
    pub async fn and_graph(pool: &PgPool, extra: &[(&str, &str)]) -> (Replica, GraphServer) {
        let graph = GraphServer::start().await;
        (Replica::with_graph(pool, &graph, extra), graph)
    }

    /// A replica that writes to the HTTP test graph.
    pub fn with_graph(pool: &PgPool, graph: &GraphServer, extra: &[(&str, &str)]) -> Replica {
        Replica::new(pool, &graph_settings(graph, extra))
    }

    pub async fn try_start(&self, json: Value) -> Result<StartResponse, AppError> {
        self.engine.start(&request(json), OPERATOR).await
    }

    pub async fn start(&self, json: Value) -> StartResponse {
        self.try_start(json).await.expect("the run starts")
    }

    /// Starts a run and waits until its job is idle again.
    pub async fn run(&self, json: Value) -> store::JobRow {
        let started = self.start(json).await;
        assert!(started.started, "a new run started: {:?}", started.job);
        wait_until_idle(&self.pool, &started.job.job_key).await
    }
}

impl Deref for Replica {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// A server under test, in this process or as a process of its own.
pub trait Serving {
    /// `http://host:port`, no trailing slash.
    fn base_url(&self) -> String;

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    fn api_url(&self, endpoint: &str) -> String {
        self.url(&format!("/api/identity-graph-backfill/{endpoint}"))
    }

    /// POSTs JSON to an API endpoint; returns the status and the JSON body.
    async fn call(&self, cookie: Option<&str>, endpoint: &str, body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(self.api_url(endpoint))
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

    /// Sends a sign-in with `headers`; returns the whole response.
    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(self.api_url("login"))
            .json(&json!({"email": email, "password": password}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Signs in; returns the status, the `name=value` session cookie and the body.
    async fn login(&self, email: &str, password: &str) -> (u16, Option<String>, Value) {
        let response = self.sign_in(email, password, &[]).await;
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

    /// Signs in with `(email, password)`; returns the session cookie.
    async fn session(&self, (email, password): (&str, &str)) -> String {
        let (status, cookie, body) = self.login(email, password).await;
        assert_eq!(status, 200, "sign-in of {email}: {body}");
        cookie.expect("a session cookie")
    }

    /// The allow-listed admin, signed in (see [`add_admins`]).
    async fn signed_in(&self) -> Admin {
        Admin {
            base: self.base_url(),
            cookie: self.session(ALLOWED).await,
        }
    }
}

/// A signed-in, allow-listed admin calling the job-control API.
pub struct Admin {
    base: String,
    pub cookie: String,
}

impl Serving for Admin {
    fn base_url(&self) -> String {
        self.base.clone()
    }
}

impl Admin {
    /// Calls an endpoint with this admin's session.
    pub async fn send(&self, endpoint: &str, body: Value) -> (u16, Value) {
        self.call(Some(&self.cookie), endpoint, body).await
    }

    pub async fn start(&self, body: Value) -> (u16, Value) {
        self.send("start", body).await
    }

    pub async fn stop(&self, key: &str) -> (u16, Value) {
        self.send("stop", json!({"job_key": key})).await
    }

    pub async fn list(&self) -> (u16, Value) {
        self.send("list", json!({})).await
    }

    pub async fn job(&self, key: &str) -> (u16, Value) {
        self.send("job", json!({"job_key": key})).await
    }

    /// "Check again": the job's coverage, counted now.
    pub async fn check_coverage(&self, key: &str) -> (u16, Value) {
        self.send("check_coverage", json!({"job_key": key})).await
    }

    /// Waits until no coverage check of `key` runs in the server. A check
    /// stores its result a moment before its task ends, and a "Check again"
    /// in that moment joins it instead of counting anew.
    pub async fn wait_until_no_check_runs(&self, key: &str) {
        wait_for("the job's coverage check to end", async || {
            self.job(key).await.1["coverage_checking"] == false
        })
        .await;
    }
}

/// The app, in this process, on a loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Serving for TestApp {
    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
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

    /// The app, after [`add_admins`].
    pub async fn with_admins(pool: &PgPool, overrides: &[(&str, &str)]) -> TestApp {
        add_admins(pool).await;
        TestApp::spawn(pool, overrides).await
    }

    /// Shuts the app down as a replica does: runs checkpoint and pause.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.state
            .engine
            .wait_for_runs(Duration::from_secs(5))
            .await;
        let _ = self.server.await;
    }
}

/// The app with the two admins of [`add_admins`], and the allow-listed one
/// signed in.
pub async fn app_with_admin(pool: &PgPool, overrides: &[(&str, &str)]) -> (TestApp, Admin) {
    let app = TestApp::with_admins(pool, overrides).await;
    let admin = app.signed_in().await;
    (app, admin)
}

/// The test database's URL, for the binary: the server of `DATABASE_URL`
/// with the per-test database `#[sqlx::test]` created.
pub fn database_url(pool: &PgPool) -> String {
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

/// The real server binary (`serve`), as a replica runs in production, on a
/// free loopback port against the test's database; killed when dropped.
pub struct ServerProcess {
    child: tokio::process::Child,
    base: String,
    /// Where its standard error (the log) goes, when asked for.
    log: Option<std::path::PathBuf>,
}

impl Serving for ServerProcess {
    fn base_url(&self) -> String {
        self.base.clone()
    }
}

impl ServerProcess {
    /// Starts the binary with `env` on top of the test defaults, and waits
    /// until it answers `/healthz`.
    pub async fn spawn(pool: &PgPool, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(pool, env, false).await
    }

    /// Like [`ServerProcess::spawn`], with its log kept for [`ServerProcess::log`].
    pub async fn spawn_logged(pool: &PgPool, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(pool, env, true).await
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("spawned with spawn_logged");
        std::fs::read_to_string(path).unwrap()
    }

    async fn start(pool: &PgPool, env: &[(&str, &str)], logged: bool) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-graph-backfill"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url(pool))
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("IDENTITY_GRAPH_BACKFILL_ADMINS", ALLOWED.0)
            .env("IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS", "3600000")
            .env("DATABASE_MAX_CONNECTIONS", "4")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let log = logged.then(|| {
            let path =
                std::env::temp_dir().join(format!("igb-test-{}-{port}.log", std::process::id()));
            command.stderr(std::fs::File::create(&path).unwrap());
            path
        });
        let server = ServerProcess {
            child: command.spawn().expect("the server binary starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let health = server.url("/healthz");
        wait_for("/healthz to answer", async || {
            reqwest::get(&health).await.is_ok()
        })
        .await;
        server
    }

    /// The binary writing to the HTTP test graph.
    pub async fn with_graph(pool: &PgPool, graph: &GraphServer, extra: &[(&str, &str)]) -> Self {
        ServerProcess::spawn(pool, &graph_settings(graph, extra)).await
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the server is running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        self.child.wait().await.unwrap()
    }

    /// The server's peak resident memory so far, in MiB (Linux `VmHWM`).
    pub fn peak_rss_mib(&self) -> u64 {
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

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub async fn add_admins(pool: &PgPool) {
    use identity_graph_backfill::access::ssr::upsert_admin;
    upsert_admin(pool, ALLOWED.0, ALLOWED.1).await.unwrap();
    upsert_admin(pool, NOT_ALLOWED.0, NOT_ALLOWED.1)
        .await
        .unwrap();
}

/// Adds `users` demo users after the highest id (some deleted, some with no
/// identifier).
pub async fn seed(pool: &PgPool, users: i64) {
    identity_graph_backfill::server::seed::seed_demo_users(pool, users)
        .await
        .unwrap();
}

/// The answer of a `SELECT count(*) …` without parameters.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

pub async fn job_row(pool: &PgPool, key: &str) -> store::JobRow {
    store::get_job(pool, key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("job {key} exists"))
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

/// The string `field` of every object in the array `array`.
pub fn strings<'a>(array: &'a Value, field: &str) -> Vec<&'a str> {
    array
        .as_array()
        .expect("an array")
        .iter()
        .map(|item| item[field].as_str().expect("a string"))
        .collect()
}

/// Eligible users the graph server never acknowledged: must be empty.
pub async fn lost_users(pool: &PgPool, graph: &GraphServer) -> Vec<i64> {
    let written = graph.written_counts();
    eligible_ids(pool)
        .await
        .into_iter()
        .filter(|id| !written.contains_key(id))
        .collect()
}

/// Polls `check` until it holds, for at most [`PATIENCE`]; `false` if it
/// never did.
async fn poll(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds: for state another task or process changes.
pub async fn wait_for(what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(poll(check).await, "waited {PATIENCE:?} for {what}");
}

/// Waits until the job is no longer running or stopping.
pub async fn wait_until_idle(pool: &PgPool, key: &str) -> store::JobRow {
    wait_until(pool, key, |row| {
        !row.status().is_some_and(JobStatus::is_active)
    })
    .await
}

/// Waits until the coverage check begun by the job's last run end is stored
/// (it runs in the background), and returns the job row with it.
pub async fn wait_for_coverage(pool: &PgPool, key: &str) -> store::JobRow {
    wait_until(pool, key, |row| {
        !row.status().is_some_and(JobStatus::is_active)
            && row
                .coverage_checked_at
                .is_some_and(|at| at >= row.updated_at)
    })
    .await
}

/// Waits until the job reaches `status` (a resume may still be on its way).
pub async fn wait_until_status(pool: &PgPool, key: &str, status: JobStatus) -> store::JobRow {
    wait_until(pool, key, |row| row.status() == Some(status)).await
}

/// Waits until the job's cursor has reached `at_least`.
pub async fn wait_for_cursor(pool: &PgPool, key: &str, at_least: i64) {
    wait_until(pool, key, |row| row.cursor >= at_least).await;
}

async fn wait_until(
    pool: &PgPool,
    key: &str,
    done: impl Fn(&store::JobRow) -> bool,
) -> store::JobRow {
    let mut last = None;
    let reached = poll(async || {
        last = store::get_job(pool, key).await.unwrap();
        last.as_ref().is_some_and(&done)
    })
    .await;
    let row = last.unwrap_or_else(|| panic!("job {key} exists"));
    assert!(
        reached,
        "job {key} is still {} at cursor {} after {PATIENCE:?}",
        row.status, row.cursor
    );
    row
}
