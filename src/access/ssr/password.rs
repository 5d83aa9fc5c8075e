//! Argon2id hashing and verification, behind a gate as wide as the machine.
//!
//! One argon2 computation takes about 19 MiB and a core for tens of
//! milliseconds. Without a bound, a flood of sign-ins (to many emails, or from
//! many addresses) starts one on the blocking pool per request — up to 512
//! threads — and memory grows with the flood. The gate admits as many at once
//! as there are cores, and the rest simply queue.
//!
//! The gate alone did not keep memory flat: each run allocated and freed its
//! 19 MiB, and the allocator kept the freed blocks in each blocking thread's
//! arena (a server went from 27 to 320 MiB after 32 parallel sign-ins). So
//! each permit comes with a work area that is allocated once and reused by
//! every computation: argon2's memory is exactly `cores × 19 MiB`, for good.

use argon2::{
    password_hash::{Output, ParamsString, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use rand::RngCore;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, OnceLock,
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

/// The work areas of finished computations, for the next ones to reuse. It
/// never holds more than one per gate permit.
fn work_areas() -> &'static Mutex<Vec<Vec<Block>>> {
    static AREAS: OnceLock<Mutex<Vec<Vec<Block>>>> = OnceLock::new();
    AREAS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Runs `compute` on the blocking pool with a reusable argon2 work area, once
/// a gate permit is free.
async fn run_gated<T: Send + 'static>(
    compute: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let _permit = argon2_gate()
        .acquire()
        .await
        .expect("the argon2 gate is never closed");
    let mut area = work_areas()
        .lock()
        .expect("no computation panics while holding the list")
        .pop()
        .unwrap_or_default();
    let (result, area) = tokio::task::spawn_blocking(move || {
        let result = compute(&mut area);
        (result, area)
    })
    .await?;
    work_areas()
        .lock()
        .expect("no computation panics while holding the list")
        .push(area);
    Ok(result)
}

/// Argon2 into `out`, growing the work area to the parameters if needed.
fn argon2_into(
    argon2: &Argon2<'_>,
    area: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = argon2.params().block_count();
    if area.len() < blocks {
        area.resize(blocks, Block::new());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut area[..blocks])
}

/// Hashes with the default argon2id parameters into a PHC string.
fn hash_with(area: &mut Vec<Block>, password: &[u8]) -> Result<PasswordHash, HashingError> {
    let failed = |e: &dyn std::fmt::Display| HashingError::Argon2(e.to_string());
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon2, area, password, salt_bytes, &mut out).map_err(|e| failed(&e))?;
    let phc = argon2::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(PasswordHash(phc.to_string()))
}

/// Verifies against a PHC string with the parameters it names. Anything that
/// does not parse is a mismatch.
fn verify_with(area: &mut Vec<Block>, phc: &str, password: &[u8]) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let algorithm = Algorithm::try_from(parsed.algorithm);
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&parsed))
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    argon2_into(&argon2, area, password, salt_bytes, &mut out).is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(&out).is_ok_and(|computed| computed == expected)
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
        run_gated(move |area| hash_with(area, password.as_bytes())).await?
    }

    /// Verifies on the blocking pool, once a gate permit is free.
    pub async fn verify(self, password: String) -> bool {
        VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
        run_gated(move |area| verify_with(area, &self.0, password.as_bytes()))
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

    /// Hashes stored before the work areas (by argon2's own `hash_password`)
    /// still verify, and ours verify with argon2's own verifier.
    #[tokio::test]
    async fn hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"harbor quinoa velvet comet", &salt)
            .unwrap()
            .to_string();
        assert!(
            PasswordHash::from_stored(theirs)
                .verify("harbor quinoa velvet comet".into())
                .await
        );
        let ours = PasswordHash::compute("harbor quinoa velvet comet".into())
            .await
            .unwrap();
        let parsed = argon2::PasswordHash::new(ours.as_phc()).unwrap();
        assert!(Argon2::default()
            .verify_password(b"harbor quinoa velvet comet", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"harbor quinoa velvet comeT", &parsed)
            .is_err());
    }
}
