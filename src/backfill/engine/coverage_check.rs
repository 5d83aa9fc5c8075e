//! The coverage check in the background: begun when a run ends, and by
//! `check_coverage` ("Check again"). It runs on the engine's runtime and
//! pool, every statement bounded by `COVERAGE_CHECK_TIMEOUT_MS`, and stores
//! its result on the job row, which the `job` answer reads. A page load or
//! a `job` call never runs it.
//!
//! At most one check per job runs at a time: in this process a request while
//! one runs gets the same result (a shared future), and across replicas a
//! check waits on the one holding the job's advisory lock and takes its
//! result (`store::check_and_store`), not a second scan.

use super::Engine;
use crate::backfill::domain::Coverage;
use crate::backfill::sinks::GraphBinding;
use crate::backfill::store::{self, Checked};
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tracing::Instrument;

/// Why a check gave no result. Cloned to every waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// A statement ran past `COVERAGE_CHECK_TIMEOUT_MS`.
    TimedOut(Duration),
    /// A run is active (or began): its end checks the job.
    Active,
    NoSuchJob,
    /// Another replica's check of the job held it past this wait.
    Busy(Duration),
    /// Runs kept beginning and ending while it counted.
    Overtaken,
    /// The replica is shutting down.
    ShuttingDown,
    /// Anything else, as logged.
    Database(String),
}

impl CheckFailure {
    pub fn describe(&self) -> String {
        match self {
            CheckFailure::TimedOut(limit) => format!(
                "the coverage check ran past its statement timeout ({} ms, COVERAGE_CHECK_TIMEOUT_MS) and was cancelled",
                limit.as_millis()
            ),
            CheckFailure::Active => {
                "a run is active; the coverage check runs when it ends".to_string()
            }
            CheckFailure::NoSuchJob => "there is no such job".to_string(),
            CheckFailure::Busy(waited) => format!(
                "another replica's coverage check of this job has run for over {} s; its result will be stored when it ends",
                waited.as_secs()
            ),
            CheckFailure::Overtaken => {
                "runs kept beginning and ending while it counted, so it counted again three times and stored nothing; check again".to_string()
            }
            CheckFailure::ShuttingDown => "the replica is shutting down".to_string(),
            CheckFailure::Database(cause) => format!("the database failed: {cause}"),
        }
    }
}

pub type CheckResult = Result<Coverage, CheckFailure>;
type SharedCheck = Shared<BoxFuture<'static, CheckResult>>;

/// The checks running in this process, by job key.
#[derive(Default)]
pub(super) struct CoverageChecks {
    running: Mutex<HashMap<String, SharedCheck>>,
    /// Checks this engine has run, each counting the source once (one that
    /// took another replica's result is not one). A page load or a `job`
    /// call never moves it (the tests read it).
    begun: AtomicU64,
}

impl CoverageChecks {
    pub(super) fn is_running(&self, job_key: &str) -> bool {
        self.running
            .lock()
            .expect("coverage checks lock")
            .contains_key(job_key)
    }

    pub(super) fn begun(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }
}

impl Engine {
    /// The job's coverage check: the one running in this process, or a new
    /// one, spawned on the engine's runtime so it finishes (and is stored)
    /// even if nobody waits for it.
    pub fn coverage_check(&self, job_key: &str) -> SharedCheck {
        let mut running = self
            .inner
            .coverage_checks
            .running
            .lock()
            .expect("coverage checks lock");
        if let Some(check) = running.get(job_key) {
            return check.clone();
        }
        let engine = self.clone();
        let key = job_key.to_string();
        let span = tracing::info_span!("coverage_check", job_key = %key);
        // Spawned while the lock is held, so the task's own removal (which
        // takes the lock) cannot run before the entry exists.
        let task = self.inner.executor.handle.spawn(
            async move {
                let result = engine.run_coverage_check(&key).await;
                engine
                    .inner
                    .coverage_checks
                    .running
                    .lock()
                    .expect("coverage checks lock")
                    .remove(&key);
                result
            }
            .instrument(span),
        );
        let shared = async move {
            task.await
                .unwrap_or_else(|error| Err(CheckFailure::Database(error.to_string())))
        }
        .boxed()
        .shared();
        running.insert(job_key.to_string(), shared.clone());
        shared
    }

    async fn run_coverage_check(&self, job_key: &str) -> CheckResult {
        let settings = &self.inner.settings;
        let pool = &self.inner.executor.pool;
        let started = std::time::Instant::now();
        let check = store::check_and_store(
            pool,
            job_key,
            &settings.normalizer,
            settings.coverage_check_timeout,
            GraphBinding::BUILT_IN,
            settings.ui_runtime_cap_ms,
        );
        let outcome = tokio::select! {
            outcome = check => outcome,
            _ = self.inner.shutdown.cancelled() => return Err(CheckFailure::ShuttingDown),
        };
        if !matches!(outcome, Ok(Checked::Joined(_) | Checked::Busy(_))) {
            self.inner
                .coverage_checks
                .begun
                .fetch_add(1, Ordering::Relaxed);
        }
        let failure = match outcome {
            Ok(Checked::Joined(coverage)) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "coverage check joined: another replica's check stored this result"
                );
                return Ok(coverage);
            }
            Ok(Checked::Stored(coverage)) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    unaccounted = coverage.unaccounted,
                    "coverage checked"
                );
                return Ok(coverage);
            }
            Ok(Checked::Active) => return Err(CheckFailure::Active),
            Ok(Checked::NoSuchJob) => return Err(CheckFailure::NoSuchJob),
            // The other replica's check is still going; its end stores a
            // result (or its own error), so this records nothing.
            Ok(Checked::Busy(waited)) => return Err(CheckFailure::Busy(waited)),
            Ok(Checked::Overtaken) => CheckFailure::Overtaken,
            Err(error) if store::is_statement_timeout(&error) => {
                CheckFailure::TimedOut(settings.coverage_check_timeout)
            }
            Err(error) => CheckFailure::Database(error.to_string()),
        };
        tracing::warn!("the coverage check did not finish: {}", failure.describe());
        if let Err(error) = store::store_check_error(pool, job_key, &failure.describe()).await {
            tracing::warn!("could not record the coverage check's failure: {error}");
        }
        Err(failure)
    }
}
