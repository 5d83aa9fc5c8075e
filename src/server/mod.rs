//! Everything that exists only in the server binary: configuration, state,
//! the HTTP stack, the database and the operational subcommands.

pub mod bench;
pub mod cli;
pub mod config;
pub mod database;
pub mod http;
pub mod seed;

use crate::error::AppError;
use axum::extract::FromRef;
use leptos::prelude::*;
use sqlx::PgPool;
use std::sync::Arc;

pub use config::Config;

/// The one state the router and every server function share.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub engine: crate::backfill::engine::Engine,
}

/// The state, as server functions reach it through context.
pub fn state() -> Result<AppState, AppError> {
    use_context::<AppState>()
        .ok_or_else(|| internal_error("reading app state", "no AppState in context"))
}

pub fn request_parts() -> Result<axum::http::request::Parts, AppError> {
    use_context::<axum::http::request::Parts>()
        .ok_or_else(|| internal_error("reading the request", "no request parts in context"))
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn current_request_id() -> String {
    use_context::<axum::http::request::Parts>()
        .and_then(|parts| {
            parts
                .headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(new_request_id)
}

pub fn new_request_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Logs the real cause under the request id and returns an `INTERNAL` error
/// that carries only that id, so SQL text never reaches a client.
pub fn internal_error(doing: &str, cause: impl std::fmt::Display) -> AppError {
    let request_id = current_request_id();
    tracing::error!(%request_id, "internal error while {doing}: {cause}");
    AppError::internal(request_id)
}
