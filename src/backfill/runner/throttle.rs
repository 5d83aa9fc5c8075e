//! The run's brake. Everything that decides when the next user may go to
//! the Identity Graph lives here, shared by every slot of the run:
//!
//! - the knobs `tune` may change while the run goes (`max_rate`,
//!   `concurrency`, `sleep_ms`);
//! - the rate limit: a pacer (GCRA with a burst of one), so sends are spread
//!   evenly rather than sent in bursts of a batch;
//! - the hold: a 429 (or a 503 with `Retry-After`), or a streak of
//!   timeouts and 5xx, stops every slot's sends until the wait is over;
//! - the replica's external brake (`IDENTITY_GRAPH_THROTTLE_URL`);
//! - adaptive mode: the in-flight limit that follows the graph's latency.
//!
//! The pacer is written here rather than taken from `governor`, whose quota
//! is fixed when the limiter is built: changing the rate would mean a new
//! limiter and losing the reservations already made.

use crate::backfill::domain::{HeldBy, StartOptions, ThrottleView};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::{
    atomic::{AtomicBool, AtomicU32, Ordering},
    Arc, Mutex,
};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How many timeouts and 5xx in a row, across every slot, hold the run.
const ERROR_STREAK_HOLD: u32 = 3;
/// The first wait of a hold the graph gave no `Retry-After` for; each
/// further hold without a success between doubles it, up to the maximum.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The answer times the page's p50 and p95 and the rate are taken over.
const STATS_WINDOW: Duration = Duration::from_secs(5);

/// The knobs of a run that `tune` may change while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    pub max_rate: u32,
    pub concurrency: u32,
    pub sleep_ms: u32,
}

impl Knobs {
    /// The knobs a run starts with.
    pub fn of(options: &StartOptions) -> Self {
        Knobs {
            max_rate: options.max_rate,
            concurrency: options.concurrency,
            sleep_ms: options.sleep_ms,
        }
    }
}

/// What a replica's configuration adds to every run's brake.
#[derive(Clone)]
pub struct BrakeSettings {
    /// A hold longer than this, with no write getting through, pauses the
    /// run (`throttled`); the watchdog resumes it later.
    pub hold_cap: Duration,
    pub external: ExternalBrake,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        BrakeSettings {
            hold_cap: Duration::from_secs(300),
            external: ExternalBrake::default(),
        }
    }
}

/// The replica's external throttle signal: while it holds, no run on this
/// replica sends. Set by the poller of `IDENTITY_GRAPH_THROTTLE_URL`.
#[derive(Clone, Default)]
pub struct ExternalBrake(Arc<ExternalInner>);

#[derive(Default)]
struct ExternalInner {
    holding: AtomicBool,
    released: Notify,
}

impl ExternalBrake {
    pub fn hold(&self) {
        self.0.holding.store(true, Ordering::SeqCst);
    }

    pub fn release(&self) {
        if self.0.holding.swap(false, Ordering::SeqCst) {
            self.0.released.notify_waiters();
        }
    }

    pub fn is_holding(&self) -> bool {
        self.0.holding.load(Ordering::SeqCst)
    }

    async fn released(&self) {
        let notified = self.0.released.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_holding() {
            notified.await;
        }
    }
}

/// How one call to the graph went, as the brake reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// At least one user was written (or refused for good: the graph
    /// answered, so it is not struggling).
    Answered,
    /// The graph asked to slow down.
    Throttled { retry_after: Option<Duration> },
    /// A timeout, a lost connection or a 5xx.
    Trouble,
}

/// The brake of one run, shared by its slots, its heartbeat and `tune`.
#[derive(Clone)]
pub struct Throttle(Arc<Inner>);

struct Inner {
    max_rate: AtomicU32,
    concurrency: AtomicU32,
    sleep_ms: AtomicU32,
    settings: BrakeSettings,
    pacer: Mutex<Pacer>,
    hold: Mutex<Hold>,
    adaptive: Option<Mutex<Adaptive>>,
    stats: Mutex<Stats>,
    in_flight: AtomicU32,
}

