//! The watchdog: every interval (or when woken after database trouble) it
//! interrupts runs whose lease expired, then resumes what may be resumed, on
//! whichever replica claims the job first.

use super::Engine;
use crate::backfill::sinks::GraphBinding;
use crate::backfill::{store, transient};
use std::time::Duration;
use tracing::Instrument;

/// How long a live run may wait for users in flight, a checkpoint and its
/// final write when a newer run of the same key replaces it on this replica.
const REPLACED_RUN_LIMIT: Duration = Duration::from_secs(5);
/// The pause before the watchdog retries a run that database trouble interrupted.
pub(super) const RESUME_AFTER_TROUBLE: Duration = Duration::from_secs(1);

impl Engine {
    /// The watchdog's resume of a paused job, with its saved options.
    /// `false` when another replica (or a stop) got there first.
    pub async fn resume(&self, job_key: &str) -> Result<bool, sqlx::Error> {
        let Some(graph) = self.graph() else {
            return Ok(false);
        };
        self.retire_local_run(job_key).await;
        let token = self.new_lease_token();
        let mut tx = self.inner.executor.pool.begin().await?;
        let Some(row) = store::claim_for_resume(&mut tx, job_key, &token, graph.as_str()).await?
        else {
            tx.rollback().await?;
            return Ok(false);
        };
        let options = match row.effective_options(self.runtime_default()) {
            Ok(options) => options,
            Err(reason) => {
                tracing::warn!(%job_key, "not resuming a job whose row cannot be read: {reason}");
                tx.rollback().await?;
                return Ok(false);
            }
        };
        let run_id =
            store::insert_run(&mut tx, job_key, "watchdog", None, &token, &options).await?;
        tx.commit().await?;
        tracing::info!(%job_key, "watchdog resumed the run");
        self.spawn(&row, options, run_id, token);
        Ok(true)
    }

    /// A run of this key still alive in this process can no longer hold the
    /// lease (the watchdog just took it away): make it drop its users in
    /// flight and exit before a new run starts, so the Identity Graph never
    /// sees two runners of one key.
    pub(super) async fn retire_local_run(&self, job_key: &str) {
        let done = {
            let live = self.inner.live.lock().expect("live map lock");
            live.get(job_key).map(|run| {
                run.signals.lease_lost.cancel();
                (run.done.clone(), run.task.clone())
            })
        };
        if let Some((done, task)) = done {
            if tokio::time::timeout(REPLACED_RUN_LIMIT, done.cancelled())
                .await
                .is_err()
            {
                tracing::warn!(%job_key, "a replaced run did not exit in time; aborting it");
                task.abort();
            }
        }
    }

    pub(super) async fn wake_watchdog_after(&self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => self.inner.watchdog_wake.notify_one(),
            _ = self.inner.shutdown.cancelled() => {}
        }
    }

    /// One watchdog pass: interrupt expired leases, then resume what may be resumed.
    pub async fn watchdog_tick(&self) -> Result<Vec<String>, sqlx::Error> {
        let interrupted = store::interrupt_expired_leases(
            &self.inner.executor.pool,
            self.inner.settings.lease_ttl,
        )
        .await?;
        for key in &interrupted {
            tracing::warn!(job_key = %key, "lease expired: run marked interrupted");
        }
        if !interrupted.is_empty() {
            // A run elsewhere that is alive but lapsed sees its lease gone at
            // its next poll and drops its users in flight; give it that poll.
            let (poll_every, _) = self.heartbeat_cadence();
            tokio::time::sleep(poll_every * 2).await;
        }
        let mut resumed = Vec::new();
        let mine = self.graph();
        for (key, bound) in store::resumable_jobs(&self.inner.executor.pool).await? {
            if self.inner.shutdown.is_cancelled() {
                break;
            }
            if let (Some(bound), Some(mine)) = (&bound, &mine) {
                if bound != mine.as_str() {
                    self.log_foreign_job_once(&key, bound, mine);
                    continue;
                }
            }
            if self.resume(&key).await? {
                resumed.push(key);
            }
        }
        // A run ended here too (its replica died): check the jobs nobody
        // resumed; a resumed one is checked when its new run ends.
        for key in interrupted.iter().filter(|key| !resumed.contains(key)) {
            drop(self.coverage_check(key));
        }
        Ok(resumed)
    }

    /// A job bound to another graph is not this replica's to resume; say so
    /// once per job, not at every pass.
    fn log_foreign_job_once(&self, job_key: &str, bound: &str, mine: &GraphBinding) {
        let first = self
            .inner
            .foreign_jobs_logged
            .lock()
            .expect("foreign jobs lock")
            .insert(job_key.to_string());
        if first {
            tracing::warn!(%job_key, job_graph = %bound, replica_graph = %mine,
                "not resuming a job bound to another Identity Graph; a replica configured for its graph resumes it");
        }
    }

    /// Runs the watchdog: a pass at start-up (so a restarted replica resumes
    /// interrupted jobs at once), then every interval or when woken.
    pub fn start_watchdog(&self) {
        let engine = self.clone();
        let interval = self.inner.settings.watchdog_interval;
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn_on(
            async move {
                loop {
                    let mut wait = interval;
                    if let Err(error) = engine.watchdog_tick().await {
                        tracing::error!("watchdog pass failed: {error}");
                        // A pass woken by database trouble can meet the same
                        // trouble; it must not then wait a whole interval.
                        if transient::is_transient(&error) {
                            wait = interval.min(RESUME_AFTER_TROUBLE);
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = engine.inner.watchdog_wake.notified() => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
            .instrument(tracing::info_span!("watchdog")),
            &self.inner.executor.handle,
        );
    }
}
