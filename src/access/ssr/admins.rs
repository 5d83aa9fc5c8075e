//! Operator accounts: the one write path (`upsert_admin`, which enforces the
//! password policy and ends an admin's sessions when their password changes),
//! removal, and the listing `admin list` prints.

use super::password::{HashingError, PasswordHash};
use super::password_policy::{check_password_policy, PasswordPolicyError};
use crate::access::validate_credentials;
use crate::error::AppError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// Why an account could not be written or found.
#[derive(Debug, thiserror::Error)]
pub enum AdminStoreError {
    #[error("{}", .0.display_message())]
    InvalidCredentials(AppError),
    #[error(transparent)]
    WeakPassword(#[from] PasswordPolicyError),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error("there is no admin {0}")]
    NoSuchAdmin(String),
    #[error("the database refused the change: {0}")]
    Database(#[from] sqlx::Error),
}

/// What `upsert_admin` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSaved {
    Created {
        email: String,
    },
    /// The password was replaced and every session of the admin ended, so a
    /// browser signed in with the old password is signed out at its next request.
    PasswordChanged {
        email: String,
        sessions_ended: u64,
    },
}

impl AdminSaved {
    pub fn email(&self) -> &str {
        match self {
            AdminSaved::Created { email } | AdminSaved::PasswordChanged { email, .. } => email,
        }
    }
}

/// `admin add EMAIL`: creates the account, or replaces its password.
///
/// This is the only code that writes a password hash, so the policy is
/// enforced here rather than in the CLI: tests, the quick-start's demo
/// accounts and any future caller cannot store a weak password either. A
/// refused password writes nothing.
pub async fn upsert_admin(
    pool: &PgPool,
    email: &str,
    password: &str,
) -> Result<AdminSaved, AdminStoreError> {
    let email =
        validate_credentials(email, password).map_err(AdminStoreError::InvalidCredentials)?;
    check_password_policy(&email, password)?;
    let hash = PasswordHash::compute(password.to_string()).await?;
    let mut tx = pool.begin().await?;
    // `xmax = 0` holds only for a row this statement inserted, not one it updated.
    let (admin_id, created): (i64, bool) = sqlx::query_as(
        "INSERT INTO admins (email, password_hash) VALUES ($1, $2)
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()
         RETURNING id, (xmax = 0)",
    )
    .bind(&email)
    .bind(hash.as_phc())
    .fetch_one(&mut *tx)
    .await?;
    let saved = if created {
        AdminSaved::Created { email }
    } else {
        // The CLI has no session of its own, so "the admin's other sessions" are all of them.
        let sessions_ended = sqlx::query("DELETE FROM admin_sessions WHERE admin_id = $1")
            .bind(admin_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        AdminSaved::PasswordChanged {
            email,
            sessions_ended,
        }
    };
    tx.commit().await?;
    Ok(saved)
}

/// `admin remove EMAIL`: deletes the account and, with it, all its sessions.
/// Returns how many sessions ended.
pub async fn remove_admin(pool: &PgPool, email: &str) -> Result<u64, AdminStoreError> {
    let email = crate::access::normalize_email(email);
    let mut tx = pool.begin().await?;
    // Deleted explicitly rather than left to the foreign key's cascade, so the
    // count can be reported; the cascade still covers any other path.
    let sessions_ended = sqlx::query(
        "DELETE FROM admin_sessions WHERE admin_id = (SELECT id FROM admins WHERE email = $1)",
    )
    .bind(&email)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let removed = sqlx::query("DELETE FROM admins WHERE email = $1")
        .bind(&email)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(AdminStoreError::NoSuchAdmin(email));
    }
    tx.commit().await?;
    Ok(sessions_ended)
}

/// One line of `admin list`. Deliberately has no hash field.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminAccount {
    pub email: String,
    pub last_signed_in_at: Option<DateTime<Utc>>,
    /// Sessions that would still be accepted now (within both timeouts).
    pub live_sessions: i64,
}

/// Every admin, by email, with their live sessions under the given timeouts.
pub async fn list_admins(
    pool: &PgPool,
    idle_timeout: Duration,
    absolute_timeout: Duration,
) -> Result<Vec<AdminAccount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.email, a.last_signed_in_at,
                count(s.token_hash) FILTER (
                    WHERE s.created_at > now() - make_interval(secs => $1)
                      AND s.last_seen_at > now() - make_interval(secs => $2)) AS live_sessions
         FROM admins a LEFT JOIN admin_sessions s ON s.admin_id = a.id
         GROUP BY a.id ORDER BY a.email",
    )
    .bind(absolute_timeout.as_secs_f64())
    .bind(idle_timeout.as_secs_f64())
    .fetch_all(pool)
    .await
}

pub async fn admin_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM admins")
        .fetch_one(pool)
        .await
}

/// The text `admin list` prints: one aligned row per admin.
pub fn format_admin_list(admins: &[AdminAccount], allow_list: &crate::access::AllowList) -> String {
    if admins.is_empty() {
        return "no admins yet; create one with: identity-graph-backfill admin add EMAIL (password on standard input)\n".into();
    }
    let width = admins
        .iter()
        .map(|a| a.email.len())
        .max()
        .unwrap_or(0)
        .max("EMAIL".len());
    let mut out = format!(
        "{:<width$}  {:<10}  {:<23}  LIVE SESSIONS\n",
        "EMAIL", "ALLOW-LIST", "LAST SIGN-IN"
    );
    for admin in admins {
        let allowed = crate::access::can_access_identity_graph_backfill(&admin.email, allow_list);
        let last = admin
            .last_signed_in_at
            .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "{:<width$}  {:<10}  {:<23}  {}\n",
            admin.email,
            if allowed { "yes" } else { "no" },
            last,
            admin.live_sessions
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AllowList;

    #[test]
    fn the_list_shows_allow_list_membership_and_never_signed_in() {
        let text = format_admin_list(
            &[
                AdminAccount {
                    email: "ops@example.com".into(),
                    last_signed_in_at: Some(
                        DateTime::parse_from_rfc3339("2026-11-29T13:05:00Z")
                            .unwrap()
                            .to_utc(),
                    ),
                    live_sessions: 2,
                },
                AdminAccount {
                    email: "viewer@example.com".into(),
                    last_signed_in_at: None,
                    live_sessions: 0,
                },
            ],
            &AllowList::parse("OPS@example.com"),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("EMAIL"), "{text}");
        let ops: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            ops,
            [
                "ops@example.com",
                "yes",
                "2026-11-29",
                "13:05:00",
                "UTC",
                "2"
            ]
        );
        let viewer: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(viewer, ["viewer@example.com", "no", "never", "0"]);
    }
}
