//! What a run leaves behind for the operator: a dry run's prediction of the
//! real run, run numbers per job, each run's duration and average rate, and
//! the chart's samples.

use crate::harness::*;
use identity_graph_backfill::backfill::domain::*;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn a_dry_run_predicts_what_the_real_run_then_does(pool: PgPool) {
    seed(&pool, 2_000).await;
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    let started = replica
        .start(json!({"dry_run": true, "job_key": "q1", "batch_size": 100}))
        .await;
    assert_eq!(
        started.job.options.sleep_ms, DRY_RUN_SLEEP_MS,
        "a dry run waits on no pacing unless asked"
    );
    wait_until_idle(&pool, "q1:dry-run").await;
    let rehearsal = replica.detail("q1:dry-run").await.unwrap().job;
    assert_eq!(rehearsal.status, JobStatus::Completed);
    assert_eq!(
        rehearsal.skipped_by_reason.dry_run, 2_000,
        "every user is skipped dry-run"
    );
    let would = rehearsal.would().expect("a dry run carries its prediction");
    assert_eq!(
        would.write + would.skip_deleted + would.skip_no_identifiers,
        2_000
    );
    assert!(
        would.skip_deleted > 0 && would.skip_no_identifiers > 0,
        "{would:?}"
    );

    let real = replica
        .run(json!({"job_key": "q1", "sleep_ms": 0, "batch_size": 500}))
        .await
        .to_job(900_000);
    assert_eq!(real.processed, would.write);
    assert_eq!(real.skipped_by_reason.deleted, would.skip_deleted);
    assert_eq!(
        real.skipped_by_reason.no_identifiers,
        would.skip_no_identifiers
    );
    assert_eq!(real.would(), None, "a real job carries no prediction");

    // A sleep the operator sets is kept.
    let paced = replica
        .start(json!({"dry_run": true, "job_key": "q2", "sleep_ms": 5}))
        .await;
    assert_eq!(paced.job.options.sleep_ms, 5);
    wait_until_idle(&pool, "q2:dry-run").await;
}

#[sqlx::test]
async fn runs_are_numbered_per_job_and_tell_their_duration_and_rate(pool: PgPool) {
    seed(&pool, 1_000).await;
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    replica
        .run(json!({"job_key": "first", "sleep_ms": 0, "batch_size": 200}))
        .await;
    // The second job's first run is its run 1, whatever ran before.
    replica
        .run(json!({"job_key": "second", "sleep_ms": 0, "batch_size": 200, "max_runtime_ms": 1000}))
        .await;
    replica
        .run(json!({"job_key": "second", "sleep_ms": 0, "batch_size": 200}))
        .await;
    let detail = replica.detail("second").await.unwrap();
    let numbers: Vec<i32> = detail.runs.iter().map(|run| run.run_number).collect();
    assert_eq!(numbers, [2, 1], "newest first, counted per job");
    let last = detail.job.last_run.expect("the job carries its last run");
    assert_eq!(last.run_number, 2);
    let secs = last.duration_secs().expect("an ended run has a duration");
    assert!(secs >= 0.0);
    let rate = last.average_rate().unwrap();
    if secs > 0.0 {
        assert!((rate - last.scanned() as f64 / secs).abs() < 1e-6);
    }
    let list = replica.list().await.unwrap();
    for job in &list.jobs {
        let run = job
            .last_run
            .as_ref()
            .expect("every listed job has a last run");
        assert!(run.ended_at.is_some(), "{}", job.job_key);
        assert!(run.average_rate().is_some());
        assert_eq!(run.run_number, if job.job_key == "first" { 1 } else { 2 });
    }
}

