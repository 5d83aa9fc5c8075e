//! The password policy for operator accounts (OWASP ASVS level 2 as the
//! reference): long enough, not built on the email, and not guessable by the
//! `zxcvbn` strength estimator. Server only: the estimator and its
//! dictionaries never reach the WASM bundle.

use crate::access::MAX_PASSWORD_LEN;

/// ASVS 2.1.1: at least 12 characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// zxcvbn's 0–4 scale; 3 means "safely unguessable: moderate protection from
/// an offline slow-hash scenario" (more than 10^8 guesses).
pub const MIN_STRENGTH_SCORE: u8 = 3;
/// A local part shorter than this is not looked for inside the password: an
/// address such as `a@x.io` would otherwise refuse every password with an
/// `a` in it while protecting nothing (zxcvbn still weighs it as a user input).
const MIN_LOCAL_PART_CHARS_TO_MATCH: usize = 3;
/// zxcvbn's matching grows faster than linearly with length; its authors
/// recommend estimating on a prefix of long inputs. 128 characters of any
/// real passphrase are far past the strength threshold.
const ESTIMATOR_INPUT_CHARS: usize = 128;

/// One reason a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    #[error("it is too short: {chars} characters, and at least {MIN_PASSWORD_CHARS} are needed")]
    TooShort { chars: usize },
    #[error("it is too long: at most {MAX_PASSWORD_LEN} bytes are accepted")]
    TooLong,
    #[error("it contains the part of the email before the @ ({local_part:?})")]
    ContainsEmailLocalPart { local_part: String },
    #[error("it is too easy to guess: strength {score} of 4, and at least {MIN_STRENGTH_SCORE} is needed{}", hint(.warning))]
    TooGuessable { score: u8, warning: Option<String> },
}

fn hint(warning: &Option<String>) -> String {
    warning
        .as_ref()
        .map(|w| format!(" ({})", w.trim_end_matches('.')))
        .unwrap_or_default()
}

/// Every reason a password was refused, and what would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicyError {
    pub reasons: Vec<PasswordRejection>,
}

/// The rule, in words an operator can act on.
pub const WHAT_WOULD_PASS: &str = "A password passes when it has at least 12 characters, \
does not contain the part of the email before the @, and is hard to guess: \
for example four or five unrelated random words, or a long password from a password manager.";

impl std::fmt::Display for PasswordPolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("password refused: ")?;
        for (i, reason) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{reason}")?;
        }
        write!(f, ". {WHAT_WOULD_PASS}")
    }
}

impl std::error::Error for PasswordPolicyError {}

/// Checks `password` for the account `email` (already normalized).
pub fn check_password_policy(email: &str, password: &str) -> Result<(), PasswordPolicyError> {
    let mut reasons = Vec::new();
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        reasons.push(PasswordRejection::TooShort { chars });
    }
    if password.len() > MAX_PASSWORD_LEN {
        reasons.push(PasswordRejection::TooLong);
    }
    let local_part = email.split('@').next().unwrap_or_default().to_lowercase();
    let lowered = password.to_lowercase();
    if !local_part.is_empty()
        && (lowered == local_part
            || (local_part.chars().count() >= MIN_LOCAL_PART_CHARS_TO_MATCH
                && lowered.contains(&local_part)))
    {
        reasons.push(PasswordRejection::ContainsEmailLocalPart { local_part });
    }
    if reasons.is_empty() {
        let estimated: String = password.chars().take(ESTIMATOR_INPUT_CHARS).collect();
        let mut user_inputs: Vec<&str> = vec![email, "identity", "graph", "backfill"];
        user_inputs.extend(
            email
                .split(['@', '.', '_', '-', '+'])
                .filter(|p| p.len() >= 3),
        );
        let entropy = zxcvbn::zxcvbn(&estimated, &user_inputs);
        let score = u8::from(entropy.score());
        if score < MIN_STRENGTH_SCORE {
            reasons.push(PasswordRejection::TooGuessable {
                score,
                warning: entropy
                    .feedback()
                    .and_then(|feedback| feedback.warning())
                    .map(|warning| warning.to_string()),
            });
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(PasswordPolicyError { reasons })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(email: &str, password: &str) -> PasswordPolicyError {
        check_password_policy(email, password).expect_err(password)
    }

    #[test]
    fn short_passwords_are_refused_with_the_rule() {
        let error = refusal("ops@example.com", "abc");
        assert!(error
            .reasons
            .contains(&PasswordRejection::TooShort { chars: 3 }));
        let message = error.to_string();
        assert!(message.contains("too short: 3 characters"), "{message}");
        assert!(message.contains("at least 12 characters"), "{message}");
    }

    #[test]
    fn common_passwords_are_refused_as_guessable() {
        let error = refusal("ops@example.com", "password1234");
        assert!(
            matches!(error.reasons[..], [PasswordRejection::TooGuessable { score, .. }] if score < 3),
            "{error:?}"
        );
        assert!(error.to_string().contains("too easy to guess"), "{error}");
    }

    #[test]
    fn the_email_local_part_is_refused_in_any_case() {
        let error = refusal("jane.doe@example.com", "Correct-JANE.DOE-staple-91");
        assert_eq!(
            error.reasons,
            [PasswordRejection::ContainsEmailLocalPart {
                local_part: "jane.doe".into()
            }]
        );
        assert!(error.to_string().contains("before the @"), "{error}");
    }

    #[test]
    fn a_one_letter_local_part_does_not_ban_its_letter() {
        check_password_policy("a@example.com", "quartz lantern tundra beacon").unwrap();
        assert!(check_password_policy("abcdefghijklm@example.com", "abcdefghijklm").is_err());
    }

    #[test]
    fn a_long_random_passphrase_passes_and_an_oversized_one_does_not() {
        check_password_policy("ops@example.com", "saffron glacier mosaic tundra 41").unwrap();
        let oversized = refusal("ops@example.com", &"x7Q!".repeat(300));
        assert_eq!(oversized.reasons, [PasswordRejection::TooLong]);
    }
}
