//! Small display helpers shared by the pages.
//!
//! Times are written from their calendar fields (`CivilTime`), the same
//! arithmetic on the server and in the browser, so hydration sees identical
//! text and the WASM carries no date library.

use crate::backfill::domain::timestamp::{now_millis, CivilTime};
use crate::backfill::domain::Timestamp;

pub use crate::backfill::domain::thousands;

/// `3 s ago`, `5 min ago`, `2 h ago`, `4 d ago`.
pub fn relative_time(at: Timestamp) -> String {
    let seconds = ((now_millis() - at.timestamp_millis()) / 1000).max(0);
    match seconds {
        0..=4 => "just now".into(),
        5..=59 => format!("{seconds} s ago"),
        60..=3_599 => format!("{} min ago", seconds / 60),
        3_600..=86_399 => format!("{} h ago", seconds / 3_600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// `2026-11-29 13:05:09 UTC`, for tooltips.
pub fn exact_time(at: Timestamp) -> String {
    let (date, time) = date_and_time(at);
    format!("{date} {time} UTC")
}

/// `2026-11-29T13:05:09Z`, for `<time datetime>`.
pub fn machine_time(at: Timestamp) -> String {
    let (date, time) = date_and_time(at);
    format!("{date}T{time}Z")
}

fn date_and_time(at: Timestamp) -> (String, String) {
    let at = CivilTime::from_millis(at.timestamp_millis());
    (
        format!("{:04}-{:02}-{:02}", at.year, at.month, at.day),
        format!("{:02}:{:02}:{:02}", at.hour, at.minute, at.second),
    )
}

/// `900000` ms → `15 min`.
pub fn duration_ms(ms: u64) -> String {
    duration_secs((ms / 1000) as i64)
}

pub fn duration_secs(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => {
            let (m, s) = (s / 60, s % 60);
            if s == 0 {
                format!("{m} min")
            } else {
                format!("{m} min {s} s")
            }
        }
        s => {
            let (h, m) = (s / 3_600, (s % 3_600) / 60);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
    }
}

pub fn truncate(text: &str, max_chars: usize) -> (String, bool) {
    if text.chars().count() <= max_chars {
        (text.to_string(), false)
    } else {
        (text.chars().take(max_chars).collect::<String>() + "…", true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(900_000), "15 min");
        assert_eq!(duration_ms(21_600_000), "6 h");
        assert_eq!(duration_secs(75), "1 min 15 s");
        assert_eq!(duration_secs(3_660), "1 h 1 min");
    }

    #[test]
    fn times_match_chrono_formatting() {
        let at = chrono::DateTime::from_timestamp(1_795_784_709, 0).unwrap();
        assert_eq!(
            exact_time(at),
            at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        );
        assert_eq!(
            machine_time(at),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("short", 10), ("short".to_string(), false));
        assert_eq!(truncate("abcdefghijkl", 5), ("abcde…".to_string(), true));
    }
}
