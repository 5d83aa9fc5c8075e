//! `/metrics` in the Prometheus text format, on a listener of its own
//! (`METRICS_ADDR`), never on the console's port.
//!
//! The job figures are read from the job rows at each scrape, so they are
//! the same numbers the console shows; the Identity Graph's request latency
//! is recorded by the runner as it writes (`backfill::runner`).

use crate::backfill::{
    domain::{JobStatus, Stored},
    sinks::GRAPH_REQUEST_SECONDS,
};
use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use sqlx::PgPool;
use std::{net::SocketAddr, sync::OnceLock, time::Duration};
use tokio_util::sync::CancellationToken;

/// The process's one recorder: `metrics` allows a single global recorder.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(GRAPH_REQUEST_SECONDS.into()),
                &[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .expect("the bucket list is not empty")
            // The job gauges are set at each scrape just before rendering;
            // one not set (a job that left the list, the heartbeat of a run
            // that ended) is dropped instead of showing a frozen value.
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(1)))
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed, which this binary never does.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[derive(sqlx::FromRow)]
struct JobFigures {
    job_key: String,
    status: Stored<JobStatus>,
    processed: i64,
    failed: i64,
    skipped: i64,
    cursor: i64,
    heartbeat_age_seconds: Option<f64>,
}

async fn record_job_figures(pool: &PgPool) -> Result<(), sqlx::Error> {
    let jobs: Vec<JobFigures> = sqlx::query_as(
        "SELECT job_key, status, processed, failed, skipped, cursor,
                extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds
         FROM identity_graph_backfill_jobs WHERE status = ANY($1)",
    )
    .bind(&JobStatus::VISIBLE[..])
    .fetch_all(pool)
    .await?;
    for job in jobs {
        let key = job.job_key;
        let active = job.status.known().is_some_and(JobStatus::is_active);
        // Gauges, not counters: a reset_cursor start zeroes the row's totals.
        let users = |outcome: &'static str, total: i64| {
            metrics::gauge!("identity_graph_backfill_users", "job_key" => key.clone(), "outcome" => outcome)
                .set(total as f64)
        };
        users("processed", job.processed);
        users("failed", job.failed);
        users("skipped", job.skipped);
        metrics::gauge!("identity_graph_backfill_cursor", "job_key" => key.clone())
            .set(job.cursor as f64);
        metrics::gauge!("identity_graph_backfill_active_runs", "job_key" => key.clone())
            .set(if active { 1.0 } else { 0.0 });
        if let (true, Some(age)) = (active, job.heartbeat_age_seconds) {
            metrics::gauge!("identity_graph_backfill_heartbeat_age_seconds", "job_key" => key.clone())
                .set(age);
        }
    }
    Ok(())
}

async fn scrape(State(pool): State<PgPool>) -> axum::response::Response {
    if let Err(error) = record_job_figures(&pool).await {
        tracing::warn!("metrics: could not read the job rows: {error}");
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable\n",
        )
            .into_response();
    }
    let handle = handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// Installs the recorder. Called at start-up when `METRICS_ADDR` is set, so
/// the runner's latency figures are recorded from the first run on.
pub fn install() {
    handle();
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: PgPool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    install();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(pool);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds `addr` and serves `/metrics` in the background; returns the bound
/// address (useful with port 0).
pub async fn spawn(
    addr: SocketAddr,
    pool: PgPool,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve(listener, pool, shutdown).await {
            tracing::error!("the metrics listener stopped: {error}");
        }
    });
    Ok(bound)
}
