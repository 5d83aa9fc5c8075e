//! The engine: starts and stops runs, answers the API, and keeps the
//! in-memory map of the runs live in this process.
//!
//! - [`lease`]: the token that names one run, and its heartbeat;
//! - [`watchdog`]: interrupts expired leases and resumes paused runs;
//! - [`coverage_check`]: the coverage check, once per run end, in the background.
//!
//! Postgres coordinates the replicas; the engine only knows about the runs
//! in its own process.
//!
//! The engine's own work — runs, their heartbeats, the watchdog — runs on the
//! runtime a [`RunExecutor`] names, with that executor's pool; the API's
//! queries (`start`'s claim, `stop`, `list`, `detail`) use the pool of the
//! caller's runtime. The server gives the engine a multi-thread runtime of its
//! own, so runs at full speed do not queue behind page renders on the
//! console's single thread, nor the console behind them.

mod coverage_check;
mod lease;
mod notifier;
mod throttle_signal;
mod watchdog;

pub use coverage_check::CheckFailure;
pub use notifier::NotifySettings;
pub use throttle_signal::ThrottleSignal;

use super::domain::*;
use super::identifiers::Normalizer;
use super::runner::{
    BrakeSettings, ExternalBrake, Knobs, Lease, LeaseClock, Position, RunSignals, Runner, Throttle,
};
use super::sinks::{GraphBinding, IdentityGraph};
use super::store::{self, JobRow, RunEnd};
use crate::error::AppError;
use crate::request_context::internal_error;
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

/// What the engine takes from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How often the watchdog looks for expired leases and paused runs.
    pub watchdog_interval: Duration,
    /// How long a run's lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// The runtime cap a start gets when it names none.
    pub ui_runtime_cap_ms: u64,
    /// The longest any one engine statement may run (the engine's pool
    /// sets it on its connections; kept here for the log and the docs).
    pub statement_timeout: Duration,
    /// How source rows become identifiers (`IDENTITY_GRAPH_PHONE_REGION`).
    pub normalizer: Normalizer,
    /// `IDENTITY_GRAPH_HOLD_CAP_MS`: a run the graph holds this long with no
    /// write getting through pauses (`throttled`).
    pub hold_cap: Duration,
    /// `IDENTITY_GRAPH_THROTTLE_URL`: polled, when set; anything but 2xx
    /// holds every run of this replica.
    pub throttle_signal: Option<ThrottleSignal>,
    /// `NOTIFY_WEBHOOK_URL` and how the notifier delivers to it.
    pub notify: NotifySettings,
    /// `COVERAGE_CHECK_TIMEOUT_MS`: the longest one statement of the
    /// background coverage check may run.
    pub coverage_check_timeout: Duration,
    /// `CONSOLE_STATEMENT_TIMEOUT_MS`: the longest one statement of the
    /// console's (`list`, `job`, `start`'s claim, `stop`, `tune`) may run.
    pub console_statement_timeout: Duration,
}

/// Where the engine's background work runs, and the pool it uses there.
///
/// A tokio socket is driven by the reactor of the runtime that opened it, and
/// sqlx opens a pool's connections inside whichever task acquires one. So the
/// pool given here must be opened on `handle`'s runtime and used only by the
/// engine's tasks; otherwise every query of a run would wait for the other
/// runtime's thread to poll its socket.
#[derive(Clone)]
pub struct RunExecutor {
    pub handle: tokio::runtime::Handle,
    pub pool: PgPool,
}

impl RunExecutor {
    /// Everything on the caller's runtime, with one pool: what tests and
    /// tools that need no separate runtime use.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current(pool: PgPool) -> Self {
        Self {
            handle: tokio::runtime::Handle::current(),
            pool,
        }
    }
}

struct LiveRun {
    run_id: i64,
    signals: RunSignals,
    throttle: Throttle,
    /// Cancelled when the run's task has finished.
    done: CancellationToken,
    task: tokio::task::AbortHandle,
}

