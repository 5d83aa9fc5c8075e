//! The sign-in failure limit, made to hold under concurrency and across
//! replicas.
//!
//! Counting failures and then recording one after the (slow) password check
//! lets every request of a parallel flood pass the count before any of them
//! records: 300 parallel guesses got 300 verifications. Instead, an attempt
//! reserves its failure slot *before* verifying: under a Postgres advisory
//! lock per subject it counts the recent failures, in-flight reservations
//! included, and inserts its own row in the same transaction. A wrong password
//! leaves the row as the failure record; a right one releases it. The lock and
//! the rows live in Postgres, so two replicas sharing the database share the
//! limit.
//!
//! Within one process, attempts on a subject first queue on an in-memory
//! mutex, so a flood waits in memory instead of holding every pooled
//! connection while it waits for the advisory lock (which starved the pool:
//! 300 parallel attempts on 4 connections timed out with 500s).

use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The window the limit counts over (`LOGIN_MAX_FAILURES_PER_MINUTE`).
pub const FAILURE_WINDOW_SECS: f64 = 60.0;

/// The first key of this module's two-key advisory locks, so they cannot
/// collide with another subsystem's locks ("IGBA" in ASCII).
const ADVISORY_LOCK_NAMESPACE: i32 = 0x4947_4241;

/// The outcome of asking to attempt a sign-in.
#[derive(Debug)]
pub enum Admission {
    /// Verify the password; then `release` the reservation on success.
    Admitted(FailureReservation),
    /// One of the subjects already has its limit of failures (counting
    /// attempts in flight); do not verify anything.
    RateLimited,
}

/// Failure rows written ahead of a password check, one per subject.
#[derive(Debug)]
#[must_use = "release the reservation when the password is right, or keep it as the failure record"]
pub struct FailureReservation {
    row_ids: Vec<i64>,
}

impl FailureReservation {
    /// The password was right: the attempt was not a failure after all.
    pub async fn release(self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM login_failures WHERE id = ANY($1)")
            .bind(&self.row_ids)
            .execute(pool)
            .await
            .map(drop)
    }

    /// The password was wrong (or the sign-in failed otherwise): the
    /// reserved rows stay as the failure records.
    pub fn keep_as_failure(self) {}
}

/// A stable 32-bit lock key per subject (the same on every replica).
fn lock_key(subject: &str) -> i32 {
    let digest = Sha256::digest(subject.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// In-process stripes: a subject queues on stripe `key % STRIPES`. Unrelated
/// subjects sharing a stripe only wait for one short transaction.
const STRIPES: usize = 64;

fn stripes() -> &'static [tokio::sync::Mutex<()>] {
    static MUTEXES: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    MUTEXES.get_or_init(|| (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
}

/// Reserves one failure slot for each of `subjects` (e.g. `email:…` and
/// `ip:…`), or answers `RateLimited` if any of them has `limit` failures or
/// reservations in the last minute.
pub async fn reserve_sign_in_attempt(
    pool: &PgPool,
    subjects: &[String],
    limit: u32,
) -> Result<Admission, sqlx::Error> {
    // Locks are taken in key order, so two attempts sharing two subjects can
    // never wait on each other in a cycle.
    let mut keys: Vec<i32> = subjects.iter().map(|s| lock_key(s)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut stripe_indexes: Vec<usize> = keys
        .iter()
        .map(|key| key.unsigned_abs() as usize % STRIPES)
        .collect();
    stripe_indexes.sort_unstable();
    stripe_indexes.dedup();
    let mut stripe_guards = Vec::with_capacity(stripe_indexes.len());
    for index in stripe_indexes {
        stripe_guards.push(stripes()[index].lock().await);
    }

    // Times below are `clock_timestamp()`, not `now()`: `now()` is when the
    // transaction began, which can be long before the lock was granted.
    let mut tx = pool.begin().await?;
    for key in keys {
        // Held until commit: the count and the insert below are one step for
        // every other attempt on this subject, on any replica.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ADVISORY_LOCK_NAMESPACE)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    let busiest: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(n), 0) FROM (
             SELECT count(*) AS n FROM login_failures
             WHERE subject = ANY($1) AND failed_at > clock_timestamp() - make_interval(secs => $2)
             GROUP BY subject) counts",
    )
    .bind(subjects)
    .bind(FAILURE_WINDOW_SECS)
    .fetch_one(&mut *tx)
    .await?;
    if busiest >= i64::from(limit) {
        tx.rollback().await?;
        return Ok(Admission::RateLimited);
    }
    let row_ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO login_failures (subject, failed_at)
         SELECT unnest($1::text[]), clock_timestamp() RETURNING id",
    )
    .bind(subjects)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Admission::Admitted(FailureReservation { row_ids }))
}
