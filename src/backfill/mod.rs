//! Backfills: the domain (shared with the UI), the API, and on the server the
//! engine (starts, stops, leases, the watchdog), the runner (one run), the
//! source (the `users` table), the store (the job tables), the Identity
//! Graph sinks and the failures' CSV export.

pub mod api;
pub mod domain;

#[cfg(feature = "ssr")]
pub mod engine;
#[cfg(feature = "ssr")]
pub mod export;
#[cfg(feature = "ssr")]
pub mod identifiers;
#[cfg(feature = "ssr")]
pub mod runner;
#[cfg(feature = "ssr")]
pub mod sinks;
#[cfg(feature = "ssr")]
pub mod source;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod transient;
