//! The words a job's state is stored and shown in: its status, why it
//! paused, its mode, and why a user was skipped.
//!
//! This is the one mapping between these enums and the text the database
//! holds (`StoredText`, and the `sqlx` impls below): SQL elsewhere binds
//! them as parameters and never spells a status out.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An enum stored as one of a fixed set of words.
pub trait StoredText: Sized + Copy + 'static {
    /// Every value that may be stored.
    const STORED: &'static [Self];

    fn as_str(self) -> &'static str;

    /// A stored word, or `None` for one this version does not know.
    fn parse(raw: &str) -> Option<Self> {
        Self::STORED
            .iter()
            .copied()
            .find(|value| value.as_str() == raw)
    }
}

/// Gives an enum its stored words: `as_str`, `parse`, `Display`, and
/// `StoredText` over the variants that may be stored (`never stored` ones
/// have a word for the API but are refused by `parse`).
macro_rules! stored_words {
    ($name:ident { $($variant:ident => $word:literal),* $(,)? }
     $(never stored { $($extra:ident => $extra_word:literal),* })?) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                    $($($name::$extra => $extra_word,)*)?
                }
            }

            /// A stored word, or `None` for one this version does not know.
            pub fn parse(raw: &str) -> Option<Self> {
                <Self as StoredText>::parse(raw)
            }
        }

        impl StoredText for $name {
            const STORED: &'static [Self] = &[$($name::$variant),*];

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A job's status, exactly as stored in `identity_graph_backfill_jobs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    Running,
    Stopping,
    Stopped,
    Paused,
    Completed,
    Failed,
    /// Hidden from the list; kept for history.
    Archived,
    /// Never stored: the API's word for a row this version cannot read (its
    /// options are not an object, or a field has the wrong type).
    Unreadable,
}

stored_words!(JobStatus {
    Running => "running",
    Stopping => "stopping",
    Stopped => "stopped",
    Paused => "paused",
    Completed => "completed",
    Failed => "failed",
    Archived => "archived",
} never stored {
    Unreadable => "unreadable"
});

impl JobStatus {
    pub const VISIBLE: [JobStatus; 6] = [
        JobStatus::Running,
        JobStatus::Stopping,
        JobStatus::Stopped,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Failed,
    ];
    /// A runner owns the job (on some replica).
    pub const ACTIVE: [JobStatus; 2] = [JobStatus::Running, JobStatus::Stopping];
    /// The statuses a start (or a watchdog resume) may leave.
    pub const STARTABLE: [JobStatus; 4] = [
        JobStatus::Stopped,
        JobStatus::Paused,
        JobStatus::Completed,
        JobStatus::Failed,
    ];
    /// The statuses a stop request applies to.
    pub const STOPPABLE: [JobStatus; 3] =
        [JobStatus::Running, JobStatus::Stopping, JobStatus::Paused];

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    pub fn can_stop(self) -> bool {
        Self::STOPPABLE.contains(&self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseReason {
    MaxRuntime,
    ConsecutiveFailures,
    Interrupted,
    /// The Identity Graph held the run (429 / 503, or a streak of errors)
    /// for longer than the hold cap with no write getting through.
    Throttled,
}

stored_words!(PauseReason {
    MaxRuntime => "max-runtime",
    ConsecutiveFailures => "consecutive-failures",
    Interrupted => "interrupted",
    Throttled => "throttled",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Full,
    FailedOnly,
}

stored_words!(Mode {
    Full => "full",
    FailedOnly => "failed-only",
});

/// Why a user was skipped rather than written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    DryRun,
    Deleted,
    NoIdentifiers,
}

/// A stored word as read back: a value this version knows, or the word
/// itself, so a row written by another release still loads (and is shown
/// as retired or unreadable instead of breaking the list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<T> {
    Known(T),
    Unknown(String),
}

impl<T: StoredText> Stored<T> {
    pub fn known(&self) -> Option<T> {
        match self {
            Stored::Known(value) => Some(*value),
            Stored::Unknown(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Stored::Known(value) => value.as_str(),
            Stored::Unknown(raw) => raw,
        }
    }
}

impl<T: StoredText> fmt::Display for Stored<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "ssr")]
mod database {
    //! The `sqlx` side of the mapping: each enum is bound and read as text.

    use super::{JobStatus, Mode, PauseReason, Stored, StoredText};
    use sqlx::{
        encode::IsNull,
        error::BoxDynError,
        postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef},
        Decode, Encode, Postgres, Type,
    };

    macro_rules! stored_as_text {
        ($($name:ty),*) => {$(
            impl Type<Postgres> for $name {
                fn type_info() -> PgTypeInfo {
                    <&str as Type<Postgres>>::type_info()
                }
                fn compatible(ty: &PgTypeInfo) -> bool {
                    <&str as Type<Postgres>>::compatible(ty)
                }
            }

            impl PgHasArrayType for $name {
                fn array_type_info() -> PgTypeInfo {
                    <&str as PgHasArrayType>::array_type_info()
                }
            }

            impl Encode<'_, Postgres> for $name {
                fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                    <&str as Encode<Postgres>>::encode(self.as_str(), buf)
                }
            }

            impl<'r> Decode<'r, Postgres> for $name {
                fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                    let raw = <&str as Decode<Postgres>>::decode(value)?;
                    <$name as StoredText>::parse(raw).ok_or_else(|| {
                        format!("{raw:?} is not a {} this version knows", stringify!($name)).into()
                    })
                }
            }

            impl Type<Postgres> for Stored<$name> {
                fn type_info() -> PgTypeInfo {
                    <&str as Type<Postgres>>::type_info()
                }
                fn compatible(ty: &PgTypeInfo) -> bool {
                    <&str as Type<Postgres>>::compatible(ty)
                }
            }

            impl<'r> Decode<'r, Postgres> for Stored<$name> {
                fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                    let raw = <&str as Decode<Postgres>>::decode(value)?;
                    Ok(match <$name as StoredText>::parse(raw) {
                        Some(known) => Stored::Known(known),
                        None => Stored::Unknown(raw.to_string()),
                    })
                }
            }
        )*};
    }
    stored_as_text!(JobStatus, PauseReason, Mode);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in JobStatus::STORED {
            assert_eq!(JobStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(JobStatus::parse("legacy-queued"), None);
        assert_eq!(JobStatus::parse("unreadable"), None, "never stored");
        for reason in PauseReason::STORED {
            assert_eq!(PauseReason::parse(reason.as_str()), Some(*reason));
        }
        for mode in Mode::STORED {
            assert_eq!(Mode::parse(mode.as_str()), Some(*mode));
        }
    }
}
