//! One run of one job: the retry pass over old failures, then batches after
//! the cursor, bounded concurrency inside a batch, one checkpoint per batch,
//! and a cooperative halt.
//!
//! `Runner::step` runs exactly one batch, so tests can drive a run
//! deterministically; `Runner::run` is the loop a tokio task executes.

use super::domain::{Mode, PauseReason, SkipCounts, SkipReason, StartOptions};
use super::sinks::{IdentityGraph, GRAPH_REQUEST_SECONDS};
use super::source::{self, SourceUser};
use super::store::{self, Checkpoint, RetryPass, RetryPassUpdate, RunEnd};
use super::transient::is_transient;
use futures::StreamExt;
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long users in flight may finish after a stop or a shutdown before
/// they are dropped (a hanging Identity Graph must not hold a stop hostage).
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(250);

/// Where a runner reads the time: `Instant::now` in production; tests pass a
/// manual clock to reach the runtime cap or the retry pass's share without
/// waiting (see [`Runner::with_clock`]).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Where a run is in its order of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Retrying recorded failures, continuing the saved pass.
    RetryFailures(RetryPass),
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
    /// Another run owns the job now; this run must exit without writing.
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
#[derive(Clone, Default)]
pub struct RunSignals {
    /// A stop was requested (locally, or seen on the row by the heartbeat).
    pub stop: CancellationToken,
    /// The process is shutting down.
    pub shutdown: CancellationToken,
    /// Set when the row no longer names this run's lease token.
    pub lease_lost: CancellationToken,
}

impl RunSignals {
    async fn interrupted(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
            _ = self.lease_lost.cancelled() => {}
        }
    }
}

/// The lease a run holds: its job, its token (which names this run and no
/// other) and its audit row.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_key: String,
    pub token: String,
    pub run_id: i64,
}

/// Where the job stood when this run claimed it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position {
    pub cursor: i64,
    pub retry_pass: Option<RetryPass>,
}

/// A step that could not finish, with the stage that failed.
#[derive(Debug, thiserror::Error)]
#[error("{stage} failed: {source}")]
pub struct StepError {
    pub stage: &'static str,
    #[source]
    pub source: sqlx::Error,
}

impl StepError {
    fn at(stage: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| StepError { stage, source }
    }

    /// Lost connections, pool time-outs, a restarting Postgres: trouble
    /// that passes by itself, so the run pauses `interrupted` and resumes.
    /// Everything else needs an operator and fails the run.
    pub fn is_transient(&self) -> bool {
        is_transient(&self.source)
    }
}

pub struct Runner {
    pool: PgPool,
    sink: Option<Arc<dyn IdentityGraph>>,
    options: StartOptions,
    lease: Lease,
    signals: RunSignals,
    clock: Clock,
    deadline: Instant,
    /// The retry pass may use the first half of a run, so the scan always
    /// gets the rest: a backlog of failing users can never starve new users.
    /// `None` when the pass may use the whole run (failed-only mode, or the
    /// scan has already reached the end of the source).
    retry_share_ends: Option<Instant>,
    cursor: i64,
    phase: Phase,
    /// This run has retried old failures, and has not scanned yet.
    retried_before_scan: bool,
    /// The saved pass this run continues, or began; `None` once it is done.
    pass: Option<RetryPass>,
    streak: Arc<AtomicU32>,
    /// How long to keep trying to record the run's end while the database is away.
    finish_patience: Duration,
}

/// One user's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Processed,
    Failed(String),
    Skipped(SkipReason),
}

