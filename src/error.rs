//! The one error type every server function returns.
//!
//! It crosses the wire as `{code, message, field?, request_id?}` and the server
//! sends it with the HTTP status that matches its code (see `ErrorCode::status`).

use serde::{Deserialize, Serialize};
use server_fn_error::{FromServerFnError, ServerFnErrorErr};
use std::fmt;

mod server_fn_error {
    pub use leptos::server_fn::codec::JsonEncoding;
    pub use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    Validation,
    NotFound,
    IdentityGraphNotConfigured,
    RateLimited,
    PayloadTooLarge,
    /// The database did not answer in time (a statement timeout, no free
    /// connection): try again shortly.
    Unavailable,
    UnsupportedMediaType,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Validation => 422,
            ErrorCode::NotFound => 404,
            ErrorCode::IdentityGraphNotConfigured => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::IdentityGraphNotConfigured => "IDENTITY_GRAPH_NOT_CONFIGURED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    /// The input field a `VALIDATION` error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Set on `INTERNAL` errors: the id under which the details were logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            request_id: None,
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::Unauthenticated, "Sign in to continue.")
    }

    pub fn forbidden() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "Your account is not on the Identity Graph Backfill allow-list.",
        )
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(ErrorCode::Validation, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn identity_graph_not_configured() -> Self {
        Self::new(
            ErrorCode::IdentityGraphNotConfigured,
            "The Identity Graph is not configured (set IDENTITY_GRAPH_SINK). Real runs are refused; a dry run works without it.",
        )
    }

    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }

    /// The database did not answer in time; `message` names what timed out.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// An internal failure: the client sees only the request id, never the cause.
    pub fn internal(request_id: impl Into<String>) -> Self {
        let request_id = request_id.into();
        Self {
            request_id: Some(request_id.clone()),
            ..Self::new(
                ErrorCode::Internal,
                format!("Something went wrong on the server (request id {request_id})."),
            )
        }
    }

    /// The message an operator reads, prefixed with the field when there is one.
    pub fn display_message(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.display_message())
    }
}

impl std::error::Error for AppError {}

/// Marker that request parsers put in front of a field name, so that an
/// argument error raised inside serde can be turned back into a `VALIDATION`
/// error naming that field.
pub const FIELD_ERROR_MARKER: &str = "field-error:";

/// Builds the message a custom `Deserialize` impl returns for a bad field.
pub fn field_error_message(field: &str, reason: &str) -> String {
    format!("{FIELD_ERROR_MARKER}{field}:{reason}")
}

fn validation_from_args(raw: &str) -> AppError {
    // serde_json appends " at line L column C"; operators do not need it.
    let trimmed = match raw.rfind(" at line ") {
        Some(index) => &raw[..index],
        None => raw,
    };
    if let Some(start) = trimmed.find(FIELD_ERROR_MARKER) {
        let rest = &trimmed[start + FIELD_ERROR_MARKER.len()..];
        if let Some((field, reason)) = rest.split_once(':') {
            return AppError::validation(field, reason);
        }
    }
    if let Some(field) = between_backticks(trimmed) {
        return AppError::validation(field, trimmed.to_string());
    }
    AppError::validation("body", format!("the request body is not valid: {trimmed}"))
}

fn looks_like_bad_input(message: &str) -> bool {
    message.contains(FIELD_ERROR_MARKER)
        || [
            "missing field",
            "unknown field",
            "invalid type",
            "invalid value",
            "expected",
            "EOF",
        ]
        .iter()
        .any(|needle| message.contains(needle))
}

fn between_backticks(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

impl FromServerFnError for AppError {
    type Encoder = server_fn_error::JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(message) => validation_from_args(&message),
            // The server reports a body its codec could not decode this way.
            ServerFnErrorErr::Deserialization(message) if looks_like_bad_input(&message) => {
                validation_from_args(&message)
            }
            ServerFnErrorErr::MissingArg(field) => {
                AppError::validation(field, "this field is required")
            }
            ServerFnErrorErr::Request(message) => AppError::new(
                ErrorCode::Internal,
                format!("Could not reach the server: {message}"),
            ),
            other => AppError::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_errors_name_their_field() {
        let raw = format!(
            "{} at line 1 column 20",
            field_error_message("batch_size", "expected a whole number")
        );
        let error = validation_from_args(&raw);
        assert_eq!(error.code, ErrorCode::Validation);
        assert_eq!(error.field.as_deref(), Some("batch_size"));
        assert_eq!(error.message, "expected a whole number");
    }

    #[test]
    fn serde_missing_field_names_the_field() {
        let error = validation_from_args("missing field `job_key` at line 1 column 2");
        assert_eq!(error.field.as_deref(), Some("job_key"));
    }

    #[test]
    fn statuses_match_the_contract() {
        assert_eq!(ErrorCode::Unauthenticated.status(), 401);
        assert_eq!(ErrorCode::Forbidden.status(), 403);
        assert_eq!(ErrorCode::Validation.status(), 422);
        assert_eq!(ErrorCode::NotFound.status(), 404);
        assert_eq!(ErrorCode::IdentityGraphNotConfigured.status(), 409);
        assert_eq!(ErrorCode::Unavailable.status(), 503);
        assert_eq!(ErrorCode::Internal.status(), 500);
    }
}
