//! Who may use the console.
//!
//! Two checks, in this order, on every way in: an authenticated session
//! (`isAuthenticate`), then the email allow-list (`isAllowedAdmin`). The
//! allow-list check is one pure function compiled into both the server and the
//! WASM UI, so the controls the UI hides and the calls the server refuses can
//! never disagree.

use crate::error::AppError;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

/// The emails allowed to operate backfills, normalized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList(Vec<String>);

impl AllowList {
    /// Parses `IDENTITY_GRAPH_BACKFILL_ADMINS`: comma-separated emails.
    pub fn parse(raw: &str) -> Self {
        let mut emails: Vec<String> = raw
            .split(',')
            .map(normalize_email)
            .filter(|email| !email.is_empty())
            .collect();
        emails.sort();
        emails.dedup();
        Self(emails)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn emails(&self) -> &[String] {
        &self.0
    }
}

/// Emails are compared trimmed and lower-cased, everywhere.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// The allow-list check (`isAllowedAdmin`): exact and case-insensitive.
/// No suffix, prefix or substring matching, so `admin@example.com.evil.io`
/// is not `admin@example.com`. An empty list allows nobody.
pub fn can_access_identity_graph_backfill(email: &str, allow_list: &AllowList) -> bool {
    let email = normalize_email(email);
    !email.is_empty() && allow_list.0.contains(&email)
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
    let well_formed = email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && email
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.!#$%&*+/=?^_{|}~-".contains(c));
    if !well_formed {
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
    let state = crate::server::state()?;
    let admin = ssr::require_admin().await?;
    Ok(AdminIdentity {
        allowed: can_access_identity_graph_backfill(&admin.email, &state.config.admins),
        email: admin.email,
    })
}

/// The sign-in page.
#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let client_error = RwSignal::new(None::<AppError>);

    Effect::new(move |_| {
        if let Some(Ok(_)) = login.value().get() {
            // A full load, so the server renders the console with the new session.
            let _ = window().location().set_href("/");
        }
    });

    let error = move || {
        client_error
            .get()
            .or_else(|| login.value().get().and_then(Result::err))
    };
    let field_error = move |field: &'static str| {
        move || {
            error()
                .filter(|e| e.field.as_deref() == Some(field))
                .map(|e| e.message)
        }
    };
    let form_error = move || error().filter(|e| e.field.is_none()).map(|e| e.message);

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match validate_credentials(&email.get_untracked(), &password.get_untracked()) {
            Err(err) => client_error.set(Some(err)),
            Ok(normalized) => {
                client_error.set(None);
                login.dispatch(Login {
                    email: normalized,
                    password: password.get_untracked(),
                });
            }
        }
    };

    view! {
        <main class="login">
            <section class="login-card" aria-labelledby="login-title">
                <p class="eyebrow">"Reporting"</p>
                <h1 id="login-title">"Identity Graph Backfill"</h1>
                <p class="muted">"Sign in with your operator account."</p>
                <form on:submit=on_submit novalidate>
                    <label for="login-email">"Email"</label>
                    <input
                        id="login-email"
                        name="email"
                        type="email"
                        autocomplete="username"
                        required
                        aria-invalid=move || field_error("email")().is_some().to_string()
                        aria-describedby="login-email-error"
                        prop:value=email
                        on:input=move |ev| email.set(event_target_value(&ev))
                    />
                    <p id="login-email-error" class="field-error" role="alert">
                        {field_error("email")}
                    </p>
                    <label for="login-password">"Password"</label>
                    <input
                        id="login-password"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                        aria-invalid=move || field_error("password")().is_some().to_string()
                        aria-describedby="login-password-error"
                        prop:value=password
                        on:input=move |ev| password.set(event_target_value(&ev))
                    />
                    <p id="login-password-error" class="field-error" role="alert">
                        {field_error("password")}
                    </p>
                    <p class="form-error" role="alert" aria-live="assertive">
                        {form_error}
                    </p>
                    <button class="button primary" type="submit" disabled=move || login.pending().get()>
                        {move || if login.pending().get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </form>
            </section>
        </main>
    }
}

