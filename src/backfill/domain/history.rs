//! A job's history as one timeline: each run's start (who or what started
//! it, with its options), each stop request, each run's end (completed, a
//! pause and its reason, stopped, failed), each `tune`, and each
//! notification the webhook was told.
//!
//! The `job` answer carries the latest of each kind (runs, tunings,
//! notifications): up to the limits below, and one more when there are
//! more, which says that kind was cut. [`job_history`] merges them, newest
//! first. Where one kind was cut, older entries of the other kinds would be
//! out of context, so the timeline ends at the oldest entry every kind
//! still covers, and says that older history exists.

use super::notifications::NotificationRecord;
use super::options::StartOptions;
use super::timestamp::Timestamp;
use super::views::{RunRecord, TuningRecord};

/// Runs the `job` answer carries (each gives up to three entries).
pub const HISTORY_RUNS: i64 = 20;
/// `tune` changes the `job` answer carries.
pub const HISTORY_TUNINGS: i64 = 50;
/// Notifications the `job` answer carries.
pub const HISTORY_NOTIFICATIONS: i64 = 20;

/// Who or what did something to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An allowed admin, by email.
    Admin(String),
    /// The watchdog, resuming a paused run.
    Watchdog,
    /// Something else the run row names (an older release's trigger).
    Other(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryEvent {
    RunStarted {
        run_number: i32,
        by: Actor,
        /// The run's options as it started; `None` for runs recorded before
        /// runs kept them.
        options: Option<Box<StartOptions>>,
    },
    StopRequested {
        run_number: i32,
        by: String,
    },
    RunEnded {
        run: Box<RunRecord>,
        /// The run row's outcome: `completed`, `paused (max-runtime)`,
        /// `stopped`, `failed`, `lease lost`.
        outcome: String,
    },
    Tuned(TuningRecord),
    Notified(NotificationRecord),
}

impl HistoryEvent {
    /// A stable word for the kind, for styling and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            HistoryEvent::RunStarted {
                by: Actor::Watchdog,
                ..
            } => "resumed",
            HistoryEvent::RunStarted { .. } => "started",
            HistoryEvent::StopRequested { .. } => "stop",
            HistoryEvent::RunEnded { outcome, .. } => match outcome.split(' ').next() {
                Some("completed") => "completed",
                Some("paused") => "paused",
                Some("stopped") => "stopped",
                _ => "failed",
            },
            HistoryEvent::Tuned(_) => "tuned",
            HistoryEvent::Notified(_) => "notified",
        }
    }

    /// Where the entry falls within its run, for entries at the same instant.
    fn phase(&self) -> u8 {
        match self {
            HistoryEvent::RunStarted { .. } => 0,
            HistoryEvent::Tuned(_) => 1,
            HistoryEvent::StopRequested { .. } => 2,
            HistoryEvent::RunEnded { .. } => 3,
            HistoryEvent::Notified(_) => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub event: HistoryEvent,
}

/// The timeline, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    /// Older entries exist than the timeline shows.
    pub older_hidden: bool,
}