#[sqlx::test]
async fn the_heartbeat_records_the_chart_and_it_outlives_the_run(pool: PgPool) {
    seed(&pool, 3_000).await;
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    // About 3 s: 30 batches of 100, 100 ms apart.
    replica
        .run(json!({"job_key": "charted", "sleep_ms": 100, "batch_size": 100}))
        .await;
    let job = replica.detail("charted").await.unwrap().job;
    assert!(
        job.samples.len() >= 2,
        "a few seconds of run draw a line: {:?}",
        job.samples
    );
    let run_id = job.last_run.as_ref().unwrap().id;
    assert!(job.samples.iter().all(|sample| sample.run_id == run_id));
    assert!(job.samples.iter().any(|sample| sample.rate > 0.0));
    assert!(
        job.samples
            .iter()
            .any(|sample| sample.latency_p95_ms.is_some()),
        "the built-in graph's answer times are charted"
    );
    let times: Vec<_> = job.samples.iter().map(|s| s.sampled_at).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    // Samples go with their run.
    sqlx::query("DELETE FROM identity_graph_backfill_runs WHERE id = $1")
        .bind(run_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM identity_graph_backfill_run_samples"
        )
        .await,
        0
    );
}

#[sqlx::test]
async fn the_history_tells_who_started_tuned_stopped_and_what_the_watchdog_resumed(pool: PgPool) {
    seed(&pool, 3_000).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    graph.behave(|_, _| crate::harness::graph::Reply::Slow(std::time::Duration::from_millis(5)));
    // Run 1 pauses on its cap; the watchdog resumes it as run 2.
    let row = replica
        .run(
            json!({"job_key": "told", "batch_size": 20, "sleep_ms": 0, "concurrency": 1,
                    "max_runtime_ms": 1000, "max_rate": 700}),
        )
        .await;
    assert_eq!(row.pause_reason(), Some(PauseReason::MaxRuntime));
    // Run 2 must still be running when it is tuned and stopped, however slow
    // the machine: its cap is lifted (run 1 keeps the options it started with).
    sqlx::query("UPDATE identity_graph_backfill_jobs SET options = jsonb_set(options, '{max_runtime_ms}', '600000') WHERE job_key = 'told'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(replica.watchdog_tick().await.unwrap(), ["told"]);
    wait_for("run 2 to be running", async || {
        job_row(&pool, "told").await.status() == Some(JobStatus::Running)
    })
    .await;
    let tuned: TuneRequest =
        serde_json::from_value(json!({"job_key": "told", "max_rate": 300})).unwrap();
    replica
        .engine
        .tune(&tuned, "oncall@example.com")
        .await
        .unwrap();
    replica
        .engine
        .stop("told", "lead@example.com")
        .await
        .unwrap();
    wait_until_idle(&pool, "told").await;

    let detail = replica.detail("told").await.unwrap();
    let first = detail.runs.iter().find(|run| run.run_number == 1).unwrap();
    let options = first
        .options
        .as_ref()
        .expect("a run keeps the options it started with");
    assert_eq!((options.batch_size, options.max_rate), (20, 700));
    let history = detail.history();
    let told: Vec<String> = history
        .entries
        .iter()
        .map(|entry| match &entry.event {
            HistoryEvent::RunStarted { run_number, by, .. } => {
                format!("run {run_number} by {by:?}")
            }
            HistoryEvent::StopRequested { run_number, by } => format!("stop {run_number} by {by}"),
            HistoryEvent::RunEnded { run, outcome } => format!("run {} {outcome}", run.run_number),
            HistoryEvent::Tuned(t) => format!(
                "{} {}→{} by {}",
                t.field, t.old_value, t.new_value, t.tuned_by
            ),
            HistoryEvent::Notified(n) => format!("notified {}", n.event),
        })
        .collect();
    assert_eq!(
        told,
        [
            "run 2 stopped",
            "stop 2 by lead@example.com",
            "max_rate 700→300 by oncall@example.com",
            "run 2 by Watchdog",
            "run 1 paused (max-runtime)",
            "run 1 by Admin(\"ops@example.com\")",
        ],
        "newest first; no webhook is set, so no notification was tried"
    );
    assert!(!history.older_hidden);
}
