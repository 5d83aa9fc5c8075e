//! `bench-graph` (hidden): the benchmark's HTTP Identity Graph, as a process
//! of its own, so that it competes with the runner for the cores and never
//! for the runner's runtime. `bench` starts it as a child (`processes`).
//!
//! `PUT /users/{id}` answers 204 according to `--profile`; `GET /stats`
//! reports how many users it acknowledged and its own mean answer time per
//! user, which is what the tail figure's bound is computed from.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

#[derive(clap::Args)]
pub struct BenchGraphArgs {
    /// Where to listen; port 0 picks a free one. The first line on standard
    /// output is `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = Profile::Instant)]
    profile: Profile,
    /// The capacity profile: how many requests are served at once.
    #[arg(long, default_value_t = 24)]
    workers: usize,
    /// The capacity profile: how long a worker takes for one request, in ms.
    #[arg(long, default_value_t = 10)]
    service_ms: u64,
    /// The capacity profile: past this many requests waiting for a worker,
    /// the graph answers 429 with `Retry-After: 1`.
    #[arg(long, default_value_t = 24)]
    queue: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Every user is acknowledged at once.
    Instant,
    /// 1% of user ids (id % 100 = 13) are acknowledged after
    /// [`SLOW_ANSWER`]; 1% (id % 100 = 63) get a 500 the first time and 204
    /// on the retry.
    Tail,
    /// `--workers` workers each take `--service-ms` per request: past that
    /// many in flight the answer time grows as a queue, and past `--queue`
    /// waiting the graph answers 429 with `Retry-After: 1`.
    Capacity,
}

/// How long the tail profile's slow users wait for their answer.
pub const SLOW_ANSWER: Duration = Duration::from_millis(200);
// Remainders that `seed-demo` never skips (it gives no identifiers to
// id % 50 = 7 and deletes id % 40 = 11), so every one reaches the graph.
const SLOW_USERS: i64 = 13;
const FLAKY_USERS: i64 = 63;

/// What the graph answered, as `GET /stats` reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GraphStats {
    /// Users acknowledged with a 2xx.
    pub users: u64,
    /// Requests of any outcome.
    pub requests: u64,
    /// Per acknowledged user, from its first request's arrival to its
    /// acknowledgement: for a user answered 500 first, that includes the
    /// sink's back-off before its retry.
    pub busy_seconds: f64,
    /// Requests answered 429.
    #[serde(default)]
    pub throttled: u64,
}

impl GraphStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &GraphStats) -> GraphStats {
        GraphStats {
            users: self.users - earlier.users,
            requests: self.requests - earlier.requests,
            busy_seconds: self.busy_seconds - earlier.busy_seconds,
            throttled: self.throttled - earlier.throttled,
        }
    }

    pub fn mean_answer_seconds(&self) -> f64 {
        self.busy_seconds / self.users.max(1) as f64
    }
}

struct Graph {
    profile: Profile,
    users: AtomicU64,
    requests: AtomicU64,
    busy_nanos: AtomicU64,
    /// Flaky users answered 500 once: when their first request arrived, until
    /// the retry is acknowledged (then `None`, and they never fail again).
    retried: Mutex<HashMap<i64, Option<Instant>>>,
    /// The capacity profile's workers, service time and queue bound.
    workers: tokio::sync::Semaphore,
    service: Duration,
    queue: usize,
    waiting: AtomicU64,
    throttled: AtomicU64,
}

impl Graph {
    fn acknowledge(&self, since: Instant) -> StatusCode {
        self.users.fetch_add(1, Ordering::Relaxed);
        self.busy_nanos
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        StatusCode::NO_CONTENT
    }
}

async fn put_user(
    State(graph): State<Arc<Graph>>,
    Path(user_id): Path<i64>,
    _body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let arrived = Instant::now();
    graph.requests.fetch_add(1, Ordering::Relaxed);
    match graph.profile {
        Profile::Instant => graph.acknowledge(arrived).into_response(),
        Profile::Capacity => serve_with_capacity(&graph, arrived).await,
        Profile::Tail => tail_answer(&graph, user_id, arrived).await.into_response(),
    }
}

/// The tail profile: slow and flaky users by id.
async fn tail_answer(graph: &Graph, user_id: i64, arrived: Instant) -> StatusCode {
    match user_id.rem_euclid(100) {
        SLOW_USERS => {
            tokio::time::sleep(SLOW_ANSWER).await;
            graph.acknowledge(arrived)
        }
        FLAKY_USERS => {
            let first_arrival = {
                let mut retried = graph.retried.lock().expect("retried map lock");
                match retried.get_mut(&user_id) {
                    None => {
                        retried.insert(user_id, Some(arrived));
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Some(pending) => pending.take().unwrap_or(arrived),
                }
            };
            graph.acknowledge(first_arrival)
        }
        _ => graph.acknowledge(arrived),
    }
}

/// Waits for a worker (or answers 429 when the queue is full), holds it
/// for the service time, and acknowledges.
async fn serve_with_capacity(graph: &Graph, arrived: Instant) -> axum::response::Response {
    use axum::response::IntoResponse;
    let waiting = graph.waiting.fetch_add(1, Ordering::SeqCst) as usize;
    if waiting >= graph.queue && graph.workers.available_permits() == 0 {
        graph.waiting.fetch_sub(1, Ordering::SeqCst);
        graph.throttled.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "queue full",
        )
            .into_response();
    }
    let worker = graph
        .workers
        .acquire()
        .await
        .expect("the semaphore is never closed");
    graph.waiting.fetch_sub(1, Ordering::SeqCst);
    tokio::time::sleep(graph.service).await;
    drop(worker);
    graph.acknowledge(arrived).into_response()
}

async fn stats(State(graph): State<Arc<Graph>>) -> Json<GraphStats> {
    Json(GraphStats {
        users: graph.users.load(Ordering::Relaxed),
        requests: graph.requests.load(Ordering::Relaxed),
        busy_seconds: graph.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        throttled: graph.throttled.load(Ordering::Relaxed),
    })
}

/// Serves on `runtime` (the process's multi-thread runtime) until SIGTERM or
/// Ctrl-C.
pub async fn run(args: BenchGraphArgs, runtime: &tokio::runtime::Handle) -> Result<(), String> {
    let graph = Arc::new(Graph {
        profile: args.profile,
        users: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        busy_nanos: AtomicU64::new(0),
        retried: Mutex::new(HashMap::new()),
        workers: tokio::sync::Semaphore::new(args.workers.max(1)),
        service: Duration::from_millis(args.service_ms),
        queue: args.queue,
        waiting: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/users/{id}", put(put_user))
        .route("/stats", get(stats))
        .with_state(graph);
    // Bound inside the multi-thread runtime, so its reactor drives the sockets.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let addr = args.addr;
    let server = runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = bound_tx.send(Err(format!(
                    "bench-graph: cannot listen on {addr}: {error}"
                )));
                return;
            }
        };
        let _ = bound_tx.send(listener.local_addr().map_err(|e| e.to_string()));
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!("bench-graph stopped: {error}");
        }
    });
    let bound = bound_rx
        .await
        .map_err(|_| "bench-graph: the server task ended before listening".to_string())??;
    println!("listening on http://{bound}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    crate::server::http::wait_for_signal().await;
    server.abort();
    Ok(())
}
