//! The integration tests: one binary, one module per concern, one harness.
//!
//! Every test gets a fresh database from `#[sqlx::test]` (`DATABASE_URL`
//! names the server). Start with `harness` for what a test can build; then
//!
//! | module | what it covers |
//! |---|---|
//! | `runner` | one run's semantics, driven batch by batch with `Runner::step` and a test graph |
//! | `engine` | runs as an operator starts, stops, resumes and rehearses them |
//! | `engine_runtime` | the engine on a runtime of its own, as `serve` runs it |
//! | `http_sink` | what the HTTP Identity Graph's answers do to users |
//! | `lease` | replicas, leases, shutdown, database trouble, the real binary under SIGTERM |
//! | `built_in_graph` | the Postgres identity graph |
//! | `integrity` | what the graph holds: replaced links, one normalization for both graphs, late arrivals, newest read, one graph per job |
//! | `graph_batch` | the built-in graph's batched writes: same graph as per-user writes, concurrency, one bad user |
//! | `failures` | a job's failures by class: grouped counts, filter, search, keyset pages, the CSV export |
//! | `metrics` | `/metrics` on its own listener, scraped during a run, matching the job row |
//! | `notifications` | the webhook: each event once, retried after a 500, delivered after a restart, never in a run's way |
//! | `layers` | no module imports from a layer above its own (ARCHITECTURE.md) |
//! | `api` | the job-control API over HTTP: validation, clamping, who did what |
//! | `upgrade` | rows written by other releases, and the upgrade itself |
//! | `access` | sign-in, sessions, the allow-list guard, the audit log |
//! | `admin_cli` | the binary's `admin` subcommands and their effect on live sessions |
//! | `throttle` | `max_rate` spreads sends evenly; `tune` changes a running job from any replica |
//! | `scale` | the coverage check stored (once per run end, never on a poll), "Check again" shared by two tabs, the console's statement timeout, the console's plans at a million users |
//! | `run_story` | what a run leaves behind: dry-run predictions, run numbers, duration and rate, the chart's samples |
//! | `assets` | the WASM, JS and CSS served precompressed, with cache headers |
//! | `sign_in_limits` | the failure limit under load, across replicas, behind a proxy |
#![cfg(feature = "ssr")]

mod harness;

mod access;
mod admin_cli;
mod api;
mod assets;
mod built_in_graph;
mod engine;
mod engine_runtime;
mod failures;
mod graph_batch;
mod http_sink;
mod integrity;
mod layers;
mod lease;
mod metrics;
mod notifications;
mod run_story;
mod runner;
mod scale;
mod sign_in_limits;
mod throttle;
mod upgrade;
