//! The engine: starts, stops and resumes runs, keeps the in-memory map of
//! live runs, holds each run's lease, and runs the watchdog.
//!
//! Postgres coordinates the replicas; this struct only knows about the runs
//! in its own process.

use super::domain::*;
use super::runner::{RunSignals, Runner};
use super::sinks::{self, IdentityGraph};
use super::store::{self, JobRow};
use crate::error::AppError;
use crate::server::{internal_error, Config};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

struct LiveRun {
    run_id: i64,
    signals: RunSignals,
    task: tokio::task::AbortHandle,
}

struct Inner {
    pool: PgPool,
    config: Arc<Config>,
    sink: Option<Arc<dyn IdentityGraph>>,
    replica_id: String,
    live: Mutex<HashMap<String, LiveRun>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn replica_id() -> String {
    use rand::Rng;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::thread_rng().gen::<u32>() & 0xff_ffff
    )
}

impl Engine {
    pub fn new(pool: PgPool, config: Arc<Config>, shutdown: CancellationToken) -> Self {
        let sink = sinks::from_config(&config.sink, &pool);
        Self {
            inner: Arc::new(Inner {
                pool,
                config,
                sink,
                replica_id: replica_id(),
                live: Mutex::new(HashMap::new()),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Runs active in this process (the "Active Runs" card).
    pub fn active_runs(&self) -> usize {
        self.inner.live.lock().expect("live map lock").len()
    }

    pub fn is_live(&self, job_key: &str) -> bool {
        self.inner
            .live
            .lock()
            .expect("live map lock")
            .contains_key(job_key)
    }

    /// Starts a run. An active key anywhere answers `started=false, running=true`.
    pub async fn start(
        &self,
        request: &StartRequest,
        actor: &str,
    ) -> Result<StartResponse, AppError> {
        let (options, adjustments) = request.resolve(self.inner.config.ui_runtime_cap_ms)?;
        if !options.dry_run && self.inner.sink.is_none() {
            return Err(AppError::identity_graph_not_configured());
        }
        let pool = &self.inner.pool;
        let key = options.job_key.as_str().to_string();
        let db = |e: sqlx::Error| internal_error("starting a run", e);
        let mut tx = pool.begin().await.map_err(db)?;
        let claimed = store::claim_for_start(&mut tx, &options, &self.inner.replica_id, actor)
            .await
            .map_err(db)?;
        let Some(row) = claimed else {
            tx.rollback().await.map_err(db)?;
            let row = store::get_job(pool, &key)
                .await
                .map_err(db)?
                .ok_or_else(|| internal_error("starting a run", "claim refused but no row"))?;
            return match row.status() {
                Some(status) if status.is_active() => Ok(StartResponse {
                    started: false,
                    running: true,
                    job: row.to_job(None),
                    adjustments,
                }),
                _ => Err(AppError::validation(
                    "job_key",
                    format!("job {key} is {}; it can no longer be started", row.status),
                )),
            };
        };
        let run_id = store::insert_run(
            &mut tx,
            &key,
            "operator",
            Some(actor),
            &self.inner.replica_id,
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(job_key = %key, %actor, dry_run = options.dry_run, "run started");
        self.spawn(&row, run_id);
        Ok(StartResponse {
            started: true,
            running: true,
            job: row.to_job(None),
            adjustments,
        })
    }

    /// The watchdog's resume of a paused job, with its saved options.
    /// `false` when another replica (or a stop) got there first.
    pub async fn resume(&self, job_key: &str) -> Result<bool, sqlx::Error> {
        if self.inner.sink.is_none() {
            return Ok(false);
        }
        let mut tx = self.inner.pool.begin().await?;
        let Some(row) = store::claim_for_resume(&mut tx, job_key, &self.inner.replica_id).await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        let run_id =
            store::insert_run(&mut tx, job_key, "watchdog", None, &self.inner.replica_id).await?;
        tx.commit().await?;
        tracing::info!(%job_key, "watchdog resumed the run");
        self.spawn(&row, run_id);
        Ok(true)
    }

    /// A cooperative stop. A run on this replica sees it within one user; a
    /// run elsewhere sees it at its next heartbeat poll (about a second).
    pub async fn stop(&self, job_key: &str, actor: &str) -> Result<StopResponse, AppError> {
        if job_key.trim().is_empty() {
            return Err(AppError::validation("job_key", "name the job to stop"));
        }
        let key = JobKey::parse(Some(job_key), false)?;
        let db = |e: sqlx::Error| internal_error("stopping a run", e);
        let pool = &self.inner.pool;
        let row = match store::request_stop(pool, key.as_str(), actor)
            .await
            .map_err(db)?
        {
            Some(row) => {
                tracing::info!(job_key = %key, %actor, status = %row.status, "stop requested");
                row
            }
            None => store::get_job(pool, key.as_str())
                .await
                .map_err(db)?
                .filter(|row| row.status().is_some_and(|s| s != JobStatus::Archived))
                .ok_or_else(|| AppError::not_found(format!("there is no job {key}")))?,
        };
        if let Some(live) = self
            .inner
            .live
            .lock()
            .expect("live map lock")
            .get(key.as_str())
        {
            live.signals.stop.cancel();
        }
        Ok(StopResponse {
            job: row.to_job(None),
        })
    }

    pub async fn list(&self) -> Result<ListResponse, AppError> {
        let db = |e: sqlx::Error| internal_error("listing jobs", e);
        let rows = store::list_jobs(&self.inner.pool).await.map_err(db)?;
        let max_user_id = if rows
            .iter()
            .any(|r| r.status().is_some_and(JobStatus::is_active))
        {
            store::max_user_id(&self.inner.pool).await.map_err(db)?
        } else {
            None
        };
        Ok(ListResponse {
            summary: Summary {
                jobs: rows.len() as i64,
                active_runs: self.active_runs() as i64,
                default_batch_size: BATCH_SIZE.default as u32,
                ui_runtime_cap_ms: self.inner.config.ui_runtime_cap_ms,
            },
            jobs: rows.iter().map(|row| row.to_job(max_user_id)).collect(),
        })
    }

    pub async fn detail(&self, job_key: &str) -> Result<JobDetail, AppError> {
        let key = JobKey::parse(Some(job_key), false)?;
        let db = |e: sqlx::Error| internal_error("reading a job", e);
        let pool = &self.inner.pool;
        let row = store::get_job(pool, key.as_str())
            .await
            .map_err(db)?
            .filter(|row| row.status().is_some_and(|s| s != JobStatus::Archived))
            .ok_or_else(|| AppError::not_found(format!("there is no job {key}")))?;
        let max_user_id = store::max_user_id(pool).await.map_err(db)?;
        Ok(JobDetail {
            job: row.to_job(max_user_id),
            recent_failures: store::recent_failures(pool, key.as_str(), 50)
                .await
                .map_err(db)?,
            unresolved_failures: store::unresolved_failure_count(pool, key.as_str())
                .await
                .map_err(db)?,
            runs: store::recent_runs(pool, key.as_str(), 20)
                .await
                .map_err(db)?,
        })
    }

    fn spawn(&self, row: &JobRow, run_id: i64) {
        let key = row.job_key.clone();
        let signals = RunSignals {
            stop: CancellationToken::new(),
            shutdown: self.inner.shutdown.child_token(),
            lease_lost: CancellationToken::new(),
        };
        let runner = Runner::new(
            self.inner.pool.clone(),
            self.inner.sink.clone(),
            row.options.0.clone(),
            self.inner.replica_id.clone(),
            run_id,
            row.cursor,
            signals.clone(),
        );
        let heartbeat = self.heartbeat(key.clone(), signals.clone());
        let engine = self.clone();
        let span = tracing::info_span!("job", job_key = %key, run_id);
        let task_key = key.clone();
        // Holding the lock across spawn + insert means the task's own removal
        // (which takes the lock) cannot run before the entry exists.
        let mut live = self.inner.live.lock().expect("live map lock");
        let handle = self.inner.tasks.spawn(
            async move {
                tokio::select! {
                    _ = runner.run() => {}
                    _ = heartbeat => {}
                }
                let mut live = engine.inner.live.lock().expect("live map lock");
                if live.get(&task_key).is_some_and(|run| run.run_id == run_id) {
                    live.remove(&task_key);
                }
            }
            .instrument(span),
        );
        live.insert(
            key,
            LiveRun {
                run_id,
                signals,
                task: handle.abort_handle(),
            },
        );
    }

    /// Renews the lease and watches the row for a stop from another replica.
    /// Never finishes: the run's end ends it.
    fn heartbeat(
        &self,
        job_key: String,
        signals: RunSignals,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pool = self.inner.pool.clone();
        let owner = self.inner.replica_id.clone();
        let renew_every = (self.inner.config.lease_ttl / 6)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let poll_every = renew_every.min(Duration::from_secs(1));
        async move {
            let mut last_renewal = Instant::now();
            loop {
                tokio::time::sleep(poll_every).await;
                let renew = last_renewal.elapsed() >= renew_every;
                match store::heartbeat(&pool, &job_key, &owner, renew).await {
                    Ok(Some(stop_requested)) => {
                        if renew {
                            last_renewal = Instant::now();
                        }
                        if stop_requested {
                            signals.stop.cancel();
                        }
                    }
                    Ok(None) => signals.lease_lost.cancel(),
                    Err(error) => tracing::warn!("heartbeat failed: {error}"),
                }
            }
        }
    }

    /// One watchdog pass: interrupt expired leases, then resume what may be resumed.
    pub async fn watchdog_tick(&self) -> Result<Vec<String>, sqlx::Error> {
        let interrupted =
            store::interrupt_expired_leases(&self.inner.pool, self.inner.config.lease_ttl).await?;
        for key in &interrupted {
            tracing::warn!(job_key = %key, "lease expired: run marked interrupted");
        }
        let mut resumed = Vec::new();
        for key in store::resumable_job_keys(&self.inner.pool).await? {
            if self.inner.shutdown.is_cancelled() {
                break;
            }
            if self.resume(&key).await? {
                resumed.push(key);
            }
        }
        Ok(resumed)
    }

    pub fn start_watchdog(&self) {
        let engine = self.clone();
        let interval = self.inner.config.watchdog_interval;
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(
            async move {
                loop {
                    if let Err(error) = engine.watchdog_tick().await {
                        tracing::error!("watchdog pass failed: {error}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
            .instrument(tracing::info_span!("watchdog")),
        );
    }

    /// Waits (bounded) for runs to checkpoint and pause after a shutdown.
    pub async fn wait_for_runs(&self, limit: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some runs did not checkpoint in time; their leases will expire and the watchdog will resume them");
        }
    }

    /// Simulates this replica dying: its tasks vanish without releasing
    /// their leases or writing anything. For failover tests.
    pub fn kill_without_cleanup(&self) {
        let mut live = self.inner.live.lock().expect("live map lock");
        for (_, run) in live.drain() {
            run.task.abort();
        }
        self.inner.shutdown.cancel();
    }
}
