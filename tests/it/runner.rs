//! One run's semantics, driven batch by batch with `Runner::step`: the
//! handled-prefix checkpoint, a stop before or within a step, the runtime
//! cap, the failure streak, the retry pass over old failures, and the
//! sliding window (a slow user holds back no other; a stop, the cap or a
//! kill at any moment leaves no unhandled user below the cursor).
//!
//! The runner is built the way the engine builds it (the job claimed and its
//! run row inserted in one transaction), with a test graph whose answers the
//! test chooses and a manual clock, so the runtime cap never waits for time.

use crate::harness::{job_row, request, OPERATOR};
use futures::future::BoxFuture;
use identity_graph_backfill::backfill::{
    domain::PauseReason,
    runner::{Clock, Lease, Position, RunSignals, Runner, Step},
    sinks::{GraphBinding, GraphUser, IdentityGraph, SinkError},
    store::{self, RetryPass, RunEnd},
};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;

/// An Identity Graph the test controls: it fails chosen users, answers
/// chosen users late, and holds one chosen user until the test releases it.
#[derive(Default)]
struct TestGraph {
    failing: Mutex<HashSet<i64>>,
    late: Mutex<HashMap<i64, Duration>>,
    held: Mutex<Option<i64>>,
    /// The held user's write has begun.
    holding: Notify,
    release: Notify,
    /// Every write begun, in order.
    calls: Mutex<Vec<i64>>,
    /// Every write acknowledged.
    written: Mutex<Vec<i64>>,
}

impl TestGraph {
    fn fail(&self, ids: impl IntoIterator<Item = i64>) {
        *self.failing.lock().unwrap() = ids.into_iter().collect();
    }

    fn answer_late(&self, delays: impl IntoIterator<Item = (i64, Duration)>) {
        *self.late.lock().unwrap() = delays.into_iter().collect();
    }

    fn hold(&self, id: i64) {
        *self.held.lock().unwrap() = Some(id);
    }

    /// The writes begun since the last call.
    fn take_calls(&self) -> Vec<i64> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn written(&self) -> Vec<i64> {
        self.written.lock().unwrap().clone()
    }
}

impl IdentityGraph for TestGraph {
    fn binding(&self) -> GraphBinding {
        GraphBinding::http("http://test-graph.invalid")
    }

    fn write_user<'a>(&'a self, user: &'a GraphUser) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let id = user.id;
            self.calls.lock().unwrap().push(id);
            let late = self.late.lock().unwrap().get(&id).copied();
            if let Some(delay) = late {
                tokio::time::sleep(delay).await;
            }
            if *self.held.lock().unwrap() == Some(id) {
                self.holding.notify_one();
                self.release.notified().await;
            }
            if self.failing.lock().unwrap().contains(&id) {
                Err(SinkError::permanent(
                    "http 400",
                    format!("user {id} rejected"),
                ))
            } else {
                self.written.lock().unwrap().push(id);
                Ok(())
            }
        })
    }
}

/// A clock that moves only when the test moves it.
#[derive(Clone)]
struct ManualClock {
    start: Instant,
    elapsed_ms: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn clock(&self) -> Clock {
        let this = self.clone();
        Arc::new(move || this.start + Duration::from_millis(this.elapsed_ms.load(Ordering::SeqCst)))
    }

