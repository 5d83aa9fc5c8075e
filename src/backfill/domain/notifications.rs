//! What the job page shows of a job's notifications: each event the
//! webhook was (or is still to be) told, and how its delivery went.

use super::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct NotificationRecord {
    pub id: i64,
    /// The status the job came to rest in: `completed`, `paused`, `failed`, `stopped`.
    pub event: String,
    pub pause_reason: Option<String>,
    pub created_at: Timestamp,
    /// `pending`, `delivered` or `expired`.
    pub state: String,
    pub attempts: i32,
    /// The last attempt's result: `200`, `500`, `timed out` …
    pub last_outcome: Option<String>,
    pub delivered_at: Option<Timestamp>,
}
