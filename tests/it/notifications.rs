//! The webhook (`NOTIFY_WEBHOOK_URL`): each event delivered once to a real
//! receiver on loopback, retried after a 500, delivered by the next process
//! after a restart, and never in a run's way when the receiver hangs.

use crate::harness::*;
use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Json, Router};
use identity_graph_backfill::backfill::domain::JobStatus;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

/// How the receiver answers its n-th request (counted from 1).
type Answer = Arc<dyn Fn(usize) -> Option<StatusCode> + Send + Sync>;

/// What the receiver took: the `X-Notification-Id` header and the body.
type Taken = Vec<(Option<String>, Value)>;

/// A webhook receiver on loopback. An answer of `None` never answers.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Taken>>,
    requests: Arc<AtomicUsize>,
    hanging: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(answer: impl Fn(usize) -> Option<StatusCode> + Send + Sync + 'static) -> Self {
        let receiver = Receiver {
            url: String::new(),
            received: Default::default(),
            requests: Default::default(),
            hanging: Default::default(),
        };
        let answer: Answer = Arc::new(answer);
        let app = Router::new()
            .route("/hook", post(take))
            .with_state((receiver.clone(), answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, ..receiver }
    }

    /// The bodies it took (answered 2xx), in order.
    fn taken(&self) -> Taken {
        self.received.lock().unwrap().clone()
    }

    fn settings(&self) -> Vec<(&str, &str)> {
        vec![
            ("NOTIFY_WEBHOOK_URL", self.url.as_str()),
            ("NOTIFY_RETRY_BASE_MS", "50"),
            ("PUBLIC_BASE_URL", "https://backfill.example.com"),
            ("IDENTITY_GRAPH_SINK", "postgres"),
        ]
    }
}

async fn take(
    State((receiver, answer)): State<(Receiver, Answer)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let n = receiver.requests.fetch_add(1, Ordering::SeqCst) + 1;
    match answer(n) {
        None => {
            receiver.hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(status) => {
            if status.is_success() {
                let id = headers
                    .get("x-notification-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                receiver.received.lock().unwrap().push((id, body));
            }
            status
        }
    }
}

async fn wait_for_taken(receiver: &Receiver, count: usize) {
    wait_for(&format!("{count} notifications delivered"), async || {
        receiver.taken().len() >= count
    })
    .await;
}

#[sqlx::test]
async fn each_event_is_delivered_once_with_its_counters_and_a_link(pool: PgPool) {
    seed(&pool, 40).await;
    let receiver = Receiver::start(|_| Some(StatusCode::NO_CONTENT)).await;
    let replica = Replica::new(&pool, &receiver.settings());

    // A run that pauses on its runtime cap, then a stop of the paused job.
    let paused = replica
        .run(
            json!({"job_key": "capped", "batch_size": 1, "sleep_ms": 200,
                    "max_runtime_ms": 1000, "auto_resume": false}),
        )
        .await;
    assert_eq!(paused.status().unwrap(), JobStatus::Paused);
    replica.stop("capped", OPERATOR).await.unwrap();
    // A rehearsal that completes.
    let rehearsal = replica
        .run(json!({"job_key": "rehearsed", "dry_run": true, "sleep_ms": 0}))
        .await;

    wait_for_taken(&receiver, 3).await;
    // Time for a duplicate to show if there were one.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let taken = receiver.taken();
    let events: Vec<(&str, &str)> = taken
        .iter()
        .map(|(_, b)| (b["job_key"].as_str().unwrap(), b["event"].as_str().unwrap()))
        .collect();
    let mut sorted = events.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            ("capped", "paused"),
            ("capped", "stopped"),
            ("rehearsed:dry-run", "completed"),
        ],
        "each event once: {events:?}"
    );
    let mut ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_deref().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each delivery names its event");

    let body_of = |key: &str, event: &str| {
        taken
            .iter()
            .map(|(_, b)| b)
            .find(|b| b["job_key"] == key && b["event"] == event)
            .unwrap()
            .clone()
    };
    let pause = body_of("capped", "paused");
    assert_eq!(pause["status"], "paused");
    assert_eq!(pause["pause_reason"], "max-runtime");
    assert_eq!(pause["counters"]["processed"], paused.processed);
    assert_eq!(pause["coverage"]["cursor"], paused.cursor);
    assert_eq!(pause["url"], "https://backfill.example.com/jobs/capped");
    assert!(
        pause["text"]
            .as_str()
            .unwrap()
            .starts_with("Backfill `capped` paused (max-runtime): "),
        "{pause}"
    );
    let done = body_of("rehearsed:dry-run", "completed");
    assert_eq!(done["dry_run"], true);
    assert_eq!(done["counters"]["skipped"], rehearsal.skipped);
    assert_eq!(done["coverage"]["percent"], 100.0);

    // The job page lists the deliveries.
    let detail = replica.detail("capped").await.unwrap();
    assert!(detail.webhook_configured);
    let states: Vec<(&str, &str)> = detail
        .notifications
        .iter()
        .map(|n| (n.event.as_str(), n.state.as_str()))
        .collect();
    assert_eq!(states, [("stopped", "delivered"), ("paused", "delivered")]);
}

