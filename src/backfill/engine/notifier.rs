//! The notifier: delivers the outbox's events (a job came to rest:
//! `completed`, `paused`, `failed`, `stopped`) to `NOTIFY_WEBHOOK_URL` as a
//! JSON `POST`.
//!
//! It never touches a run: the event is a row the status change itself
//! wrote (a trigger, in the same transaction), and this task, on its own
//! schedule, claims due rows and posts them. A receiver that fails or hangs
//! only delays its own retries. A row survives a restart, so an event not yet
//! delivered is sent by whichever replica runs a notifier next; delivery is
//! at least once, and the `X-Notification-Id` header lets a receiver drop a
//! repeat.

use crate::backfill::domain::thousands;
use crate::backfill::source::SOURCE_MAX_ID;
use crate::backfill::store::{self, PendingNotification};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where and how events are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// `NOTIFY_WEBHOOK_URL`; no notifier runs when unset.
    pub webhook_url: Option<String>,
    /// `PUBLIC_BASE_URL`: where operators reach the console, for the job link.
    pub public_base_url: String,
    /// `NOTIFY_WEBHOOK_TIMEOUT_MS`: the longest one attempt may take.
    pub timeout: Duration,
    /// `NOTIFY_RETRY_BASE_MS`: the wait after a first failed attempt; it
    /// doubles with each further one, up to [`MAX_RETRY_WAIT`].
    pub retry_base: Duration,
}

/// How often the notifier looks for due events.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);
/// An event still undelivered after this long is marked expired: after an
/// outage the receiver gets the last hour, not a flood of stale news.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(3_600);
/// Events claimed (and posted concurrently) per look.
const CLAIM_AT_ONCE: i64 = 16;

