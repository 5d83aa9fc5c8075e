//! The job key: the name a job is stored, shown and addressed under.

use crate::error::AppError;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const DEFAULT_JOB_KEY: &str = "identity-graph-users";
pub const DRY_RUN_SUFFIX: &str = ":dry-run";
pub const MAX_JOB_KEY_LEN: usize = 120;

/// A validated job key: 1–120 characters of `[a-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobKey(String);

impl JobKey {
    /// A blank key becomes the default key. A dry run is always recorded
    /// under `<key>:dry-run`, so a rehearsal never moves a real job's cursor;
    /// a real run on such a key is refused for the same reason.
    pub fn parse(raw: Option<&str>, dry_run: bool) -> Result<Self, AppError> {
        let trimmed = raw.map(str::trim).unwrap_or("");
        let base = if trimmed.is_empty() {
            DEFAULT_JOB_KEY
        } else {
            trimmed
        };
        let bad = bad_characters(base);
        if !bad.is_empty() {
            let (list, verb) = match bad.as_slice() {
                [one] => (one.clone(), "is"),
                [init @ .., last] => (format!("{} and {last}", init.join(", ")), "are"),
                [] => unreachable!(),
            };
            return Err(AppError::validation(
                "job_key",
                format!("{list} {verb} not allowed; use lowercase letters, digits and . _ : -"),
            ));
        }
        let is_rehearsal_key = base.ends_with(DRY_RUN_SUFFIX);
        if !dry_run && is_rehearsal_key {
            return Err(AppError::validation(
                "job_key",
                format!(
                    "{base} holds a dry run; a real run needs a key that does not end in {DRY_RUN_SUFFIX}"
                ),
            ));
        }
        let key = if dry_run && !is_rehearsal_key {
            format!("{base}{DRY_RUN_SUFFIX}")
        } else {
            base.to_string()
        };
        if key.chars().count() > MAX_JOB_KEY_LEN {
            let limit = if dry_run && !is_rehearsal_key {
                format!(
                    "{} characters for a dry run (it is recorded under <key>{DRY_RUN_SUFFIX})",
                    MAX_JOB_KEY_LEN - DRY_RUN_SUFFIX.len()
                )
            } else {
                format!("{MAX_JOB_KEY_LEN} characters")
            };
            return Err(AppError::validation(
                "job_key",
                format!("a job key has at most {limit}"),
            ));
        }
        Ok(Self(key))
    }

    /// A key that names an existing job, as `stop` and `job` take it: the
    /// same characters, and no dry-run rewriting.
    pub fn parse_existing(raw: &str) -> Result<Self, AppError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AppError::validation("job_key", "name the job"));
        }
        let dry_run = trimmed.ends_with(DRY_RUN_SUFFIX);
        Self::parse(Some(trimmed), dry_run)
    }

    /// A key as a row stores it: it was checked when the row was written.
    pub(crate) fn from_stored(stored: &str) -> Self {
        Self(stored.to_string())
    }

    pub fn is_dry_run_key(&self) -> bool {
        self.0.ends_with(DRY_RUN_SUFFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Every character a key may not hold, once each in the order they appear,
/// as the operator reads them: `'A'`, `' '` (a space), `'é'`.
fn bad_characters(key: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for c in key.chars() {
        let allowed =
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-');
        if !allowed && !seen.contains(&c) {
            seen.push(c);
        }
    }
    seen.into_iter()
        .map(|c| match c {
            ' ' => "' ' (a space)".to_string(),
            c => format!("{c:?}"),
        })
        .collect()
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_keys_become_defaults() {
        assert_eq!(
            JobKey::parse(None, false).unwrap().as_str(),
            "identity-graph-users"
        );
        assert_eq!(
            JobKey::parse(Some("  "), true).unwrap().as_str(),
            "identity-graph-users:dry-run"
        );
        assert_eq!(
            JobKey::parse(Some("backfill.2024_q1:retry-2"), false)
                .unwrap()
                .as_str(),
            "backfill.2024_q1:retry-2"
        );
    }

    #[test]
    fn bad_keys_name_the_field() {
        for bad in ["UPPER", "spa ce", "semi;colon", "drop'table", "é"] {
            let error = JobKey::parse(Some(bad), false).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("job_key"), "{bad}");
        }
        let every = JobKey::parse(Some("Q1 backfill;x"), false).unwrap_err();
        assert_eq!(
            every.message,
            "'Q', ' ' (a space) and ';' are not allowed; use lowercase letters, digits and . _ : -",
            "every bad character, once each"
        );
        let one = JobKey::parse(Some("aBBa"), false).unwrap_err();
        assert_eq!(
            one.message,
            "'B' is not allowed; use lowercase letters, digits and . _ : -"
        );
        assert!(JobKey::parse(Some(&"a".repeat(120)), false).is_ok());
        assert!(JobKey::parse(Some(&"a".repeat(121)), false).is_err());
    }
}
