//! One run of one job: the retry pass over old failures, then the scan after
//! the cursor, through a sliding window (`window.rs`) that keeps
//! `concurrency` chunks in flight across batch boundaries, one checkpoint
//! per batch of the handled prefix, and a cooperative halt.
//!
//! `Runner::step` moves the window by one batch, so tests can drive a run
//! step by step; `Runner::run` is the loop a tokio task executes.

mod throttle;
mod window;

pub use throttle::{BrakeSettings, ExternalBrake, Knobs, Throttle};

use throttle::CallOutcome;

use super::domain::{Mode, PauseReason, SkipCounts, SkipReason, StartOptions};
use super::identifiers::{GraphUser, Normalizer};
use super::sinks::{IdentityGraph, Retry, SinkError, GRAPH_REQUEST_SECONDS, MAX_ATTEMPTS};
use super::source::{self, SourceUser};
use super::store::{self, Checkpoint, RetryPass, RetryPassUpdate, RunEnd};
use super::transient::is_transient;
use sqlx::PgPool;
use std::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc,
};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use window::{Handled, Window};

/// The longest a tuned knob waits to apply inside the runner.
const TUNING_APPLIES_WITHIN: Duration = Duration::from_millis(500);

/// How long users in flight may finish after a stop or a shutdown before
/// they are dropped (a hanging Identity Graph must not hold a stop hostage).
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(250);

/// The least a window may reach past a user still in flight (four batches
/// when that is more): at 40,000 users/s, a user that answers after 200 ms
/// is overtaken by 8,000 others, and none of them should wait for it.
const MIN_WINDOW_SPAN: usize = 10_000;

/// Where a runner reads the time: `Instant::now` in production; tests pass a
/// manual clock to reach the runtime cap or the retry pass's share without
/// waiting (see [`Runner::with_clock`]).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Where a run is in its order of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Users that arrived below the cursor after the scan passed their id
    /// (the job's gaps): first, so a late user is never left behind.
    CatchUp,
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
    /// The graph held every send for longer than the hold cap.
    Throttled,
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
    /// When the heartbeat last confirmed the lease.
    pub lease_clock: LeaseClock,
}

/// When a run's lease was last confirmed, shared by its heartbeat (which
/// confirms) and its runner (which starts no user once the confirmation is
/// older than the fence). The runner reads the clock itself, so a heartbeat
/// query that hangs rather than fails still fences the run in time.
#[derive(Clone, Default)]
pub struct LeaseClock(Option<Arc<LeaseClockInner>>);

struct LeaseClockInner {
    origin: Instant,
    confirmed_ms: AtomicU64,
    fence_after: Duration,
}

impl LeaseClock {
    /// Confirmed now; stale once `fence_after` passes without a confirmation.
    pub fn new(fence_after: Duration) -> Self {
        LeaseClock(Some(Arc::new(LeaseClockInner {
            origin: Instant::now(),
            confirmed_ms: AtomicU64::new(0),
            fence_after,
        })))
    }

    /// The lease was confirmed by a heartbeat that started at `asked_at`.
    pub fn confirm(&self, asked_at: Instant) {
        if let Some(inner) = &self.0 {
            let ms = asked_at.saturating_duration_since(inner.origin).as_millis() as u64;
            inner.confirmed_ms.fetch_max(ms, Ordering::SeqCst);
        }
    }

    /// How long since the last confirmation.
    pub fn unconfirmed_for(&self) -> Duration {
        self.0.as_ref().map_or(Duration::ZERO, |inner| {
            let confirmed =
                inner.origin + Duration::from_millis(inner.confirmed_ms.load(Ordering::SeqCst));
            confirmed.elapsed()
        })
    }

    /// The lease has gone unconfirmed for the fence (half its TTL): the run
    /// must start no user, since the watchdog may soon hand the job on.
    pub fn is_stale(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|inner| self.unconfirmed_for() >= inner.fence_after)
    }
}

