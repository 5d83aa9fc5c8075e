//! One run of one job: batches after the cursor, bounded concurrency inside
//! a batch, one checkpoint per batch, and a cooperative halt.
//!
//! `Runner::step` runs exactly one batch, so tests can drive a run
//! deterministically; `Runner::run` is the loop a tokio task executes.

use super::domain::{Mode, PauseReason, SkipCounts, SkipReason, StartOptions};
use super::sinks::{IdentityGraph, SourceUser};
use super::store::{self, Checkpoint, RunEnd};
use futures::StreamExt;
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where a run is in its order of work (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Retrying recorded failures at or below the cursor, after this user id.
    RetryFailures { after_user_id: i64 },
    /// The keyset scan after the cursor.
    Scan,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A batch was handled and checkpointed; there may be more.
    Continue,
    /// The run is over and must be finished with this ending.
    End(RunEnd),
    /// Another replica took the job over; this run must exit without writing.
    LostLease,
}

/// Why the runner must not start another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Stop,
    Shutdown,
    Runtime,
    Streak,
}

/// The signals a run listens to.
#[derive(Clone)]
pub struct RunSignals {
    /// A stop was requested (locally, or seen on the row by the heartbeat).
    pub stop: CancellationToken,
    /// The process is shutting down.
    pub shutdown: CancellationToken,
    /// Set by the heartbeat when the row no longer names this replica.
    pub lease_lost: CancellationToken,
}

pub struct Runner {
    pool: PgPool,
    sink: Option<Arc<dyn IdentityGraph>>,
    options: StartOptions,
    owner: String,
    run_id: i64,
    signals: RunSignals,
    deadline: Instant,
    cursor: i64,
    phase: Phase,
    streak: Arc<AtomicU32>,
}

/// One user's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Processed,
    Failed(String),
    Skipped(SkipReason),
}

