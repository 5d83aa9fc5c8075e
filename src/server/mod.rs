//! The top of the house, in the server binary only: configuration, the
//! shared state, the HTTP stack, the database and the operational
//! subcommands. Nothing below imports from here (see ARCHITECTURE.md).

pub mod cli;
pub mod config;
pub mod database;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod seed;

use crate::access::ssr::AccessState;
use crate::backfill::engine::Engine;
use axum::extract::FromRef;
use leptos::prelude::*;
use sqlx::PgPool;

pub use config::Config;

/// The one state the router shares. Axum handlers take the part they need
/// (`FromRef`); server functions reach the same parts through context
/// (`request_context::shared`).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub access: AccessState,
    pub engine: Engine,
}
