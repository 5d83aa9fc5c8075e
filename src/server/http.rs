//! The HTTP stack: routes, the middleware every request passes through, and
//! the start-up and shutdown of the server.

use super::{config::Config, database, AppState};
use crate::{
    access::ssr::{session_admin, AccessState},
    app::{shell, App},
    backfill::{
        domain::json_kind,
        engine::{Engine, RunExecutor},
        sinks,
    },
    error::{AppError, ErrorCode},
    request_context::{new_request_id, REQUEST_ID_HEADER},
};
use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Json, Router,
};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub const API_PREFIX: &str = "/api/";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    #[error("LEPTOS_SITE_ADDR: cannot listen on {addr}: {cause}. Another process may be using it; set LEPTOS_SITE_ADDR to a free address.")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("METRICS_ADDR: cannot listen on {addr}: {cause}. Set METRICS_ADDR to a free address, or unset it.")]
    MetricsBind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

pub fn build_leptos_options(config: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("identity-graph-backfill")
        .site_root(config.site_root.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .site_addr(config.site_addr)
        .build()
}

/// Builds the shared state on a migrated pool, with the background work (the
/// engine's watchdog, the access housekeeping) started under `shutdown`, and
/// the engine on the caller's runtime and pool.
pub fn build_state(config: Config, pool: sqlx::PgPool, shutdown: CancellationToken) -> AppState {
    let executor = RunExecutor::current(pool.clone());
    build_state_on(config, pool, executor, shutdown)
}

/// [`build_state`] with the engine's work on `executor` (the server's engine
/// runtime).
pub fn build_state_on(
    config: Config,
    pool: sqlx::PgPool,
    executor: RunExecutor,
    shutdown: CancellationToken,
) -> AppState {
    tracing::info!(sink = ?config.sink, "configuration loaded");
    let access = AccessState {
        pool: pool.clone(),
        settings: Arc::new(config.access.clone()),
    };
    {
        // Malformed entries, an empty list, the count allowed, and an
        // allow-list naming nobody with an account; logged, never fatal.
        let (pool, admins) = (pool.clone(), config.access.admins.clone());
        tokio::spawn(async move {
            crate::access::ssr::allow_list_check::log_allow_list_check(&pool, &admins).await
        });
    }
    crate::access::ssr::housekeeping::start_housekeeping(
        pool.clone(),
        access.settings.clone(),
        shutdown.clone(),
    );
    let engine = build_engine_on(&config, pool.clone(), executor, shutdown);
    engine.start_watchdog();
    AppState {
        leptos_options: build_leptos_options(&config),
        pool,
        access,
        engine,
    }
}

/// The engine with the configured Identity Graph, all on the caller's
/// runtime and pool; its watchdog not started.
pub fn build_engine(config: &Config, pool: sqlx::PgPool, shutdown: CancellationToken) -> Engine {
    let executor = RunExecutor::current(pool.clone());
    build_engine_on(config, pool, executor, shutdown)
}

/// [`build_engine`] with runs, heartbeats and the watchdog on `executor`.
/// The built-in graph writes through `executor`'s pool, since runs call it.
pub fn build_engine_on(
    config: &Config,
    pool: sqlx::PgPool,
    executor: RunExecutor,
    shutdown: CancellationToken,
) -> Engine {
    let sink = sinks::from_config(&config.sink, &executor.pool);
    Engine::new(pool, executor, config.engine.clone(), sink, shutdown)
}

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || {
            provide_context(state.access.clone());
            provide_context(state.engine.clone());
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        // The admission middleware below admits it like `job`.
        .route(
            "/api/identity-graph-backfill/failures.csv",
            get(crate::backfill::export::failures_csv),
        )
        .nest_service("/pkg", pkg_assets(&state.leptos_options))
        .leptos_routes_with_context(&state, routes, context.clone(), {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, shell))
        .layer(middleware::from_fn_with_state(state.clone(), page_access))
        .layer(middleware::from_fn(cache_headers))
        .layer(middleware::from_fn_with_state(state.clone(), api_admission))
        .layer(middleware::from_fn(api_request_guard))
        .layer(middleware::from_fn(error_status))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Serves until SIGINT/SIGTERM, then lets running jobs checkpoint and pause.
/// The console runs on the caller's (current-thread) runtime; the engine's
/// work on `engine_runtime`, with a pool of its own opened there.
pub async fn serve(
    config: Config,
    engine_runtime: &tokio::runtime::Handle,
) -> Result<(), StartupError> {
    let shutdown = CancellationToken::new();
    let addr = config.site_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| StartupError::Bind { addr, cause })?;
    let pool = database::connect(&config.database_url, config.database_max_connections).await?;
    database::migrate(&pool).await?;
    let executor = super::runtime::open_executor_with(
        engine_runtime,
        &config.database_url,
        config.engine_max_connections,
        config.engine.statement_timeout,
    )
    .await?;
    if let Some(metrics_addr) = config.metrics_addr {
        super::metrics::install_with(config.metrics_job_idle);
        let bound = super::metrics::spawn(metrics_addr, pool.clone(), shutdown.clone())
            .await
            .map_err(|cause| StartupError::MetricsBind {
                addr: metrics_addr,
                cause,
            })?;
        println!("Metrics are served on http://{bound}/metrics");
    }
    tracing::info!(
        engine_threads = config.engine_threads,
        engine_nice = config.engine_nice,
        "runs use the engine's runtime"
    );
    let state = build_state_on(config, pool, executor, shutdown.clone());
    let engine = state.engine.clone();
    let app = router(state);
    println!("Identity Graph Backfill is listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let signal = shutdown.clone();
    // The console's page is streamed in several writes (the shell, then each
    // Suspense boundary); with Nagle's algorithm on, a later small write waits
    // for the client's delayed ACK of the first, about 40 ms per page.
    let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY on a connection: {error}");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: pausing running jobs");
        signal.cancel();
    })
    .await
    .map_err(StartupError::Serve)?;
    engine.wait_for_runs(Duration::from_secs(4)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Until SIGINT or SIGTERM: `serve`'s shutdown, and the benchmark's graph process.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn healthz(State(state): State<AppState>) -> Response {
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    match probe {
        Ok(Ok(_)) => Json(serde_json::json!({"status": "ok", "database": "ok"})).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "database": "unreachable"})),
        )
            .into_response(),
    }
}