/// The header's sign-out button.
#[component]
pub fn SignOutButton() -> impl IntoView {
    let logout = ServerAction::<Logout>::new();
    Effect::new(move |_| {
        if logout.value().get().is_some() {
            let _ = window().location().set_href("/login");
        }
    });
    view! {
        <button class="button ghost" type="button" on:click=move |_| { logout.dispatch(Logout {}); }>
            "Sign out"
        </button>
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Sessions, password hashes and the guard, on the server only.

    use super::*;
    use crate::server::{internal_error, request_parts, state, AppState};
    use argon2::{
        password_hash::{PasswordHasher, PasswordVerifier, SaltString},
        Argon2,
    };
    use axum::http::{header, HeaderMap, HeaderValue};
    use leptos_axum::ResponseOptions;
    use rand::RngCore;
    use sha2::{Digest, Sha256};
    use sqlx::PgPool;
    use std::sync::OnceLock;

    pub const SESSION_COOKIE: &str = "igb_session";

    /// An admin whose session checked out.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AuthenticatedAdmin {
        pub id: i64,
        pub email: String,
    }

    /// An argon2id PHC string. Deliberately not `Serialize`: it never leaves the server.
    #[derive(Clone)]
    pub struct PasswordHash(String);

    impl std::fmt::Debug for PasswordHash {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("PasswordHash(<redacted>)")
        }
    }

    impl PasswordHash {
        /// Hashes on the blocking pool: argon2 is deliberately slow.
        pub async fn compute(password: String) -> Result<Self, String> {
            tokio::task::spawn_blocking(move || {
                let salt = SaltString::generate(&mut rand::rngs::OsRng);
                Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .map(|hash| Self(hash.to_string()))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        }

        pub async fn verify(self, password: String) -> bool {
            tokio::task::spawn_blocking(move || {
                argon2::PasswordHash::new(&self.0)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        }
    }

    /// A hash of a random password, verified against when the email is unknown,
    /// so that an unknown email costs the same time as a wrong password.
    async fn decoy_hash() -> PasswordHash {
        static DECOY: OnceLock<PasswordHash> = OnceLock::new();
        if let Some(hash) = DECOY.get() {
            return hash.clone();
        }
        let mut random = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let hash = PasswordHash::compute(hex::encode(random))
            .await
            .expect("argon2 hashes a random password");
        DECOY.get_or_init(|| hash).clone()
    }

    /// `admin add EMAIL`: creates the account, or replaces its password.
    pub async fn upsert_admin(
        pool: &PgPool,
        email: &str,
        password: &str,
    ) -> Result<String, String> {
        let email = validate_credentials(email, password).map_err(|e| e.display_message())?;
        let hash = PasswordHash::compute(password.to_string()).await?;
        sqlx::query(
            "INSERT INTO admins (email, password_hash) VALUES ($1, $2)
             ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()",
        )
        .bind(&email)
        .bind(&hash.0)
        .execute(pool)
        .await
        .map_err(|e| format!("could not save the admin: {e}"))?;
        Ok(email)
    }

    pub async fn admin_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM admins")
            .fetch_one(pool)
            .await
    }

    fn token_hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }

    pub fn session_token(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_string())
            .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Resolves the session cookie to its admin, sliding the idle timeout.
    pub async fn session_admin(
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<AuthenticatedAdmin>, sqlx::Error> {
        let Some(token) = session_token(headers) else {
            return Ok(None);
        };
        let row: Option<(i64, String)> = sqlx::query_as(
            "UPDATE admin_sessions s SET last_seen_at = now()
             FROM admins a
             WHERE s.token_hash = $1 AND a.id = s.admin_id
               AND s.created_at > now() - make_interval(secs => $2)
               AND s.last_seen_at > now() - make_interval(secs => $3)
             RETURNING a.id, a.email",
        )
        .bind(token_hash(&token))
        .bind(state.config.session_absolute_timeout.as_secs_f64())
        .bind(state.config.session_idle_timeout.as_secs_f64())
        .fetch_optional(&state.pool)
        .await?;
        Ok(row.map(|(id, email)| AuthenticatedAdmin { id, email }))
    }

    /// `isAuthenticate`: a valid session, or `UNAUTHENTICATED`.
    pub async fn require_admin() -> Result<AuthenticatedAdmin, AppError> {
        let state = state()?;
        let parts = request_parts()?;
        session_admin(&state, &parts.headers)
            .await
            .map_err(|e| internal_error("looking up the session", e))?
            .ok_or_else(AppError::unauthenticated)
    }

    /// The guard every job-control server function calls first:
    /// `UNAUTHENTICATED` without a session, `FORBIDDEN` when not on the allow-list.
    pub async fn require_allowed_admin() -> Result<AuthenticatedAdmin, AppError> {
        let admin = require_admin().await?;
        let state = state()?;
        if can_access_identity_graph_backfill(&admin.email, &state.config.admins) {
            Ok(admin)
        } else {
            tracing::warn!(email = %admin.email, "refused: admin is not on the allow-list");
            Err(AppError::forbidden())
        }
    }

    fn cookie(
        state: &AppState,
        headers: &HeaderMap,
        value: &str,
        max_age_secs: u64,
    ) -> HeaderValue {
        let behind_tls = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        let secure = if state.config.cookie_secure || behind_tls {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        ))
        .expect("cookie is ASCII")
    }

    fn client_address(parts: &axum::http::request::Parts) -> String {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    pub async fn login(email: String, password: String) -> Result<AdminIdentity, AppError> {
        let state = state()?;
        let parts = request_parts()?;
        let email = validate_credentials(&email, &password)?;
        let subjects = [
            format!("email:{email}"),
            format!("ip:{}", client_address(&parts)),
        ];

        let recent_failures: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(n), 0) FROM (
                 SELECT count(*) AS n FROM login_failures
                 WHERE subject = ANY($1) AND failed_at > now() - interval '1 minute'
                 GROUP BY subject) counts",
        )
        .bind(&subjects[..])
        .fetch_one(&state.pool)
        .await
        .map_err(|e| internal_error("counting login failures", e))?;
        if recent_failures >= i64::from(state.config.login_failures_per_minute) {
            return Err(AppError::rate_limited(
                "Too many failed sign-in attempts. Wait a minute, then try again.",
            ));
        }

        let stored: Option<(i64, String)> =
            sqlx::query_as("SELECT id, password_hash FROM admins WHERE email = $1")
                .bind(&email)
                .fetch_optional(&state.pool)
                .await
                .map_err(|e| internal_error("looking up the admin", e))?;
        let (admin_id, hash) = match stored {
            Some((id, hash)) => (Some(id), PasswordHash(hash)),
            None => (None, decoy_hash().await),
        };
        let verified = hash.verify(password).await;
        let Some(admin_id) = admin_id.filter(|_| verified) else {
            sqlx::query("INSERT INTO login_failures (subject) SELECT unnest($1::text[])")
                .bind(&subjects[..])
                .execute(&state.pool)
                .await
                .map_err(|e| internal_error("recording a login failure", e))?;
            tracing::info!(%email, "sign-in refused");
            return Err(AppError::new(
                crate::error::ErrorCode::Unauthenticated,
                "The email or password is incorrect.",
            ));
        };

        // Rotate: whatever session the browser had is gone, and a new id is issued.
        if let Some(old) = session_token(&parts.headers) {
            let _ = sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
                .bind(token_hash(&old))
                .execute(&state.pool)
                .await;
        }
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = hex::encode(raw);
        sqlx::query("INSERT INTO admin_sessions (token_hash, admin_id) VALUES ($1, $2)")
            .bind(token_hash(&token))
            .bind(admin_id)
            .execute(&state.pool)
            .await
            .map_err(|e| internal_error("creating a session", e))?;

        let response = expect_context::<ResponseOptions>();
        response.append_header(
            header::SET_COOKIE,
            cookie(
                &state,
                &parts.headers,
                &token,
                state.config.session_absolute_timeout.as_secs(),
            ),
        );
        tracing::info!(%email, "signed in");
        Ok(AdminIdentity {
            allowed: can_access_identity_graph_backfill(&email, &state.config.admins),
            email,
        })
    }

    pub async fn logout() -> Result<(), AppError> {
        let state = state()?;
        let parts = request_parts()?;
        if let Some(token) = session_token(&parts.headers) {
            sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
                .bind(token_hash(&token))
                .execute(&state.pool)
                .await
                .map_err(|e| internal_error("deleting the session", e))?;
        }
        expect_context::<ResponseOptions>()
            .append_header(header::SET_COOKIE, cookie(&state, &parts.headers, "", 0));
        Ok(())
    }
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
