//! The instants the API returns (`started_at`, `updated_at`, …) and the
//! calendar arithmetic the pages write them with.
//!
//! On the server a [`Timestamp`] is chrono's `DateTime<Utc>`, as the store
//! and the runner use it. In the browser it is a count of milliseconds read
//! from the same RFC 3339 text: chrono's parser, its serde glue and its
//! calendar code were about 20 KB of the WASM for five fields that the pages
//! only print and subtract.
//!
//! Both sides print dates with [`civil_from_days`], so the server's HTML and
//! the hydrated page show the same text.

#[cfg(feature = "ssr")]
pub type Timestamp = chrono::DateTime<chrono::Utc>;

#[cfg(not(feature = "ssr"))]
pub use browser::Timestamp;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    #[cfg(feature = "ssr")]
    {
        chrono::Utc::now().timestamp_millis()
    }
    #[cfg(all(not(feature = "ssr"), feature = "hydrate"))]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(all(not(feature = "ssr"), not(feature = "hydrate")))]
    {
        0
    }
}

const MILLIS_PER_DAY: i64 = 86_400_000;

/// A point in time as UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl CivilTime {
    pub fn from_millis(millis: i64) -> Self {
        let (year, month, day) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
        let second_of_day = millis.rem_euclid(MILLIS_PER_DAY) / 1000;
        Self {
            year,
            month,
            day,
            hour: (second_of_day / 3_600) as u32,
            minute: (second_of_day / 60 % 60) as u32,
            second: (second_of_day % 60) as u32,
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar. The year is counted from March, so the leap day falls last and
/// every month length follows from `(153 m + 2) / 5`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + DAYS_FROM_0000_03_01_TO_EPOCH;
    let era = shifted.div_euclid(DAYS_PER_ERA);
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * march_month + 2) / 5 + 1) as u32;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01; the inverse of [`civil_from_days`].
#[cfg_attr(feature = "ssr", allow(dead_code))]
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let march_year = if month <= 2 { year - 1 } else { year };
    let era = march_year.div_euclid(400);
    let year_of_era = march_year.rem_euclid(400);
    let march_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * march_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - DAYS_FROM_0000_03_01_TO_EPOCH
}

/// 400 Gregorian years.
const DAYS_PER_ERA: i64 = 146_097;
const DAYS_FROM_0000_03_01_TO_EPOCH: i64 = 719_468;

/// Reads RFC 3339 as chrono writes a `DateTime<Utc>` (`2026-11-29T13:05:09Z`,
/// optionally with a fraction or a numeric offset) into milliseconds since
/// the epoch. The fraction is cut to milliseconds, as chrono's
/// `timestamp_millis` cuts it.
#[cfg_attr(feature = "ssr", allow(dead_code))]
fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let mut text = Reader(text.as_bytes());
    let year = text.number(4)?;
    text.expect(b"-")?;
    let month = text.number(2)? as u32;
    text.expect(b"-")?;
    let day = text.number(2)? as u32;
    text.expect(b"Tt ")?;
    let hour = text.number(2)?;
    text.expect(b":")?;
    let minute = text.number(2)?;
    text.expect(b":")?;
    let second = text.number(2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut millis = 0;
    if text.expect(b".").is_some() {
        let digits = text.digits();
        if digits.is_empty() {
            return None;
        }
        for place in 0..3 {
            let digit = digits.get(place).map_or(0, |d| i64::from(d - b'0'));
            millis = millis * 10 + digit;
        }
    }
    let offset_minutes = if text.expect(b"Zz").is_some() {
        0
    } else {
        let sign = if text.expect(b"+").is_some() {
            1
        } else {
            text.expect(b"-")?;
            -1
        };
        let hours = text.number(2)?;
        text.expect(b":")?;
        sign * (hours * 60 + text.number(2)?)
    };
    if !text.0.is_empty() {
        return None;
    }
    // A leap second (:60) is the last second of its minute plus 1,000 ms, as chrono keeps it.
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60
        - offset_minutes * 60;
    Some(seconds * 1000 + second.min(59) * 1000 + millis + if second == 60 { 1000 } else { 0 })
}

/// The rest of a text being read.
#[cfg_attr(feature = "ssr", allow(dead_code))]
struct Reader<'a>(&'a [u8]);

