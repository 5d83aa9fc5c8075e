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
        Self::start_niced(worker_threads, 0)
    }

    /// [`Self::start`], with every engine thread at `nice` (`ENGINE_NICE`).
    ///
    /// Runs are batch work and the console is an operator waiting for a
    /// page: with the engine's threads at a lower priority, the console's
    /// thread gets a core as soon as a request arrives, even while two runs
    /// keep every core busy. When the console is idle the engine still gets
    /// all the CPU there is, so runs lose nothing on a machine of their own.
    pub fn start_niced(worker_threads: usize, nice: i32) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name("engine")
            .on_thread_start(move || lower_this_threads_priority(nice))
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

/// Linux keeps a nice value per thread, and `setpriority(PRIO_PROCESS, 0, …)`
/// sets the calling thread's. Raising it needs no privilege. A thread that
/// already runs at `nice` or lower priority (a process started under `nice`)
/// is left as it is: the engine never runs above the console.
fn lower_this_threads_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: errno is this thread's; getpriority and setpriority only
        // read their integer arguments.
        let current = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let unreadable = current == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0);
        if unreadable || current >= nice {
            return;
        }
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            tracing::warn!(
                nice,
                "could not lower the priority of an engine thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Opens the engine's pool on the engine's runtime, so its connections are
/// driven by the engine's threads, not by the caller's.
pub async fn open_executor(
    handle: &tokio::runtime::Handle,
    database_url: &str,
    max_connections: u32,
) -> Result<RunExecutor, super::database::DatabaseError> {
    open_executor_with(
        handle,
        database_url,
        max_connections,
        DEFAULT_ENGINE_STATEMENT_TIMEOUT,
    )
    .await
}

/// `ENGINE_STATEMENT_TIMEOUT_MS`'s default.
pub const DEFAULT_ENGINE_STATEMENT_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(15);

/// `open_executor` with every engine statement bounded by
/// `statement_timeout`: a run never waits on one statement for ever, so a
/// database that hangs fails the statement and the run pauses `interrupted`.
pub async fn open_executor_with(
    handle: &tokio::runtime::Handle,
    database_url: &str,
    max_connections: u32,
    statement_timeout: std::time::Duration,
) -> Result<RunExecutor, super::database::DatabaseError> {
    let url = database_url.to_string();
    let pool = handle
        .spawn(async move {
            super::database::connect_with(&url, max_connections, Some(statement_timeout)).await
        })
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