impl RunSignals {
    async fn interrupted(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
            _ = self.lease_lost.cancelled() => {}
        }
    }

    fn is_interrupted(&self) -> bool {
        self.fence_if_stale();
        self.stop.is_cancelled() || self.shutdown.is_cancelled() || self.lease_lost.is_cancelled()
    }

    /// Treats a lease unconfirmed for too long as lost.
    fn fence_if_stale(&self) {
        if !self.lease_lost.is_cancelled() && self.lease_clock.is_stale() {
            tracing::warn!(
                unconfirmed_ms = self.lease_clock.unconfirmed_for().as_millis() as u64,
                "lease unconfirmed for half its TTL: the run starts no more users"
            );
            self.lease_lost.cancel();
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
    /// The users of the current phase fetched, in flight or handled since
    /// the last checkpoint.
    window: Window,
    streak: Arc<AtomicU32>,
    latency: GraphLatency,
    /// How long to keep trying to record the run's end while the database is away.
    finish_patience: Duration,
    /// Turns source rows into the identifiers the graph receives.
    normalizer: Normalizer,
    /// The knobs `tune` may change, the rate limit, the hold and the
    /// in-flight limit every slot shares.
    throttle: Throttle,
}

/// One user's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Processed,
    Failed(Failure),
    Skipped(SkipReason),
    /// A dry run's user (skipped `dry-run`), with what a real run would do:
    /// write it (`None`) or skip it for this reason.
    Rehearsed(Option<SkipReason>),
}

/// Why a user failed: the short class failures are grouped by, and the
/// message an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    class: String,
    message: String,
}

impl Failure {
    fn new(class: &str, message: impl Into<String>) -> Self {
        Failure {
            class: class.to_string(),
            message: message.into(),
        }
    }
}

/// The Identity Graph's answer times for one job, by outcome
/// (`/metrics`). Registered once per run, so recording one is an atomic
/// update rather than a lookup by name and labels per call.
#[derive(Clone)]
struct GraphLatency {
    ok: metrics::Histogram,
    failed: metrics::Histogram,
}

impl GraphLatency {
    fn for_job(job_key: &str) -> Self {
        let histogram = |outcome: &'static str| metrics::histogram!(GRAPH_REQUEST_SECONDS, "job_key" => job_key.to_string(), "outcome" => outcome);
        Self {
            ok: histogram("ok"),
            failed: histogram("failed"),
        }
    }
}

/// The first pause before a user's write is tried again after a transient
/// error (doubled for each attempt).
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(200);

