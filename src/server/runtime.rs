//! The engine's runtime: a multi-thread tokio runtime beside the console's
//! single thread (see `main.rs` for why the console has one thread).
//!
//! Runs, heartbeats and the watchdog are spawned here, and the engine's
//! pool is opened here (see [`RunExecutor`]), so two runs at full speed use
//! these threads and leave the console's thread to requests. The process
//! owns it: `main.rs` starts it before the console's runtime and shuts it
//! down after the console's runtime has returned.

use crate::backfill::engine::RunExecutor;
use std::time::Duration;

pub struct EngineRuntime {
    runtime: tokio::runtime::Runtime,
}

impl EngineRuntime {
    /// `ENGINE_THREADS` workers, named `engine` in `top -H` and in backtraces.
    pub fn start(worker_threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name("engine")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Ends what is left after the server's own shutdown (which already
    /// waited for runs to checkpoint): idle HTTP connections, the pool's
    /// maintenance. Must be called outside any runtime.
    pub fn shutdown(self, limit: Duration) {
        self.runtime.shutdown_timeout(limit);
    }
}

/// Opens the engine's pool on the engine's runtime, so its connections are
/// driven by the engine's threads, not by the caller's.
pub async fn open_executor(
    handle: &tokio::runtime::Handle,
    database_url: &str,
    max_connections: u32,
) -> Result<RunExecutor, super::database::DatabaseError> {
    let url = database_url.to_string();
    let pool = handle
        .spawn(async move { super::database::connect(&url, max_connections).await })
        .await
        .map_err(|error| super::database::DatabaseError::Connect {
            url: super::database::redact_url(database_url),
            cause: format!("the engine's runtime stopped while connecting: {error}"),
        })??;
    Ok(RunExecutor {
        handle: handle.clone(),
        pool,
    })
}
