//! (b) The raw keyset scan with no bookkeeping: the ceiling a dry run is
//! compared with.

use crate::backfill::source;
use sqlx::PgPool;
use std::time::Instant;

/// Reads every user in `batch`-sized pages; returns users per second.
pub(super) async fn measure(pool: &PgPool, batch: i64) -> Result<f64, String> {
    let started = Instant::now();
    let (mut cursor, mut scanned) = (0i64, 0i64);
    loop {
        let users = source::users_after(pool, cursor, batch as u32)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = users.last() else { break };
        cursor = last.id;
        scanned += users.len() as i64;
    }
    let rate = scanned as f64 / started.elapsed().as_secs_f64();
    println!(
        "(b) raw keyset scan, batch {batch}:           {rate:>10.0} users/s  ({scanned} users)"
    );
    Ok(rate)
}