/// Syncs a chunk of eligible users (never one that must be skipped) with
/// the sink, and returns one outcome per user, in order.
///
/// Every call waits for the run's brake (`Throttle::admit`). A user the
/// graph throttles is sent again after the hold, without counting an
/// attempt, for as long as the run is held; only a user throttled alone for
/// longer than the hold cap, while others get through, fails (`throttled`).
/// A transient error costs an attempt, and the user fails after
/// `MAX_ATTEMPTS`. Each final outcome feeds the failure streak in id order,
/// as if the users had been written one by one. Failures while retrying
/// old failures do not feed the streak: a handful of permanently rejected
/// users must not pause every run before it reaches new users.
async fn sync_chunk(
    sink: Option<Arc<dyn IdentityGraph>>,
    streak: Arc<AtomicU32>,
    latency: GraphLatency,
    throttle: Throttle,
    users: Vec<GraphUser>,
    counts_toward_streak: bool,
) -> Vec<Outcome> {
    let Some(sink) = sink else {
        return users
            .iter()
            .map(|_| {
                Outcome::Failed(Failure::new(
                    "configuration",
                    "the Identity Graph is not configured",
                ))
            })
            .collect();
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; users.len()];
    let mut attempts = vec![0u32; users.len()];
    let mut throttled_since: Vec<Option<Instant>> = vec![None; users.len()];
    loop {
        let pending: Vec<usize> = (0..users.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let chunk: Vec<&GraphUser> = pending.iter().map(|i| &users[*i]).collect();
        throttle.admit(chunk.len()).await;
        let started = Instant::now();
        let results = {
            let _in_flight = throttle.sending(chunk.len() as u32);
            sink.write_users(&chunk).await
        };
        let elapsed = started.elapsed();
        let histogram = if results.iter().all(Result::is_ok) {
            &latency.ok
        } else {
            &latency.failed
        };
        histogram.record(elapsed.as_secs_f64());

        let mut results = results.into_iter();
        let mut call = CallOutcome::Answered;
        let mut written = 0;
        let mut pause = Duration::ZERO;
        for &i in &pending {
            let result = results.next().unwrap_or_else(|| {
                Err(SinkError::permanent(
                    "adapter",
                    format!(
                        "the Identity Graph adapter returned no outcome for user {}",
                        users[i].id
                    ),
                ))
            });
            let error = match result {
                Ok(()) => {
                    written += 1;
                    outcomes[i] = Some(Outcome::Processed);
                    continue;
                }
                Err(error) => error,
            };
            match error.retry {
                Retry::Never => {
                    outcomes[i] = Some(Outcome::Failed(Failure {
                        class: error.class,
                        message: error.message,
                    }))
                }
                Retry::Transient => {
                    attempts[i] += 1;
                    if call == CallOutcome::Answered {
                        call = CallOutcome::Trouble;
                    }
                    if attempts[i] >= MAX_ATTEMPTS {
                        outcomes[i] = Some(Outcome::Failed(Failure {
                            message: format!("{} (after {MAX_ATTEMPTS} attempts)", error.message),
                            class: error.class,
                        }));
                    } else {
                        pause = pause.max(TRANSIENT_BACKOFF * 2u32.pow(attempts[i] - 1));
                    }
                }
                Retry::Throttled { retry_after } => {
                    call = CallOutcome::Throttled { retry_after };
                    let since = *throttled_since[i].get_or_insert_with(Instant::now);
                    // Held with the whole run, the user waits; the run's
                    // own cap pauses it. Held alone, it fails at the cap.
                    if since.elapsed() > throttle.hold_cap() && !throttle.held_too_long() {
                        outcomes[i] = Some(Outcome::Failed(Failure::new(
                            "throttled",
                            format!(
                                "{} (throttled for longer than the hold cap, {} s, while other users were written)",
                                error.message,
                                throttle.hold_cap().as_secs()
                            ),
                        )));
                    }
                }
            }
        }
        throttle.observe(elapsed, call, written);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            let outcome = outcome.expect("every user has an outcome");
            if counts_toward_streak {
                match outcome {
                    Outcome::Processed => streak.store(0, Ordering::SeqCst),
                    Outcome::Failed(_) => {
                        streak.fetch_add(1, Ordering::SeqCst);
                    }
                    Outcome::Skipped(_) | Outcome::Rehearsed(_) => {}
                }
            }
            outcome
        })
        .collect()
}

/// The ids the scan found absent: between `cursor` and the first handled
/// id, and between each two handled ids that are not adjacent. A user that
/// appears there later arrived after the scan passed (`Phase::CatchUp`).
fn gaps_between(cursor: i64, handled: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    let mut gaps = Vec::new();
    let mut previous = cursor;
    for id in handled {
        if id > previous.saturating_add(1) {
            gaps.push((previous, id));
        }
        previous = id;
    }
    gaps
}

/// When a run started at `now` must end (its runtime cap), and when the retry
/// pass's share of it ends (the first half; full mode only).
fn time_limits(options: &StartOptions, now: Instant) -> (Instant, Option<Instant>) {
    let runtime = Duration::from_millis(options.max_runtime_ms);
    let retry_share_ends = (options.mode == Mode::Full).then(|| now + runtime / 2);
    (now + runtime, retry_share_ends)
}

/// A user handled without the graph: a dry run's every user (with what a
/// real run would do), or a real run's user it skips. `None`: send it.
fn classify(user: &GraphUser, dry_run: bool) -> Option<Outcome> {
    let real = real_skip(user);
    if dry_run {
        Some(Outcome::Rehearsed(real))
    } else {
        real.map(Outcome::Skipped)
    }
}

