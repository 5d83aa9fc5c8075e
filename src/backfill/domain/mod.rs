//! The backfill's shared vocabulary, compiled for both the server and the
//! WASM UI, so the form checks input with exactly the rules the server
//! enforces:
//!
//! - [`status`]: job statuses, pause reasons, modes, and their stored words;
//! - [`job_key`]: the job key and its rules;
//! - [`options`]: the start options, each declared once;
//! - [`views`]: the shapes the API returns;
//! - [`failures`]: failures by class, their filter and their pages;
//! - [`history`]: a job's runs, stops, tunes and notifications as one timeline;
//! - [`timestamp`]: the instants in them, and their calendar fields.

pub mod failures;
pub mod history;
pub mod job_key;
pub mod notifications;
pub mod options;
pub mod status;
pub mod timestamp;
pub mod views;

pub use failures::*;
pub use history::*;
pub use job_key::*;
pub use notifications::*;
pub use options::*;
pub use status::*;
pub use timestamp::Timestamp;
pub use views::*;