/// When a run started at `now` must end (its runtime cap), and when the retry
/// pass's share of it ends (the first half; full mode only).
fn time_limits(options: &StartOptions, now: Instant) -> (Instant, Option<Instant>) {
    let runtime = Duration::from_millis(options.max_runtime_ms);
    let retry_share_ends = (options.mode == Mode::Full).then(|| now + runtime / 2);
    (now + runtime, retry_share_ends)
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
    pub fn new(
        pool: PgPool,
        sink: Option<Arc<dyn IdentityGraph>>,
        options: StartOptions,
        lease: Lease,
        position: Position,
        signals: RunSignals,
    ) -> Self {
        // A full-mode dry run rehearses the scan only: it writes nothing, so
        // retrying old failures would tell an operator nothing.
        let pass = match options.mode {
            Mode::FailedOnly => Some(position.retry_pass.unwrap_or(RetryPass {
                position: 0,
                until: i64::MAX,
            })),
            Mode::Full if options.retry_failed_before_cursor && !options.dry_run => {
                Some(match position.retry_pass {
                    Some(saved) => RetryPass {
                        position: saved.position,
                        until: saved.until.min(position.cursor),
                    },
                    None => RetryPass {
                        position: 0,
                        until: position.cursor,
                    },
                })
            }
            Mode::Full => None,
        };
        let clock: Clock = Arc::new(Instant::now);
        let (deadline, retry_share_ends) = time_limits(&options, clock());
        Self {
            clock,
            deadline,
            retry_share_ends,
            pool,
            sink,
            options,
            lease,
            signals,
            cursor: position.cursor,
            phase: pass.map_or(Phase::Scan, Phase::RetryFailures),
            retried_before_scan: false,
            pass,
            streak: Arc::new(AtomicU32::new(0)),
            finish_patience: Duration::from_secs(10),
        }
    }

    /// Reads the time from `clock` instead of `Instant::now`; the run's
    /// runtime cap and the retry pass's share start from the clock's now.
    /// Pacing between batches and the retries of the final write still wait
    /// in real time.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        (self.deadline, self.retry_share_ends) = time_limits(&self.options, clock());
        self.clock = clock;
        self
    }

    /// How long `run` keeps retrying the write of its final status.
    pub fn with_finish_patience(mut self, patience: Duration) -> Self {
        self.finish_patience = patience;
        self
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    fn halt(&self) -> Option<Halt> {
        if self.signals.stop.is_cancelled() || self.signals.lease_lost.is_cancelled() {
            Some(Halt::Stop)
        } else if self.signals.shutdown.is_cancelled() {
            Some(Halt::Shutdown)
        } else if self.streak.load(Ordering::SeqCst) >= self.options.max_consecutive_failures {
            Some(Halt::Streak)
        } else if (self.clock)() >= self.deadline && !self.owes_a_scan_batch() {
            Some(Halt::Runtime)
        } else {
            None
        }
    }

    /// A run that spent its time on old failures still scans one batch, so
    /// the cursor moves on every run.
    fn owes_a_scan_batch(&self) -> bool {
        self.phase == Phase::Scan && self.retried_before_scan
    }

    fn may_start_user(&self) -> bool {
        if self.halt().is_some() {
            return false;
        }
        match self.phase {
            Phase::RetryFailures(_) => !self.retry_share_used(),
            Phase::Scan => true,
        }
    }

    fn retry_share_used(&self) -> bool {
        self.retry_share_ends
            .is_some_and(|ends| (self.clock)() >= ends)
    }

    fn end_for(&self, halt: Halt) -> RunEnd {
        match halt {
            Halt::Stop => RunEnd::Stopped,
            Halt::Shutdown => RunEnd::paused(PauseReason::Interrupted),
            Halt::Runtime => RunEnd::paused(PauseReason::MaxRuntime),
            Halt::Streak => RunEnd::paused(PauseReason::ConsecutiveFailures),
        }
    }

    /// Syncs a chunk of eligible users (never one that must be skipped) with
    /// one call to the sink, and returns one outcome per user, in order.
    /// Each outcome feeds the failure streak in id order, as if the users had
    /// been written one by one. Failures while retrying old failures do not
    /// feed the streak: a handful of permanently rejected users must not
    /// pause every run before it reaches new users.
    async fn sync_chunk(&self, users: &[&SourceUser], counts_toward_streak: bool) -> Vec<Outcome> {
        let Some(sink) = &self.sink else {
            return users
                .iter()
                .map(|_| Outcome::Failed("the Identity Graph is not configured".into()))
                .collect();
        };
        let started = Instant::now();
        let results = sink.write_users(users).await;
        let outcome = if results.iter().all(Result::is_ok) {
            "ok"
        } else {
            "failed"
        };
        metrics::histogram!(GRAPH_REQUEST_SECONDS, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let mut results = results.into_iter();
        users
            .iter()
            .map(|user| {
                let result = results.next().unwrap_or_else(|| {
                    Err(super::sinks::SinkError(format!(
                        "the Identity Graph adapter returned no outcome for user {}",
                        user.id
                    )))
                });
                match result {
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
            })
            .collect()
    }

    /// Syncs a batch. Users that must be skipped never reach the sink; the
    /// eligible ones go to it in chunks, in id order (one user per chunk for
    /// the HTTP graph, up to the sink's preferred chunk for the built-in
    /// one, spread over the run's concurrency), and chunks run with bounded
    /// concurrency. Users and chunks are started in id order and none is
    /// started once a halt is due. A stop, a shutdown or a lost lease gives
    /// the chunks in flight a short grace and then drops them — every user of
    /// a dropped chunk is unhandled — so only the handled prefix of the batch
    /// is returned: the checkpoint can never pass a user that was not handled.
    async fn sync_batch<'u>(&self, users: &'u [SourceUser]) -> Vec<(&'u SourceUser, Outcome)> {
        let counts_toward_streak = self.phase == Phase::Scan;
        let limit = self.options.concurrency.max(1) as usize;
        let skips: Vec<Option<SkipReason>> = users
            .iter()
            .map(|user| classify(user, self.options.dry_run))
            .collect();
        let eligible = skips.iter().filter(|skip| skip.is_none()).count();
        let preferred = self.sink.as_ref().map_or(1, |sink| sink.preferred_chunk());
        let chunk_size = preferred.min(eligible.div_ceil(limit)).max(1);

        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; users.len()];
        let record = |outcomes: &mut [Option<Outcome>],
                      (members, done): (Vec<usize>, Vec<Outcome>)| {
            for (index, outcome) in members.into_iter().zip(done) {
                outcomes[index] = Some(outcome);
            }
        };
        let mut next = 0;
        loop {
            while next < users.len() && self.may_start_user() {
                if let Some(reason) = skips[next] {
                    outcomes[next] = Some(Outcome::Skipped(reason));
                    next += 1;
                    continue;
                }
                if in_flight.len() >= limit {
                    break;
                }
                // The next `chunk_size` eligible users, and the skipped users
                // between them, which are handled as the chunk starts.
                let mut members = Vec::with_capacity(chunk_size);
                while next < users.len() && members.len() < chunk_size {
                    match skips[next] {
                        Some(reason) => outcomes[next] = Some(Outcome::Skipped(reason)),
                        None => members.push(next),
                    }
                    next += 1;
                }
                let chunk: Vec<&SourceUser> = members.iter().map(|&index| &users[index]).collect();
                in_flight.push(async move {
                    let done = self.sync_chunk(&chunk, counts_toward_streak).await;
                    (members, done)
                });
            }
            if in_flight.is_empty() {
                break;
            }
            tokio::select! {
                done = in_flight.next() => {
                    if let Some(done) = done {
                        record(&mut outcomes, done);
                    }
                }
                _ = self.signals.interrupted() => {
                    if !self.signals.lease_lost.is_cancelled() {
                        let grace = tokio::time::sleep(IN_FLIGHT_GRACE);
                        tokio::pin!(grace);
                        loop {
                            tokio::select! {
                                done = in_flight.next() => match done {
                                    Some(done) => record(&mut outcomes, done),
                                    None => break,
                                },
                                _ = &mut grace => break,
                            }
                        }
                    }
                    break;
                }
            }
        }
        drop(in_flight);
        users
            .iter()
            .zip(outcomes)
            .map_while(|(user, outcome)| outcome.map(|outcome| (user, outcome)))
            .collect()
    }

    /// Runs one batch: fetch, sync, checkpoint. The "one step" of the loop.
    pub async fn step(&mut self) -> Result<Step, StepError> {
        if matches!(self.phase, Phase::RetryFailures(_)) && self.retry_share_used() {
            // This run's share of the retry pass is used up; the pass stays
            // saved where it is and the scan takes over.
            self.phase = Phase::Scan;
        }
        if let Some(halt) = self.halt() {
            return Ok(Step::End(self.end_for(halt)));
        }
        let key = self.lease.job_key.clone();
        let batch_size = self.options.batch_size;
        let users = match self.phase {
            Phase::RetryFailures(pass) => {
                source::failed_users_after(&self.pool, &key, pass.position, pass.until, batch_size)
                    .await
                    .map_err(StepError::at("reading recorded failures"))?
            }
            Phase::Scan => source::users_after(&self.pool, self.cursor, batch_size)
                .await
                .map_err(StepError::at("reading source users"))?,
        };
        if users.is_empty() {
            return self.phase_exhausted().await;
        }

        let retrying = matches!(self.phase, Phase::RetryFailures(_));
        if retrying {
            self.retried_before_scan = true;
        }
        let handled = self.sync_batch(&users).await;
        let mut batch = Checkpoint {
            scanned: handled.len() as i64,
            ..Default::default()
        };
        for (user, outcome) in &handled {
            match outcome {
                Outcome::Processed => {
                    batch.processed += 1;
                    batch.run.processed += 1;
                    batch.resolved.push(user.id);
                }
                Outcome::Failed(error) => {
                    batch.failed += 1;
                    batch.run.failed += 1;
                    batch.last_error = Some(format!("user {}: {error}", user.id));
                    batch.failures.push((user.id, error.clone()));
                }
                Outcome::Skipped(reason) => {
                    batch.run.skipped += 1;
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
        let last_handled = handled.last().map(|(user, _)| user.id);
        match self.phase {
            Phase::RetryFailures(pass) => {
                // A retried user was already counted as failed: move it, do not count it twice.
                batch.failed -= handled.len() as i64;
                if let Some(id) = last_handled {
                    let moved = RetryPass {
                        position: id,
                        until: pass.until,
                    };
                    self.phase = Phase::RetryFailures(moved);
                    batch.retry_pass = RetryPassUpdate::At(moved);
                }
            }
            Phase::Scan => {
                batch.cursor = last_handled;
                if last_handled.is_some() {
                    self.retried_before_scan = false;
                }
            }
        }
        batch.consecutive_failures = self.streak.load(Ordering::SeqCst);

        if !self.write_checkpoint(&batch).await? {
            return Ok(Step::LostLease);
        }
        if let Some(cursor) = batch.cursor {
            self.cursor = cursor;
        }
        if let Phase::RetryFailures(pass) = self.phase {
            self.pass = Some(pass);
        }
        tracing::debug!(job_key = %key, cursor = self.cursor, handled = handled.len(), "checkpoint");
        Ok(Step::Continue)
    }

    /// `false` when the lease was lost and nothing was written.
    async fn write_checkpoint(&self, batch: &Checkpoint) -> Result<bool, StepError> {
        store::checkpoint(
            &self.pool,
            &self.lease.job_key,
            &self.lease.token,
            self.lease.run_id,
            batch,
        )
        .await
        .map_err(StepError::at("writing the checkpoint"))
    }

    /// Nothing left in the current phase: the retry pass is done (saved as
    /// such), or the scan reached the end of the source.
    async fn phase_exhausted(&mut self) -> Result<Step, StepError> {
        match self.phase {
            Phase::RetryFailures(_) => {
                let done = Checkpoint {
                    retry_pass: RetryPassUpdate::Done,
                    consecutive_failures: self.streak.load(Ordering::SeqCst),
                    ..Default::default()
                };
                if !self.write_checkpoint(&done).await? {
                    return Ok(Step::LostLease);
                }
                self.pass = None;
                Ok(match self.options.mode {
                    Mode::FailedOnly => Step::End(RunEnd::Completed),
                    Mode::Full => {
                        self.phase = Phase::Scan;
                        Step::Continue
                    }
                })
            }
            Phase::Scan => match self.pass {
                // The scan is done before the pass: finish the pass, with no
                // time share to keep, then complete.
                Some(pass) if (self.clock)() < self.deadline => {
                    self.phase = Phase::RetryFailures(pass);
                    self.retry_share_ends = None;
                    Ok(Step::Continue)
                }
                Some(_) => Ok(Step::End(RunEnd::paused(PauseReason::MaxRuntime))),
                None => Ok(Step::End(RunEnd::Completed)),
            },
        }
    }

    /// Pauses between batches, waking early for a stop or a shutdown.
    async fn pace(&self) {
        if self.options.sleep_ms == 0 {
            return;
        }
        let sleep = tokio::time::sleep(Duration::from_millis(self.options.sleep_ms.into()));
        let deadline = tokio::time::sleep_until(self.deadline.into());
        tokio::select! {
            _ = sleep => {}
            _ = deadline => {}
            _ = self.signals.interrupted() => {}
        }
    }

    /// Runs batches until the run ends, then writes its final status.
    /// Returns how it ended, or `None` when the lease was lost (nothing of
    /// the end was written but the closing of its own audit row).
    pub async fn run(mut self) -> Option<RunEnd> {
        let key = self.lease.job_key.clone();
        let end = loop {
            match self.step().await {
                Ok(Step::Continue) => self.pace().await,
                Ok(Step::End(end)) => break end,
                Ok(Step::LostLease) => return self.exit_after_lost_lease().await,
                Err(error) if error.is_transient() => {
                    tracing::warn!(job_key = %key, "run interrupted by database trouble: {error}");
                    break RunEnd::Paused {
                        reason: PauseReason::Interrupted,
                        error: Some(format!(
                            "{error} (transient database trouble; the watchdog resumes the run)"
                        )),
                    };
                }
                Err(error) => {
                    tracing::error!(job_key = %key, "run failed: {error}");
                    break RunEnd::Failed(error.to_string());
                }
            }
        };
        if self.signals.lease_lost.is_cancelled() || !self.finish(&end).await {
            return self.exit_after_lost_lease().await;
        }
        Some(end)
    }

    async fn exit_after_lost_lease(&self) -> Option<RunEnd> {
        let key = &self.lease.job_key;
        tracing::warn!(job_key = %key, "lease lost to another run; this run exits without writing");
        if let Err(error) = store::close_run_after_lost_lease(&self.pool, self.lease.run_id).await {
            tracing::warn!(job_key = %key, "could not close the run's audit row: {error}");
        }
        None
    }

    /// Writes the run's end, retrying through transient trouble for a while;
    /// if the database stays away the lease expires and the watchdog takes
    /// the job over. `false` when the lease turned out to be lost.
    async fn finish(&self, end: &RunEnd) -> bool {
        let key = &self.lease.job_key;
        let give_up = Instant::now() + self.finish_patience;
        let mut wait = Duration::from_millis(100);
        loop {
            match store::finish_run(&self.pool, key, &self.lease.token, self.lease.run_id, end)
                .await
            {
                Ok(Some(status)) => {
                    tracing::info!(job_key = %key, ?end, ?status, cursor = self.cursor, "run finished");
                    return true;
                }
                Ok(None) => return false,
                Err(error) if is_transient(&error) && Instant::now() + wait < give_up => {
                    tracing::warn!(job_key = %key, "recording the end of the run failed, retrying: {error}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(job_key = %key, "could not record the end of the run; its lease will expire and the watchdog resumes it: {error}");
                    // Not lost: the row still names this run until the lease expires.
                    return true;
                }
            }
        }
    }
}
