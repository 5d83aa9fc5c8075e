//! The Identity Graph: one trait, two adapters (DESIGN §7).

pub mod http;
pub mod postgres;

use crate::server::config::SinkConfig;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;

/// A row of the source `users` table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct SourceUser {
    pub id: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub signup_ip: Option<String>,
    pub last_login_ip: Option<String>,
    pub device_id: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The identifiers a user links through, as `(kind, value)`.
impl SourceUser {
    pub fn identifiers(&self) -> Vec<(&'static str, &str)> {
        [
            ("email", self.email.as_deref()),
            ("phone", self.phone.as_deref()),
            ("ip", self.signup_ip.as_deref()),
            ("ip", self.last_login_ip.as_deref()),
            ("device", self.device_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, value)| {
            value
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| (kind, v))
        })
        .collect()
    }
}

/// Why one user could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

pub trait IdentityGraph: Send + Sync + 'static {
    /// Writes (upserts) one user. Must be idempotent: delivery is at least once.
    fn write_user<'a>(&'a self, user: &'a SourceUser) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Writes (upserts) a chunk of users: one outcome per user, in the order
    /// given, so one bad user fails alone. Idempotent like `write_user`.
    ///
    /// The default writes the users one after another with `write_user`; an
    /// adapter that can write a set at once (the built-in graph) overrides it.
    fn write_users<'a>(
        &'a self,
        users: &'a [&'a SourceUser],
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
}

/// The configured adapter, or `None` when real runs must be refused.
pub fn from_config(config: &SinkConfig, pool: &PgPool) -> Option<Arc<dyn IdentityGraph>> {
    match config {
        SinkConfig::NotConfigured => None,
        SinkConfig::Postgres => Some(Arc::new(postgres::PostgresGraph::new(pool.clone()))),
        SinkConfig::Http {
            url,
            token,
            timeout,
        } => Some(Arc::new(http::HttpGraph::new(
            url.clone(),
            token.clone(),
            *timeout,
        ))),
    }
}