    fn advance(&self, ms: u64) {
        self.elapsed_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

/// One run of a job, claimed as the engine claims it.
struct Run {
    runner: Runner,
    signals: RunSignals,
    clock: ManualClock,
    lease: Lease,
}

const KEY: &str = "semantics";

/// Claims job `KEY` for a run with the start options `json` (the key is
/// added), writing to `graph`.
async fn claim(pool: &PgPool, graph: &Arc<TestGraph>, json: Value) -> Run {
    claim_job(pool, graph, KEY, json).await
}

async fn claim_job(pool: &PgPool, graph: &Arc<TestGraph>, key: &str, mut json: Value) -> Run {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    json["job_key"] = json!(key);
    let (options, _) = request(json).resolve(900_000).unwrap();
    let token = format!("test-replica/run-{}", RUNS.fetch_add(1, Ordering::SeqCst));
    let mut tx = pool.begin().await.unwrap();
    let row = store::claim_for_start(&mut tx, &options, &token, OPERATOR, None)
        .await
        .unwrap()
        .expect("the job is startable");
    let run_id = store::insert_run(&mut tx, key, "operator", Some(OPERATOR), &token, &options)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let lease = Lease {
        job_key: key.into(),
        token,
        run_id,
    };
    let retry_pass = row.retry_position.map(|position| RetryPass {
        position,
        until: row.retry_until.unwrap_or(row.cursor),
    });
    let position = Position {
        cursor: row.cursor,
        retry_pass,
    };
    let sink: Arc<dyn IdentityGraph> = graph.clone();
    let signals = RunSignals::default();
    let clock = ManualClock::new();
    let runner = Runner::new(
        pool.clone(),
        Some(sink),
        options,
        lease.clone(),
        position,
        signals.clone(),
    )
    .with_clock(clock.clock());
    Run {
        runner,
        signals,
        clock,
        lease,
    }
}

impl Run {
    async fn step(&mut self) -> Step {
        self.runner.step().await.expect("the step reads and writes")
    }

    /// Runs `step` while `during` waits for the graph to hold its user,
    /// acts, and releases it.
    async fn step_holding(&mut self, graph: &TestGraph, during: impl FnOnce()) -> Step {
        let (step, ()) = tokio::join!(self.step(), async {
            graph.holding.notified().await;
            during();
            graph.release.notify_one();
        });
        step
    }

    /// Steps to the run's end and records it, as `Runner::run` does.
    async fn finish(mut self, pool: &PgPool) -> RunEnd {
        loop {
            match self.step().await {
                Step::Continue => continue,
                Step::LostLease => panic!("the lease is lost"),
                Step::End(end) => {
                    let lease = &self.lease;
                    store::finish_run(pool, &lease.job_key, &lease.token, lease.run_id, &end)
                        .await
                        .unwrap()
                        .expect("the lease is held");
                    return end;
                }
            }
        }
    }
}

/// Users `first..=last`, each with an email: every one is eligible.
async fn add_users(pool: &PgPool, first: i64, last: i64) {
    sqlx::query(
        "INSERT INTO users (id, email)
         SELECT id, 'user' || id || '@example.com' FROM generate_series($1::bigint, $2::bigint) AS id",
    )
    .bind(first)
    .bind(last)
    .execute(pool)
    .await
    .unwrap();
}

/// Options for a run that scans at once (no retry pass), one user at a time.
fn scan(batch_size: u32) -> Value {
    json!({"batch_size": batch_size, "concurrency": 1, "sleep_ms": 0,
           "retry_failed_before_cursor": false, "max_runtime_ms": 1000})
}

#[sqlx::test]
async fn a_stop_or_a_shutdown_before_a_step_ends_the_run_without_a_user(pool: PgPool) {
    add_users(&pool, 1, 10).await;
    let graph = Arc::new(TestGraph::default());

    let mut stopped = claim(&pool, &graph, scan(5)).await;
    stopped.signals.stop.cancel();
    assert_eq!(stopped.step().await, Step::End(RunEnd::Stopped));
    assert_eq!(stopped.finish(&pool).await, RunEnd::Stopped);

    let mut shut_down = claim(&pool, &graph, scan(5)).await;
    shut_down.signals.shutdown.cancel();
    assert_eq!(
        shut_down.step().await,
        Step::End(RunEnd::paused(PauseReason::Interrupted))
    );

    assert!(graph.take_calls().is_empty(), "no user was sent");
    let row = job_row(&pool, KEY).await;
    assert_eq!((row.cursor, row.run_scanned), (0, 0));
}

#[sqlx::test]
async fn a_stop_within_a_step_drops_users_in_flight_and_keeps_the_prefix(pool: PgPool) {
    add_users(&pool, 1, 10).await;
    let graph = Arc::new(TestGraph::default());
    // User 3 never answers; the users around it do.
    graph.hold(3);
    let mut options = scan(10);
    options["concurrency"] = json!(4);
    let mut run = claim(&pool, &graph, options).await;

    let stop = run.signals.stop.clone();
    let (step, ()) = tokio::join!(run.step(), async {
        graph.holding.notified().await;
        stop.cancel();
    });
    assert_eq!(step, Step::Continue, "the handled prefix was checkpointed");
    let written = graph.written();
    assert!(written.contains(&4), "user 4 was written: {written:?}");
    assert!(!written.contains(&3));
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 2, "the cursor stops before the user in flight");
    assert_eq!((row.processed, row.failed, row.skipped), (2, 0, 0));
    assert_eq!(row.run_scanned, 2, "users after the gap are not counted");

    assert_eq!(run.step().await, Step::End(RunEnd::Stopped));
    assert_eq!(run.runner.cursor(), 2);
}

#[sqlx::test]
async fn the_runtime_cap_starts_no_user_after_it_and_lets_users_in_flight_finish(pool: PgPool) {
    add_users(&pool, 1, 30).await;
    let graph = Arc::new(TestGraph::default());
    graph.hold(13);
    let mut run = claim(&pool, &graph, scan(10)).await;

    assert_eq!(run.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), (1..=10).collect::<Vec<_>>());
    run.clock.advance(999);
    // The cap (1 s) is reached while user 13 is in flight.
    let clock = run.clock.clone();
    let step = run.step_holding(&graph, || clock.advance(1)).await;
    assert_eq!(step, Step::Continue);
    assert_eq!(graph.take_calls(), [11, 12, 13], "no user after the cap");
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 13, "the user in flight finished and counts");
    assert_eq!(row.processed, 13);

    assert_eq!(
        run.finish(&pool).await,
        RunEnd::paused(PauseReason::MaxRuntime)
    );
    assert!(graph.take_calls().is_empty());
    assert_eq!(
        job_row(&pool, KEY).await.pause_reason(),
        Some(PauseReason::MaxRuntime)
    );
}

