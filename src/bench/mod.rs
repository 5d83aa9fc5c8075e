//! `bench`: throughput of the engine against its baselines, on a fresh
//! database seeded with N users. A benchmark, not a test: it prints figures
//! and their ratios to the goals. It is above `server` (it starts engines
//! and `serve` replicas the way `serve` does) and nothing imports from it.
//!
//! One module per figure, in the order they run:
//! - `keyset_scan`: (b) the raw keyset scan, with no bookkeeping;
//! - `dry_run`: (a) a dry run through the engine;
//! - `loopback_http`: (c) real runs against an HTTP graph in this process at
//!   concurrency 1, 8 and 32, and (d) that graph's own capacity;
//! - `built_in_graph`: (e) every user into the built-in Postgres graph;
//! - `catch_up`: (f) late arrivals below (e)'s cursor, caught up, against a
//!   `reset_cursor` rerun;
//! - `http_graph`: (2) a run against the graph process beside its capacity;
//! - `tail`: (3) a run against a graph with a tail beside Little's bound;
//! - `console_latency`: (4) the console's latency, idle and under two runs;
//! - `capacity`: (5) the brake against a graph of bounded capacity, beside
//!   realtime traffic: a static run, an adaptive run, `max_rate` and `tune`;
//! - `scale`: (6), with `--scale` instead of the others: the dry run, the
//!   built-in graph's first and last million, the console's p95 idle and
//!   with 10 polling tabs, the coverage check's time, peak memory;
//! - `failures`: (7), with `--failures` instead of the others: a million
//!   failures grouped, paged by class, searched, and exported as CSV.
//!
//! In-process runs use an engine runtime, as `serve` does. (2)–(5) use real
//! processes, children of this one (`processes`): `bench-graph`
//! (`graph_process`, a hidden subcommand) as the Identity Graph, and `serve`
//! replicas. `support` holds what several figures share.

use crate::backfill::domain::*;
use crate::server::{config::Config, runtime::open_executor};
use sqlx::PgPool;
use std::time::{Duration, Instant};

mod built_in_graph;
mod capacity;
mod catch_up;
mod console_latency;
mod dry_run;
mod failures;
pub mod graph_process;
mod http_graph;
mod keyset_scan;
mod loopback_http;
mod processes;
mod scale;
mod support;
mod tail;

pub use graph_process::BenchGraphArgs;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// How many users to seed.
    #[arg(long, default_value_t = 1_000_000)]
    users: i64,
    /// Batch size for the scans.
    #[arg(long, default_value_t = 1_000)]
    batch_size: i64,
    /// How long each HTTP measurement runs, in seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrency of the dry run (a) and of the built-in graph run (e).
    #[arg(long, default_value_t = 8)]
    concurrency: i64,
    /// Skip (c) and (d), the HTTP figures.
    #[arg(long)]
    skip_http: bool,
    /// Skip (e), the built-in graph.
    #[arg(long)]
    skip_built_in_graph: bool,
    /// Concurrency of the runs and the load loop of (2), (3) and (4)'s HTTP run.
    #[arg(long, default_value_t = 32)]
    http_concurrency: i64,
    /// Skip (2), the run against the graph process and its capacity.
    #[arg(long)]
    skip_http_graph: bool,
    /// Skip (3), the run against the graph with a tail.
    #[arg(long)]
    skip_tail: bool,
    /// Skip (4), the console's latency.
    #[arg(long)]
    skip_console: bool,
    /// Skip (5), the brake against a graph of bounded capacity.
    #[arg(long)]
    skip_capacity: bool,
    /// Run only (6), the scale figure (with e.g. `--users 10000000`): the
    /// console, the coverage check and the database at that many users.
    #[arg(long)]
    scale: bool,
    /// Run only (7), the failures workbench: the grouped view, a class
    /// page, a search and the CSV export over `--failure-rows` failures.
    #[arg(long)]
    failures: bool,
    /// How many unresolved failures (7) seeds on its job.
    #[arg(long, default_value_t = 1_000_000)]
    failure_rows: i64,
}

pub async fn run(args: BenchArgs, runtime: &tokio::runtime::Handle) -> Result<(), String> {
    let base = Config::from_env().map_err(|e| e.to_string())?;
    let (pool, name, url) = support::fresh_database(&base.database_url).await?;
    println!("benchmark database {name}");
    let result = measure(&args, runtime, &pool, &url).await;
    pool.close().await;
    support::drop_database(&base.database_url, &name).await?;
    result
}