#[cfg_attr(feature = "ssr", allow(dead_code))]
impl<'a> Reader<'a> {
    /// Exactly `count` decimal digits.
    fn number(&mut self, count: usize) -> Option<i64> {
        let field = self.0.get(..count)?;
        if !field.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[count..];
        Some(field.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }

    /// As many decimal digits as there are.
    fn digits(&mut self) -> &'a [u8] {
        let count = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.0.split_at(count);
        self.0 = rest;
        digits
    }

    /// One byte, any of `allowed`.
    fn expect(&mut self, allowed: &[u8]) -> Option<()> {
        let (first, rest) = self.0.split_first()?;
        if !allowed.contains(first) {
            return None;
        }
        self.0 = rest;
        Some(())
    }
}

#[cfg(not(feature = "ssr"))]
mod browser {
    use super::{parse_rfc3339_millis, CivilTime};
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;

    /// An instant, as milliseconds since the Unix epoch.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Timestamp {
        millis: i64,
    }

    impl Timestamp {
        pub fn timestamp_millis(&self) -> i64 {
            self.millis
        }
    }

    impl<'de> Deserialize<'de> for Timestamp {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Rfc3339;
            impl de::Visitor<'_> for Rfc3339 {
                type Value = Timestamp;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an RFC 3339 date and time")
                }

                fn visit_str<E: de::Error>(self, text: &str) -> Result<Timestamp, E> {
                    parse_rfc3339_millis(text)
                        .map(|millis| Timestamp { millis })
                        .ok_or_else(|| E::custom("not an RFC 3339 date and time"))
                }
            }
            deserializer.deserialize_str(Rfc3339)
        }
    }

    /// Written the way chrono writes a `DateTime<Utc>` with whole milliseconds.
    impl Serialize for Timestamp {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let at = CivilTime::from_millis(self.millis);
            let fraction = self.millis.rem_euclid(1000);
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
                at.year,
                at.month,
                at.day,
                at.hour,
                at.minute,
                at.second,
                if fraction == 0 {
                    String::new()
                } else {
                    format!(".{fraction:03}")
                }
            );
            serializer.serialize_str(&text)
        }
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, Timelike};

    const SAMPLES: [i64; 8] = [
        0,
        1_795_784_709_123,
        951_782_400_000,     // 2000-02-29
        4_107_542_399_999,   // 2100-02-28T23:59:59.999
        -1,                  // 1969-12-31T23:59:59.999
        -62_135_596_800_000, // 0001-01-01
        253_402_300_799_000, // 9999-12-31T23:59:59
        1_709_251_199_500,   // 2024-02-29T23:59:59.5
    ];

    #[test]
    fn calendar_fields_match_chrono() {
        for millis in SAMPLES {
            let chrono = DateTime::from_timestamp_millis(millis).unwrap();
            let ours = CivilTime::from_millis(millis);
            assert_eq!(
                (ours.year, ours.month, ours.day),
                (i64::from(chrono.year()), chrono.month(), chrono.day()),
                "{chrono}"
            );
            assert_eq!(
                (ours.hour, ours.minute, ours.second),
                (chrono.hour(), chrono.minute(), chrono.second()),
                "{chrono}"
            );
            let days = millis.div_euclid(MILLIS_PER_DAY);
            assert_eq!(days_from_civil(ours.year, ours.month, ours.day), days);
        }
    }

    #[test]
    fn reads_what_chrono_writes() {
        for millis in SAMPLES {
            let at = DateTime::from_timestamp_millis(millis).unwrap();
            let json = serde_json::to_string(&at).unwrap();
            assert_eq!(
                parse_rfc3339_millis(json.trim_matches('"')),
                Some(at.timestamp_millis()),
                "{json}"
            );
        }
        let nanos = DateTime::from_timestamp(1_795_784_709, 123_456_789).unwrap();
        let json = serde_json::to_string(&nanos).unwrap();
        assert_eq!(
            parse_rfc3339_millis(json.trim_matches('"')),
            Some(nanos.timestamp_millis())
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-29T14:05:09+01:00"),
            parse_rfc3339_millis("2026-11-29T13:05:09Z")
        );
        for bad in [
            "",
            "2026-11-29",
            "2026-13-01T00:00:00Z",
            "2026-11-29T13:05:09",
            "soon",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