struct Pacer {
    /// When the next user may be sent.
    next: Instant,
}

#[derive(Default)]
struct Hold {
    /// No slot sends before this.
    until: Option<Instant>,
    reason: Option<HeldBy>,
    /// When the current continuous hold began: holds that follow one
    /// another with no write getting through between them are one.
    since: Option<Instant>,
    /// Holds in a row without a write getting through (the backoff's exponent).
    backoffs: u32,
    /// Timeouts and 5xx in a row, across the slots.
    trouble_streak: u32,
    /// Seconds held, by reason, since the run began (`/metrics`).
    held_graph_secs: f64,
    held_errors_secs: f64,
}

impl Hold {
    fn is_on(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }

    /// Holds every slot until `now + wait` (or longer, if already held so).
    fn extend(&mut self, now: Instant, wait: Duration, reason: HeldBy) {
        let until = now + wait;
        let from = self.until.filter(|u| *u > now).unwrap_or(now);
        if until > from {
            let added = (until - from).as_secs_f64();
            match reason {
                HeldBy::GraphErrors => self.held_errors_secs += added,
                _ => self.held_graph_secs += added,
            }
            self.until = Some(until);
            self.reason = Some(reason);
        }
        self.since.get_or_insert(now);
    }

    /// Starts a hold of `backoff()`, unless one is on: answers to calls
    /// sent before the hold began say nothing new, and must not escalate it.
    fn back_off(&mut self, now: Instant, reason: HeldBy) {
        if self.is_on(now) {
            return;
        }
        let wait = self.backoff();
        self.backoffs += 1;
        self.extend(now, wait, reason);
    }

