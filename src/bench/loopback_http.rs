//! (c) Real runs against a loopback HTTP Identity Graph in this process that
//! answers at once, at concurrency 1, 8 and 32, time-boxed; (d) that
//! server's own capacity under a plain load loop at concurrency 32.

use super::support::{engine, plain_load, timed_run};
use crate::backfill::{domain::*, engine::RunExecutor};
use axum::{routing::put, Router};
use sqlx::PgPool;

/// What (c) and (d) measured: the run's rate at concurrency 32 and the
/// server's capacity, in users (requests) per second.
pub(super) struct LoopbackFigures {
    rate_at_32: f64,
    capacity: f64,
}

impl LoopbackFigures {
    pub(super) fn ratios(&self) -> Vec<String> {
        vec![format!(
            "ratio (c at 32)/(d) = {:.2}   (goal >= 0.6)",
            self.rate_at_32 / self.capacity
        )]
    }
}

async fn loopback_graph() -> Result<String, String> {
    let app = Router::new().route(
        "/users/{id}",
        put(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

pub(super) async fn measure(
    pool: &PgPool,
    executor: &RunExecutor,
    batch: i64,
    seconds: u64,
) -> Result<LoopbackFigures, String> {
    let graph_url = loopback_graph().await?;
    let http = engine(
        pool,
        executor,
        &[
            ("IDENTITY_GRAPH_SINK", "http".into()),
            ("IDENTITY_GRAPH_URL", graph_url.clone()),
            ("IDENTITY_GRAPH_TOKEN", "bench".into()),
        ],
    )?;
    let mut rate_at_32 = 0.0;
    for concurrency in [1i64, 8, 32] {
        let (handled, run_seconds) = timed_run(
            &http,
            pool,
            StartRequest {
                job_key: Some(format!("bench-http-c{concurrency}")),
                batch_size: Some(batch),
                concurrency: Some(concurrency),
                sleep_ms: Some(0),
                max_runtime_ms: Some((seconds * 1000) as i64),
                retry_failed_before_cursor: Some(false),
                auto_resume: Some(false),
                ..Default::default()
            },
        )
        .await?;
        let rate = handled as f64 / run_seconds;
        if concurrency == 32 {
            rate_at_32 = rate;
        }
        println!("(c) real run over HTTP, concurrency {concurrency:>2}:     {rate:>10.0} users/s  ({handled} users in {run_seconds:.1}s)");
    }
    let capacity = plain_load(&graph_url, 32, seconds).await;
    println!("(d) loopback server capacity, concurrency 32: {capacity:>9.0} requests/s");
    Ok(LoopbackFigures {
        rate_at_32,
        capacity,
    })
}