async fn measure(
    args: &BenchArgs,
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    url: &str,
) -> Result<(), String> {
    let executor = open_executor(runtime, url, 40)
        .await
        .map_err(|e| e.to_string())?;

    if args.failures {
        // (7) reads failures only; it seeds its own.
        executor.pool.close().await;
        processes::create_admin(pool).await?;
        let summary = failures::measure(pool, url, args.failure_rows).await?;
        println!();
        for line in summary {
            println!("{line}");
        }
        return Ok(());
    }

    let seeded = Instant::now();
    crate::server::seed::seed_demo_users(pool, args.users)
        .await
        .map_err(|e| e.to_string())?;
    let seeding = seeded.elapsed();
    println!(
        "seeded {} users in {:.1}s",
        args.users,
        seeding.as_secs_f64()
    );
    let batch = BATCH_SIZE.bounds.clamp(args.batch_size);

    if args.scale {
        executor.pool.close().await;
        processes::create_admin(pool).await?;
        let concurrency = CONCURRENCY.bounds.clamp(args.concurrency);
        let mut summary = vec![format!(
            "(6) seeding {} users (set-based): {:.1}s   (goal < {}s: ratio {:.2}, {})",
            args.users,
            seeding.as_secs_f64(),
            scale::SEED_GOAL.as_secs(),
            seeding.as_secs_f64() / scale::SEED_GOAL.as_secs_f64(),
            support::verdict(seeding < scale::SEED_GOAL)
        )];
        summary.extend(scale::measure(pool, url, args.users, batch, concurrency).await?);
        println!();
        for line in summary {
            println!("{line}");
        }
        return Ok(());
    }

    let raw_rate = keyset_scan::measure(pool, batch).await?;
    let dry_rate = dry_run::measure(pool, &executor, batch, args.concurrency).await?;
    let mut summary = vec![format!(
        "ratio (a)/(b)       = {:.2}   (goal >= 0.5)",
        dry_rate / raw_rate
    )];
    if !args.skip_http {
        let figures = loopback_http::measure(pool, &executor, batch, args.seconds).await?;
        summary.extend(figures.ratios());
    }

    // (e) opens a pool of its own; leave Postgres the connections for it.
    executor.pool.close().await;

    if !args.skip_built_in_graph {
        let held_back = catch_up::hold_back_late_arrivals(pool).await?;
        let graph = built_in_graph::measure(pool, url, runtime, batch, args.concurrency).await?;
        summary.extend(graph.ratios(dry_rate));
        let catch_up =
            catch_up::measure(pool, url, runtime, batch, args.concurrency, held_back).await?;
        summary.extend(catch_up.ratios());
    }

    println!();
    for line in summary {
        println!("{line}");
    }
    println!(
        "peak memory of the process (VmHWM): {} KiB",
        support::rss_kib("VmHWM:")
    );

    if !(args.skip_http_graph && args.skip_tail && args.skip_console && args.skip_capacity) {
        println!();
        process_figures(args, runtime, pool, url, batch).await?;
    }
    Ok(())
}

/// (2) to (5), each printed as it is measured, then their summary
/// lines. (2) and (4) share the `http` replica and its instant graph.
async fn process_figures(
    args: &BenchArgs,
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    database_url: &str,
    batch: i64,
) -> Result<(), String> {
    processes::create_admin(pool).await?;
    let concurrency = CONCURRENCY.bounds.clamp(args.http_concurrency);
    let seconds = Duration::from_secs(args.seconds.max(1));
    // Two pools per replica (the console's and the engine's); room for the
    // run's concurrency, and under Postgres's 100 connections with two
    // replicas and this process.
    let http_connections = 12;
    let built_in_connections = (args.concurrency + 4).clamp(12, 30);
    let mut summary = Vec::new();

    let mut instant = None;
    if !(args.skip_http_graph && args.skip_console) {
        let (graph, graph_url) = processes::spawn_graph("instant").await?;
        let sink = processes::http_sink(&graph_url);
        let (replica, console) =
            processes::spawn_replica("http", database_url, http_connections, &sink).await?;
        instant = Some((graph, graph_url, replica, console));
    }

    if let (false, Some((_, graph_url, _, console))) = (args.skip_http_graph, &instant) {
        summary.push(
            http_graph::measure(
                runtime,
                pool,
                console,
                graph_url,
                batch,
                concurrency,
                seconds,
            )
            .await?,
        );
    }

    if !args.skip_tail {
        summary.push(
            tail::measure(
                pool,
                database_url,
                http_connections,
                batch,
                concurrency,
                seconds,
            )
            .await?,
        );
    }

    if let (false, Some((_, _, _, http_console))) = (args.skip_console, &instant) {
        let load = console_latency::ConsoleLoad {
            http_console,
            built_in_connections,
            batch,
            built_in_concurrency: args.concurrency,
            http_concurrency: concurrency,
            seconds,
        };
        summary.push(console_latency::measure(pool, database_url, load).await?);
    }

    if let Some((graph, _, replica, _)) = instant {
        replica.terminate().await;
        graph.terminate().await;
    }

    if !args.skip_capacity {
        summary.extend(
            capacity::measure(
                runtime,
                pool,
                database_url,
                http_connections,
                batch,
                seconds,
            )
            .await?,
        );
    }
    println!();
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
