//! `/metrics` in the Prometheus text format, on a listener of its own
//! (`METRICS_ADDR`), never on the console's port.
//!
//! The job figures are read from the job rows at each scrape, so they are
//! the same numbers the console shows; the Identity Graph's request latency
//! is recorded by the runner as it writes (`backfill::runner`).

use crate::backfill::{
    domain::{JobStatus, Stored},
    sinks::{pool_wait::POOL_WAIT_SECONDS, GRAPH_REQUEST_SECONDS},
};
use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;
use sqlx::PgPool;
use std::{net::SocketAddr, sync::OnceLock, time::Duration};
use tokio_util::sync::CancellationToken;

/// `METRICS_JOB_IDLE_SECS`'s default: a job's series go an hour after its
/// last change.
pub const DEFAULT_JOB_IDLE: Duration = Duration::from_secs(3_600);

/// The two halves of the process's one recorder (`metrics` allows a single
/// global recorder), each with its own idle time.
struct Handles {
    /// Gauges: set at each scrape just before rendering (the job figures)
    /// or at each heartbeat (a run's brake); one not set for a second (a
    /// job that left the list or went idle, a run that ended) is dropped
    /// instead of showing a frozen value.
    gauges: PrometheusHandle,
    /// Counters and histograms (the graph's latency per job, the holds):
    /// a series nobody updated for `job_idle` is removed.
    updated: PrometheusHandle,
    job_idle: Duration,
}

/// Sends gauges to one recorder and everything else to the other, because
/// a Prometheus recorder has one idle time for every kind it drops.
struct SplitRecorder {
    gauges: PrometheusRecorder,
    updated: PrometheusRecorder,
}

impl Recorder for SplitRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.updated.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.gauges.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.updated.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.updated.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.gauges.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.updated.register_histogram(key, metadata)
    }
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| build(DEFAULT_JOB_IDLE))
}

fn build(job_idle: Duration) -> Handles {
    let gauges = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(1)))
        .build_recorder();
    let updated = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(GRAPH_REQUEST_SECONDS.into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .expect("the bucket list is not empty")
        .set_buckets_for_metric(
            Matcher::Full(POOL_WAIT_SECONDS.into()),
            &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0],
        )
        .expect("the bucket list is not empty")
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
            Some(job_idle),
        )
        .build_recorder();
    let handles = Handles {
        gauges: gauges.handle(),
        updated: updated.handle(),
        job_idle,
    };
    // Only fails when another recorder is installed, which this binary never does.
    let _ = metrics::set_global_recorder(SplitRecorder { gauges, updated });
    handles
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

/// Sets the figures of the visible jobs that are active or changed within
/// `job_idle`; an idle job's gauges are not set, so they drop out.
async fn record_job_figures(pool: &PgPool, job_idle: Duration) -> Result<(), sqlx::Error> {
    let jobs: Vec<JobFigures> = sqlx::query_as(
        "SELECT job_key, status, processed, failed, skipped, cursor,
                extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds
         FROM identity_graph_backfill_jobs
         WHERE status = ANY($1)
           AND (status = ANY($2) OR updated_at > now() - make_interval(secs => $3))",
    )
    .bind(&JobStatus::VISIBLE[..])
    .bind(&JobStatus::ACTIVE[..])
    .bind(job_idle.as_secs_f64())
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
    let handles = handles();
    if let Err(error) = record_job_figures(&pool, handles.job_idle).await {
        tracing::warn!("metrics: could not read the job rows: {error}");
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable\n",
        )
            .into_response();
    }
    handles.gauges.run_upkeep();
    handles.updated.run_upkeep();
    let mut body = handles.updated.render();
    body.push_str(&handles.gauges.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Installs the recorder with the default idle time, unless one is
/// installed already.
pub fn install() {
    handles();
}

/// Installs the recorder with `job_idle` (`METRICS_JOB_IDLE_SECS`): a job's
/// series are dropped once nothing updated them for that long. Called at
/// start-up when `METRICS_ADDR` is set, so the runner's latency figures are
/// recorded from the first run on. The first installation wins.
pub fn install_with(job_idle: Duration) {
    HANDLES.get_or_init(|| build(job_idle));
}

/// The idle time the installed recorder uses.
pub fn job_idle() -> Duration {
    handles().job_idle
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
