//! The run's brake: the tunable knobs (`max_rate`, `concurrency`,
//! `sleep_ms`) an operator may change while a run goes, and the rate limit
//! every slot of the run shares.
//!
//! The limit is a pacer (GCRA with a burst of one): each user reserves the
//! next free slot of `1 / max_rate` seconds and waits for it, so sends are
//! spread evenly rather than sent in bursts of a batch. It is written here
//! rather than taken from `governor`, whose quota is fixed when the limiter
//! is built: changing the rate would mean a new limiter and losing the
//! reservations already made.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc, Mutex,
};
use std::time::{Duration, Instant};

/// The knobs of a run that `tune` may change while it runs. Shared by the
/// runner (which reads them before each user and each pause) and the
/// heartbeat (which writes what the job row says, within a second of a
/// `tune` on any replica).
#[derive(Clone)]
pub struct Tuning(Arc<TuningInner>);

struct TuningInner {
    max_rate: AtomicU32,
    concurrency: AtomicU32,
    sleep_ms: AtomicU32,
    pacer: Mutex<Pacer>,
}

/// The knobs' values, as the job row holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub max_rate: u32,
    pub concurrency: u32,
    pub sleep_ms: u32,
}

impl Knobs {
    /// The knobs a run starts with.
    pub fn of(options: &crate::backfill::domain::StartOptions) -> Self {
        Knobs {
            max_rate: options.max_rate,
            concurrency: options.concurrency,
            sleep_ms: options.sleep_ms,
        }
    }
}

struct Pacer {
    /// When the next user may be sent.
    next: Instant,
}

impl Tuning {
    pub fn new(knobs: Knobs) -> Self {
        Tuning(Arc::new(TuningInner {
            max_rate: AtomicU32::new(knobs.max_rate),
            concurrency: AtomicU32::new(knobs.concurrency.max(1)),
            sleep_ms: AtomicU32::new(knobs.sleep_ms),
            pacer: Mutex::new(Pacer {
                next: Instant::now(),
            }),
        }))
    }

    pub fn knobs(&self) -> Knobs {
        Knobs {
            max_rate: self.0.max_rate.load(Ordering::SeqCst),
            concurrency: self.0.concurrency.load(Ordering::SeqCst),
            sleep_ms: self.0.sleep_ms.load(Ordering::SeqCst),
        }
    }

    /// Applies `knobs`; returns whether anything changed.
    pub fn set(&self, knobs: Knobs) -> bool {
        let before = self.knobs();
        self.0.max_rate.store(knobs.max_rate, Ordering::SeqCst);
        self.0
            .concurrency
            .store(knobs.concurrency.max(1), Ordering::SeqCst);
        self.0.sleep_ms.store(knobs.sleep_ms, Ordering::SeqCst);
        if knobs.max_rate != before.max_rate {
            // A new rate counts from now: reservations made at the old rate
            // further ahead than one slot of the new one are not kept.
            let mut pacer = self.0.pacer.lock().expect("pacer lock");
            let now = Instant::now();
            let slot = slot_of(knobs.max_rate, 1);
            if pacer.next > now + slot {
                pacer.next = now + slot;
            }
        }
        self.knobs() != before
    }

    /// Waits until `users` users may be sent under the rate limit, and
    /// reserves their slots. Returns at once when there is no limit.
    pub async fn admit(&self, users: usize) {
        let rate = self.0.max_rate.load(Ordering::SeqCst);
        if rate == 0 || users == 0 {
            return;
        }
        let start = {
            let mut pacer = self.0.pacer.lock().expect("pacer lock");
            let now = Instant::now();
            let start = pacer.next.max(now);
            pacer.next = start + slot_of(rate, users);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// How long `users` users take at `rate` users a second.
fn slot_of(rate: u32, users: usize) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(users as f64 / f64::from(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(max_rate: u32) -> Knobs {
        Knobs {
            max_rate,
            concurrency: 8,
            sleep_ms: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_spread_evenly_at_the_rate() {
        let tuning = Tuning::new(knobs(100));
        let started = tokio::time::Instant::now();
        for _ in 0..50 {
            tuning.admit(1).await;
        }
        // 50 users at 100/s: the 50th may go 490 ms after the first.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(490) && elapsed < Duration::from_millis(500),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_to_the_next_user() {
        let tuning = Tuning::new(knobs(1));
        tuning.admit(1).await;
        // The next slot at 1/s is a second away; a tune to 1,000/s brings it close.
        assert!(tuning.set(knobs(1_000)));
        let started = tokio::time::Instant::now();
        tuning.admit(1).await;
        assert!(
            started.elapsed() <= Duration::from_millis(1),
            "{:?}",
            started.elapsed()
        );
        assert!(!tuning.set(knobs(1_000)), "the same knobs change nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_waits_for_nothing() {
        let tuning = Tuning::new(knobs(0));
        let started = tokio::time::Instant::now();
        for _ in 0..1_000 {
            tuning.admit(10).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
