//! The Postgres pool and migrations.

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgPool,
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL: could not connect to {url}: {cause}. Is Postgres running and is the URL right?")]
    Connect { url: String, cause: String },
    #[error("could not apply the migrations in migrations/: {0}")]
    Migrate(String),
}

/// The URL with its password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DatabaseError> {
    connect_with(url, max_connections, None).await
}

/// `connect`, with every statement on the pool's connections bounded by
/// `statement_timeout` (Postgres cancels a statement that runs longer).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> Result<PgPool, DatabaseError> {
    // One direct connection first: a pool only reports "timed out", while a
    // connection names the cause (refused, unknown host, bad password …).
    let probe =
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await;
    let cause = match probe {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            None
        }
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some("no answer within 5 s".to_string()),
    };
    if let Some(cause) = cause {
        return Err(DatabaseError::Connect {
            url: redact_url(url),
            cause,
        });
    }
    let mut options: PgConnectOptions =
        url.parse()
            .map_err(|e: sqlx::Error| DatabaseError::Connect {
                url: redact_url(url),
                cause: e.to_string(),
            })?;
    if let Some(timeout) = statement_timeout {
        options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| DatabaseError::Connect {
            url: redact_url(url),
            cause: e.to_string(),
        })
}

pub async fn migrate(pool: &PgPool) -> Result<(), DatabaseError> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(|e| DatabaseError::Migrate(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            super::redact_url("postgres://nobody@127.0.0.1:1/x"),
            "postgres://nobody@127.0.0.1:1/x"
        );
    }
}
