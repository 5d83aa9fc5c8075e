#![recursion_limit = "256"]
//! Identity Graph Backfill: the operator console and job runner that pushes
//! historical users into the Identity Graph.
//!
//! - `access`: sign-in, sessions and the allow-list;
//! - `backfill`: the domain, the API, and (server) the engine, runner and sinks;
//! - `console`, `reporting`: the pages;
//! - `server`: configuration, HTTP stack and subcommands (server only);
//! - `bench`: the benchmark, one module per figure (server only).
//!
//! Another Leptos app can mount [`console::ConsolePage`] or call the server
//! functions in [`backfill::api`] from its own pages.

pub mod access;
pub mod app;
pub mod backfill;
pub mod console;
pub mod error;
pub mod reporting;
#[cfg(feature = "ssr")]
pub mod request_context;

#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "ssr")]
pub mod bench;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // A marker the end-to-end tests wait for before they interact.
    let _ = js_sys::Reflect::set(
        &leptos::prelude::window(),
        &wasm_bindgen::JsValue::from_str("__hydrated"),
        &wasm_bindgen::JsValue::TRUE,
    );
}