fn classify(user: &SourceUser, dry_run: bool) -> Option<SkipReason> {
    if dry_run {
        Some(SkipReason::DryRun)
    } else if user.deleted_at.is_some() {
        Some(SkipReason::Deleted)
    } else if user.identifiers().is_empty() {
        Some(SkipReason::NoIdentifiers)
    } else {
        None
    }
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        sink: Option<Arc<dyn IdentityGraph>>,
        options: StartOptions,
        owner: String,
        run_id: i64,
        cursor: i64,
        signals: RunSignals,
    ) -> Self {
        // A full-mode dry run rehearses the scan only: it writes nothing, so
        // retrying old failures would tell an operator nothing.
        let retry_first = options.mode == Mode::FailedOnly
            || (options.retry_failed_before_cursor && !options.dry_run);
        let phase = if retry_first {
            Phase::RetryFailures { after_user_id: 0 }
        } else {
            Phase::Scan
        };
        Self {
            deadline: Instant::now() + std::time::Duration::from_millis(options.max_runtime_ms),
            pool,
            sink,
            options,
            owner,
            run_id,
            signals,
            cursor,
            phase,
            streak: Arc::new(AtomicU32::new(0)),
        }
    }

    fn halt(&self) -> Option<Halt> {
        if self.signals.stop.is_cancelled() || self.signals.lease_lost.is_cancelled() {
            Some(Halt::Stop)
        } else if self.signals.shutdown.is_cancelled() {
            Some(Halt::Shutdown)
        } else if self.streak.load(Ordering::SeqCst) >= self.options.max_consecutive_failures {
            Some(Halt::Streak)
        } else if Instant::now() >= self.deadline {
            Some(Halt::Runtime)
        } else {
            None
        }
    }

    fn end_for(&self, halt: Halt) -> RunEnd {
        match halt {
            Halt::Stop => RunEnd::Stopped,
            Halt::Shutdown => RunEnd::Paused(PauseReason::Interrupted),
            Halt::Runtime => RunEnd::Paused(PauseReason::MaxRuntime),
            Halt::Streak => RunEnd::Paused(PauseReason::ConsecutiveFailures),
        }
    }

    /// Syncs one user. Failures while retrying old failures do not feed the
    /// streak: a handful of permanently rejected users must not pause every
    /// run before it reaches new users.
    async fn sync_one(&self, user: &SourceUser, counts_toward_streak: bool) -> Outcome {
        if let Some(reason) = classify(user, self.options.dry_run) {
            return Outcome::Skipped(reason);
        }
        let Some(sink) = &self.sink else {
            return Outcome::Failed("the Identity Graph is not configured".into());
        };
        match sink.write_user(user).await {
            Ok(()) => {
                if counts_toward_streak {
                    self.streak.store(0, Ordering::SeqCst);
                }
                Outcome::Processed
            }
            Err(error) => {
                if counts_toward_streak {
                    self.streak.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::Failed(error.0)
            }
        }
    }

    /// Syncs a batch with bounded concurrency. Users are started in id order
    /// and none is started once a halt is due, so the handled users are
    /// always a prefix of the batch.
    async fn sync_batch<'u>(&self, users: &'u [SourceUser]) -> Vec<(&'u SourceUser, Outcome)> {
        let counts_toward_streak = self.phase == Phase::Scan;
        let limit = self.options.concurrency.max(1) as usize;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut handled: Vec<(usize, Outcome)> = Vec::with_capacity(users.len());
        let mut next = 0;
        loop {
            while in_flight.len() < limit && next < users.len() && self.halt().is_none() {
                let index = next;
                let user = &users[index];
                in_flight
                    .push(async move { (index, self.sync_one(user, counts_toward_streak).await) });
                next += 1;
            }
            match in_flight.next().await {
                Some(done) => handled.push(done),
                None => break,
            }
        }
        handled.sort_by_key(|(index, _)| *index);
        handled
            .into_iter()
            .map(|(index, outcome)| (&users[index], outcome))
            .collect()
    }

    /// Runs one batch: fetch, sync, checkpoint. The "one step" of the loop.
    pub async fn step(&mut self) -> Result<Step, sqlx::Error> {
        if let Some(halt) = self.halt() {
            return Ok(Step::End(self.end_for(halt)));
        }
        let batch_size = self.options.batch_size;
        let key = self.options.job_key.as_str().to_string();
        let users = match self.phase {
            Phase::RetryFailures { after_user_id } => {
                store::failed_users_after(
                    &self.pool,
                    &key,
                    after_user_id,
                    Some(self.cursor),
                    batch_size,
                )
                .await?
            }
            Phase::Scan => store::users_after(&self.pool, self.cursor, batch_size).await?,
        };
        if users.is_empty() {
            return Ok(match (self.phase, self.options.mode) {
                (Phase::RetryFailures { .. }, Mode::Full) => {
                    self.phase = Phase::Scan;
                    Step::Continue
                }
                _ => Step::End(RunEnd::Completed),
            });
        }

        let retrying = matches!(self.phase, Phase::RetryFailures { .. });
        let handled = self.sync_batch(&users).await;
        let mut batch = Checkpoint {
            scanned: handled.len() as i64,
            ..Default::default()
        };
        for (user, outcome) in &handled {
            match outcome {
                Outcome::Processed => {
                    batch.processed += 1;
                    batch.resolved.push(user.id);
                }
                Outcome::Failed(error) => {
                    batch.failed += 1;
                    batch.last_error = Some(format!("user {}: {error}", user.id));
                    batch.failures.push((user.id, error.clone()));
                }
                Outcome::Skipped(reason) => {
                    let counts: &mut SkipCounts = &mut batch.skipped;
                    match reason {
                        SkipReason::DryRun => counts.dry_run += 1,
                        SkipReason::Deleted => counts.deleted += 1,
                        SkipReason::NoIdentifiers => counts.no_identifiers += 1,
                    }
                    if *reason != SkipReason::DryRun {
                        batch.resolved.push(user.id);
                    }
                }
            }
        }
        if retrying && !self.options.dry_run {
            // A retried user was already counted as failed: move it, do not count it twice.
            batch.failed -= handled.len() as i64;
        }
        let last_handled = handled.last().map(|(user, _)| user.id);
        match (self.phase, last_handled) {
            (Phase::Scan, Some(id)) => batch.cursor = Some(id),
            (Phase::RetryFailures { .. }, Some(id)) => {
                self.phase = Phase::RetryFailures { after_user_id: id }
            }
            _ => {}
        }
        batch.consecutive_failures = self.streak.load(Ordering::SeqCst);

        if !store::checkpoint(&self.pool, &key, &self.owner, self.run_id, &batch).await? {
            return Ok(Step::LostLease);
        }
        if let Some(cursor) = batch.cursor {
            self.cursor = cursor;
        }
        tracing::debug!(job_key = %key, cursor = self.cursor, handled = handled.len(), "checkpoint");
        Ok(Step::Continue)
    }

    /// Pauses between batches, waking early for a stop or a shutdown.
    async fn pace(&self) {
        if self.options.sleep_ms == 0 {
            return;
        }
        let sleep = tokio::time::sleep(std::time::Duration::from_millis(
            self.options.sleep_ms.into(),
        ));
        let deadline = tokio::time::sleep_until(self.deadline.into());
        tokio::select! {
            _ = sleep => {}
            _ = deadline => {}
            _ = self.signals.stop.cancelled() => {}
            _ = self.signals.shutdown.cancelled() => {}
            _ = self.signals.lease_lost.cancelled() => {}
        }
    }

    /// Runs batches until the run ends, then writes its final status.
    pub async fn run(mut self) -> Option<super::domain::JobStatus> {
        let key = self.options.job_key.as_str().to_string();
        let end = loop {
            match self.step().await {
                Ok(Step::Continue) => self.pace().await,
                Ok(Step::End(end)) => break end,
                Ok(Step::LostLease) => {
                    tracing::warn!(job_key = %key, "lease lost to another replica; this run exits");
                    return None;
                }
                Err(error) => {
                    tracing::error!(job_key = %key, "run failed: {error}");
                    break RunEnd::Failed(format!("the source query failed: {error}"));
                }
            }
        };
        if self.signals.lease_lost.is_cancelled() {
            tracing::warn!(job_key = %key, "lease lost to another replica; this run exits");
            return None;
        }
        match store::finish_run(&self.pool, &key, &self.owner, self.run_id, &end).await {
            Ok(status) => {
                tracing::info!(job_key = %key, ?end, ?status, cursor = self.cursor, "run finished");
                status
            }
            Err(error) => {
                tracing::error!(job_key = %key, "could not record the end of the run: {error}");
                None
            }
        }
    }
}
