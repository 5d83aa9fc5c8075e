//! Sessions, sign-in and the guard, on the server only.
//!
//! - [`admins`]: accounts (`admin add` / `remove` / `list`);
//! - [`password`], [`password_policy`]: argon2 behind a gate, and the policy;
//! - [`rate_limit`]: the failure limit, reserved in Postgres before verifying;
//! - [`client_address`]: the peer, or a trusted proxy's `X-Forwarded-For`;
//! - [`allow_list_check`], [`housekeeping`]: start-up check and purge loop.
//!
//! Sign-ins, failed sign-ins and sign-outs are audited in the log (target
//! `audit`) with the email and the client address, never the password.

pub mod admins;
pub mod allow_list_check;
pub mod client_address;
pub mod housekeeping;
pub mod password;
pub mod password_policy;
pub mod rate_limit;

pub use admins::{admin_count, list_admins, remove_admin, upsert_admin, AdminSaved};

use super::*;
use crate::request_context::{internal_error, request_parts, shared};
use axum::http::{header, HeaderMap, HeaderValue};
use leptos_axum::ResponseOptions;
use password::{decoy_hash, PasswordHash};
use rand::RngCore;
use rate_limit::{reserve_sign_in_attempt, Admission};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::{net::IpAddr, sync::Arc, time::Duration};

pub const SESSION_COOKIE: &str = "igb_session";

/// What access takes from the configuration.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub admins: AllowList,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    pub cookie_secure: bool,
    pub login_failures_per_minute: u32,
    /// `TRUSTED_PROXY`: the proxies whose `X-Forwarded-For` names the client.
    /// Empty: the header is ignored and the connection's peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
}

/// The state sign-in, the guard and the page gate share.
#[derive(Clone)]
pub struct AccessState {
    pub pool: PgPool,
    pub settings: Arc<AccessSettings>,
}

impl AccessState {
    pub fn is_allowed(&self, email: &str) -> bool {
        can_access_identity_graph_backfill(email, &self.settings.admins)
    }
}

/// An admin whose session checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedAdmin {
    pub id: i64,
    pub email: String,
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
///
/// The slide is written only when the last one is older than
/// [`touch_interval`], so nearly every request only reads. A write would
/// commit synchronously, and while runs write to the same database flat out
/// that commit waits behind their WAL: every page and poll would pay for it.
pub async fn session_admin(
    state: &AccessState,
    headers: &HeaderMap,
) -> Result<Option<AuthenticatedAdmin>, sqlx::Error> {
    let Some(token) = session_token(headers) else {
        return Ok(None);
    };
    let idle_timeout = state.settings.session_idle_timeout;
    let row: Option<(i64, String)> = sqlx::query_as(
        "WITH live AS (
             SELECT s.token_hash, s.last_seen_at, a.id, a.email
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
             WHERE s.token_hash = $1
               AND s.created_at > now() - make_interval(secs => $2)
               AND s.last_seen_at > now() - make_interval(secs => $3)
         ), slid AS (
             UPDATE admin_sessions s SET last_seen_at = now()
             FROM live
             WHERE s.token_hash = live.token_hash
               AND live.last_seen_at <= now() - make_interval(secs => $4)
         )
         SELECT id, email FROM live",
    )
    .bind(token_hash(&token))
    .bind(state.settings.session_absolute_timeout.as_secs_f64())
    .bind(idle_timeout.as_secs_f64())
    .bind(touch_interval(idle_timeout).as_secs_f64())
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|(id, email)| AuthenticatedAdmin { id, email }))
}

/// How stale `last_seen_at` may be before a request writes it again: a
/// thirtieth of the idle timeout, at most a minute. A session can therefore
/// end at most that much before its idle timeout (one minute of the default
/// 30), never after it.
pub fn touch_interval(idle_timeout: std::time::Duration) -> std::time::Duration {
    (idle_timeout / 30).min(std::time::Duration::from_secs(60))
}

/// `isAuthenticate`: a valid session, or `UNAUTHENTICATED`.
pub async fn require_admin() -> Result<AuthenticatedAdmin, AppError> {
    let parts = request_parts()?;
    // The API's admission middleware already resolved the session.
    if let Some(admin) = parts.extensions.get::<AuthenticatedAdmin>() {
        return Ok(admin.clone());
    }
    let state = shared::<AccessState>()?;
    session_admin(&state, &parts.headers)
        .await
        .map_err(|e| internal_error("looking up the session", e))?
        .ok_or_else(AppError::unauthenticated)
}

/// The guard every job-control server function calls first:
/// `UNAUTHENTICATED` without a session, `FORBIDDEN` when not on the allow-list.
pub async fn require_allowed_admin() -> Result<AuthenticatedAdmin, AppError> {
    let admin = require_admin().await?;
    let state = shared::<AccessState>()?;
    if state.is_allowed(&admin.email) {
        Ok(admin)
    } else {
        tracing::warn!(email = %admin.email, "refused: admin is not on the allow-list");
        Err(AppError::forbidden())
    }
}

