//! A real HTTP Identity Graph on loopback. It counts requests per user and can
//! be told to answer 400, 429 (with Retry-After), 500 or nothing, for chosen
//! users or for a while.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::put,
    Json, Router,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    Status(u16),
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// Never answers (the client's timeout must fire).
    Hang,
    /// Answers 200 after a delay.
    Slow(Duration),
    /// Answers 302 to another URL.
    Redirect,
    /// Answers this status with a body that never ends.
    EndlessError(u16),
    /// Answers 503 with `Retry-After`.
    Unavailable {
        retry_after_secs: u64,
    },
    /// Waits for one of the server's workers (`limit_workers`), holds it
    /// this long, then answers 200: the answer time grows as a queue once
    /// more calls are in flight than there are workers.
    Work(Duration),
}

type Behaviour = Arc<dyn Fn(i64, u32) -> Reply + Send + Sync>;

/// One request as the graph saw it.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub user_id: i64,
    pub authorization: String,
    pub arrived: Instant,
    pub answered: Instant,
}

/// Records an exchange when its handler finishes (or is dropped).
struct Recorded {
    inner: Arc<Inner>,
    exchange: Exchange,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let mut exchange = self.exchange.clone();
        exchange.answered = Instant::now();
        self.inner.exchanges.lock().unwrap().push(exchange);
    }
}

#[derive(Clone)]
pub struct GraphServer {
    pub url: String,
    inner: Arc<Inner>,
}

struct Inner {
    /// Every request, in arrival order: (user id, when).
    requests: Mutex<Vec<(i64, Instant)>>,
    /// Every request's `Authorization` header and when it arrived and was
    /// answered, in arrival order: which replica sent what, and when.
    exchanges: Mutex<Vec<Exchange>>,
    /// Users the server acknowledged with a 2xx.
    written: Mutex<Vec<i64>>,
    bodies: Mutex<HashMap<i64, serde_json::Value>>,
    authorization: Mutex<Option<String>>,
    behaviour: Mutex<Behaviour>,
    /// Requests being answered right now, and the most there ever were.
    in_flight: Mutex<(usize, usize)>,
    /// The workers `Reply::Work` waits for.
    workers: Mutex<Arc<tokio::sync::Semaphore>>,
}

/// Counts a request as in flight until its handler finishes or is dropped.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        let mut counts = inner.in_flight.lock().unwrap();
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().0 -= 1;
    }
}

impl GraphServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
            bodies: Mutex::new(HashMap::new()),
            authorization: Mutex::new(None),
            behaviour: Mutex::new(Arc::new(|_, _| Reply::Ok)),
            in_flight: Mutex::new((0, 0)),
            workers: Mutex::new(Arc::new(tokio::sync::Semaphore::new(1))),
        });
        let app = Router::new()
            .route("/users/{id}", put(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// Sets how the server answers: `f(user_id, attempt)` with attempt counted from 1.
    pub fn behave(&self, f: impl Fn(i64, u32) -> Reply + Send + Sync + 'static) {
        *self.inner.behaviour.lock().unwrap() = Arc::new(f);
    }

    /// Answers `status` for the users `rejected` picks, 2xx for the others.
    pub fn reject(&self, status: u16, rejected: impl Fn(i64) -> bool + Send + Sync + 'static) {
        self.behave(move |id, _| {
            if rejected(id) {
                Reply::Status(status)
            } else {
                Reply::Ok
            }
        });
    }

    /// How many `Reply::Work` requests the server answers at once.
    pub fn limit_workers(&self, workers: usize) {
        *self.inner.workers.lock().unwrap() = Arc::new(tokio::sync::Semaphore::new(workers));
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.lock().unwrap().0
    }

    pub fn requests_for(&self, user_id: i64) -> Vec<Instant> {
        self.inner
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| *id == user_id)
            .map(|(_, at)| *at)
            .collect()
    }

    /// The highest user id the server was asked to write, if any.
    pub fn highest_requested(&self) -> Option<i64> {
        let requests = self.inner.requests.lock().unwrap();
        requests.iter().map(|(id, _)| *id).max()
    }

    /// The most requests the server was ever answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.in_flight.lock().unwrap().1
    }

    /// Every answered request: who sent it, for which user, and when.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.inner.exchanges.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// How many times each user was written (acknowledged).
    pub fn written_counts(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for id in self.inner.written.lock().unwrap().iter() {
            *counts.entry(*id).or_insert(0) += 1;
        }
        counts
    }

    pub fn body_of(&self, user_id: i64) -> Option<serde_json::Value> {
        self.inner.bodies.lock().unwrap().get(&user_id).cloned()
    }

    pub fn authorization(&self) -> Option<String> {
        self.inner.authorization.lock().unwrap().clone()
    }

    /// The settings that point a server at this graph.
    pub fn sink_env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("IDENTITY_GRAPH_SINK", "http"),
            ("IDENTITY_GRAPH_URL", &self.url),
            ("IDENTITY_GRAPH_TOKEN", "test-token-123"),
            ("IDENTITY_GRAPH_TIMEOUT_MS", "1000"),
        ]
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let _in_flight = InFlight::enter(&inner);
    let attempt = {
        let mut requests = inner.requests.lock().unwrap();
        requests.push((id, Instant::now()));
        requests.iter().filter(|(user, _)| *user == id).count() as u32
    };
    *inner.authorization.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let behaviour = inner.behaviour.lock().unwrap().clone();
    let reply = behaviour(id, attempt);
    let _exchange = Recorded {
        inner: inner.clone(),
        exchange: Exchange {
            user_id: id,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            arrived: Instant::now(),
            answered: Instant::now(),
        },
    };
    let ok = |inner: &Inner| {
        inner.written.lock().unwrap().push(id);
        inner.bodies.lock().unwrap().insert(id, body.clone());
        StatusCode::NO_CONTENT.into_response()
    };
    match reply {
        Reply::Ok => ok(&inner),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            ok(&inner)
        }
        Reply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("{{\"error\":\"rejected user {id} with {code}\"}}"),
        )
            .into_response(),
        Reply::TooManyRequests { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::EndlessError(code) => {
            let chunk = axum::body::Bytes::from(vec![b'x'; 1024]);
            let endless = futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(chunk.clone())
            });
            (
                StatusCode::from_u16(code).unwrap(),
                axum::body::Body::from_stream(endless),
            )
                .into_response()
        }
        Reply::Unavailable { retry_after_secs } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", retry_after_secs.to_string())],
            "unavailable",
        )
            .into_response(),
        Reply::Work(service) => {
            let workers = inner.workers.lock().unwrap().clone();
            let _worker = workers.acquire().await.unwrap();
            tokio::time::sleep(service).await;
            ok(&inner)
        }
        Reply::Redirect => (
            StatusCode::FOUND,
            [("location", "http://elsewhere.invalid/users")],
            "moved",
        )
            .into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}
