//! The Identity Graph: one trait, two adapters, and the configuration that
//! picks one.

pub mod http;
pub mod pool_wait;
pub mod postgres;

use futures::future::BoxFuture;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

pub use super::identifiers::GraphUser;

/// The histogram of Identity Graph calls (one per user over HTTP, one per
/// chunk into the built-in graph), in seconds, labelled by `outcome`: `ok`
/// when every user of the call was written, else `failed`.
pub const GRAPH_REQUEST_SECONDS: &str = "identity_graph_request_duration_seconds";

/// How often the runner sends a user whose write failed for a transient
/// reason (`Retry::Transient`) before it records the failure.
pub const MAX_ATTEMPTS: u32 = 3;

/// Why one user could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What an operator reads: the graph's answer, quoted.
    pub message: String,
    /// A short name for what went wrong, to group failures by: `http 400`,
    /// `timeout`, `connection`, `redirect`, `throttled`, or the built-in
    /// graph's SQLSTATE class (`sqlstate 23`).
    pub class: String,
    /// Whether the same write may succeed later.
    pub retry: Retry,
}

/// Whether, and how, a failed write may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The graph refused the user; sending it again changes nothing.
    Never,
    /// A timeout, a lost connection or a 5xx: worth a few more attempts.
    Transient,
    /// The graph asked to slow down (429, or 503 with `Retry-After`): the
    /// whole run waits, and the user is sent again after the wait.
    Throttled { retry_after: Option<Duration> },
}

impl SinkError {
    /// A failure that trying again cannot fix.
    pub fn permanent(class: impl Into<String>, message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            class: class.into(),
            retry: Retry::Never,
        }
    }

    pub fn transient(class: impl Into<String>, message: impl Into<String>) -> Self {
        SinkError {
            retry: Retry::Transient,
            ..Self::permanent(class, message)
        }
    }
}

pub trait IdentityGraph: Send + Sync + 'static {
    /// Writes one user: its whole identity, replacing what the graph held
    /// for it, unless the graph holds a newer read (`observed_at`). Must be
    /// idempotent: delivery is at least once.
    fn write_user<'a>(&'a self, user: &'a GraphUser) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Writes (upserts) a chunk of users: one outcome per user, in the order
    /// given, so one bad user fails alone. Idempotent like `write_user`.
    ///
    /// The default writes the users one after another with `write_user`; an
    /// adapter that can write a set at once (the built-in graph) overrides it.
    fn write_users<'a>(
        &'a self,
        users: &'a [&'a GraphUser],
    ) -> BoxFuture<'a, Vec<Result<(), SinkError>>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(users.len());
            for user in users {
                outcomes.push(self.write_user(user).await);
            }
            outcomes
        })
    }

    /// How many users the runner should hand `write_users` at once, at most.
    /// 1 (the default) keeps one user per call: the HTTP graph's per-user
    /// `PUT`s, each running with the run's concurrency.
    fn preferred_chunk(&self) -> usize {
        1
    }

    /// The graph lives in the app's own database, so a job's coverage check
    /// can count the users it holds.
    fn is_built_in(&self) -> bool {
        false
    }

    /// Names this graph for the job it binds (`GraphBinding`).
    fn binding(&self) -> GraphBinding;
}

/// The Identity Graph a job writes to, as its row records it: `postgres`,
/// or `http <url>` with any credentials removed from the URL. A replica
/// configured with another graph neither starts nor resumes the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphBinding(String);

impl GraphBinding {
    pub const BUILT_IN: &'static str = "postgres";

    pub fn built_in() -> Self {
        GraphBinding(Self::BUILT_IN.to_string())
    }

    /// `http <url>`, without user name, password, query or trailing slash.
    pub fn http(url: &str) -> Self {
        let shown = match reqwest::Url::parse(url) {
            Ok(mut parsed) => {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
                parsed.set_query(None);
                parsed.set_fragment(None);
                parsed.as_str().trim_end_matches('/').to_string()
            }
            Err(_) => url.trim_end_matches('/').to_string(),
        };
        GraphBinding(format!("http {shown}"))
    }

    /// A binding read back from a job row.
    pub fn stored(text: String) -> Self {
        GraphBinding(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_built_in(&self) -> bool {
        self.0 == Self::BUILT_IN
    }
}

impl std::fmt::Display for GraphBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which Identity Graph real runs write to.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// Real runs are refused; dry runs still work.
    NotConfigured,
    Http(http::HttpGraphConfig),
    /// The built-in graph, in the app's own database.
    Postgres,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkConfig::NotConfigured => write!(f, "not configured"),
            SinkConfig::Postgres => write!(f, "postgres"),
            SinkConfig::Http(http) => write!(f, "{http:?}"),
        }
    }
}

/// The configured adapter, or `None` when real runs must be refused.
pub fn from_config(config: &SinkConfig, pool: &PgPool) -> Option<Arc<dyn IdentityGraph>> {
    match config {
        SinkConfig::NotConfigured => None,
        SinkConfig::Postgres => Some(Arc::new(postgres::PostgresGraph::new(pool.clone()))),
        SinkConfig::Http(http) => Some(Arc::new(http::HttpGraph::new(
            http.url.clone(),
            http.token.clone(),
            http.timeout,
        ))),
    }
}