/// Merges a job's latest runs, tunings and notifications (each newest
/// first, as the `job` answer carries them) into one timeline.
/// `webhook_configured`: without a webhook, events nobody tried to send are
/// left out (they would all read "not sent").
pub fn job_history(
    runs: &[RunRecord],
    tunings: &[TuningRecord],
    notifications: &[NotificationRecord],
    webhook_configured: bool,
) -> History {
    // The rows past a limit only say that their kind was cut.
    let horizon = [
        cut_at(runs, HISTORY_RUNS, |run| run.started_at),
        cut_at(tunings, HISTORY_TUNINGS, |tuning| tuning.tuned_at),
        cut_at(notifications, HISTORY_NOTIFICATIONS, |n| n.created_at),
    ]
    .into_iter()
    .flatten()
    .max();
    let runs = shown(runs, HISTORY_RUNS);
    let tunings = shown(tunings, HISTORY_TUNINGS);
    let notifications = shown(notifications, HISTORY_NOTIFICATIONS);
    let mut entries = Vec::new();
    for run in runs {
        let by = match (run.trigger.as_str(), &run.started_by) {
            ("watchdog", _) => Actor::Watchdog,
            (_, Some(email)) => Actor::Admin(email.clone()),
            (trigger, None) => Actor::Other(trigger.to_string()),
        };
        entries.push(HistoryEntry {
            at: run.started_at,
            event: HistoryEvent::RunStarted {
                run_number: run.run_number,
                by,
                options: run.options.clone().map(Box::new),
            },
        });
        if let (Some(by), Some(at)) = (&run.stopped_by, run.stopped_at) {
            entries.push(HistoryEntry {
                at,
                event: HistoryEvent::StopRequested {
                    run_number: run.run_number,
                    by: by.clone(),
                },
            });
        }
        if let (Some(outcome), Some(at)) = (&run.outcome, run.ended_at) {
            entries.push(HistoryEntry {
                at,
                event: HistoryEvent::RunEnded {
                    run: Box::new(run.clone()),
                    outcome: outcome.clone(),
                },
            });
        }
    }
    entries.extend(tunings.iter().map(|tuning| HistoryEntry {
        at: tuning.tuned_at,
        event: HistoryEvent::Tuned(tuning.clone()),
    }));
    entries.extend(
        notifications
            .iter()
            .filter(|n| webhook_configured || n.attempts > 0 || n.state != "pending")
            .map(|notification| HistoryEntry {
                at: notification.created_at,
                event: HistoryEvent::Notified(notification.clone()),
            }),
    );

    // A cut kind covers only back to its oldest entry shown.
    let before = entries.len();
    if let Some(horizon) = horizon {
        entries.retain(|entry| entry.at.timestamp_millis() >= horizon);
    }
    let older_hidden = horizon.is_some() || entries.len() < before;

    // Instants tie in tests and on fast runs; then a run's own entries keep
    // their order, and one run's end (and its notification) comes before
    // the next run's start.
    let run_of = |entry: &HistoryEntry| -> i32 {
        let millis = entry.at.timestamp_millis();
        match &entry.event {
            HistoryEvent::RunStarted { run_number, .. }
            | HistoryEvent::StopRequested { run_number, .. } => *run_number,
            HistoryEvent::RunEnded { run, .. } => run.run_number,
            HistoryEvent::Tuned(_) => latest_run_started(runs, |start| start <= millis),
            HistoryEvent::Notified(_) => latest_run_started(runs, |start| start < millis),
        }
    };
    entries.sort_by_cached_key(|entry| {
        std::cmp::Reverse((
            entry.at.timestamp_millis(),
            run_of(entry),
            entry.event.phase(),
        ))
    });
    History {
        entries,
        older_hidden,
    }
}

/// The number of the latest run whose start passes `started`.
fn latest_run_started(runs: &[RunRecord], started: impl Fn(i64) -> bool) -> i32 {
    runs.iter()
        .filter(|run| started(run.started_at.timestamp_millis()))
        .map(|run| run.run_number)
        .max()
        .unwrap_or(0)
}

/// The first `limit` items (newest first): the ones the timeline shows.
fn shown<T>(items: &[T], limit: i64) -> &[T] {
    &items[..items.len().min(limit as usize)]
}

