//! The processes the figures (2), (3) and (4) need, all children of the
//! benchmark: `bench-graph` processes as the Identity Graph and `serve`
//! replicas on the benchmark's database, one per sink, since the sink is
//! per-process configuration. Runs are started through the API as a
//! signed-in admin, as an operator would.

use super::graph_process::GraphStats;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// The benchmark's admin on its throw-away database.
const ADMIN: (&str, &str) = ("operator@example.com", "velvet-comet-harbor-quinoa-ledger");

/// Creates the benchmark's admin, whom every replica signs in as.
pub(super) async fn create_admin(pool: &PgPool) -> Result<(), String> {
    crate::access::ssr::upsert_admin(pool, ADMIN.0, ADMIN.1)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot create the benchmark's admin: {e}"))
}

/// A child process of this binary; SIGTERM on [`ChildProcess::terminate`],
/// SIGKILL when dropped without it.
pub(super) struct ChildProcess {
    name: String,
    child: tokio::process::Child,
}

impl ChildProcess {
    fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this binary to start {name}: {e}"))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub(super) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// SIGTERM, as a deployment stops a replica; SIGKILL after 15 s.
    pub(super) async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not exit 15 s after SIGTERM; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}

/// A graph process (`bench-graph`) and its base URL.
pub(super) async fn spawn_graph(profile: &str) -> Result<(ChildProcess, String), String> {
    spawn_graph_with(profile, &[]).await
}

/// A graph process with more arguments for its profile (`--workers` …).
pub(super) async fn spawn_graph_with(
    profile: &str,
    more: &[&str],
) -> Result<(ChildProcess, String), String> {
    let name = format!("bench-graph --profile {profile}");
    let mut args = vec!["bench-graph", "--addr", "127.0.0.1:0", "--profile", profile];
    args.extend_from_slice(more);
    let mut process = ChildProcess::spawn(&name, &args, &[])?;
    let stdout = process.child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| format!("{name} did not say where it listens within 30 s"))?
        .map_err(|e| format!("{name}: {e}"))?
        .ok_or_else(|| format!("{name} exited before listening"))?;
    let url = line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("{name} said {line:?}"))?
        .to_string();
    Ok((process, url))
}

pub(super) async fn graph_stats(url: &str) -> Result<GraphStats, String> {
    reqwest::get(format!("{url}/stats"))
        .await
        .map_err(|e| format!("graph stats: {e}"))?
        .json()
        .await
        .map_err(|e| format!("graph stats: {e}"))
}

/// The console of one `serve` replica, signed in as the benchmark's admin.
pub(super) struct Console {
    pub(super) name: &'static str,
    base: String,
    cookie: String,
    client: reqwest::Client,
}

impl Console {
    fn api(&self, endpoint: &str) -> String {
        format!("{}/api/identity-graph-backfill/{endpoint}", self.base)
    }

    pub(super) async fn call(&self, endpoint: &str, body: Value) -> Result<Value, String> {
        let response = self
            .client
            .post(self.api(endpoint))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{endpoint} on {}: {e}", self.name))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{endpoint} on {}: {status}: {text}", self.name));
        }
        serde_json::from_str(&text).map_err(|e| format!("{endpoint} on {}: {e}", self.name))
    }

    /// Starts a real run at full speed: no sleep, the largest batch, no
    /// retry pass, no resume.
    pub(super) async fn start_full_speed(
        &self,
        key: &str,
        batch: i64,
        concurrency: i64,
        max_runtime: Duration,
    ) -> Result<(), String> {
        let answer = self
            .call(
                "start",
                json!({
                    "job_key": key, "batch_size": batch, "concurrency": concurrency,
                    "sleep_ms": 0, "max_runtime_ms": max_runtime.as_millis() as i64,
                    "retry_failed_before_cursor": false, "auto_resume": false,
                }),
            )
            .await?;
        if answer["started"] != json!(true) {
            return Err(format!("{key} did not start on {}: {answer}", self.name));
        }
        Ok(())
    }

    /// One `list` call, timed to its last byte.
    pub(super) async fn time_list(&self) -> Result<Duration, String> {
        let started = Instant::now();
        self.call("list", json!({})).await?;
        Ok(started.elapsed())
    }

    /// One call of `endpoint` with `body`, timed to its last byte.
    pub(super) async fn time_call(&self, endpoint: &str, body: Value) -> Result<Duration, String> {
        let started = Instant::now();
        self.call(endpoint, body).await?;
        Ok(started.elapsed())
    }

    /// One `GET /` as the signed-in admin, timed to its last byte.
    pub(super) async fn time_page(&self) -> Result<Duration, String> {
        self.time_get("/").await
    }

    /// `GET path` as the signed-in admin, refused unless it answers 200.
    async fn get_ok(&self, path: &str) -> Result<reqwest::Response, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .map_err(|e| format!("GET {path} on {}: {e}", self.name))?;
        match response.status() {
            reqwest::StatusCode::OK => Ok(response),
            status => Err(format!("GET {path} on {}: {status}", self.name)),
        }
    }

    /// One `GET path` read chunk by chunk as it streams (nothing is kept):
    /// the lines it held and how long it took to its last byte.
    pub(super) async fn stream_lines(&self, path: &str) -> Result<(u64, Duration), String> {
        let started = Instant::now();
        let mut response = self.get_ok(path).await?;
        let mut lines = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {path} on {}: {e}", self.name))?
        {
            lines += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
        }
        Ok((lines, started.elapsed()))
    }

    /// One `GET path` as the signed-in admin, timed to its last byte.
    pub(super) async fn time_get(&self, path: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let response = self.get_ok(path).await?;
        response.bytes().await.map_err(|e| e.to_string())?;
        Ok(started.elapsed())
    }
}

/// A `serve` replica on the benchmark's database, signed in.
pub(super) async fn spawn_replica(
    name: &'static str,
    database_url: &str,
    max_connections: i64,
    sink: &[(&str, String)],
) -> Result<(ChildProcess, Console), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("no free port for the {name} replica: {e}"))?
        .port();
    let mut env = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}")),
        ("IDENTITY_GRAPH_BACKFILL_ADMINS", ADMIN.0.to_string()),
        (
            "IDENTITY_GRAPH_BACKFILL_WATCHDOG_INTERVAL_MS",
            "3600000".to_string(),
        ),
        ("DATABASE_MAX_CONNECTIONS", max_connections.to_string()),
    ];
    env.extend(sink.iter().cloned());
    let process = ChildProcess::spawn(&format!("the {name} replica"), &["serve"], &env)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        if Instant::now() > deadline {
            return Err(format!(
                "the {name} replica did not answer /healthz in 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("{base}/api/identity-graph-backfill/login"))
        .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .map_err(|e| format!("sign-in on the {name} replica: {e}"))?;
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("igb_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| format!("sign-in on the {name} replica: {}", response.status()))?;
    Ok((
        process,
        Console {
            name,
            base,
            cookie,
            client,
        },
    ))
}

/// The variables of a replica whose sink is the graph process at `graph_url`.
pub(super) fn http_sink(graph_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IDENTITY_GRAPH_SINK", "http".to_string()),
        ("IDENTITY_GRAPH_URL", graph_url.to_string()),
        ("IDENTITY_GRAPH_TOKEN", "bench".to_string()),
    ]
}
