//! Who may use the console.
//!
//! Two checks, in this order, on every way in: an authenticated session
//! (`isAuthenticate`), then the email allow-list (`isAllowedAdmin`). The
//! allow-list check is one pure function compiled into both the server and the
//! WASM UI, so the controls the UI hides and the calls the server refuses can
//! never disagree.
//!
//! - this module: the allow-list, credential shape rules and the server
//!   functions (shared by server and WASM);
//! - [`login_page`]: the sign-in page and the sign-out button;
//! - [`ssr`] (server only): sessions, password hashing and policy, the sign-in
//!   rate limit, account management and housekeeping.

mod login_page;
#[cfg(feature = "ssr")]
pub mod ssr;

pub use login_page::{LoginPage, SignOutButton};

use crate::error::AppError;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

/// The emails allowed to operate backfills, normalized, plus the entries of
/// the raw setting that are not email addresses (kept only so start-up can
/// name them in a warning; they can never match a signed-in admin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    emails: Vec<String>,
    #[serde(default)]
    malformed: Vec<String>,
}

impl AllowList {
    /// Parses `IDENTITY_GRAPH_BACKFILL_ADMINS`: comma-separated emails.
    /// Empty entries (`a@b.io,,`) are dropped without a word: a trailing comma
    /// is a harmless habit, not a typo worth a warning.
    pub fn parse(raw: &str) -> Self {
        let mut emails = Vec::new();
        let mut malformed = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let email = normalize_email(entry);
            if is_email_address(&email) {
                emails.push(email);
            } else {
                malformed.push(entry.to_string());
            }
        }
        emails.sort();
        emails.dedup();
        Self { emails, malformed }
    }

    pub fn is_empty(&self) -> bool {
        self.emails.is_empty()
    }

    pub fn emails(&self) -> &[String] {
        &self.emails
    }

    /// The entries that are not email addresses, as written (trimmed).
    pub fn malformed_entries(&self) -> &[String] {
        &self.malformed
    }
}

/// Emails are compared trimmed and lower-cased, everywhere.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Whether a normalized email has the shape of an address: one `@` with
/// something on both sides, and only the characters an address may use. The
/// sign-in form and the allow-list use this one rule, so an allow-list entry
/// it rejects is exactly one that nobody could ever sign in as.
pub fn is_email_address(normalized: &str) -> bool {
    let mut parts = normalized.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && normalized.len() <= MAX_EMAIL_LEN
        && normalized
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.!#$%&*+/=?^_{|}~-".contains(c))
}

/// The allow-list check (`isAllowedAdmin`): exact and case-insensitive.
/// No suffix, prefix or substring matching, so `admin@example.com.evil.io`
/// is not `admin@example.com`. An empty list allows nobody.
pub fn can_access_identity_graph_backfill(email: &str, allow_list: &AllowList) -> bool {
    let email = normalize_email(email);
    !email.is_empty() && allow_list.emails.contains(&email)
}

/// The signed-in admin, as the UI sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminIdentity {
    pub email: String,
    pub allowed: bool,
}

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Shape checks shared by the login form and the server.
pub fn validate_credentials(email: &str, password: &str) -> Result<String, AppError> {
    let email = normalize_email(email);
    if email.is_empty() {
        return Err(AppError::validation("email", "enter your email address"));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(AppError::validation(
            "email",
            format!("an email address has at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    if !is_email_address(&email) {
        return Err(AppError::validation(
            "email",
            "this is not an email address",
        ));
    }
    if password.is_empty() {
        return Err(AppError::validation("password", "enter your password"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AppError::validation(
            "password",
            format!("a password has at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(email)
}

#[server(prefix = "/api/identity-graph-backfill", endpoint = "login", input = Json)]
pub async fn login(email: String, password: String) -> Result<AdminIdentity, AppError> {
    ssr::login(email, password).await
}

#[server(prefix = "/api/identity-graph-backfill", endpoint = "logout", input = Json)]
pub async fn logout() -> Result<(), AppError> {
    ssr::logout().await
}

#[server(prefix = "/api/identity-graph-backfill", endpoint = "me", input = Json)]
pub async fn me() -> Result<AdminIdentity, AppError> {
    let state = crate::request_context::shared::<ssr::AccessState>()?;
    let admin = ssr::require_admin().await?;
    Ok(AdminIdentity {
        allowed: state.is_allowed(&admin.email),
        email: admin.email,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_exact_and_case_insensitive() {
        let list = AllowList::parse(" Admin@Example.com , ops@example.com,,");
        assert_eq!(list.emails(), ["admin@example.com", "ops@example.com"]);
        assert!(can_access_identity_graph_backfill(
            "admin@example.com",
            &list
        ));
        assert!(can_access_identity_graph_backfill(
            "  ADMIN@example.COM ",
            &list
        ));
        assert!(!can_access_identity_graph_backfill(
            "admin@example.com.evil.io",
            &list
        ));
        assert!(!can_access_identity_graph_backfill(
            "evil-admin@example.com",
            &list
        ));
        assert!(!can_access_identity_graph_backfill(
            "admin@example.co",
            &list
        ));
        assert!(!can_access_identity_graph_backfill("example.com", &list));
        assert!(!can_access_identity_graph_backfill("", &list));
    }

    #[test]
    fn an_empty_allow_list_allows_nobody() {
        for raw in ["", " ", ",", " , "] {
            let list = AllowList::parse(raw);
            assert!(list.is_empty());
            assert!(!can_access_identity_graph_backfill(
                "admin@example.com",
                &list
            ));
            assert!(!can_access_identity_graph_backfill("", &list));
        }
    }

    #[test]
    fn allow_list_entries_that_are_not_emails_are_kept_apart_to_be_named() {
        let list = AllowList::parse("ops@example.com, not-an-email,,Lead@Example.com;x@y.io ,");
        assert_eq!(list.emails(), ["ops@example.com"]);
        assert_eq!(
            list.malformed_entries(),
            ["not-an-email", "Lead@Example.com;x@y.io"]
        );
        assert!(!can_access_identity_graph_backfill("not-an-email", &list));
    }

    #[test]
    fn email_shape_is_one_at_with_both_sides() {
        assert!(is_email_address("ops@example.com"));
        assert!(is_email_address("first.last+tag@example.co.uk"));
        for bad in [
            "",
            "@",
            "ops@",
            "@example.com",
            "a@b@c",
            "ops example@x.io",
            "o'p@x.io",
        ] {
            assert!(!is_email_address(bad), "{bad:?}");
        }
        assert!(!is_email_address(&format!(
            "{}@x.io",
            "a".repeat(MAX_EMAIL_LEN)
        )));
    }

    #[test]
    fn credentials_are_shape_checked() {
        assert_eq!(validate_credentials(" A@B.io ", "pw").unwrap(), "a@b.io");
        let long = "a".repeat(1_000_000);
        assert_eq!(
            validate_credentials(&long, "pw")
                .unwrap_err()
                .field
                .as_deref(),
            Some("email")
        );
        assert_eq!(
            validate_credentials("a@b.io", &long)
                .unwrap_err()
                .field
                .as_deref(),
            Some("password")
        );
        assert!(validate_credentials("a'; DROP TABLE admins; --@x.io", "pw").is_err());
        assert!(validate_credentials("no-at-sign", "pw").is_err());
        assert!(validate_credentials("a@b.io", "").is_err());
    }
}
