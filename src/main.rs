// A run allocates and frees small buffers per user on several threads (HTTP
// requests, bodies, outcomes), and glibc's malloc spent about a fifth of a
// run's CPU doing it (docs/benchmarks.md).
#[cfg(feature = "ssr")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "ssr")]
fn main() -> std::process::ExitCode {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    use identity_graph_backfill::server::{runtime::EngineRuntime, Config};
    // The engine's runs, heartbeats and watchdog get a runtime of their own,
    // with ENGINE_THREADS workers (src/server/runtime.rs), so runs at full
    // speed neither slow the console nor are capped by its one thread.
    let engine_runtime = match Config::engine_runtime_from_env().map_err(|e| e.to_string()) {
        Ok((threads, nice)) => EngineRuntime::start_niced(threads, nice)
            .map_err(|e| format!("could not start the engine's runtime: {e}")),
        Err(message) => Err(message),
    };
    let engine_runtime = match engine_runtime {
        Ok(runtime) => runtime,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The console: one runtime thread. Leptos 0.8's reactive graph can
    // deadlock when a resource resolves on one worker while another renders
    // the same Suspense boundary (leptos-rs/leptos#4673, #4851); we caught
    // exactly that lock inversion in gdb under the end-to-end suite. Requests
    // are I/O-bound and argon2 runs on the blocking pool, so one thread costs
    // little once runs are elsewhere.
    let console_runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = console_runtime.block_on(run_command(engine_runtime.handle()));
    drop(console_runtime);
    // `serve` has already waited for runs to checkpoint; what is left is idle.
    engine_runtime.shutdown(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every subcommand: the operational ones of `server::cli`, and the
/// benchmark's, which sit above the server and so are joined here.
#[cfg(feature = "ssr")]
#[derive(clap::Parser)]
#[command(
    name = "identity-graph-backfill",
    version,
    about = "Backfills historical users into the Identity Graph"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[cfg(feature = "ssr")]
#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Operate(identity_graph_backfill::server::cli::Command),
    /// Measure throughput on a fresh database (see README, "Benchmarks").
    Bench(identity_graph_backfill::bench::BenchArgs),
    /// The benchmark's Identity Graph, a process of its own (`bench` starts it).
    #[command(hide = true)]
    BenchGraph(identity_graph_backfill::bench::BenchGraphArgs),
}

/// Runs the command line's command (`serve` when none is given) on the
/// console's runtime; runs go to `engine_runtime`.
#[cfg(feature = "ssr")]
async fn run_command(engine_runtime: &tokio::runtime::Handle) -> Result<(), String> {
    use clap::Parser;
    use identity_graph_backfill::{bench, server::cli};
    match Cli::parse().command {
        None => cli::run(cli::Command::Serve, engine_runtime).await,
        Some(Command::Operate(command)) => cli::run(command, engine_runtime).await,
        Some(Command::Bench(args)) => bench::run(args, engine_runtime).await,
        Some(Command::BenchGraph(args)) => bench::graph_process::run(args, engine_runtime).await,
    }
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser entry point is `hydrate()` in lib.rs; this binary is server-only.
}
