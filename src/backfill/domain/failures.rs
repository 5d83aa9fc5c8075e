//! A job's failures by what went wrong: the grouped counts, the filter an
//! operator narrows them with, and a page of them.

use super::timestamp::Timestamp;
use crate::error::AppError;
use serde::{Deserialize, Serialize};

/// The most failures one page returns.
pub const MAX_FAILURES_PAGE: i64 = 500;
/// A page's size when the caller names none.
pub const DEFAULT_FAILURES_PAGE: i64 = 50;
const MAX_CLASS_CHARS: usize = 64;
const MAX_SEARCH_CHARS: usize = 200;

/// How many unresolved failures a job has of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct FailureClassCount {
    pub class: String,
    pub count: i64,
}

/// One unresolved failure, as a page lists it and the export writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct FailureRecord {
    pub user_id: i64,
    /// `http 400`, `timeout`, `connection`, `sqlstate 23` …
    #[serde(default)]
    pub class: String,
    pub error: String,
    pub attempts: i32,
    pub first_failed_at: Timestamp,
    pub last_failed_at: Timestamp,
}

/// What `failures` is sent: the job, an optional filter, and where the
/// page starts (the last user id of the previous page).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailuresRequest {
    pub job_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_user_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// A page of failures in user id order; `next_after_user_id` is the
/// `after_user_id` of the next page, `None` on the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailuresPage {
    pub failures: Vec<FailureRecord>,
    pub next_after_user_id: Option<i64>,
}

/// Which unresolved failures an operator means: of one class, and/or
/// matching a search. A search that is a whole number is a user id, so
/// "77" finds user 77 and not every message that mentions 770; any other
/// search matches inside the message, case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureFilter {
    pub class: Option<String>,
    pub search: Option<String>,
}

impl FailureFilter {
    /// Blank fields mean "any"; over-long ones are refused, naming the
    /// field (`class`, `q`).
    pub fn parse(class: Option<&str>, search: Option<&str>) -> Result<Self, AppError> {
        Self::parse_fields(("class", class), ("q", search))
    }

    /// [`FailureFilter::parse`], for a request that names its fields otherwise.
    pub fn parse_fields(
        (class_field, class): (&str, Option<&str>),
        (search_field, search): (&str, Option<&str>),
    ) -> Result<Self, AppError> {
        let class = non_blank(class);
        let search = non_blank(search);
        if class
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CLASS_CHARS)
        {
            return Err(AppError::validation(
                class_field,
                format!("a failure class is at most {MAX_CLASS_CHARS} characters"),
            ));
        }
        if search
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS)
        {
            return Err(AppError::validation(
                search_field,
                format!("a search is at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        Ok(FailureFilter { class, search })
    }

    pub fn is_empty(&self) -> bool {
        self.class.is_none() && self.search.is_none()
    }

    /// The search as a user id, when it is a whole number.
    pub fn search_user_id(&self) -> Option<i64> {
        self.search.as_deref().and_then(|q| q.parse().ok())
    }

    /// The search as an `ILIKE` pattern, its own `%`, `_` and `\` taken literally.
    pub fn search_pattern(&self) -> Option<String> {
        self.search.as_deref().map(|q| {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
    }

    /// In words, for a page heading and a run's history: `class "http 400",
    /// matching "timeout"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(class) = &self.class {
            parts.push(format!("class \"{class}\""));
        }
        if let Some(search) = &self.search {
            parts.push(format!("matching \"{search}\""));
        }
        if parts.is_empty() {
            "every unresolved failure".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A page size in range: the default when absent, an error when out of it.
pub fn failures_page_size(limit: Option<i64>) -> Result<i64, AppError> {
    match limit {
        None => Ok(DEFAULT_FAILURES_PAGE),
        Some(limit) if (1..=MAX_FAILURES_PAGE).contains(&limit) => Ok(limit),
        Some(limit) => Err(AppError::validation(
            "limit",
            format!("limit must be between 1 and {MAX_FAILURES_PAGE}, not {limit}"),
        )),
    }
}

fn non_blank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_fields_mean_any() {
        let filter = FailureFilter::parse(Some("  "), Some("")).unwrap();
        assert!(filter.is_empty());
        assert_eq!(filter.describe(), "every unresolved failure");
    }

    #[test]
    fn a_search_is_literal_and_a_number_is_also_a_user_id() {
        let filter = FailureFilter::parse(Some("http 400"), Some(" 50%_off\\ ")).unwrap();
        assert_eq!(filter.class.as_deref(), Some("http 400"));
        assert_eq!(
            filter.search_pattern().as_deref(),
            Some("%50\\%\\_off\\\\%")
        );
        assert_eq!(filter.search_user_id(), None);
        let by_id = FailureFilter::parse(None, Some("1234")).unwrap();
        assert_eq!(by_id.search_user_id(), Some(1234));
    }

    #[test]
    fn over_long_fields_and_page_sizes_are_refused() {
        let long = "x".repeat(MAX_SEARCH_CHARS + 1);
        let error = FailureFilter::parse(None, Some(&long)).unwrap_err();
        assert!(error.to_string().contains("at most 200"), "{error}");
        assert_eq!(failures_page_size(None).unwrap(), DEFAULT_FAILURES_PAGE);
        assert!(failures_page_size(Some(0)).is_err());
        assert!(failures_page_size(Some(MAX_FAILURES_PAGE + 1)).is_err());
    }
}
