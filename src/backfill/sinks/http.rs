//! The external Identity Graph API: `PUT {url}/users/{id}` with a bearer token.

use super::{GraphBinding, GraphUser, IdentityGraph, Retry, SinkError};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::{header, StatusCode};
use serde::Serialize;
use std::time::Duration;

pub use super::MAX_ATTEMPTS;

const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How much of an error body is read: enough to quote, never a whole page.
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;

/// `IDENTITY_GRAPH_URL`, `IDENTITY_GRAPH_TOKEN`, `IDENTITY_GRAPH_TIMEOUT_MS`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpGraphConfig {
    /// Without a trailing slash.
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpGraphConfig {
    // The token must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http {} (token {}, timeout {:?})",
            self.url,
            if self.token.is_some() { "set" } else { "unset" },
            self.timeout
        )
    }
}

pub struct HttpGraph {
    client: reqwest::Client,
    base_url: String,
    /// `{url}/users/`, parsed once: each user's URL is joined to it, which
    /// skips parsing (and IDNA-checking) the host for every request.
    users_url: Option<reqwest::Url>,
    token: Option<String>,
}

/// The body of `PUT /users/{id}`: the user's whole identity, normalized
/// (`backfill::identifiers`), serialized straight from the user.
#[derive(Serialize)]
pub struct UserBody<'a> {
    user_id: i64,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    created_at: DateTime<Utc>,
    /// When the source row was read: a graph keeps the newest read of a
    /// user and ignores an older one ("newest read wins").
    observed_at: DateTime<Utc>,
    identifiers: IdentifiersBody<'a>,
}

#[derive(Serialize)]
struct IdentifiersBody<'a> {
    email: Option<&'a str>,
    phone: Option<&'a str>,
    signup_ip: Option<&'a str>,
    last_login_ip: Option<&'a str>,
    device_ids: &'a [String],
}

impl HttpGraph {
    pub fn new(base_url: String, token: Option<String>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            // A redirect is a misconfigured URL, not a write: it fails the user.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with only timeouts set builds");
        let users_url = reqwest::Url::parse(&format!("{base_url}/users/")).ok();
        Self {
            client,
            base_url,
            users_url,
            token,
        }
    }

    pub fn request_body(user: &GraphUser) -> UserBody<'_> {
        UserBody {
            user_id: user.id,
            email: user.email.as_deref(),
            phone: user.phone.as_deref(),
            created_at: user.created_at,
            observed_at: user.observed_at,
            identifiers: IdentifiersBody {
                email: user.email.as_deref(),
                phone: user.phone.as_deref(),
                signup_ip: user.signup_ip.as_deref(),
                last_login_ip: user.last_login_ip.as_deref(),
                device_ids: user.device_id.as_slice(),
            },
        }
    }

    /// `{url}/users/{id}`.
    pub fn user_url(&self, id: i64) -> Result<reqwest::Url, SinkError> {
        self.users_url
            .as_ref()
            .and_then(|users| users.join(&id.to_string()).ok())
            .ok_or_else(|| {
                SinkError::permanent(
                    "configuration",
                    format!(
                        "{}/users/{id} is not a URL; check IDENTITY_GRAPH_URL",
                        self.base_url
                    ),
                )
            })
    }

    /// One attempt: the runner decides whether and when to try again, so
    /// a throttling graph holds the whole run, not one slot
    /// (`runner::throttle`).
    async fn write(&self, user: &GraphUser) -> Result<(), SinkError> {
        let url = self.user_url(user.id)?;
        let mut request = self.client.put(url).json(&Self::request_body(user));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(SinkError::transient(
                    "timeout",
                    "timed out waiting for the Identity Graph",
                ))
            }
            Err(error) if error.is_connect() => {
                return Err(SinkError::transient(
                    "connection",
                    "could not connect to the Identity Graph",
                ))
            }
            Err(error) => {
                return Err(SinkError::transient(
                    "connection",
                    format!("request failed: {}", error.without_url()),
                ))
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|to| format!(" to {}", truncate(to, 200)))
                .unwrap_or_default();
            return Err(SinkError::permanent(
                "redirect",
                format!(
                    "HTTP {}: the Identity Graph answered with a redirect{location}; redirects are not followed, so check IDENTITY_GRAPH_URL",
                    status.as_u16()
                ),
            ));
        }
        let retry_after = retry_after(response.headers());
        let message = format!(
            "HTTP {}: {}",
            status.as_u16(),
            truncate(&error_body(response).await, 300)
        );
        let class = format!("http {}", status.as_u16());
        Err(match classify_status(status, retry_after) {
            Retry::Throttled { retry_after } => SinkError {
                message,
                class: "throttled".to_string(),
                retry: Retry::Throttled { retry_after },
            },
            Retry::Transient => SinkError::transient(class, message),
            Retry::Never => SinkError::permanent(class, message),
        })
    }
}

