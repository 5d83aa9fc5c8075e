//! A run's lease: the token that names one run, and the heartbeat that
//! renews it, watches for a stop from another replica, and fences the run
//! off when the lease cannot be confirmed.

use super::Engine;
use crate::backfill::runner::{Knobs, Lease, RunSignals, Tuning};
use crate::backfill::store;
use std::time::{Duration, Instant};

pub(super) fn replica_id() -> String {
    use rand::Rng;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::thread_rng().gen::<u32>() & 0xff_ffff
    )
}

impl Engine {
    /// A lease token that names one run: this replica, and a random part, so
    /// a later run of the same key on the same replica is a different owner.
    pub(super) fn new_lease_token(&self) -> String {
        use rand::Rng;
        format!(
            "{}/run-{:08x}",
            self.inner.replica_id,
            rand::thread_rng().gen::<u32>()
        )
    }

    /// How often a run's heartbeat polls its row (for a stop from another
    /// replica, or a lost lease), and how often it renews the lease.
    pub(super) fn heartbeat_cadence(&self) -> (Duration, Duration) {
        let renew_every = (self.inner.settings.lease_ttl / 6)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        (renew_every.min(Duration::from_secs(1)), renew_every)
    }

    /// Renews the lease and watches the row for a stop from another replica.
    /// A run that cannot confirm its lease for half the TTL stops itself
    /// before the lease can expire, so it never writes beside its successor.
    /// Each query is bounded in time, and the runner reads the lease clock
    /// itself, so a query that hangs fences the run as surely as one that
    /// fails. Never finishes: the run's end ends it.
    pub(super) fn heartbeat(
        &self,
        lease: Lease,
        signals: RunSignals,
        tuning: Tuning,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pool = self.inner.executor.pool.clone();
        let (poll_every, renew_every) = self.heartbeat_cadence();
        let fence_after = self.inner.settings.lease_ttl / 2;
        async move {
            let mut last_renewal = Instant::now();
            loop {
                tokio::time::sleep(poll_every).await;
                let renew = last_renewal.elapsed() >= renew_every;
                let asked_at = Instant::now();
                let answer = tokio::time::timeout(
                    renew_every,
                    store::heartbeat(&pool, &lease.job_key, &lease.token, renew),
                )
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
                match answer {
                    Ok(Some(answer)) => {
                        if renew {
                            last_renewal = asked_at;
                            // The row said `heartbeat_at = now()` no earlier than asked_at.
                            signals.lease_clock.confirm(asked_at);
                        }
                        apply_tuning(&tuning, &answer, &lease.job_key);
                        if answer.stop_requested {
                            signals.stop.cancel();
                        }
                    }
                    Ok(None) => signals.lease_lost.cancel(),
                    Err(error) => {
                        tracing::warn!("heartbeat failed: {error}");
                        if last_renewal.elapsed() >= fence_after {
                            tracing::warn!(
                                "lease unconfirmed for half its TTL: the run stops writing"
                            );
                            signals.lease_lost.cancel();
                        }
                    }
                }
            }
        }
    }
}

/// Applies the knobs the row holds (a `tune` on any replica writes them
/// there) to the run; a knob the row does not hold as a number keeps its value.
fn apply_tuning(tuning: &Tuning, answer: &store::HeartbeatAnswer, job_key: &str) {
    let current = tuning.knobs();
    let read = |value: Option<i64>, fallback: u32| {
        value
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(fallback)
    };
    let knobs = Knobs {
        max_rate: read(answer.max_rate, current.max_rate),
        concurrency: read(answer.concurrency, current.concurrency),
        sleep_ms: read(answer.sleep_ms, current.sleep_ms),
    };
    if tuning.set(knobs) {
        tracing::info!(%job_key, ?knobs, "run tuned");
    }
}