/// Why a real run skips `user`, if it does.
fn real_skip(user: &GraphUser) -> Option<SkipReason> {
    if user.deleted {
        Some(SkipReason::Deleted)
    } else if !user.has_identifiers() {
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
        let catch_up = options.mode == Mode::Full;
        let phase = match pass {
            _ if catch_up => Phase::CatchUp,
            Some(pass) => Phase::RetryFailures(pass),
            None => Phase::Scan,
        };
        let window = Window::after(match phase {
            Phase::CatchUp => 0,
            Phase::RetryFailures(pass) => pass.position,
            Phase::Scan => position.cursor,
        });
        let latency = GraphLatency::for_job(&lease.job_key);
        let throttle = Throttle::for_run(&options, BrakeSettings::default());
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
            phase,
            retried_before_scan: false,
            pass,
            window,
            streak: Arc::new(AtomicU32::new(0)),
            latency,
            finish_patience: Duration::from_secs(10),
            normalizer: Normalizer::default(),
            throttle,
        }
    }

    /// The run's brake: for the heartbeat and `tune` to change its knobs,
    /// and to report its figures.
    pub fn throttle(&self) -> Throttle {
        self.throttle.clone()
    }

    /// The hold cap and the replica's external brake (the default: five
    /// minutes, and no external brake).
    pub fn with_brake(mut self, settings: BrakeSettings) -> Self {
        self.throttle = Throttle::for_run(&self.options, settings);
        self
    }

    /// Normalizes identifiers with `normalizer` (its phone region) instead
    /// of the default, which reads no national phone numbers.
    pub fn with_normalizer(mut self, normalizer: Normalizer) -> Self {
        self.normalizer = normalizer;
        self
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
        self.signals.fence_if_stale();
        if self.signals.stop.is_cancelled() || self.signals.lease_lost.is_cancelled() {
            Some(Halt::Stop)
        } else if self.signals.shutdown.is_cancelled() {
            Some(Halt::Shutdown)
        } else if self.streak.load(Ordering::SeqCst) >= self.options.max_consecutive_failures {
            Some(Halt::Streak)
        } else if self.throttle.held_too_long() {
            Some(Halt::Throttled)
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
            Phase::CatchUp | Phase::Scan => true,
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
            Halt::Throttled => RunEnd::Paused {
                reason: PauseReason::Throttled,
                error: Some(format!(
                    "the Identity Graph held every send for longer than the hold cap ({} s) with no write getting through; the watchdog resumes the run",
                    self.throttle.hold_cap().as_secs()
                )),
            },
        }
    }

    /// The page after the window's reach: recorded failures in the retry
    /// pass, source users in the scan.
    async fn fetch_page(&self) -> Result<Vec<GraphUser>, StepError> {
        let rows = self.fetch_rows().await?;
        Ok(rows
            .into_iter()
            .map(|row| self.normalizer.user(row))
            .collect())
    }

    async fn fetch_rows(&self) -> Result<Vec<SourceUser>, StepError> {
        let after = self.window.fetched_through();
        let batch_size = self.options.batch_size;
        match self.phase {
            Phase::CatchUp => {
                source::late_users_after(&self.pool, &self.lease.job_key, after, batch_size)
                    .await
                    .map_err(StepError::at("reading users that arrived below the cursor"))
            }
            Phase::RetryFailures(pass) => {
                let filter = self.options.failure_filter.clone().unwrap_or_default();
                source::failed_users_after(
                    &self.pool,
                    &self.lease.job_key,
                    &filter,
                    after,
                    pass.until,
                    batch_size,
                )
                .await
                .map_err(StepError::at("reading recorded failures"))
            }
            Phase::Scan => source::users_after(&self.pool, after, batch_size)
                .await
                .map_err(StepError::at("reading source users")),
        }
    }

    /// Moves the window until a batch's worth of users is handled, or the
    /// run cannot go on (a halt, the end of the phase), and returns the
    /// handled prefix for the checkpoint.
    ///
    /// Up to `concurrency` chunks stay in flight across batch boundaries, and
    /// the next page is fetched while the last chunks of the current one are
    /// in flight. Users that must be skipped never reach the sink; eligible
    /// ones go to it in chunks, in id order (one user per chunk for the HTTP
    /// graph, up to the sink's preferred chunk for the built-in one). No user
    /// is started once a halt is due. The streak and the runtime cap let the
    /// chunks in flight finish; a stop, a shutdown or a lost lease gives them
    /// a short grace and then drops them, and every user of a dropped chunk
    /// is unhandled — so the prefix, and the checkpoint, stops before it.
    async fn advance_window(&mut self) -> Result<Vec<Handled>, StepError> {
        let batch = self.options.batch_size.max(1) as usize;
        let preferred = self.sink.as_ref().map_or(1, |sink| sink.preferred_chunk());
        // How far past a slow user the window may reach before it waits for
        // it: bounds the users held in memory, not the run's speed.
        let max_span = (4 * batch).max(MIN_WINDOW_SPAN);
        let counts_toward_streak = matches!(self.phase, Phase::CatchUp | Phase::Scan);
        let dry_run = self.options.dry_run;
        loop {
            // Users held past the cap never finish by themselves, and a run
            // that must end does not wait out a hold: they are dropped like
            // a stop's, unhandled, and the next run sends them.
            let halting_while_held = self.throttle.is_holding() && self.halt().is_some();
            if self.signals.is_interrupted() || self.throttle.held_too_long() || halting_while_held
            {
                self.drop_in_flight_after_grace().await;
                break;
            }
            if self.window.handled_prefix() >= batch {
                break;
            }
            // Read each time round: `tune` may change the concurrency, and
            // adaptive mode the in-flight limit, while the run goes.
            let limit = self.throttle.in_flight_limit().max(1) as usize;
            let concurrency = self.throttle.knobs().concurrency.max(1) as usize;
            let chunk_size = preferred.min(batch.div_ceil(concurrency)).max(1);
            // Fetch ahead while the chunks in flight could still drain the queue.
            let fetch_below = limit * chunk_size;
            while self.window.in_flight() < limit
                && self.window.span() < max_span
                && self.window.handled_prefix() < batch
                && self.may_start_user()
            {
                if self.window.unstarted() < fetch_below && !self.window.exhausted() {
                    let page = self.fetch_page().await?;
                    self.window.push_page(page);
                }
                if self.window.unstarted() == 0 {
                    break;
                }
                let chunk = self
                    .window
                    .take_chunk(chunk_size, batch, |user| classify(user, dry_run));
                if chunk.is_empty() {
                    continue;
                }
                let (seqs, users): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
                let write = sync_chunk(
                    self.sink.clone(),
                    self.streak.clone(),
                    self.latency.clone(),
                    self.throttle.clone(),
                    users,
                    counts_toward_streak,
                );
                self.window.spawn(seqs, write);
            }
            if self.window.in_flight() == 0 {
                break;
            }
            tokio::select! {
                () = self.window.next_done() => {}
                () = self.signals.interrupted() => {}
                // A tuned concurrency applies within a second even while
                // every chunk in flight is slow.
                () = tokio::time::sleep(TUNING_APPLIES_WITHIN) => {}
            }
        }
        Ok(self.window.take_prefix())
    }

    /// After a stop or a shutdown, users in flight get a short grace (none
    /// after a lost lease: another run owns the job); the rest are dropped.
    async fn drop_in_flight_after_grace(&mut self) {
        if !self.signals.lease_lost.is_cancelled() {
            let window = &mut self.window;
            let _ = tokio::time::timeout(IN_FLIGHT_GRACE, async {
                while window.in_flight() > 0 {
                    window.next_done().await;
                }
            })
            .await;
        }
        self.window.abort_in_flight();
    }

    /// Starts a phase with an empty window at its saved position.
    fn enter_phase(&mut self, phase: Phase) {
        self.window.abort_in_flight();
        self.window = Window::after(match phase {
            Phase::CatchUp => 0,
            Phase::RetryFailures(pass) => pass.position,
            Phase::Scan => self.cursor,
        });
        self.phase = phase;
    }

    /// Moves the window by one batch and checkpoints it. The "one step" of
    /// the loop: users in flight at its end keep going into the next step.
    /// A catch-up that finds no late arrival takes no step of its own.
    pub async fn step(&mut self) -> Result<Step, StepError> {
        loop {
            let catching_up = self.phase == Phase::CatchUp;
            let step = self.step_in_phase().await?;
            let caught_up = catching_up && self.phase != Phase::CatchUp;
            if !(caught_up && step == Step::Continue) {
                return Ok(step);
            }
        }
    }

    async fn step_in_phase(&mut self) -> Result<Step, StepError> {
        if matches!(self.phase, Phase::RetryFailures(_))
            && self.retry_share_used()
            && self.window.is_idle()
        {
            // This run's share of the retry pass is used up; the pass stays
            // saved where it is and the scan takes over.
            self.enter_phase(Phase::Scan);
        }
        if self.window.is_idle() {
            if let Some(halt) = self.halt() {
                return Ok(Step::End(self.end_for(halt)));
            }
        }
        let key = self.lease.job_key.clone();
        let handled = self.advance_window().await?;
        if handled.is_empty() {
            if let Some(halt) = self.halt() {
                return Ok(Step::End(self.end_for(halt)));
            }
            if self.window.is_done() {
                return self.phase_exhausted().await;
            }
            return Ok(Step::Continue);
        }

        if matches!(self.phase, Phase::RetryFailures(_)) {
            self.retried_before_scan = true;
        }
        let mut batch = Checkpoint {
            scanned: handled.len() as i64,
            ..Default::default()
        };
        let first_time = matches!(self.phase, Phase::CatchUp | Phase::Scan);
        for Handled {
            id: user_id,
            outcome,
            dropped,
        } in &handled
        {
            if first_time {
                for value in dropped {
                    *batch.dropped.entry(value.to_string()).or_default() += 1;
                }
            }
            match outcome {
                Outcome::Processed => {
                    batch.processed += 1;
                    batch.run.processed += 1;
                    batch.resolved.push(*user_id);
                }
                Outcome::Failed(failure) => {
                    batch.failed += 1;
                    batch.run.failed += 1;
                    batch.last_error = Some(format!("user {user_id}: {}", failure.message));
                    batch.failures.push(store::NewFailure {
                        user_id: *user_id,
                        class: failure.class.clone(),
                        message: failure.message.clone(),
                    });
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
                        batch.resolved.push(*user_id);
                    }
                }
                Outcome::Rehearsed(would) => {
                    batch.run.skipped += 1;
                    batch.skipped.dry_run += 1;
                    match would {
                        None => batch.would.write += 1,
                        Some(SkipReason::Deleted) => batch.would.skip_deleted += 1,
                        Some(SkipReason::NoIdentifiers) => batch.would.skip_no_identifiers += 1,
                        Some(SkipReason::DryRun) => {}
                    }
                }
            }
        }
        let last_handled = handled.last().map(|user| user.id);
        match self.phase {
            Phase::CatchUp => {
                batch.caught_up = handled.iter().map(|user| user.id).collect();
            }
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
                batch.gaps = gaps_between(self.cursor, handled.iter().map(|user| user.id));
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
            Phase::CatchUp => {
                self.enter_phase(self.pass.map_or(Phase::Scan, Phase::RetryFailures));
                Ok(Step::Continue)
            }
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
                        self.enter_phase(Phase::Scan);
                        Step::Continue
                    }
                })
            }
            Phase::Scan => match self.pass {
                // The scan is done before the pass: finish the pass, with no
                // time share to keep, then complete.
                Some(pass) if (self.clock)() < self.deadline => {
                    self.enter_phase(Phase::RetryFailures(pass));
                    self.retry_share_ends = None;
                    Ok(Step::Continue)
                }
                Some(_) => Ok(Step::End(RunEnd::paused(PauseReason::MaxRuntime))),
                None => Ok(Step::End(RunEnd::Completed)),
            },
        }
    }

    /// Pauses `sleep_ms` between batches, waking early for a stop or a
    /// shutdown; a tuned `sleep_ms` applies within a second.
    async fn pace(&self) {
        let started = tokio::time::Instant::now();
        loop {
            let sleep_ms = self.throttle.knobs().sleep_ms;
            let until = started + Duration::from_millis(sleep_ms.into());
            let now = tokio::time::Instant::now();
            if until <= now {
                return;
            }
            let nap = tokio::time::sleep((until - now).min(TUNING_APPLIES_WITHIN));
            let deadline = tokio::time::sleep_until(self.deadline.into());
            tokio::select! {
                _ = nap => {}
                _ = deadline => return,
                _ = self.signals.interrupted() => return,
            }
        }
    }

    /// Runs batches until the run ends, then writes its final status.
    /// Returns how it ended, or `None` when the lease was lost (nothing of
    /// the end was written but the closing of its own audit row).
    pub async fn run(mut self) -> Option<RunEnd> {
        let key = self.lease.job_key.clone();
        let end = loop {
            let step = self.step().await;
            if !matches!(step, Ok(Step::Continue)) {
                // Nothing written after the run's end: its chunks in flight
                // are unhandled, and the next run writes them again.
                self.window.abort_in_flight();
            }
            match step {
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
