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
    // One runtime thread. Leptos 0.8's reactive graph can deadlock when a
    // resource resolves on one worker while another renders the same
    // Suspense boundary (leptos-rs/leptos#4673, #4851); we caught exactly that
    // lock inversion in gdb under the end-to-end suite. The work here is
    // I/O-bound and argon2 runs on the blocking pool, so one thread costs little.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(identity_graph_backfill::server::cli::run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser entry point is `hydrate()` in lib.rs; this binary is server-only.
}
