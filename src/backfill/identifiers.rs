//! The one place that turns a source row into the identifiers the Identity
//! Graph links a user through. Both graphs, the runner's skip rule and the
//! coverage check's notion of "eligible" read a user through here, so they
//! can never disagree about who a user is.
//!
//! The rules (docs/graph-contract.md):
//! - every value is trimmed of Unicode whitespace, and a blank value is absent;
//! - an email is lowercased, and one without exactly one `@` with something
//!   on each side is not an email;
//! - a phone is parsed with libphonenumber's metadata (`phonenumber`) and
//!   written in E.164; a number without a country code is read in the
//!   configured default region (`IDENTITY_GRAPH_PHONE_REGION`), and one that
//!   does not parse as a valid number is absent;
//! - an IP is parsed as IPv4 or IPv6 (`std::net::IpAddr`) and written in its
//!   canonical text form (an IPv4-mapped IPv6 address is the IPv4 address);
//! - a device id is trimmed;
//! - a `(kind, value)` appears once: a signup IP equal to the last-login IP
//!   is one identifier.

use super::source::SourceUser;
#[cfg(test)]
use super::source::UNICODE_WHITESPACE;
use chrono::{DateTime, Utc};
use std::fmt;
use std::net::IpAddr;

/// What an identifier identifies. The text is what the built-in graph stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentifierKind {
    Email,
    Phone,
    Ip,
    Device,
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::Ip => "ip",
            IdentifierKind::Device => "device",
        }
    }
}

/// Why a value the source holds did not become an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Empty, or only whitespace.
    Blank,
    NotAnAddress,
    NotAValidNumber,
    NotAnIp,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Blank => "blank",
            DropReason::NotAnAddress => "not an address",
            DropReason::NotAValidNumber => "not a valid number",
            DropReason::NotAnIp => "not an IP address",
        }
    }
}

/// One value dropped by normalization: which kind, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dropped {
    pub kind: IdentifierKind,
    pub reason: DropReason,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.reason.as_str())
    }
}

/// A user as the Identity Graph receives it: normalized identifiers, and the
/// database time its source row was read (`observed_at`, "newest read wins").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphUser {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub observed_at: DateTime<Utc>,
    pub deleted: bool,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub signup_ip: Option<String>,
    /// `None` when it equals `signup_ip`: the same identifier once.
    pub last_login_ip: Option<String>,
    pub device_id: Option<String>,
    /// Values the source holds that normalization dropped.
    pub dropped: Vec<Dropped>,
}

impl GraphUser {
    /// The distinct identifiers the user links through, sorted.
    pub fn identifiers(&self) -> Vec<(IdentifierKind, &str)> {
        let mut all: Vec<(IdentifierKind, &str)> = [
            (IdentifierKind::Email, self.email.as_deref()),
            (IdentifierKind::Phone, self.phone.as_deref()),
            (IdentifierKind::Ip, self.signup_ip.as_deref()),
            (IdentifierKind::Ip, self.last_login_ip.as_deref()),
            (IdentifierKind::Device, self.device_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(kind, value)| value.map(|value| (kind, value)))
        .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn has_identifiers(&self) -> bool {
        self.email.is_some()
            || self.phone.is_some()
            || self.signup_ip.is_some()
            || self.last_login_ip.is_some()
            || self.device_id.is_some()
    }
}

/// `IDENTITY_GRAPH_PHONE_REGION`: a two-letter region such as `US` or `GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(phonenumber::country::Id);

impl PhoneRegion {
    pub fn parse(text: &str) -> Result<Self, String> {
        let code = text.trim().to_ascii_uppercase();
        code.parse::<phonenumber::country::Id>()
            .map(PhoneRegion)
            .map_err(|_| format!("{text:?} is not a two-letter region code such as US or GB"))
    }

    pub fn code(&self) -> &str {
        self.0.as_ref()
    }
}

/// Normalizes source rows. Holds the default phone region; cheap to clone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalizer {
    /// Numbers without a country code are read in this region; with none,
    /// such a number is not valid.
    pub phone_region: Option<PhoneRegion>,
}

/// A trimmed value, or why there is none. `None` for a NULL.
fn present(value: Option<&str>) -> Option<Result<&str, DropReason>> {
    let value = value?.trim();
    Some(if value.is_empty() {
        Err(DropReason::Blank)
    } else {
        Ok(value)
    })
}

impl Normalizer {
    pub fn new(phone_region: Option<PhoneRegion>) -> Self {
        Self { phone_region }
    }

    pub fn user(&self, user: SourceUser) -> GraphUser {
        let mut dropped = Vec::new();
        let mut keep =
            |kind: IdentifierKind, outcome: Option<Result<String, DropReason>>| match outcome {
                Some(Ok(value)) => Some(value),
                Some(Err(reason)) => {
                    dropped.push(Dropped { kind, reason });
                    None
                }
                None => None,
            };
        let email = keep(IdentifierKind::Email, self.email(user.email.as_deref()));
        let phone = keep(IdentifierKind::Phone, self.phone(user.phone.as_deref()));
        let signup_ip = keep(IdentifierKind::Ip, ip(user.signup_ip.as_deref()));
        let last_login_ip = keep(IdentifierKind::Ip, ip(user.last_login_ip.as_deref()))
            .filter(|last| signup_ip.as_ref() != Some(last));
        let device_id = keep(
            IdentifierKind::Device,
            present(user.device_id.as_deref()).map(|value| value.map(str::to_string)),
        );
        GraphUser {
            id: user.id,
            created_at: user.created_at,
            observed_at: user.observed_at,
            deleted: user.deleted_at.is_some(),
            email,
            phone,
            signup_ip,
            last_login_ip,
            device_id,
            dropped,
        }
    }

