//! Argon2id hashing and verification, behind a gate as wide as the machine.
//!
//! One argon2 computation takes about 19 MiB and a core for tens of
//! milliseconds. Without a bound, a flood of sign-ins (to many emails, or from
//! many addresses) starts one on the blocking pool per request — up to 512
//! threads — and memory grows with the flood. The gate admits as many at once
//! as there are cores, so memory stays flat and the rest simply queue.

use argon2::{
    password_hash::{PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use rand::RngCore;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};
use tokio::sync::Semaphore;

/// Why a hash could not be computed. Verification never errors: anything
/// that is not a match (a malformed stored hash included) is "no".
#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("argon2 could not hash the password: {0}")]
    Argon2(String),
    #[error("the hashing task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// An argon2id PHC string. Deliberately not `Serialize`: it never leaves the server.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// Admits at most one argon2 computation per core.
fn argon2_gate() -> &'static Semaphore {
    static GATE: OnceLock<Semaphore> = OnceLock::new();
    GATE.get_or_init(|| Semaphore::new(argon2_parallelism()))
}

/// How many argon2 computations may run at once: the number of cores.
pub fn argon2_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

static VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// How many password verifications this process has started, for tests and
/// diagnostics (the rate limit promises a bound on them).
pub fn verifications_started() -> u64 {
    VERIFICATIONS.load(Ordering::Relaxed)
}

impl PasswordHash {
    /// Wraps a PHC string read from the `admins` table.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for storing.
    pub fn as_phc(&self) -> &str {
        &self.0
    }

    /// Hashes on the blocking pool, once a gate permit is free.
    pub async fn compute(password: String) -> Result<Self, HashingError> {
        let _permit = argon2_gate()
            .acquire()
            .await
            .expect("the argon2 gate is never closed");
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| Self(hash.to_string()))
                .map_err(|e| HashingError::Argon2(e.to_string()))
        })
        .await?
    }

    /// Verifies on the blocking pool, once a gate permit is free.
    pub async fn verify(self, password: String) -> bool {
        let _permit = argon2_gate()
            .acquire()
            .await
            .expect("the argon2 gate is never closed");
        VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
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
pub async fn decoy_hash() -> Result<PasswordHash, HashingError> {
    static DECOY: OnceLock<PasswordHash> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash.clone());
    }
    let mut random = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let hash = PasswordHash::compute(hex::encode(random)).await?;
    Ok(DECOY.get_or_init(|| hash).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = PasswordHash::compute("lantern orbit quartz mosaic".into())
            .await
            .unwrap();
        assert!(hash.as_phc().starts_with("$argon2id$"));
        assert!(!format!("{hash:?}").contains("argon2"));
        assert!(
            hash.clone()
                .verify("lantern orbit quartz mosaic".into())
                .await
        );
        assert!(!hash.verify("lantern orbit quartz mosaiC".into()).await);
        assert!(
            !PasswordHash::from_stored("not a phc string".into())
                .verify("x".into())
                .await
        );
    }
}