struct Inner {
    /// For the API's queries, on the caller's runtime.
    pool: PgPool,
    /// Runs, heartbeats and the watchdog: spawned on its runtime, querying its pool.
    executor: RunExecutor,
    settings: EngineSettings,
    sink: Option<Arc<dyn IdentityGraph>>,
    replica_id: String,
    live: Mutex<HashMap<String, LiveRun>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Wakes the watchdog before its interval, e.g. after a run paused on
    /// transient database trouble.
    watchdog_wake: Notify,
    /// Jobs bound to another graph that the watchdog has said it leaves alone
    /// (it says so once per job).
    foreign_jobs_logged: Mutex<std::collections::HashSet<String>>,
    /// Held while the throttle URL says so; every run of this replica obeys it.
    external_brake: ExternalBrake,
    /// The coverage checks running in this process, one per job at most.
    coverage_checks: coverage_check::CoverageChecks,
}

/// Rows per query of the CSV export: big enough that the export is not a
/// query per row, small enough that its memory stays a few megabytes.
const EXPORT_PAGE_ROWS: i64 = 5_000;

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// `sink` is `None` when no Identity Graph is configured: real runs are
    /// refused and the watchdog resumes nothing. A sink that holds a pool
    /// (the built-in graph) should hold `executor`'s, since runs call it.
    pub fn new(
        pool: PgPool,
        executor: RunExecutor,
        settings: EngineSettings,
        sink: Option<Arc<dyn IdentityGraph>>,
        shutdown: CancellationToken,
    ) -> Self {
        let external_brake = ExternalBrake::default();
        if let Some(signal) = settings.throttle_signal.clone() {
            let (brake, until) = (external_brake.clone(), shutdown.clone());
            executor.handle.spawn(
                throttle_signal::poll(signal, brake, until)
                    .instrument(tracing::info_span!("throttle_url")),
            );
        }
        if settings.notify.webhook_url.is_some() {
            executor.handle.spawn(
                notifier::deliver(
                    executor.pool.clone(),
                    settings.notify.clone(),
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("notifier")),
            );
        }
        Self {
            inner: Arc::new(Inner {
                pool,
                executor,
                settings,
                sink,
                replica_id: lease::replica_id(),
                live: Mutex::new(HashMap::new()),
                shutdown,
                tasks: TaskTracker::new(),
                watchdog_wake: Notify::new(),
                foreign_jobs_logged: Mutex::new(Default::default()),
                external_brake,
                coverage_checks: Default::default(),
            }),
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// The Identity Graph this replica writes to, if one is configured.
    pub fn graph(&self) -> Option<GraphBinding> {
        self.inner.sink.as_ref().map(|sink| sink.binding())
    }

    /// Maps a console query's error: a statement timeout or no free
    /// connection is `UNAVAILABLE` naming what timed out; anything else is
    /// `INTERNAL` (logged, only the request id shown).
    fn console_error(&self, doing: &'static str) -> impl Fn(sqlx::Error) -> AppError + '_ {
        move |error| console_error(doing, self.console_timeout(), error)
    }

    fn console_timeout(&self) -> Duration {
        self.inner.settings.console_statement_timeout
    }

    fn runtime_default(&self) -> u64 {
        self.inner.settings.ui_runtime_cap_ms
    }

    /// Runs active in this process (the "Active Runs" card).
    pub fn active_runs(&self) -> usize {
        self.inner.live.lock().expect("live map lock").len()
    }

    /// Calls `f` with the run of `job_key` live in this process, if any.
    fn with_live_run(&self, job_key: &str, f: impl FnOnce(&LiveRun)) {
        if let Some(live) = self.inner.live.lock().expect("live map lock").get(job_key) {
            f(live);
        }
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
        let (options, adjustments) = request.resolve(self.runtime_default())?;
        let pool = &self.inner.pool;
        let key = options.job_key.as_str().to_string();
        let db = self.console_error("starting a run");
        if let Some(existing) = store::get_job(pool, &key).await.map_err(&db)? {
            self.check_startable(&existing, &options)?;
        }
        if !options.dry_run && self.inner.sink.is_none() {
            return Err(AppError::identity_graph_not_configured());
        }
        // A real run binds the job to this replica's graph; a dry run writes nowhere.
        let graph = self
            .graph()
            .filter(|_| !options.dry_run)
            .map(|graph| graph.as_str().to_string());
        let token = self.new_lease_token();
        let mut tx = store::bounded(pool, self.console_timeout())
            .await
            .map_err(&db)?;
        let claimed = store::claim_for_start(&mut tx, &options, &token, actor, graph.as_deref())
            .await
            .map_err(&db)?;
        let Some(row) = claimed else {
            tx.rollback().await.map_err(&db)?;
            let row = store::get_job(pool, &key)
                .await
                .map_err(&db)?
                .ok_or_else(|| internal_error("starting a run", "claim refused but no row"))?;
            if row.status().is_some_and(JobStatus::is_active) {
                return Ok(StartResponse {
                    started: false,
                    running: true,
                    job: row.to_job(self.runtime_default()),
                    adjustments,
                });
            }
            // The row changed between the check and the claim: say why now.
            self.check_startable(&row, &options)?;
            return Err(AppError::validation(
                "job_key",
                format!("job {key} changed while starting; try again"),
            ));
        };
        let run_id = store::insert_run(&mut tx, &key, "operator", Some(actor), &token, &options)
            .await
            .map_err(&db)?;
        tx.commit().await.map_err(&db)?;
        tracing::info!(job_key = %key, %actor, dry_run = options.dry_run, "run started");
        self.spawn(&row, options, run_id, token);
        Ok(StartResponse {
            started: true,
            running: true,
            job: row.to_job(self.runtime_default()),
            adjustments,
        })
    }

    /// Refuses a start that would touch a retired row, switch a job between
    /// dry and real, or run on options nobody can read.
    fn check_startable(&self, existing: &JobRow, options: &StartOptions) -> Result<(), AppError> {
        let key = &existing.job_key;
        let status = match existing.status() {
            None | Some(JobStatus::Archived) => {
                return Err(AppError::validation(
                    "job_key",
                    format!(
                        "job {key} is retired (status {}); start a run under a new key",
                        existing.status.as_str()
                    ),
                ))
            }
            Some(status) => status,
        };
        if status.is_active() {
            return Ok(());
        }
        if let (Some(bound), Some(mine)) = (&existing.graph, self.graph()) {
            if !options.dry_run && !options.reset_cursor && bound != mine.as_str() {
                return Err(AppError::validation(
                    "job_key",
                    format!(
                        "job {key} writes to the Identity Graph {bound}, but this replica is configured for {mine}; start it on a replica configured for {bound}, or start a fresh pass (reset_cursor) to rebind it to {mine}"
                    ),
                ));
            }
        }
        if existing.dry_run != options.dry_run {
            return Err(AppError::validation(
                "job_key",
                format!(
                    "job {key} holds a {}; use a key of its own for a {}",
                    if existing.dry_run {
                        "dry run"
                    } else {
                        "real run"
                    },
                    if options.dry_run {
                        "dry run"
                    } else {
                        "real run"
                    },
                ),
            ));
        }
        if let Err(reason) = existing.effective_options(self.runtime_default()) {
            if !options.reset_cursor {
                return Err(AppError::validation(
                    "job_key",
                    format!(
                        "job {key} cannot be read: {reason}. Start it with reset_cursor to rewrite its options and scan from the beginning"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A cooperative stop. A run on this replica sees it within one user; a
    /// run elsewhere sees it at its next heartbeat poll (about a second).
    pub async fn stop(&self, job_key: &str, actor: &str) -> Result<StopResponse, AppError> {
        let key = JobKey::parse_existing(job_key)?;
        let db = self.console_error("stopping a run");
        let pool = &self.inner.pool;
        let row = match store::request_stop(pool, key.as_str(), actor, self.console_timeout())
            .await
            .map_err(&db)?
        {
            Some(row) => {
                tracing::info!(job_key = %key, %actor, status = row.status.as_str(), "stop requested");
                row
            }
            None => shown(store::get_job(pool, key.as_str()).await.map_err(&db)?, &key)?,
        };
        self.with_live_run(key.as_str(), |live| live.signals.stop.cancel());
        Ok(StopResponse {
            job: row.to_job(self.runtime_default()),
        })
    }

    /// Changes a running job's knobs (`max_rate`, `concurrency`,
    /// `sleep_ms`). A run on this replica applies them at once; a run on
    /// another replica reads them from the row at its next heartbeat poll
    /// (within a second).
    pub async fn tune(&self, request: &TuneRequest, actor: &str) -> Result<TuneResponse, AppError> {
        let key = JobKey::parse_existing(&request.job_key)?;
        let mut knobs: Vec<(&'static str, i64)> = Vec::new();
        let mut adjustments = Vec::new();
        for (option, sent) in [
            (&MAX_RATE, &request.max_rate),
            (&CONCURRENCY, &request.concurrency),
            (&SLEEP_MS, &request.sleep_ms),
        ] {
            let Some(sent) = sent else { continue };
            let value = sent.as_i64().ok_or_else(|| {
                AppError::validation(
                    option.field,
                    format!("{} must be a whole number, not {sent}", option.field),
                )
            })?;
            knobs.push((
                option.field,
                option.clamp_reporting(value, &mut adjustments),
            ));
        }
        if knobs.is_empty() {
            return Err(AppError::validation(
                "max_rate",
                "nothing to tune: send max_rate, concurrency or sleep_ms",
            ));
        }
        let db = self.console_error("tuning a run");
        let runtime_default = self.runtime_default();
        let current = |row: &JobRow| match row.effective_options(runtime_default) {
            Ok(options) => vec![
                (MAX_RATE.field, (MAX_RATE.effective)(&options)),
                (CONCURRENCY.field, (CONCURRENCY.effective)(&options)),
                (SLEEP_MS.field, (SLEEP_MS.effective)(&options)),
            ],
            Err(_) => Vec::new(),
        };
        let tuned = store::tune(
            &self.inner.pool,
            key.as_str(),
            &knobs,
            current,
            actor,
            self.console_timeout(),
        )
        .await
        .map_err(db)?;
        let (row, changes) = match tuned {
            store::Tuned::Changed { row, changes } => (row, changes),
            store::Tuned::NoSuchJob => {
                return Err(AppError::not_found(format!("there is no job {key}")))
            }
            store::Tuned::NotRunning(row) => {
                return Err(AppError::validation(
                    "job_key",
                    format!(
                        "job {key} is {}, not running: tune changes a running job; start it with the new values instead",
                        row.status.as_str()
                    ),
                ))
            }
        };
        let job = row.to_job(runtime_default);
        self.with_live_run(key.as_str(), |live| {
            live.throttle.set(Knobs::of(&job.options));
        });
        tracing::info!(job_key = %key, %actor, ?knobs, "run tuned");
        Ok(TuneResponse {
            job,
            adjustments,
            changes,
        })
    }

    pub async fn list(&self) -> Result<ListResponse, AppError> {
        let db = self.console_error("listing jobs");
        let mut tx = store::bounded(&self.inner.pool, self.console_timeout())
            .await
            .map_err(&db)?;
        let rows = store::list_jobs(&mut *tx).await.map_err(&db)?;
        tx.commit().await.map_err(&db)?;
        let mut jobs: Vec<Job> = rows
            .iter()
            .map(|row| row.to_job(self.runtime_default()))
            .collect();
        self.attach_runs(&mut jobs, |job| job.status.is_active())
            .await
            .map_err(&db)?;
        Ok(ListResponse {
            summary: Summary {
                jobs: rows.len() as i64,
                active_runs: self.active_runs() as i64,
                default_batch_size: BATCH_SIZE.bounds.default as u32,
                ui_runtime_cap_ms: self.inner.settings.ui_runtime_cap_ms,
            },
            jobs,
        })
    }

    /// A keyset page of the job's unresolved failures under a filter,
    /// bounded by the console's statement timeout like `job`.
    pub async fn failures(&self, request: &FailuresRequest) -> Result<FailuresPage, AppError> {
        let key = JobKey::parse_existing(&request.job_key)?;
        let filter = FailureFilter::parse(request.class.as_deref(), request.q.as_deref())?;
        let limit = failures_page_size(request.limit)?;
        let after = request.after_user_id.unwrap_or(0);
        let db = self.console_error("reading failures");
        let (mut tx, _) = self.read_shown_job(&key, "reading failures").await?;
        let failures = store::failures_page(&mut *tx, key.as_str(), &filter, after, limit)
            .await
            .map_err(&db)?;
        tx.commit().await.map_err(&db)?;
        let next_after_user_id = (failures.len() as i64 == limit)
            .then(|| failures.last().map(|f| f.user_id))
            .flatten();
        Ok(FailuresPage {
            failures,
            next_after_user_id,
        })
    }

    /// The job's unresolved failures under a filter, as a stream of pages
    /// for the CSV export; the job must exist.
    pub async fn export_failures(
        &self,
        job_key: &str,
        filter: FailureFilter,
    ) -> Result<
        impl futures::Stream<Item = Result<Vec<FailureRecord>, sqlx::Error>> + Send + 'static,
        AppError,
    > {
        let key = self.existing_job(job_key).await?;
        Ok(store::stream_failures(
            self.inner.pool.clone(),
            key.as_str().to_string(),
            filter,
            EXPORT_PAGE_ROWS,
            self.console_timeout(),
        ))
    }

    /// The key of a job that exists and is not archived, or `NOT_FOUND`.
    async fn existing_job(&self, job_key: &str) -> Result<JobKey, AppError> {
        let key = JobKey::parse_existing(job_key)?;
        self.read_shown_job(&key, "reading the job").await?;
        Ok(key)
    }

    /// Opens a console transaction (every statement bounded by
    /// `CONSOLE_STATEMENT_TIMEOUT_MS`) and reads the job in it: one that
    /// exists and is not archived, or `NOT_FOUND`.
    async fn read_shown_job(
        &self,
        key: &JobKey,
        doing: &'static str,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, JobRow), AppError> {
        let db = self.console_error(doing);
        let mut tx = store::bounded(&self.inner.pool, self.console_timeout())
            .await
            .map_err(&db)?;
        let row = shown(
            store::get_job(&mut *tx, key.as_str()).await.map_err(&db)?,
            key,
        )?;
        Ok((tx, row))
    }

    /// Fills each job's `last_run`, and the latest run's chart for the jobs
    /// `charted` picks.
    async fn attach_runs(
        &self,
        jobs: &mut [Job],
        charted: impl Fn(&Job) -> bool,
    ) -> Result<(), sqlx::Error> {
        let pool = &self.inner.pool;
        let keys: Vec<String> = jobs.iter().map(|job| job.job_key.clone()).collect();
        let mut last_runs: std::collections::HashMap<String, RunRecord> =
            store::last_runs(pool, &keys).await?.into_iter().collect();
        for job in jobs.iter_mut() {
            job.last_run = last_runs.remove(&job.job_key);
        }
        let run_ids: Vec<i64> = jobs
            .iter()
            .filter(|job| charted(job))
            .filter_map(|job| job.last_run.as_ref().map(|run| run.id))
            .collect();
        if run_ids.is_empty() {
            return Ok(());
        }
        for sample in store::run_samples(pool, &run_ids).await? {
            if let Some(job) = jobs.iter_mut().find(|job| {
                job.last_run
                    .as_ref()
                    .is_some_and(|run| run.id == sample.run_id)
            }) {
                job.samples.push(sample);
            }
        }
        Ok(())
    }

    /// One job in full. Every statement is bounded by the console's
    /// statement timeout; the coverage shown is the stored check (see
    /// [`Engine::check_coverage`]), never counted here.
    pub async fn detail(&self, job_key: &str) -> Result<JobDetail, AppError> {
        let key = JobKey::parse_existing(job_key)?;
        let db = self.console_error("reading the job");
        let (mut tx, row) = self.read_shown_job(&key, "reading the job").await?;
        let mut job = row.to_job(self.runtime_default());
        self.attach_runs(std::slice::from_mut(&mut job), |_| true)
            .await
            .map_err(&db)?;
        let idle = !(job.status.is_active() || job.status == JobStatus::Unreadable);
        let detail = JobDetail {
            coverage: row.stored_coverage().filter(|_| idle),
            coverage_checking: self.inner.coverage_checks.is_running(key.as_str()),
            coverage_error: row.coverage_error.clone().filter(|_| idle),
            recent_failures: store::recent_failures(&mut *tx, key.as_str(), 50)
                .await
                .map_err(&db)?,
            unresolved_failures: store::unresolved_failure_count(&mut *tx, key.as_str())
                .await
                .map_err(&db)?,
            runs: store::recent_runs(&mut *tx, key.as_str(), HISTORY_RUNS + 1)
                .await
                .map_err(&db)?,
            tunings: store::recent_tunings(&mut *tx, key.as_str(), HISTORY_TUNINGS + 1)
                .await
                .map_err(&db)?,
            failure_classes: store::failure_classes(&mut *tx, key.as_str())
                .await
                .map_err(&db)?,
            notifications: store::recent_notifications(
                &mut *tx,
                key.as_str(),
                HISTORY_NOTIFICATIONS + 1,
            )
            .await
            .map_err(&db)?,
            webhook_configured: self.inner.settings.notify.webhook_url.is_some(),
            job,
        };
        tx.commit().await.map_err(&db)?;
        Ok(detail)
    }

    /// "Check again": runs the job's coverage check now, in the background
    /// on the engine's pool, and waits for its result (stored on the job).
    /// A check of the same job already running in this process is joined,
    /// not repeated.
    pub async fn check_coverage(&self, job_key: &str) -> Result<Coverage, AppError> {
        let key = JobKey::parse_existing(job_key)?;
        let (tx, row) = self.read_shown_job(&key, "reading the job").await?;
        tx.commit()
            .await
            .map_err(self.console_error("reading the job"))?;
        let job = row.to_job(self.runtime_default());
        if job.status.is_active() {
            return Err(AppError::validation(
                "job_key",
                format!(
                    "job {key} is {}: its figures move while a run is active, so it is checked when the run ends",
                    job.status
                ),
            ));
        }
        if job.status == JobStatus::Unreadable {
            return Err(AppError::validation(
                "job_key",
                format!("job {key} cannot be read by this version, so it cannot be checked"),
            ));
        }
        self.coverage_check(key.as_str())
            .await
            .map_err(|failure| match failure {
                CheckFailure::TimedOut(_) | CheckFailure::Busy(_) | CheckFailure::Overtaken => {
                    AppError::unavailable(format!(
                        "The coverage check of {key}: {}.",
                        failure.describe()
                    ))
                }
                CheckFailure::Active => {
                    AppError::validation("job_key", format!("job {key}: {}", failure.describe()))
                }
                CheckFailure::NoSuchJob => AppError::not_found(format!("there is no job {key}")),
                CheckFailure::ShuttingDown => AppError::unavailable(format!(
                    "The coverage check of {key} was cut short: {}; try again.",
                    failure.describe()
                )),
                CheckFailure::Database(cause) => internal_error("checking coverage", cause),
            })
    }

    /// Coverage checks this engine has run so far, each counting the source
    /// once; one that took another replica's result is not counted.
    pub fn coverage_checks_begun(&self) -> u64 {
        self.inner.coverage_checks.begun()
    }

    fn spawn(&self, row: &JobRow, options: StartOptions, run_id: i64, token: String) {
        let key = row.job_key.clone();
        let signals = RunSignals {
            stop: CancellationToken::new(),
            shutdown: self.inner.shutdown.child_token(),
            lease_lost: CancellationToken::new(),
            lease_clock: LeaseClock::new(self.inner.settings.lease_ttl / 2),
        };
        let lease = Lease {
            job_key: key.clone(),
            token,
            run_id,
        };
        let position = Position {
            cursor: row.cursor,
            retry_pass: row.retry_position.map(|position| store::RetryPass {
                position,
                until: row.retry_until.unwrap_or(row.cursor),
            }),
        };
        let runner = Runner::new(
            self.inner.executor.pool.clone(),
            self.inner.sink.clone(),
            options,
            lease.clone(),
            position,
            signals.clone(),
        )
        .with_finish_patience(self.inner.settings.lease_ttl / 2)
        .with_normalizer(self.inner.settings.normalizer)
        .with_brake(BrakeSettings {
            hold_cap: self.inner.settings.hold_cap,
            external: self.inner.external_brake.clone(),
        });
        let throttle = runner.throttle();
        let heartbeat = self.heartbeat(lease, signals.clone(), throttle.clone());
        let engine = self.clone();
        let span = tracing::info_span!("job", job_key = %key, run_id);
        let task_key = key.clone();
        let done = CancellationToken::new();
        let done_on_exit = done.clone();
        // Holding the lock across spawn + insert means the task's own removal
        // (which takes the lock) cannot run before the entry exists.
        let mut live = self.inner.live.lock().expect("live map lock");
        let handle = self.inner.tasks.spawn_on(
            async move {
                let done_guard = done_on_exit.drop_guard();
                let end = tokio::select! {
                    end = runner.run() => end,
                    _ = heartbeat => None,
                };
                {
                    let mut live = engine.inner.live.lock().expect("live map lock");
                    if live.get(&task_key).is_some_and(|run| run.run_id == run_id) {
                        live.remove(&task_key);
                    }
                }
                drop(done_guard);
                // Every run end is checked once, in the background; except
                // a pause on database trouble, which the watchdog resumes
                // within seconds (that run's end is checked).
                let interrupted = matches!(
                    end,
                    Some(RunEnd::Paused {
                        reason: PauseReason::Interrupted,
                        ..
                    })
                );
                if end.is_some() && !interrupted {
                    drop(engine.coverage_check(&task_key));
                }
                if let Some(RunEnd::Paused {
                    reason: PauseReason::Interrupted,
                    error: Some(_),
                }) = end
                {
                    engine
                        .wake_watchdog_after(watchdog::RESUME_AFTER_TROUBLE)
                        .await;
                }
            }
            .instrument(span),
            &self.inner.executor.handle,
        );
        live.insert(
            key,
            LiveRun {
                run_id,
                signals,
                throttle,
                done,
                task: handle.abort_handle(),
            },
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

/// See [`Engine::console_error`].
fn console_error(doing: &str, timeout: Duration, error: sqlx::Error) -> AppError {
    let what = capitalized(doing);
    if store::is_statement_timeout(&error) {
        let ms = timeout.as_millis();
        return AppError::unavailable(format!(
            "{what} took longer than the console's statement timeout ({ms} ms, \
             CONSOLE_STATEMENT_TIMEOUT_MS) and was cancelled; the database is busy, try again shortly."
        ));
    }
    if let sqlx::Error::PoolTimedOut = error {
        return AppError::unavailable(format!(
            "{what} waited too long for a database connection (every one is busy); try again shortly."
        ));
    }
    internal_error(doing, error)
}

/// `reading the job` → `Reading the job`.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A job the console shows: it exists and is not archived. Anything else
/// is `NOT_FOUND`, the same answer for every call that names a job.
fn shown(row: Option<JobRow>, key: &JobKey) -> Result<JobRow, AppError> {
    row.filter(|row| row.status().is_some_and(|s| s != JobStatus::Archived))
        .ok_or_else(|| AppError::not_found(format!("there is no job {key}")))
}