#[sqlx::test]
async fn a_streak_of_failures_pauses_the_run(pool: PgPool) {
    add_users(&pool, 1, 20).await;
    let graph = Arc::new(TestGraph::default());
    // A success between failures resets the streak; three in a row pause.
    graph.fail([1, 3, 4, 5, 6]);
    let mut options = scan(10);
    options["max_consecutive_failures"] = json!(3);
    let mut run = claim(&pool, &graph, options).await;

    assert_eq!(run.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [1, 2, 3, 4, 5], "none after the third");
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 5);
    assert_eq!((row.processed, row.failed), (1, 4));
    assert_eq!(row.consecutive_failures, 3);

    assert_eq!(
        run.finish(&pool).await,
        RunEnd::paused(PauseReason::ConsecutiveFailures)
    );
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.pause_reason(), Some(PauseReason::ConsecutiveFailures));
}

/// A first run over users 1..=20 that leaves `failing` as recorded failures,
/// then 10 new users after its cursor.
async fn job_with_old_failures(pool: &PgPool, graph: &Arc<TestGraph>, failing: [i64; 3]) {
    add_users(pool, 1, 20).await;
    graph.fail(failing);
    let mut options = scan(10);
    options["max_consecutive_failures"] = json!(100);
    let first = claim(pool, graph, options).await;
    assert_eq!(first.finish(pool).await, RunEnd::Completed);
    let row = job_row(pool, KEY).await;
    assert_eq!((row.cursor, row.processed, row.failed), (20, 17, 3));
    add_users(pool, 21, 30).await;
    graph.take_calls();
}

/// Options for a run with the retry pass, two users a batch.
fn with_retry_pass() -> Value {
    json!({"batch_size": 2, "concurrency": 1, "sleep_ms": 0, "max_runtime_ms": 1000,
           "max_consecutive_failures": 1})
}

