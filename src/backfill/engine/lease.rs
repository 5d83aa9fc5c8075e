//! A run's lease: the token that names one run, and the heartbeat that
//! renews it, watches for a stop from another replica, and fences the run
//! off when the lease cannot be confirmed.

use super::throttle_signal::HOLD_SECONDS;
use super::Engine;
use crate::backfill::domain::ThrottleView;
use crate::backfill::runner::{Knobs, Lease, RunSignals, Throttle};
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
        throttle: Throttle,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pool = self.inner.executor.pool.clone();
        let (poll_every, renew_every) = self.heartbeat_cadence();
        let fence_after = self.inner.settings.lease_ttl / 2;
        async move {
            let figures = BrakeFigures::for_job(&lease.job_key);
            let mut last_renewal = Instant::now();
            let mut chart = ChartSampler::new(Instant::now());
            loop {
                tokio::time::sleep(poll_every).await;
                let renew = last_renewal.elapsed() >= renew_every;
                let asked_at = Instant::now();
                let view = throttle.view();
                figures.record(&view, &throttle);
                let answer = tokio::time::timeout(
                    renew_every,
                    store::heartbeat(&pool, &lease.job_key, &lease.token, renew, &view),
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
                        apply_tuning(&throttle, &answer, &lease.job_key);
                        if let Some(rate) = chart.due(Instant::now(), answer.run_scanned) {
                            let p95 = view.latency_p95_ms;
                            if let Err(error) =
                                store::record_sample(&pool, lease.run_id, rate, p95).await
                            {
                                tracing::warn!("could not record a chart sample: {error}");
                            }
                        }
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

/// When the heartbeat records a point of the run's chart, and its rate.
/// About every [`SAMPLE_EVERY`]; more often in a run's first minutes
/// (a tenth of its age, at least a second apart), so a short run still
/// draws a line. At most one row per second, then one per 10 s, per run.
struct ChartSampler {
    started: Instant,
    last: Option<(Instant, i64)>,
}

/// A long run's chart has a point about this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

impl ChartSampler {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last: None,
        }
    }

    /// `Some(users/s)` since the last point when a point is due, with
    /// `scanned` the run's users handled so far.
    fn due(&mut self, now: Instant, scanned: i64) -> Option<f64> {
        let (since, before) = self.last.unwrap_or((self.started, 0));
        let every =
            (now.duration_since(self.started) / 10).clamp(Duration::from_secs(1), SAMPLE_EVERY);
        let elapsed = now.duration_since(since);
        if elapsed < every {
            return None;
        }
        self.last = Some((now, scanned));
        Some((scanned - before).max(0) as f64 / elapsed.as_secs_f64())
    }
}

/// Applies the knobs the row holds (a `tune` on any replica writes them
/// there) to the run; a knob the row does not hold as a number keeps its value.
fn apply_tuning(tuning: &Throttle, answer: &store::HeartbeatAnswer, job_key: &str) {
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

/// A run's brake on `/metrics`, updated at every heartbeat: the limits, the
/// rate, the graph's answer times and the seconds held by each reason.
struct BrakeFigures {
    rate: metrics::Gauge,
    rate_limit: metrics::Gauge,
    in_flight: metrics::Gauge,
    in_flight_limit: metrics::Gauge,
    latency_p50: metrics::Gauge,
    latency_p95: metrics::Gauge,
    held_by_graph: metrics::Counter,
    held_by_errors: metrics::Counter,
}

impl BrakeFigures {
    fn for_job(job_key: &str) -> Self {
        let gauge = |name: &'static str| metrics::gauge!(name, "job_key" => job_key.to_string());
        let held = |reason: &'static str| metrics::counter!(HOLD_SECONDS, "job_key" => job_key.to_string(), "reason" => reason);
        BrakeFigures {
            rate: gauge("identity_graph_backfill_rate_users_per_second"),
            rate_limit: gauge("identity_graph_backfill_rate_limit_users_per_second"),
            in_flight: gauge("identity_graph_backfill_in_flight"),
            in_flight_limit: gauge("identity_graph_backfill_in_flight_limit"),
            latency_p50: gauge("identity_graph_backfill_graph_latency_p50_seconds"),
            latency_p95: gauge("identity_graph_backfill_graph_latency_p95_seconds"),
            held_by_graph: held("graph-throttled"),
            held_by_errors: held("graph-errors"),
        }
    }

    fn record(&self, view: &ThrottleView, throttle: &Throttle) {
        self.rate.set(view.rate);
        self.rate_limit.set(f64::from(view.max_rate));
        self.in_flight.set(f64::from(view.in_flight));
        self.in_flight_limit.set(f64::from(view.in_flight_limit));
        self.latency_p50
            .set(view.latency_p50_ms.unwrap_or(0.0) / 1000.0);
        self.latency_p95
            .set(view.latency_p95_ms.unwrap_or(0.0) / 1000.0);
        let (graph_secs, error_secs) = throttle.held_secs();
        self.held_by_graph.absolute(graph_secs as u64);
        self.held_by_errors.absolute(error_secs as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_samples_often_at_first_then_every_ten_seconds() {
        let start = Instant::now();
        let mut chart = ChartSampler::new(start);
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(chart.due(at(0.5), 50), None);
        assert_eq!(chart.due(at(1.0), 100), Some(100.0));
        assert_eq!(chart.due(at(1.5), 150), None);
        assert_eq!(chart.due(at(2.0), 300), Some(200.0));
        let mut points = 0;
        for tenth in 21..=6_000 {
            if chart.due(at(tenth as f64 / 10.0), tenth * 10).is_some() {
                points += 1;
            }
        }
        // Ten minutes: a few dozen points, one per 10 s once the run is old.
        assert!((55..=80).contains(&points), "{points}");
        assert!(chart.due(at(700.0), 7_000).is_some());
        assert_eq!(chart.due(at(709.0), 7_000), None);
        assert_eq!(chart.due(at(710.5), 8_050), Some(100.0));
    }
}