impl IdentityGraph for HttpGraph {
    fn write_user<'a>(&'a self, user: &'a GraphUser) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.write(user))
    }

    fn binding(&self) -> GraphBinding {
        GraphBinding::http(&self.base_url)
    }
}

/// What an error status says about trying again. A 429 always asks the
/// run to slow down; a 503 does when it says for how long (`Retry-After`),
/// and is otherwise a server error like any 5xx.
fn classify_status(status: StatusCode, retry_after: Option<Duration>) -> Retry {
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
    {
        Retry::Throttled { retry_after }
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Retry::Transient
    } else {
        Retry::Never
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The start of an error body, at most `MAX_ERROR_BODY_BYTES`, read chunk by
/// chunk so a huge or endless body costs nothing more.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&body).into_owned()
}

fn truncate(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::identifiers::{Normalizer, PhoneRegion};
    use crate::backfill::source::SourceUser;
    use chrono::TimeZone;

    fn user(device_id: Option<&str>) -> GraphUser {
        Normalizer::new(Some(PhoneRegion::parse("US").unwrap())).user(SourceUser {
            id: 42,
            email: Some(" A@Example.com ".into()),
            phone: None,
            created_at: Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap(),
            signup_ip: Some("10.0.0.1".into()),
            last_login_ip: Some("::ffff:10.0.0.1".into()),
            device_id: device_id.map(str::to_string),
            deleted_at: None,
            observed_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
        })
    }

    #[test]
    fn the_body_is_the_documented_json() {
        for (device, device_ids) in [
            (Some(" d-1 "), serde_json::json!(["d-1"])),
            (None, serde_json::json!([])),
            (Some("  "), serde_json::json!([])),
        ] {
            let user = user(device);
            let body = serde_json::to_value(HttpGraph::request_body(&user)).unwrap();
            assert_eq!(
                body,
                serde_json::json!({
                    "user_id": 42,
                    "email": "a@example.com",
                    "phone": null,
                    "created_at": "2024-05-06T07:08:09Z",
                    "observed_at": "2025-01-02T03:04:05Z",
                    "identifiers": {
                        "email": "a@example.com",
                        "phone": null,
                        "signup_ip": "10.0.0.1",
                        "last_login_ip": null,
                        "device_ids": device_ids,
                    },
                })
            );
        }
    }

    #[test]
    fn user_urls_keep_the_base_path() {
        for (base, expected) in [
            ("http://graph.internal", "http://graph.internal/users/7"),
            (
                "http://127.0.0.1:8080/api/v2",
                "http://127.0.0.1:8080/api/v2/users/7",
            ),
            (
                "https://graph.example.com/identity",
                "https://graph.example.com/identity/users/7",
            ),
        ] {
            let graph = HttpGraph::new(base.into(), None, Duration::from_secs(1));
            assert_eq!(graph.user_url(7).unwrap().as_str(), expected);
        }
        let broken = HttpGraph::new("not a url".into(), None, Duration::from_secs(1));
        assert!(broken
            .user_url(7)
            .unwrap_err()
            .message
            .contains("IDENTITY_GRAPH_URL"));
    }
}