fn cookie(state: &AccessState, headers: &HeaderMap, value: &str, max_age_secs: u64) -> HeaderValue {
    let behind_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let secure = if state.settings.cookie_secure || behind_tls {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie is ASCII")
}

fn incorrect_credentials() -> AppError {
    AppError::new(
        crate::error::ErrorCode::Unauthenticated,
        "The email or password is incorrect.",
    )
}

/// Creates a session for an admin whose password just verified against
/// `verified_hash`, and records the sign-in time. Creates nothing (and
/// answers `None`) when the account was removed or its password changed while
/// the password was being checked, so a rotation or a removal can never be
/// outrun by a sign-in with the old password.
async fn create_session(
    pool: &PgPool,
    admin_id: i64,
    verified_hash: &PasswordHash,
) -> Result<Option<String>, sqlx::Error> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let created = sqlx::query(
        "WITH admin AS (
             UPDATE admins SET last_signed_in_at = now()
             WHERE id = $2 AND password_hash = $3 RETURNING id)
         INSERT INTO admin_sessions (token_hash, admin_id) SELECT $1, id FROM admin",
    )
    .bind(token_hash(&token))
    .bind(admin_id)
    .bind(verified_hash.as_phc())
    .execute(pool)
    .await?
    .rows_affected();
    Ok((created == 1).then_some(token))
}

pub async fn login(email: String, password: String) -> Result<AdminIdentity, AppError> {
    let state = shared::<AccessState>()?;
    let parts = request_parts()?;
    let client = client_address::describe(client_address::client_address(
        &parts,
        &state.settings.trusted_proxies,
    ));
    let email = validate_credentials(&email, &password)?;
    let subjects = [format!("email:{email}"), format!("ip:{client}")];

    let reservation = match reserve_sign_in_attempt(
        &state.pool,
        &subjects,
        state.settings.login_failures_per_minute,
    )
    .await
    .map_err(|e| internal_error("reserving a sign-in attempt", e))?
    {
        Admission::Admitted(reservation) => reservation,
        Admission::RateLimited => {
            tracing::warn!(target: "audit", event = "sign-in-failed", reason = "rate limited", %email, %client, "sign-in refused");
            return Err(AppError::rate_limited(
                "Too many failed sign-in attempts. Wait a minute, then try again.",
            ));
        }
    };

    let stored: Option<(i64, String)> =
        sqlx::query_as("SELECT id, password_hash FROM admins WHERE email = $1")
            .bind(&email)
            .fetch_optional(&state.pool)
            .await
            .map_err(|e| internal_error("looking up the admin", e))?;
    let (admin_id, hash) = match stored {
        Some((id, hash)) => (Some(id), PasswordHash::from_stored(hash)),
        None => (
            None,
            decoy_hash()
                .await
                .map_err(|e| internal_error("hashing the decoy password", e))?,
        ),
    };
    let verified = hash.clone().verify(password).await;
    let token = match admin_id.filter(|_| verified) {
        Some(admin_id) => create_session(&state.pool, admin_id, &hash)
            .await
            .map_err(|e| internal_error("creating a session", e))?,
        None => None,
    };
    let Some(token) = token else {
        reservation.keep_as_failure();
        let reason = match (admin_id, verified) {
            (None, _) => "no such account",
            (Some(_), false) => "wrong password",
            (Some(_), true) => "account changed during sign-in",
        };
        tracing::warn!(target: "audit", event = "sign-in-failed", reason, %email, %client, "sign-in refused");
        return Err(incorrect_credentials());
    };
    if let Err(error) = reservation.release(&state.pool).await {
        // The sign-in stands; the attempt merely still counts towards the limit.
        tracing::warn!("could not release a sign-in reservation: {error}");
    }

    // Rotate: whatever session the browser had is gone, and a new id is issued.
    if let Some(old) = session_token(&parts.headers) {
        let _ = sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash(&old))
            .execute(&state.pool)
            .await;
    }
    let response = expect_context::<ResponseOptions>();
    response.append_header(
        header::SET_COOKIE,
        cookie(
            &state,
            &parts.headers,
            &token,
            state.settings.session_absolute_timeout.as_secs(),
        ),
    );
    tracing::info!(target: "audit", event = "sign-in", %email, %client, "signed in");
    Ok(AdminIdentity {
        allowed: state.is_allowed(&email),
        email,
    })
}

pub async fn logout() -> Result<(), AppError> {
    let state = shared::<AccessState>()?;
    let parts = request_parts()?;
    if let Some(token) = session_token(&parts.headers) {
        let email: Option<String> = sqlx::query_scalar(
            "DELETE FROM admin_sessions s USING admins a
             WHERE s.token_hash = $1 AND a.id = s.admin_id RETURNING a.email",
        )
        .bind(token_hash(&token))
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| internal_error("deleting the session", e))?;
        if let Some(email) = email {
            let client = client_address::describe(client_address::client_address(
                &parts,
                &state.settings.trusted_proxies,
            ));
            tracing::info!(target: "audit", event = "sign-out", %email, %client, "signed out");
        }
    }
    expect_context::<ResponseOptions>()
        .append_header(header::SET_COOKIE, cookie(&state, &parts.headers, "", 0));
    Ok(())
}