#[sqlx::test]
async fn the_retry_pass_goes_first_counts_each_user_once_and_is_saved(pool: PgPool) {
    let graph = Arc::new(TestGraph::default());
    job_with_old_failures(&pool, &graph, [3, 5, 7]).await;
    // 3 and 5 now succeed; 7 still fails.
    graph.fail([7]);
    let mut run = claim(&pool, &graph, with_retry_pass()).await;

    assert_eq!(run.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [3, 5], "old failures before new users");
    let row = job_row(&pool, KEY).await;
    assert_eq!((row.processed, row.failed), (19, 1), "moved, not added");
    assert_eq!((row.retry_position, row.retry_until), (Some(5), Some(20)));
    assert_eq!(row.cursor, 20);

    // A failure in the pass counts once, and does not feed the streak (of 1).
    assert_eq!(run.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [7]);
    let row = job_row(&pool, KEY).await;
    assert_eq!((row.processed, row.failed), (19, 1));
    assert_eq!(row.consecutive_failures, 0);
    assert_eq!(row.retry_position, Some(7));
    let failures = store::recent_failures(&pool, KEY, 10).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].user_id, failures[0].attempts), (7, 2));

    // The pass is done, and saved as done; then the scan.
    assert_eq!(run.step().await, Step::Continue);
    assert!(graph.take_calls().is_empty());
    assert_eq!(job_row(&pool, KEY).await.retry_position, None);
    assert_eq!(run.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [21, 22]);
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 22);
    assert_eq!(
        row.processed + row.failed + row.skipped,
        22,
        "distinct users"
    );
}

#[sqlx::test]
async fn the_retry_pass_gets_half_the_runtime_and_the_scan_still_gets_a_batch(pool: PgPool) {
    let graph = Arc::new(TestGraph::default());
    job_with_old_failures(&pool, &graph, [2, 4, 6]).await;
    graph.fail([]);

    let mut second = claim(&pool, &graph, with_retry_pass()).await;
    assert_eq!(second.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [2, 4]);
    // Half the cap is gone: the pass stays saved where it is, and the scan runs.
    second.clock.advance(500);
    assert_eq!(second.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [21, 22]);
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 22);
    assert_eq!((row.retry_position, row.retry_until), (Some(4), Some(20)));
    second.clock.advance(500);
    assert_eq!(
        second.finish(&pool).await,
        RunEnd::paused(PauseReason::MaxRuntime)
    );

    // The next run continues the saved pass: each old failure once a pass.
    let mut third = claim(&pool, &graph, with_retry_pass()).await;
    assert_eq!(third.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [6]);
    // Its whole runtime went on old failures: the scan still gets one batch.
    third.clock.advance(1000);
    assert_eq!(third.step().await, Step::Continue);
    assert_eq!(graph.take_calls(), [23, 24]);
    assert_eq!(
        third.finish(&pool).await,
        RunEnd::paused(PauseReason::MaxRuntime)
    );
    assert!(graph.take_calls().is_empty());
    let row = job_row(&pool, KEY).await;
    assert_eq!(row.cursor, 24, "the cursor moved on every run");
    assert_eq!((row.processed, row.failed), (24, 0));
}

