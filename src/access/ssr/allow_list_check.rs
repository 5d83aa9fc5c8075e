//! The start-up check of `IDENTITY_GRAPH_BACKFILL_ADMINS`, so a typo in the
//! allow-list is found in the log at start-up, not when someone cannot get in.

use crate::access::AllowList;
use sqlx::PgPool;

/// Something about the allow-list an operator should fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListWarning {
    #[error("IDENTITY_GRAPH_BACKFILL_ADMINS: {0:?} is not an email address and allows nobody")]
    NotAnEmail(String),
    #[error("IDENTITY_GRAPH_BACKFILL_ADMINS is empty: every signed-in admin will be refused (FORBIDDEN)")]
    Empty,
    #[error("IDENTITY_GRAPH_BACKFILL_ADMINS names nobody who has an account: create one with `identity-graph-backfill admin add EMAIL`")]
    NobodyHasAnAccount,
}

/// Warnings that need no database: each malformed entry, and an empty list.
/// Empty entries (`a@b.io,,`) are not warned about.
pub fn entry_warnings(allow_list: &AllowList) -> Vec<AllowListWarning> {
    let mut warnings: Vec<AllowListWarning> = allow_list
        .malformed_entries()
        .iter()
        .cloned()
        .map(AllowListWarning::NotAnEmail)
        .collect();
    if allow_list.is_empty() {
        warnings.push(AllowListWarning::Empty);
    }
    warnings
}

/// The warning for a non-empty allow-list none of whose emails has an
/// account (`accounts` are the emails in the `admins` table).
pub fn account_warning(allow_list: &AllowList, accounts: &[String]) -> Option<AllowListWarning> {
    let anyone = allow_list
        .emails()
        .iter()
        .any(|email| accounts.contains(email));
    (!allow_list.is_empty() && !anyone).then_some(AllowListWarning::NobodyHasAnAccount)
}

/// The start-up summary line: how many admins the allow-list lets in.
pub fn summary(allow_list: &AllowList) -> String {
    match allow_list.emails().len() {
        1 => "allow-list: 1 admin allowed".to_string(),
        n => format!("allow-list: {n} admins allowed"),
    }
}

/// Logs the summary and every warning about the allow-list. The account check
/// needs the database; if it cannot be read, that is logged and start-up goes on.
pub async fn log_allow_list_check(pool: &PgPool, allow_list: &AllowList) {
    for warning in entry_warnings(allow_list) {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        allowed = allow_list.emails().len(),
        "{}",
        summary(allow_list)
    );
    match allowed_emails_with_accounts(pool, allow_list).await {
        Ok(accounts) => {
            if let Some(warning) = account_warning(allow_list, &accounts) {
                tracing::warn!("{warning}");
            }
        }
        Err(error) => {
            tracing::warn!("could not check the allow-list against the accounts: {error}")
        }
    }
}

/// The allow-listed emails that have an account.
pub async fn allowed_emails_with_accounts(
    pool: &PgPool,
    allow_list: &AllowList,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT email FROM admins WHERE email = ANY($1) ORDER BY email")
        .bind(allow_list.emails())
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_entry_gives_one_warning_naming_it_and_empty_entries_none() {
        let list = AllowList::parse("a@b.com,,not-an-email, ");
        let warnings = entry_warnings(&list);
        assert_eq!(
            warnings,
            [AllowListWarning::NotAnEmail("not-an-email".into())]
        );
        assert!(warnings[0].to_string().contains("\"not-an-email\""));
        assert_eq!(summary(&list), "allow-list: 1 admin allowed");
    }

    #[test]
    fn an_empty_list_is_one_warning_and_allows_nobody() {
        assert_eq!(
            entry_warnings(&AllowList::parse(" , ,")),
            [AllowListWarning::Empty]
        );
        assert_eq!(
            summary(&AllowList::parse("")),
            "allow-list: 0 admins allowed"
        );
        // Only malformed entries: each named, and the list is effectively empty.
        assert_eq!(
            entry_warnings(&AllowList::parse("ops@;example.com")),
            [
                AllowListWarning::NotAnEmail("ops@;example.com".into()),
                AllowListWarning::Empty
            ]
        );
    }

    #[test]
    fn a_list_naming_nobody_with_an_account_is_a_warning() {
        let list = AllowList::parse("ops@example.com,lead@example.com");
        assert_eq!(
            account_warning(&list, &[]),
            Some(AllowListWarning::NobodyHasAnAccount)
        );
        assert_eq!(account_warning(&list, &["lead@example.com".into()]), None);
        // An empty list already has its own warning.
        assert_eq!(account_warning(&AllowList::parse(""), &[]), None);
    }
}