/// Delivers due events until `shutdown`.
pub(super) async fn deliver(pool: PgPool, settings: NotifySettings, shutdown: CancellationToken) {
    let Some(url) = settings.webhook_url.clone() else {
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client with only timeouts and a redirect policy set builds");
    // A claim outlasts an attempt, so no other notifier posts it meanwhile.
    let lease = settings.timeout + Duration::from_secs(5);
    loop {
        match store::claim_due(&pool, lease, MAX_EVENT_AGE, CLAIM_AT_ONCE).await {
            Ok(due) => {
                let attempts = due
                    .iter()
                    .map(|event| attempt(&client, &pool, &url, &settings, event));
                futures::future::join_all(attempts).await;
            }
            Err(error) => tracing::warn!("reading due notifications failed: {error}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

async fn attempt(
    client: &reqwest::Client,
    pool: &PgPool,
    url: &str,
    settings: &NotifySettings,
    event: &PendingNotification,
) {
    let mut event = event.clone();
    if event.source_max_id.is_none() {
        // The source's extent for the coverage summary; a source this
        // replica cannot read leaves it out rather than holding the event.
        event.source_max_id = sqlx::query_scalar(&format!("SELECT {SOURCE_MAX_ID}"))
            .fetch_one(pool)
            .await
            .ok()
            .flatten();
    }
    let event = &event;
    let body = body(event, &settings.public_base_url);
    let answer = client
        .post(url)
        .header("x-notification-id", event.id.to_string())
        .json(&body)
        .send()
        .await;
    let (delivered, outcome) = match &answer {
        Ok(response) => (
            response.status().is_success(),
            response.status().as_u16().to_string(),
        ),
        Err(error) if error.is_timeout() => (false, "timed out".to_string()),
        Err(error) if error.is_connect() => (false, "could not connect".to_string()),
        Err(_) => (false, "the request failed".to_string()),
    };
    let recorded = if delivered {
        store::mark_delivered(pool, event.id, &outcome).await
    } else {
        let wait = retry_wait(settings.retry_base, event.attempts);
        tracing::warn!(
            job_key = %event.job_key, event = %event.event, attempt = event.attempts,
            "the notification webhook answered {outcome}; trying again in {wait:?}"
        );
        store::mark_attempt_failed(pool, event.id, &outcome, wait).await
    };
    if let Err(error) = recorded {
        // The claim's lease runs out and the event is tried again.
        tracing::warn!(job_key = %event.job_key, "recording a notification's outcome failed: {error}");
    }
}

/// `base`, doubled per attempt after the first, at most [`MAX_RETRY_WAIT`].
fn retry_wait(base: Duration, attempts: i32) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(2_u32.saturating_pow(doublings))
        .min(MAX_RETRY_WAIT)
}

/// The webhook's JSON body (docs/notifications.md).
pub fn body(event: &PendingNotification, public_base_url: &str) -> serde_json::Value {
    let url = format!(
        "{}/jobs/{}",
        public_base_url.trim_end_matches('/'),
        event.job_key
    );
    let percent = event
        .source_max_id
        .filter(|max| *max > 0)
        .map(|max| ((event.cursor as f64 / max as f64) * 1000.0).floor() / 10.0);
    let status = match &event.pause_reason {
        Some(reason) if event.event == "paused" => format!("paused ({reason})"),
        _ => event.event.clone(),
    };
    let scope = if event.dry_run { "Dry run" } else { "Backfill" };
    let mut text = format!(
        "{scope} `{}` {status}: {} processed, {} failed, {} skipped; cursor {}",
        event.job_key,
        thousands(event.processed),
        thousands(event.failed),
        thousands(event.skipped),
        thousands(event.cursor),
    );
    if let (Some(max), Some(percent)) = (event.source_max_id, percent) {
        text.push_str(&format!(" of {} ({percent}%)", thousands(max)));
    }
    text.push_str(&format!(". <{url}|Open the job>"));
    json!({
        "event": event.event,
        "job_key": event.job_key,
        "status": event.event,
        "pause_reason": event.pause_reason,
        "dry_run": event.dry_run,
        "counters": {
            "processed": event.processed,
            "failed": event.failed,
            "skipped": event.skipped,
        },
        "coverage": {
            "cursor": event.cursor,
            "source_max_id": event.source_max_id,
            "percent": percent,
        },
        "last_error": event.last_error,
        "occurred_at": event.created_at,
        "url": url,
        "text": text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> PendingNotification {
        PendingNotification {
            id: 7,
            job_key: "identity-graph-users".into(),
            event: "paused".into(),
            pause_reason: Some("max-runtime".into()),
            dry_run: false,
            processed: 12_345,
            failed: 6,
            skipped: 78,
            cursor: 2_500,
            source_max_id: Some(10_000),
            last_error: None,
            created_at: chrono::DateTime::from_timestamp(1_764_892_800, 0).unwrap(),
            attempts: 1,
        }
    }

    #[test]
    fn the_body_carries_the_event_the_counters_the_coverage_and_a_link() {
        let body = body(&event(), "https://backfill.example.com/");
        assert_eq!(body["event"], "paused");
        assert_eq!(body["status"], "paused");
        assert_eq!(body["pause_reason"], "max-runtime");
        assert_eq!(body["counters"]["processed"], 12_345);
        assert_eq!(body["coverage"]["percent"], 25.0);
        assert_eq!(
            body["url"],
            "https://backfill.example.com/jobs/identity-graph-users"
        );
        assert_eq!(
            body["text"],
            "Backfill `identity-graph-users` paused (max-runtime): 12,345 processed, 6 failed, 78 skipped; \
             cursor 2,500 of 10,000 (25%). <https://backfill.example.com/jobs/identity-graph-users|Open the job>"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let base = Duration::from_secs(1);
        assert_eq!(retry_wait(base, 1), Duration::from_secs(1));
        assert_eq!(retry_wait(base, 2), Duration::from_secs(2));
        assert_eq!(retry_wait(base, 4), Duration::from_secs(8));
        assert_eq!(retry_wait(base, 40), MAX_RETRY_WAIT);
    }
}