#[sqlx::test]
async fn a_slow_user_does_not_hold_back_the_users_after_it(pool: PgPool) {
    add_users(&pool, 1, 40).await;
    let graph = Arc::new(TestGraph::default());
    graph.hold(3);
    let mut options = scan(10);
    options["concurrency"] = json!(4);
    let mut run = claim(&pool, &graph, options).await;

    let (step, ()) = tokio::join!(run.step(), async {
        graph.holding.notified().await;
        // Lock-step batches would wait here for ever: users 11..=40 belong
        // to later batches, and user 3 is still in flight.
        let overtaken: Vec<i64> = (1..=40).filter(|&id| id != 3).collect();
        let all_written = async {
            loop {
                let mut written = graph.written();
                written.sort_unstable();
                if written == overtaken {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_written)
            .await
            .expect("every other user is written while user 3 is in flight");
        let row = job_row(&pool, KEY).await;
        assert_eq!(row.cursor, 0, "no checkpoint passes the slow user");
        graph.release.notify_one();
    });
    assert_eq!(step, Step::Continue);
    assert_eq!(graph.written().last(), Some(&3), "user 3 answered last");
    let row = job_row(&pool, KEY).await;
    assert_eq!(
        row.cursor, 40,
        "the checkpoint covers every user once 3 is in"
    );
    assert_eq!((row.processed, row.failed, row.run_scanned), (40, 0, 40));
    assert_eq!(run.finish(&pool).await, RunEnd::Completed);
}

/// How a randomized run below is ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Stop,
    RuntimeCap,
    /// The task is dropped mid-flight, as when the process is killed: no
    /// final checkpoint, no end written.
    Kill,
}

#[sqlx::test]
async fn a_stop_the_cap_or_a_kill_at_any_moment_leaves_no_unhandled_user_below_the_cursor(
    pool: PgPool,
) {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    const USERS: i64 = 4_000;
    add_users(&pool, 1, USERS).await;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cut_short = 0;
    for round in 0..15 {
        let ending = [Ending::Stop, Ending::RuntimeCap, Ending::Kill][round % 3];
        let key = format!("window-{round}");
        let context = format!("seed {seed}, round {round}, {ending:?}");
        let graph = Arc::new(TestGraph::default());
        graph.fail(
            (1..=USERS)
                .filter(|_| rng.gen_bool(0.03))
                .collect::<Vec<_>>(),
        );
        graph.answer_late((1..=USERS).filter_map(|id| {
            let roll: f64 = rng.gen();
            (roll < 0.05).then(|| (id, Duration::from_millis(if roll < 0.005 { 40 } else { 3 })))
        }));
        let options = json!({"batch_size": 25, "concurrency": 8, "sleep_ms": 0,
            "retry_failed_before_cursor": false, "max_runtime_ms": 600_000,
            "max_consecutive_failures": 1_000});
        let run = claim_job(&pool, &graph, &key, options).await;
        let (signals, clock) = (run.signals.clone(), run.clock.clone());
        let task = tokio::spawn(run.runner.run());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..60))).await;
        match ending {
            Ending::Stop => signals.stop.cancel(),
            Ending::RuntimeCap => clock.advance(600_000),
            Ending::Kill => task.abort(),
        }
        let end = task.await;
        match ending {
            Ending::Stop => assert_eq!(end.unwrap(), Some(RunEnd::Stopped), "{context}"),
            Ending::RuntimeCap => assert!(
                matches!(end.unwrap(), Some(RunEnd::Completed))
                    || job_row(&pool, &key).await.pause_reason() == Some(PauseReason::MaxRuntime),
                "{context}"
            ),
            Ending::Kill => assert!(end.unwrap_err().is_cancelled(), "{context}"),
        }

        // The job row and its failure rows in one snapshot: an aborted
        // task's last checkpoint may still commit a moment later (its COMMIT
        // was already on the wire), and a job row read before it with
        // failure rows read after it would look like a failure recorded
        // past the cursor.
        let (cursor, processed, failed, recorded_failed): (i64, i64, i64, Vec<i64>) =
            sqlx::query_as(
                "SELECT j.cursor, j.processed, j.failed,
                        coalesce((SELECT array_agg(f.user_id) FROM identity_graph_backfill_failures f
                                  WHERE f.job_key = j.job_key), '{}')
                 FROM identity_graph_backfill_jobs j WHERE j.job_key = $1",
            )
            .bind(&key)
            .fetch_one(&pool)
            .await
            .unwrap();
        let recorded_failed: HashSet<i64> = recorded_failed.into_iter().collect();
        let written: HashSet<i64> = graph.written().into_iter().collect();
        for id in 1..=cursor {
            assert!(
                written.contains(&id) || recorded_failed.contains(&id),
                "user {id} is below the cursor {cursor} but neither written nor recorded as failed ({context})"
            );
        }
        let beyond: Vec<i64> = recorded_failed
            .iter()
            .copied()
            .filter(|&id| id > cursor)
            .collect();
        assert!(
            beyond.is_empty(),
            "a failure is recorded only with its checkpoint: {beyond:?} past the cursor {cursor} ({context})"
        );
        assert_eq!(
            processed + failed,
            cursor,
            "each user below the cursor is counted once ({context})"
        );
        if cursor < USERS {
            cut_short += 1;
        }
    }
    assert!(
        cut_short >= 5,
        "most rounds must end mid-run to test anything (seed {seed})"
    );
}
