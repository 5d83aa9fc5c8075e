//! Periodic purge of expired sessions and old sign-in failures, so the two
//! tables stay as small as the live state they describe.

use super::AccessSettings;
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// How often the purge runs. Expired rows are already ignored by every query,
/// so this only bounds table growth; every replica runs it, and it is idempotent.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Failures are needed for one minute by the rate limit; they are kept an
/// hour so someone looking into an attack can still count them in SQL.
pub const FAILURE_RETENTION: Duration = Duration::from_secs(60 * 60);

/// What one purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub sessions: u64,
    pub login_failures: u64,
}

/// Deletes sessions past either timeout and failures older than the retention.
pub async fn purge_expired(
    pool: &PgPool,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    failure_retention: Duration,
) -> Result<Purged, sqlx::Error> {
    let sessions = sqlx::query(
        "DELETE FROM admin_sessions
         WHERE created_at <= now() - make_interval(secs => $1)
            OR last_seen_at <= now() - make_interval(secs => $2)",
    )
    .bind(absolute_timeout.as_secs_f64())
    .bind(idle_timeout.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    let login_failures = sqlx::query(
        "DELETE FROM login_failures WHERE failed_at <= now() - make_interval(secs => $1)",
    )
    .bind(failure_retention.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(Purged {
        sessions,
        login_failures,
    })
}

/// Starts the purge loop: once at start-up, then every `PURGE_INTERVAL`,
/// until `shutdown` is cancelled.
pub fn start_housekeeping(
    pool: PgPool,
    settings: Arc<AccessSettings>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PURGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match purge_expired(
                &pool,
                settings.session_idle_timeout,
                settings.session_absolute_timeout,
                FAILURE_RETENTION,
            )
            .await
            {
                Ok(purged) if purged == Purged::default() => {}
                Ok(purged) => tracing::info!(
                    sessions = purged.sessions,
                    login_failures = purged.login_failures,
                    "purged expired sessions and old sign-in failures"
                ),
                Err(error) => tracing::warn!("housekeeping purge failed: {error}"),
            }
        }
    })
}