/// For a list that holds more than `limit` items (it was cut), the oldest
/// instant among those shown.
fn cut_at<T>(items: &[T], limit: i64, at: impl Fn(&T) -> Timestamp) -> Option<i64> {
    (items.len() as i64 > limit)
        .then(|| {
            shown(items, limit)
                .iter()
                .map(|item| at(item).timestamp_millis())
                .min()
        })
        .flatten()
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
    }

    fn run(
        number: i32,
        trigger: &str,
        by: Option<&str>,
        start: i64,
        end: Option<(i64, &str)>,
    ) -> RunRecord {
        RunRecord {
            id: number as i64,
            run_number: number,
            trigger: trigger.into(),
            started_by: by.map(Into::into),
            started_at: at(start),
            ended_at: end.map(|(second, _)| at(second)),
            outcome: end.map(|(_, outcome)| outcome.into()),
            stopped_by: None,
            stopped_at: None,
            processed: 10,
            failed: 0,
            skipped: 0,
            owner: "replica".into(),
            options: None,
        }
    }

    fn notification(
        id: i64,
        event: &str,
        second: i64,
        state: &str,
        attempts: i32,
    ) -> NotificationRecord {
        NotificationRecord {
            id,
            event: event.into(),
            pause_reason: None,
            created_at: at(second),
            state: state.into(),
            attempts,
            last_outcome: None,
            delivered_at: None,
        }
    }

    fn kinds(history: &History) -> Vec<&'static str> {
        history.entries.iter().map(|e| e.event.kind()).collect()
    }

    #[test]
    fn runs_pauses_resumes_tunes_stops_and_notifications_read_newest_first() {
        let mut stopped = run(2, "watchdog", None, 100, Some((160, "stopped")));
        stopped.stopped_by = Some("ops@example.com".into());
        stopped.stopped_at = Some(at(150));
        let runs = vec![
            stopped,
            run(
                1,
                "operator",
                Some("ops@example.com"),
                0,
                Some((100, "paused (max-runtime)")),
            ),
        ];
        let tunings = vec![TuningRecord {
            tuned_by: "oncall@example.com".into(),
            tuned_at: at(120),
            field: "max_rate".into(),
            old_value: 0,
            new_value: 500,
        }];
        let notifications = vec![
            notification(2, "stopped", 160, "delivered", 1),
            notification(1, "paused", 100, "delivered", 2),
        ];
        let history = job_history(&runs, &tunings, &notifications, true);
        assert_eq!(
            kinds(&history),
            ["notified", "stopped", "stop", "tuned", "resumed", "notified", "paused", "started"]
        );
        assert!(!history.older_hidden);
        match &history.entries[4].event {
            HistoryEvent::RunStarted { run_number, by, .. } => {
                assert_eq!((*run_number, by), (2, &Actor::Watchdog));
            }
            other => panic!("expected the watchdog's resume, got {other:?}"),
        }
    }

    #[test]
    fn without_a_webhook_only_events_someone_tried_to_send_are_shown() {
        let notifications = vec![
            notification(2, "completed", 50, "pending", 0),
            notification(1, "paused", 40, "delivered", 1),
        ];
        let history = job_history(&[], &[], &notifications, false);
        assert_eq!(history.entries.len(), 1);
        assert_eq!(job_history(&[], &[], &notifications, true).entries.len(), 2);
    }

    #[test]
    fn a_kind_cut_at_its_limit_ends_the_timeline_where_it_was_cut() {
        // One run more than the limit, from second 1000 on: the oldest is
        // not shown, and older tunings and notifications would sit beside
        // runs that are not shown, so they are left out.
        let runs: Vec<RunRecord> = (0..=HISTORY_RUNS)
            .rev()
            .map(|n| {
                run(
                    n as i32 + 1,
                    "operator",
                    Some("a@example.com"),
                    1000 + n * 10,
                    Some((1005 + n * 10, "completed")),
                )
            })
            .collect();
        let tunings = vec![TuningRecord {
            tuned_by: "a@example.com".into(),
            tuned_at: at(5),
            field: "concurrency".into(),
            old_value: 4,
            new_value: 8,
        }];
        let history = job_history(&runs, &tunings, &[], true);
        assert!(history.older_hidden);
        assert!(history.entries.iter().all(|e| e.at >= at(1010)));
        assert_eq!(history.entries.len(), 2 * HISTORY_RUNS as usize);

        // Exactly the limit: nothing was cut, everything shows.
        let history = job_history(&runs[..HISTORY_RUNS as usize], &tunings, &[], true);
        assert!(!history.older_hidden);
        assert_eq!(history.entries.len(), 2 * HISTORY_RUNS as usize + 1);
    }
}