/// One span per request, carrying a request id that internal errors quote.
async fn request_span(mut req: Request, next: Next) -> Response {
    let request_id = new_request_id();
    req.headers_mut().insert(
        REQUEST_ID_HEADER,
        HeaderValue::from_str(&request_id).expect("hex is a valid header"),
    );
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    );
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "handled"
        )
    });
    response.headers_mut().insert(
        REQUEST_ID_HEADER,
        HeaderValue::from_str(&request_id).expect("hex is a valid header"),
    );
    response
}

fn error_response(status: StatusCode, error: AppError) -> Response {
    (status, Json(error)).into_response()
}

/// Refuses API calls that did not come from the app: a server function
/// call (a `POST`) whose content type is not JSON (415), or an `Origin` of
/// another site.
async fn api_request_guard(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(API_PREFIX) {
        return next.run(req).await;
    }
    if req.method() == Method::POST {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media_type != "application/json" {
            return error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                AppError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!(
                        "The API takes JSON only: send Content-Type: application/json (got {}).",
                        if media_type.is_empty() {
                            "none"
                        } else {
                            media_type.as_str()
                        }
                    ),
                ),
            );
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let cross_site_fetch = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site");
    let foreign_origin = match (origin, host) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
            origin == "null" || !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    if foreign_origin || cross_site_fetch {
        return error_response(
            StatusCode::FORBIDDEN,
            AppError::new(ErrorCode::Forbidden, "Cross-site requests are refused."),
        );
    }
    next.run(req).await
}

