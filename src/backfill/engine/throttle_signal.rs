//! The external throttle signal (`IDENTITY_GRAPH_THROTTLE_URL`), after
//! gh-ost's `--throttle-http`: a URL polled at an interval. Anything but a
//! 2xx within a second — an error status, a refused connection, silence —
//! holds every run's sends on this replica until it answers 2xx again.

use crate::backfill::runner::ExternalBrake;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the signal is read, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSignal {
    pub url: String,
    pub every: Duration,
}

/// The longest a poll may take before its silence counts as "hold".
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The hold seconds `/metrics` counts for the throttle URL.
pub const HOLD_SECONDS: &str = "identity_graph_backfill_hold_seconds_total";

/// Polls `signal` until `shutdown`, holding `brake` while it says so.
pub(super) async fn poll(
    signal: ThrottleSignal,
    brake: ExternalBrake,
    shutdown: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .connect_timeout(ANSWER_WITHIN)
        .build()
        .expect("a reqwest client with only timeouts set builds");
    let held = metrics::counter!(HOLD_SECONDS, "reason" => "throttle-url");
    let mut last_poll = tokio::time::Instant::now();
    let mut held_secs = 0.0_f64;
    loop {
        let answer = client.get(&signal.url).send().await;
        let hold = match &answer {
            Ok(response) => !response.status().is_success(),
            Err(_) => true,
        };
        let now = tokio::time::Instant::now();
        if brake.is_holding() {
            held_secs += (now - last_poll).as_secs_f64();
            held.absolute(held_secs as u64);
        }
        last_poll = now;
        if hold && !brake.is_holding() {
            let why = match &answer {
                Ok(response) => format!("it answered {}", response.status().as_u16()),
                Err(error) if error.is_timeout() => "it did not answer within a second".into(),
                Err(_) => "it could not be reached".into(),
            };
            tracing::warn!(url = %signal.url, "the throttle URL holds every run on this replica: {why}");
            brake.hold();
        } else if !hold && brake.is_holding() {
            tracing::info!(url = %signal.url, "the throttle URL answers 2xx again: runs go on");
            brake.release();
        }
        tokio::select! {
            _ = tokio::time::sleep(signal.every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