#[sqlx::test]
async fn a_receiver_that_answers_500_is_retried_until_it_takes_the_event(pool: PgPool) {
    seed(&pool, 10).await;
    let receiver = Receiver::start(|n| {
        Some(if n <= 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        })
    })
    .await;
    let replica = Replica::new(&pool, &receiver.settings());
    replica
        .run(json!({"job_key": "retried", "sleep_ms": 0}))
        .await;
    wait_for_taken(&receiver, 1).await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 3);
    wait_for("the delivery recorded", async || {
        let detail = replica.detail("retried").await.unwrap();
        detail
            .notifications
            .first()
            .is_some_and(|n| n.state == "delivered")
    })
    .await;
    let detail = replica.detail("retried").await.unwrap();
    let record = &detail.notifications[0];
    assert_eq!(record.event, "completed");
    assert_eq!(record.attempts, 3);
    assert_eq!(record.last_outcome.as_deref(), Some("200"));
}

#[sqlx::test]
async fn an_event_not_yet_delivered_is_sent_by_the_next_process(pool: PgPool) {
    seed(&pool, 10).await;
    // A replica that ends a run and then dies before any notifier delivered
    // it: the event is only a row.
    let first = Replica::new(&pool, BUILT_IN_GRAPH);
    first
        .run(json!({"job_key": "outlived", "sleep_ms": 0}))
        .await;
    first.shutdown.cancel();
    drop(first);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM identity_graph_backfill_notifications WHERE state = 'pending'"
        )
        .await,
        1
    );

    let receiver = Receiver::start(|_| Some(StatusCode::OK)).await;
    let _next = Replica::new(&pool, &receiver.settings());
    wait_for_taken(&receiver, 1).await;
    let (_, body) = &receiver.taken()[0];
    assert_eq!(body["job_key"], "outlived");
    assert_eq!(body["event"], "completed");
}

#[sqlx::test]
async fn a_receiver_that_hangs_never_delays_a_run(pool: PgPool) {
    seed(&pool, 200).await;
    let receiver = Receiver::start(|_| None).await;
    let mut settings = receiver.settings();
    settings.push(("NOTIFY_WEBHOOK_TIMEOUT_MS", "60000"));
    let replica = Replica::new(&pool, &settings);
    let first = replica
        .run(json!({"job_key": "unheard", "sleep_ms": 0, "batch_size": 50}))
        .await;
    assert_eq!(first.status().unwrap(), JobStatus::Completed);
    wait_for("the receiver holds the first event", async || {
        receiver.hanging.load(Ordering::SeqCst) >= 1
    })
    .await;
    // The next run starts, writes and ends while that delivery still hangs.
    let second = replica
        .run(json!({"job_key": "unheard", "reset_cursor": true, "sleep_ms": 0, "batch_size": 50}))
        .await;
    assert_eq!(second.status().unwrap(), JobStatus::Completed);
    assert_eq!(second.processed, first.processed);
    assert!(receiver.taken().is_empty());
    let detail = replica.detail("unheard").await.unwrap();
    assert!(
        detail.notifications.iter().all(|n| n.state == "pending"),
        "{:?}",
        detail.notifications
    );
}