    /// A jittered exponential wait: between half and all of the doubled base.
    fn backoff(&self) -> Duration {
        let doubled = BASE_BACKOFF.saturating_mul(1 << self.backoffs.min(16));
        let ceiling = doubled.min(MAX_BACKOFF);
        ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

/// Adaptive mode: the in-flight limit rises while the graph's p95 stays
/// well under the target and falls when it goes over or the graph
/// throttles. A dead band between the two, and a fresh window after every
/// change, keep it from swinging between its floor and twice the optimum
/// (an AIMD loop that decides on stale samples does exactly that).
struct Adaptive {
    target: Duration,
    limit: f64,
    /// Until the first cut, the limit grows by half at each step rather
    /// than by one, so a run finds the graph's knee in seconds.
    slow_start: bool,
    samples: Vec<Duration>,
    window_started: Instant,
    throttled: bool,
    /// The most calls in flight during the window: a limit the run does not
    /// reach (held back by `max_rate` or a slow source) is not raised.
    peak_in_flight: u32,
}

/// How long adaptive mode measures before it decides.
const ADAPT_EVERY: Duration = Duration::from_millis(500);
/// The fewest answers a decision is taken on.
const ADAPT_MIN_SAMPLES: usize = 8;

impl Adaptive {
    fn new(target: Duration, ceiling: u32) -> Self {
        Adaptive {
            target,
            limit: f64::from((ceiling / 4).max(4).min(ceiling.max(1))),
            slow_start: true,
            samples: Vec::new(),
            window_started: Instant::now(),
            throttled: false,
            peak_in_flight: 0,
        }
    }

    fn observe(&mut self, latency: Duration, outcome: CallOutcome, in_flight: u32, ceiling: u32) {
        match outcome {
            CallOutcome::Throttled { .. } => self.throttled = true,
            _ => self.samples.push(latency),
        }
        self.peak_in_flight = self.peak_in_flight.max(in_flight);
        let now = Instant::now();
        let decide = self.throttled
            || (now - self.window_started >= ADAPT_EVERY
                && self.samples.len() >= ADAPT_MIN_SAMPLES);
        if !decide {
            return;
        }
        let ceiling = f64::from(ceiling.max(1));
        let used_fully = f64::from(self.peak_in_flight) >= (self.limit * 0.9).floor();
        if self.throttled {
            self.limit *= 0.7;
            self.slow_start = false;
        } else {
            let p95 = percentile(&mut self.samples, 0.95);
            let target = self.target.as_secs_f64();
            let p95 = p95.as_secs_f64();
            if p95 > target {
                self.limit *= 0.9;
                self.slow_start = false;
            } else if p95 < 0.8 * target && used_fully && self.slow_start {
                self.limit *= 1.5;
            } else if p95 < 0.5 * target && used_fully {
                self.limit *= 1.25;
            } else if p95 < 0.8 * target && used_fully {
                self.limit += 1.0;
            }
        }
        self.limit = self.limit.clamp(1.0, ceiling);
        self.samples.clear();
        self.throttled = false;
        self.peak_in_flight = in_flight;
        self.window_started = now;
    }
}

#[derive(Default)]
struct Stats {
    /// (answered at, answer time) of recent calls.
    latencies: VecDeque<(Instant, Duration)>,
    /// (when, users) of recent writes that got through.
    sent: VecDeque<(Instant, u32)>,
}

impl Stats {
    fn prune(&mut self, now: Instant) {
        while self
            .latencies
            .front()
            .is_some_and(|(at, _)| now - *at > STATS_WINDOW)
        {
            self.latencies.pop_front();
        }
        while self
            .sent
            .front()
            .is_some_and(|(at, _)| now - *at > STATS_WINDOW)
        {
            self.sent.pop_front();
        }
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64) * p).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Counts a call in flight while it lives.
pub struct InFlight<'a>(&'a Throttle, u32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl Throttle {
    /// `adaptive_target`: hold the graph's p95 near this (adaptive mode).
    pub fn new(knobs: Knobs, adaptive_target: Option<Duration>, settings: BrakeSettings) -> Self {
        let concurrency = knobs.concurrency.max(1);
        Throttle(Arc::new(Inner {
            max_rate: AtomicU32::new(knobs.max_rate),
            concurrency: AtomicU32::new(concurrency),
            sleep_ms: AtomicU32::new(knobs.sleep_ms),
            settings,
            pacer: Mutex::new(Pacer {
                next: Instant::now(),
            }),
            hold: Mutex::new(Hold::default()),
            adaptive: adaptive_target.map(|target| Mutex::new(Adaptive::new(target, concurrency))),
            stats: Mutex::new(Stats::default()),
            in_flight: AtomicU32::new(0),
        }))
    }

    /// The brake of a run started with `options`.
    pub fn for_run(options: &StartOptions, settings: BrakeSettings) -> Self {
        let target = options
            .adaptive
            .then(|| Duration::from_millis(options.target_latency_ms.into()));
        Self::new(Knobs::of(options), target, settings)
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

    /// How many calls may be in flight now: `concurrency`, or less in
    /// adaptive mode.
    pub fn in_flight_limit(&self) -> u32 {
        let ceiling = self.0.concurrency.load(Ordering::SeqCst).max(1);
        match &self.0.adaptive {
            Some(adaptive) => {
                let limit = adaptive.lock().expect("adaptive lock").limit;
                (limit.floor() as u32).clamp(1, ceiling)
            }
            None => ceiling,
        }
    }

    /// Waits until `users` users may be sent: no hold, no external brake,
    /// and their slots under the rate limit reserved.
    pub async fn admit(&self, users: usize) {
        self.wait_while_held().await;
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
        // A hold that began while this user waited for its slot holds it too.
        self.wait_while_held().await;
    }

    async fn wait_while_held(&self) {
        loop {
            let until = {
                let hold = self.0.hold.lock().expect("hold lock");
                hold.until.filter(|until| *until > Instant::now())
            };
            if let Some(until) = until {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            if self.0.settings.external.is_holding() {
                self.0.settings.external.released().await;
                continue;
            }
            return;
        }
    }

    /// Marks `users` users' call in flight until the guard drops.
    pub fn sending(&self, users: u32) -> InFlight<'_> {
        self.0.in_flight.fetch_add(users, Ordering::SeqCst);
        InFlight(self, users)
    }

    /// Feeds one call's answer time and outcome to the hold, adaptive mode
    /// and the page's figures. `written`: users the call wrote.
    pub fn observe(&self, latency: Duration, outcome: CallOutcome, written: u32) {
        let now = Instant::now();
        {
            let mut hold = self.0.hold.lock().expect("hold lock");
            match outcome {
                CallOutcome::Answered => {
                    hold.trouble_streak = 0;
                    if written > 0 {
                        hold.since = None;
                        hold.backoffs = 0;
                    }
                }
                // The graph's own wait is obeyed as given, even when it
                // lengthens a hold already on.
                CallOutcome::Throttled {
                    retry_after: Some(wait),
                } => hold.extend(now, wait, HeldBy::GraphThrottled),
                CallOutcome::Throttled { retry_after: None } => {
                    hold.back_off(now, HeldBy::GraphThrottled)
                }
                CallOutcome::Trouble => {
                    hold.trouble_streak += 1;
                    if hold.trouble_streak >= ERROR_STREAK_HOLD {
                        hold.back_off(now, HeldBy::GraphErrors);
                    }
                }
            }
        }
        if let Some(adaptive) = &self.0.adaptive {
            let in_flight = self.0.in_flight.load(Ordering::SeqCst);
            let ceiling = self.0.concurrency.load(Ordering::SeqCst);
            adaptive
                .lock()
                .expect("adaptive lock")
                .observe(latency, outcome, in_flight, ceiling);
        }
        let mut stats = self.0.stats.lock().expect("stats lock");
        stats.prune(now);
        if !matches!(outcome, CallOutcome::Throttled { .. }) {
            stats.latencies.push_back((now, latency));
        }
        if written > 0 {
            stats.sent.push_back((now, written));
        }
    }

    /// Every slot waits for a hold now.
    pub fn is_holding(&self) -> bool {
        self.0.hold.lock().expect("hold lock").is_on(Instant::now())
    }

    /// A hold has gone on, with no write getting through, for longer than
    /// the cap: the run should pause (`throttled`).
    pub fn held_too_long(&self) -> bool {
        let hold = self.0.hold.lock().expect("hold lock");
        hold.since
            .is_some_and(|since| since.elapsed() > self.0.settings.hold_cap)
    }

    pub fn hold_cap(&self) -> Duration {
        self.0.settings.hold_cap
    }

    /// Seconds held since the run began: (by the graph's 429/503, by a
    /// streak of errors).
    pub fn held_secs(&self) -> (f64, f64) {
        let hold = self.0.hold.lock().expect("hold lock");
        (hold.held_graph_secs, hold.held_errors_secs)
    }

    /// What holds the run back now, if anything: a hold, the external
    /// brake, the latency target, or the rate limit.
    pub fn held_by(&self) -> Option<HeldBy> {
        let now = Instant::now();
        {
            let hold = self.0.hold.lock().expect("hold lock");
            if hold.is_on(now) {
                return hold.reason;
            }
        }
        if self.0.settings.external.is_holding() {
            return Some(HeldBy::ThrottleUrl);
        }
        if self.0.adaptive.is_some()
            && self.in_flight_limit() < self.0.concurrency.load(Ordering::SeqCst)
        {
            return Some(HeldBy::Latency);
        }
        let rate = self.0.max_rate.load(Ordering::SeqCst);
        let queued = self.0.pacer.lock().expect("pacer lock").next > now;
        if rate > 0 && queued {
            return Some(HeldBy::MaxRate);
        }
        None
    }

    /// The figures the job page shows while the run goes.
    pub fn view(&self) -> ThrottleView {
        let now = Instant::now();
        let (p50, p95, rate) = {
            let mut stats = self.0.stats.lock().expect("stats lock");
            stats.prune(now);
            let mut latencies: Vec<Duration> = stats.latencies.iter().map(|(_, d)| *d).collect();
            let sent: u32 = stats.sent.iter().map(|(_, users)| users).sum();
            let span = stats.sent.front().map_or(STATS_WINDOW, |(first, _)| {
                (now - *first).max(Duration::from_secs(1))
            });
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let p50 = (!latencies.is_empty()).then(|| ms(percentile(&mut latencies, 0.5)));
            let p95 = (!latencies.is_empty()).then(|| ms(percentile(&mut latencies, 0.95)));
            (
                p50,
                p95,
                f64::from(sent) / span.min(STATS_WINDOW).as_secs_f64(),
            )
        };
        let knobs = self.knobs();
        ThrottleView {
            rate,
            max_rate: knobs.max_rate,
            in_flight: self.0.in_flight.load(Ordering::SeqCst),
            in_flight_limit: self.in_flight_limit(),
            latency_p50_ms: p50,
            latency_p95_ms: p95,
            held_by: self.held_by(),
        }
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

    fn throttle(max_rate: u32) -> Throttle {
        Throttle::new(knobs(max_rate), None, BrakeSettings::default())
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_spread_evenly_at_the_rate() {
        let throttle = throttle(100);
        let started = tokio::time::Instant::now();
        for _ in 0..50 {
            throttle.admit(1).await;
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
        let throttle = throttle(1);
        throttle.admit(1).await;
        // The next slot at 1/s is a second away; a tune to 1,000/s brings it close.
        assert!(throttle.set(knobs(1_000)));
        let started = tokio::time::Instant::now();
        throttle.admit(1).await;
        assert!(
            started.elapsed() <= Duration::from_millis(1),
            "{:?}",
            started.elapsed()
        );
        assert!(!throttle.set(knobs(1_000)), "the same knobs change nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_waits_for_nothing() {
        let throttle = throttle(0);
        let started = tokio::time::Instant::now();
        for _ in 0..1_000 {
            throttle.admit(10).await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(throttle.held_by(), None);
    }

    #[tokio::test]
    async fn a_retry_after_holds_every_sender_and_a_write_ends_the_hold() {
        let throttle = throttle(0);
        throttle.observe(
            Duration::from_millis(5),
            CallOutcome::Throttled {
                retry_after: Some(Duration::from_millis(300)),
            },
            0,
        );
        assert_eq!(throttle.held_by(), Some(HeldBy::GraphThrottled));
        let started = Instant::now();
        let senders = (0..4).map(|_| {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.admit(1).await })
        });
        futures::future::join_all(senders).await;
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "{:?}",
            started.elapsed()
        );
        assert!(!throttle.held_too_long());
        throttle.observe(Duration::from_millis(5), CallOutcome::Answered, 1);
        assert_eq!(throttle.held_by(), None);
        let (graph_secs, error_secs) = throttle.held_secs();
        assert!((0.29..=0.31).contains(&graph_secs), "{graph_secs}");
        assert_eq!(error_secs, 0.0);
    }

    #[tokio::test]
    async fn a_streak_of_errors_holds_with_a_growing_jittered_backoff() {
        let throttle = throttle(0);
        throttle.observe(Duration::from_millis(5), CallOutcome::Trouble, 0);
        throttle.observe(Duration::from_millis(5), CallOutcome::Trouble, 0);
        assert_eq!(throttle.held_by(), None, "two errors are not a streak");
        throttle.observe(Duration::from_millis(5), CallOutcome::Trouble, 0);
        assert_eq!(throttle.held_by(), Some(HeldBy::GraphErrors));
        let first = throttle.0.hold.lock().unwrap().until.unwrap() - Instant::now();
        // backoffs = 0 at the first hold: between half and all of 250 ms.
        assert!(
            first <= BASE_BACKOFF && first >= BASE_BACKOFF / 2 - Duration::from_millis(20),
            "{first:?}"
        );
        // Answers to calls sent before the hold do not escalate it.
        for _ in 0..12 {
            throttle.observe(Duration::from_millis(5), CallOutcome::Trouble, 0);
        }
        let same = throttle.0.hold.lock().unwrap().until.unwrap() - Instant::now();
        assert!(same <= first, "{same:?} after {first:?}");
        // Each hold that follows, with no write between, doubles the wait.
        let mut waits = Vec::new();
        for _ in 0..10 {
            throttle.0.hold.lock().unwrap().until = Some(Instant::now());
            throttle.observe(Duration::from_millis(5), CallOutcome::Trouble, 0);
            waits.push(throttle.0.hold.lock().unwrap().until.unwrap() - Instant::now());
        }
        assert!(
            waits[1] >= BASE_BACKOFF / 2 * 2 - Duration::from_millis(20),
            "{waits:?}"
        );
        assert!(waits[4] > BASE_BACKOFF * 2, "{waits:?}");
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF), "{waits:?}");
        throttle.observe(Duration::from_millis(5), CallOutcome::Answered, 1);
        assert_eq!(
            throttle.0.hold.lock().unwrap().backoffs,
            0,
            "a write resets the backoff"
        );
    }

    #[tokio::test]
    async fn a_hold_with_no_write_through_it_passes_the_cap() {
        let settings = BrakeSettings {
            hold_cap: Duration::from_millis(50),
            external: ExternalBrake::default(),
        };
        let throttle = Throttle::new(knobs(0), None, settings);
        let throttled = CallOutcome::Throttled {
            retry_after: Some(Duration::from_millis(10)),
        };
        throttle.observe(Duration::ZERO, throttled, 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A user refused for good is an answer, but no write got through.
        throttle.observe(Duration::ZERO, CallOutcome::Answered, 0);
        assert!(throttle.held_too_long());
        throttle.observe(Duration::ZERO, CallOutcome::Answered, 3);
        assert!(!throttle.held_too_long());
    }

    #[tokio::test]
    async fn the_external_brake_holds_until_released() {
        let settings = BrakeSettings::default();
        let external = settings.external.clone();
        external.hold();
        let throttle = Throttle::new(knobs(0), None, settings);
        assert_eq!(throttle.held_by(), Some(HeldBy::ThrottleUrl));
        let sender = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.admit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "no send while the brake holds");
        external.release();
        tokio::time::timeout(Duration::from_secs(1), sender)
            .await
            .expect("released")
            .unwrap();
    }

    /// A graph whose answer time grows once more than `workers` calls are
    /// in flight: adaptive mode settles near the knee instead of swinging
    /// between its floor and its ceiling.
    #[test]
    fn adaptive_mode_settles_near_the_latency_target() {
        let workers = 16.0;
        let service = Duration::from_millis(10);
        let target = service * 2;
        let mut adaptive = Adaptive::new(target, 64);
        let mut limits = Vec::new();
        for round in 0..400 {
            let in_flight = adaptive.limit.floor() as u32;
            let queue_factor = (f64::from(in_flight) / workers).max(1.0);
            let latency = service.mul_f64(queue_factor);
            adaptive.window_started -= ADAPT_EVERY;
            for _ in 0..ADAPT_MIN_SAMPLES {
                adaptive.observe(latency, CallOutcome::Answered, in_flight, 64);
            }
            if round >= 200 {
                limits.push(adaptive.limit);
            }
        }
        let mean = limits.iter().sum::<f64>() / limits.len() as f64;
        let (low, high) = limits
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
        // In flight is the limit's whole part: at 2 × workers the graph
        // answers in exactly the target, the most the loop may settle at.
        assert!(
            mean >= workers && mean.floor() <= 2.0 * workers,
            "mean {mean}"
        );
        assert!(
            low >= 0.75 * mean && high <= 1.25 * mean,
            "{low}..{high} around {mean}"
        );
    }

    #[test]
    fn adaptive_mode_backs_off_on_a_429_and_never_passes_the_ceiling() {
        let mut adaptive = Adaptive::new(Duration::from_millis(100), 8);
        for _ in 0..100 {
            adaptive.window_started -= ADAPT_EVERY;
            for _ in 0..ADAPT_MIN_SAMPLES {
                adaptive.observe(Duration::from_millis(1), CallOutcome::Answered, 64, 8);
            }
        }
        assert_eq!(adaptive.limit, 8.0);
        adaptive.observe(
            Duration::ZERO,
            CallOutcome::Throttled { retry_after: None },
            8,
            8,
        );
        assert!(adaptive.limit < 6.0, "{}", adaptive.limit);
    }
}