/// Server functions answer every error with 500; this gives each its own
/// status from its code, so curl and proxies see 401, 403, 422 …
async fn error_status(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with(API_PREFIX);
    let response = next.run(req).await;
    if !is_api || !response.headers().contains_key("serverfnerror") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status =
            StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The WASM, JS and CSS under `/pkg`, served precompressed by
/// `Accept-Encoding`: the `.br` sibling first, then `.gz`, then the file as
/// it is (a release build with `--precompress` writes the siblings).
fn pkg_assets(options: &LeptosOptions) -> tower_http::services::ServeDir {
    let dir = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    tower_http::services::ServeDir::new(dir)
        .precompressed_br()
        .precompressed_gzip()
}

/// A file name with a content hash in it (`app.3f9a1c0d2e4b5a6c.wasm`):
/// it never changes, so it may be cached for a year.
fn is_hashed_asset(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    file.split('.')
        .any(|part| part.len() >= 8 && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Cache lifetimes: a year for hashed assets, and revalidation (with the
/// `Last-Modified` `ServeDir` sends) for other assets and for pages, so a
/// new build is picked up at once.
async fn cache_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut response = next.run(req).await;
    if !response.status().is_success() || response.headers().contains_key(header::CACHE_CONTROL) {
        return response;
    }
    let policy = if path.starts_with("/pkg/") && is_hashed_asset(&path) {
        "public, max-age=31536000, immutable"
    } else if path.starts_with("/pkg/") || is_static_asset(&path) {
        "public, no-cache"
    } else {
        "no-cache"
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    if path.starts_with("/pkg/") {
        // The same URL answers brotli, gzip or plain bytes.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// What skips the page gate: the static files cargo-leptos serves, under
/// the asset prefix, and the icon. Every other path is a page, dotted or
/// not (`/jobs/backfill.2024`, `/jobs/q1.json`).
fn is_static_asset(path: &str) -> bool {
    path.starts_with("/pkg/") || path == "/favicon.svg" || path == "/favicon.ico"
}

/// The largest API request body; nothing the API takes comes near it.
pub const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// The fields each endpoint takes. `start` checks its own, with its rules.
fn endpoint_fields(endpoint: &str) -> Option<&'static [&'static str]> {
    match endpoint {
        "login" => Some(&["email", "password"]),
        "logout" | "me" | "list" => Some(&[]),
        "stop" | "job" | "check_coverage" => Some(&["job_key"]),
        "tune" => Some(&["job_key", "max_rate", "concurrency", "sleep_ms"]),
        "failures" => Some(&["job_key", "class", "q", "after_user_id", "limit"]),
        _ => None,
    }
}

/// Admits an API call in the order a caller can act on: the body fits, the
/// caller is signed in (and, for job endpoints, allowed), and only then is
/// the body's shape checked. So an anonymous caller learns nothing about
/// what a valid body looks like.
async fn api_admission(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(endpoint) = req
        .uri()
        .path()
        .strip_prefix("/api/identity-graph-backfill/")
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            AppError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "Request bodies are limited to {} KB.",
                    MAX_API_BODY_BYTES / 1024
                ),
            ),
        )
    };
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > MAX_API_BODY_BYTES) {
        return too_large();
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_API_BODY_BYTES).await else {
        return too_large();
    };
    // Signing in needs no session, and signing out must work when it is gone.
    if endpoint != "login" && endpoint != "logout" {
        let admin = match session_admin(&state.access, &parts.headers).await {
            Ok(admin) => admin,
            Err(e) => {
                tracing::error!("session lookup failed: {e}");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    AppError::internal(new_request_id()),
                );
            }
        };
        let Some(admin) = admin else {
            return error_response(StatusCode::UNAUTHORIZED, AppError::unauthenticated());
        };
        let job_endpoint = endpoint != "me";
        if job_endpoint && !state.access.is_allowed(&admin.email) {
            return error_response(StatusCode::FORBIDDEN, AppError::forbidden());
        }
        // The server function's guard reads it instead of a second lookup.
        parts.extensions.insert(admin);
    }
    // Every server function takes a JSON object; anything else is the
    // caller's mistake, answered before the codec turns it into a 500.
    let fields = if parts.method == Method::POST {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(fields)) => Some(fields),
            Ok(other) => {
                return error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    AppError::validation(
                        "body",
                        format!("send a JSON object, not {}", json_kind(&other)),
                    ),
                )
            }
            Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => {
                return error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    AppError::validation(
                        "body",
                        "the body is empty; send a JSON object ({} for none)",
                    ),
                );
            }
            Err(error) => {
                return error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    AppError::validation("body", format!("the body is not valid JSON: {error}")),
                )
            }
        }
    } else {
        None
    };
    if let (Some(allowed), Some(fields)) = (endpoint_fields(&endpoint), fields) {
        if let Some(unknown) = fields
            .keys()
            .find(|field| !allowed.contains(&field.as_str()))
        {
            let expected = if allowed.is_empty() {
                "this endpoint takes no fields".to_string()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                AppError::validation(unknown.clone(), format!("unknown field; {expected}")),
            );
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Pages need a session: a signed-out visit goes to `/login`, and a signed-in
/// visit to `/login` goes to the console.
async fn page_access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_page = req.method() == Method::GET
        && !path.starts_with(API_PREFIX)
        && path != "/healthz"
        && !is_static_asset(path);
    if !is_page {
        return next.run(req).await;
    }
    let admin = match session_admin(&state.access, req.headers()).await {
        Ok(admin) => admin,
        Err(e) => {
            tracing::error!("session lookup failed: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again shortly.",
            )
                .into_response();
        }
    };
    match (path == "/login", admin) {
        (true, Some(_)) => Redirect::to("/").into_response(),
        (false, None) => Redirect::to("/login").into_response(),
        (_, admin) => {
            let mut req = req;
            if let Some(admin) = admin {
                // The page's access gate reads this while rendering.
                req.extensions_mut().insert(crate::access::AdminIdentity {
                    allowed: state.access.is_allowed(&admin.email),
                    email: admin.email,
                });
            }
            next.run(req).await
        }
    }
}
