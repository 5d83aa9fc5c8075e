//! Connections for the built-in graph's chunk writes: a chunk waits for one
//! instead of failing its users.
//!
//! The engine's pool (`ENGINE_MAX_CONNECTIONS`) is shared by every chunk in
//! flight, each run's heartbeat and checkpoints, the watchdog and the
//! coverage check. Chunks take at most all but [`RESERVED`] of its
//! connections (a semaphore), so a run with more chunks in flight than
//! connections never starves its own heartbeat or checkpoint. A chunk over
//! the limit waits for a permit, then for a connection as long as it takes:
//! its users stay in flight, the window holds the run back behind them, and
//! no user fails because the pool was busy (`PoolTimedOut` is waited out,
//! not counted as an attempt). `/metrics` shows the waits.

use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections of the engine's pool that chunk writes leave to heartbeats,
/// checkpoints, the watchdog and the coverage check.
pub const RESERVED: u32 = 4;

/// How long chunks waited for a connection (`/metrics`, a histogram;
/// waits under a millisecond are not recorded).
pub const POOL_WAIT_SECONDS: &str = "identity_graph_backfill_pool_wait_seconds";

/// A wait shorter than this is not a wait worth reporting.
const NOTICEABLE: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub struct ChunkConnections {
    permits: Arc<Semaphore>,
    limit: u32,
}

impl ChunkConnections {
    /// All but [`RESERVED`] of `pool`'s connections (at least one).
    pub fn for_pool(pool: &PgPool) -> Self {
        let limit = pool
            .options()
            .get_max_connections()
            .saturating_sub(RESERVED)
            .max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// How many chunks may hold a connection at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A transaction for one chunk, and the permit that must outlive it.
    /// Waits for a permit, then for a connection, however long; only an
    /// error other than the pool's time-out is returned.
    pub async fn begin(
        &self,
        pool: &PgPool,
    ) -> Result<(OwnedSemaphorePermit, Transaction<'static, Postgres>), sqlx::Error> {
        let started = Instant::now();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let tx = loop {
            match pool.begin().await {
                Err(sqlx::Error::PoolTimedOut) => {
                    tracing::debug!("a chunk waits for a database connection");
                    continue;
                }
                other => break other?,
            }
        };
        let waited = started.elapsed();
        if waited >= NOTICEABLE {
            metrics::histogram!(POOL_WAIT_SECONDS).record(waited.as_secs_f64());
        }
        Ok((permit, tx))
    }
}
