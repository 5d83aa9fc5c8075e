//! What a server function reaches through Leptos context while it handles a
//! request: the shared pieces of state the server provides, the request
//! itself, and the request id that internal errors quote. Server only; the
//! lowest layer beside `error`, so `access` and `backfill` use it without
//! knowing the `server` that fills it in.

use crate::error::AppError;
use leptos::prelude::use_context;

/// The header that carries a request's id, set by the server's request span.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A piece of shared state the server put into context (the engine, the
/// access state).
pub fn shared<T: Clone + Send + Sync + 'static>() -> Result<T, AppError> {
    use_context::<T>().ok_or_else(|| {
        internal_error(
            "reading shared state",
            format!("no {} in context", std::any::type_name::<T>()),
        )
    })
}

pub fn request_parts() -> Result<axum::http::request::Parts, AppError> {
    use_context::<axum::http::request::Parts>()
        .ok_or_else(|| internal_error("reading the request", "no request parts in context"))
}

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