    /// Whether a row has at least one identifier: the runner writes it
    /// unless it is deleted.
    pub fn has_identifiers(&self, user: &SourceUser) -> bool {
        self.user(user.clone()).has_identifiers()
    }

    fn email(&self, value: Option<&str>) -> Option<Result<String, DropReason>> {
        Some(
            present(value)?.and_then(|value| match value.split_once('@') {
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
                {
                    Ok(value.to_lowercase())
                }
                _ => Err(DropReason::NotAnAddress),
            }),
        )
    }

    fn phone(&self, value: Option<&str>) -> Option<Result<String, DropReason>> {
        Some(present(value)?.and_then(|value| {
            phonenumber::parse(self.phone_region.map(|region| region.0), value)
                .ok()
                .filter(phonenumber::is_valid)
                .map(|number| number.format().mode(phonenumber::Mode::E164).to_string())
                .ok_or(DropReason::NotAValidNumber)
        }))
    }
}

fn ip(value: Option<&str>) -> Option<Result<String, DropReason>> {
    Some(present(value)?.and_then(|value| {
        value
            .parse::<IpAddr>()
            .map(|address| address.to_canonical().to_string())
            .map_err(|_| DropReason::NotAnIp)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(
        email: Option<&str>,
        phone: Option<&str>,
        ips: (Option<&str>, Option<&str>),
        device: Option<&str>,
    ) -> SourceUser {
        SourceUser {
            id: 1,
            email: email.map(str::to_string),
            phone: phone.map(str::to_string),
            created_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            signup_ip: ips.0.map(str::to_string),
            last_login_ip: ips.1.map(str::to_string),
            device_id: device.map(str::to_string),
            deleted_at: None,
            observed_at: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
        }
    }

    fn us() -> Normalizer {
        Normalizer::new(Some(PhoneRegion::parse("us").unwrap()))
    }

    #[test]
    fn the_whitespace_list_is_what_trim_removes() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert_eq!(
                c.is_whitespace(),
                UNICODE_WHITESPACE.contains(&c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn blank_values_are_absent_and_counted() {
        let user = us().user(row(
            Some(""),
            Some("+1 415 555 0100"),
            (Some(" 10.0.0.1 "), None),
            Some("  "),
        ));
        assert_eq!(user.email, None);
        assert_eq!(user.device_id, None);
        assert_eq!(user.signup_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(user.phone.as_deref(), Some("+14155550100"));
        assert_eq!(
            user.dropped,
            vec![
                Dropped {
                    kind: IdentifierKind::Email,
                    reason: DropReason::Blank
                },
                Dropped {
                    kind: IdentifierKind::Device,
                    reason: DropReason::Blank
                },
            ]
        );
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_need_one_at_with_both_sides() {
        let n = us();
        let email = |v: &str| n.user(row(Some(v), None, (None, None), None)).email;
        assert_eq!(
            email("\u{3000} Mixed.Case@Example.COM \u{00A0}").as_deref(),
            Some("mixed.case@example.com")
        );
        for bad in ["plain", "@example.com", "a@", "a@b@c", "😀"] {
            assert_eq!(email(bad), None, "{bad}");
        }
    }

    #[test]
    fn phones_become_e164_in_the_default_region() {
        let phone = |n: Normalizer, v: &str| n.user(row(None, Some(v), (None, None), None)).phone;
        assert_eq!(
            phone(us(), "+1 (415) 555-0100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            phone(us(), "(415) 555-0100").as_deref(),
            Some("+14155550100")
        );
        let gb = Normalizer::new(Some(PhoneRegion::parse("GB").unwrap()));
        assert_eq!(
            phone(gb, "0044 20 7946 0000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(phone(gb, "020 7946 0000").as_deref(), Some("+442079460000"));
        // Without a default region a national number has no country.
        assert_eq!(phone(Normalizer::default(), "(415) 555-0100"), None);
        for bad in ["+15550001", "12", "not a phone", "😀"] {
            assert_eq!(phone(us(), bad), None, "{bad}");
        }
    }

    #[test]
    fn ips_are_canonical_and_counted_once() {
        let n = us();
        let user = n.user(row(
            Some("a@b.c"),
            None,
            (Some("::ffff:10.0.0.1"), Some("10.0.0.1")),
            None,
        ));
        assert_eq!(user.signup_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(user.last_login_ip, None);
        assert_eq!(
            user.identifiers(),
            vec![
                (IdentifierKind::Email, "a@b.c"),
                (IdentifierKind::Ip, "10.0.0.1")
            ]
        );
        let octal = n.user(row(
            None,
            None,
            (Some("010.0.0.1"), Some("2001:DB8::1")),
            None,
        ));
        assert_eq!(octal.signup_ip, None);
        assert_eq!(octal.last_login_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(
            octal.dropped,
            vec![Dropped {
                kind: IdentifierKind::Ip,
                reason: DropReason::NotAnIp
            }]
        );
    }

    #[test]
    fn regions_parse() {
        assert_eq!(PhoneRegion::parse(" gb ").unwrap().code(), "GB");
        assert!(PhoneRegion::parse("Narnia").is_err());
    }
}
