//! What lands in the Identity Graph is each user as it is now: a re-sent
//! user replaces its links, both graphs receive the same normalized
//! identifiers, a late commit below the cursor is caught up, an older read
//! never overwrites a newer one, and a job writes to one graph.

use crate::harness::{
    graph::{GraphServer, Reply},
    *,
};
use chrono::{Duration as Span, Utc};
use identity_graph_backfill::backfill::{
    domain::{Coverage, JobStatus},
    identifiers::{Normalizer, PhoneRegion},
    sinks::{postgres::PostgresGraph, IdentityGraph},
    source::SourceUser,
};
use identity_graph_backfill::error::ErrorCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

/// A run that writes every user at once, without pacing.
fn fast(key: &str) -> Value {
    json!({"job_key": key, "sleep_ms": 0, "batch_size": 50, "concurrency": 4})
}

async fn insert_user(pool: &PgPool, id: i64, email: Option<&str>, device: Option<&str>) {
    sqlx::query("INSERT INTO users (id, email, device_id) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(email)
        .bind(device)
        .execute(pool)
        .await
        .unwrap();
}

/// `kind:value` of every link of `user_id` in the built-in graph.
async fn links_of(pool: &PgPool, user_id: i64) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT i.kind || ':' || i.value FROM identity_graph_links l
         JOIN identity_graph_identifiers i ON i.id = l.identifier_id WHERE l.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Users that share any identifier with `user_id` in the built-in graph.
async fn connected_to(pool: &PgPool, user_id: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT DISTINCT other.user_id FROM identity_graph_links mine
         JOIN identity_graph_links other
           ON other.identifier_id = mine.identifier_id AND other.user_id <> mine.user_id
         WHERE mine.user_id = $1 ORDER BY 1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The job's coverage, counted now ("Check again"): the source changed
/// since the run's own check, which is waited for first, until its task has
/// ended too (a request while a check runs gets that check's result, and a
/// check stores its result a moment before its task ends).
async fn coverage(replica: &Replica, key: &str) -> Coverage {
    wait_for_coverage(&replica.pool, key).await;
    wait_for("the run's own coverage check to end", async || {
        !replica.detail(key).await.unwrap().coverage_checking
    })
    .await;
    replica
        .check_coverage(key)
        .await
        .expect("an idle job's coverage can be checked")
}

#[sqlx::test]
async fn a_re_sent_user_replaces_its_links_by_a_reset_pass(pool: PgPool) {
    for id in 1..=50 {
        insert_user(&pool, id, Some(&format!("u{id}@example.com")), None).await;
    }
    // User 6 shares user 5's email.
    sqlx::query("UPDATE users SET email = 'u5@example.com' WHERE id = 6")
        .execute(&pool)
        .await
        .unwrap();
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    let first = replica.run(fast("replace")).await;
    assert_eq!(first.status(), Some(JobStatus::Completed));
    assert_eq!(connected_to(&pool, 5).await, [6]);

    sqlx::query("UPDATE users SET email = 'new5@example.com' WHERE id = 5")
        .execute(&pool)
        .await
        .unwrap();
    let mut again = fast("replace");
    again["reset_cursor"] = json!(true);
    let second = replica.run(again).await;
    assert_eq!(second.status(), Some(JobStatus::Completed));
    assert_eq!(
        links_of(&pool, 5).await,
        BTreeSet::from(["email:new5@example.com".to_string()])
    );
    assert!(
        connected_to(&pool, 5).await.is_empty(),
        "users 5 and 6 no longer share an email, so they are not connected"
    );
    assert_eq!(connected_to(&pool, 6).await, Vec::<i64>::new());
}

#[sqlx::test]
async fn a_re_sent_user_replaces_its_links_by_the_retry_pass(pool: PgPool) {
    for id in 1..=20 {
        insert_user(
            &pool,
            id,
            Some(&format!("u{id}@example.com")),
            Some("shared"),
        )
        .await;
    }
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    replica.run(fast("retry-replace")).await;
    assert_eq!(connected_to(&pool, 7).await.len(), 19);

    // User 7 moves away from the shared device, and its new device id is one
    // no index can hold: the write fails and is recorded.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let unindexable: String = (0..4000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from_digit(((state >> 33) % 16) as u32, 16).unwrap()
        })
        .collect();
    sqlx::query("UPDATE users SET device_id = $1, email = 'seven@example.com' WHERE id = 7")
        .bind(&unindexable)
        .execute(&pool)
        .await
        .unwrap();
    let mut reset = fast("retry-replace");
    reset["reset_cursor"] = json!(true);
    let failed = replica.run(reset).await;
    assert_eq!(failed.failed, 1, "user 7 failed: {:?}", failed.last_error);

    // Fixed at the source: the next run's retry pass re-sends user 7 alone.
    sqlx::query("UPDATE users SET device_id = 'own-device' WHERE id = 7")
        .execute(&pool)
        .await
        .unwrap();
    let retried = replica.run(fast("retry-replace")).await;
    assert_eq!(retried.failed, 0);
    assert_eq!(
        links_of(&pool, 7).await,
        BTreeSet::from([
            "device:own-device".to_string(),
            "email:seven@example.com".to_string()
        ])
    );
    assert!(connected_to(&pool, 7).await.is_empty());
}

#[sqlx::test]
async fn an_older_read_never_overwrites_a_newer_one(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    let now = Utc::now();
    let read = |email: &str, observed_at| {
        Normalizer::default().user(SourceUser {
            id: 9,
            email: Some(email.into()),
            phone: None,
            created_at: now,
            signup_ip: None,
            last_login_ip: None,
            device_id: None,
            deleted_at: None,
            observed_at,
        })
    };
    let newer = read("newer@example.com", now);
    let older = read("older@example.com", now - Span::seconds(5));
    graph.write_user(&newer).await.unwrap();
    graph.write_user(&older).await.unwrap();
    assert_eq!(
        links_of(&pool, 9).await,
        BTreeSet::from(["email:newer@example.com".to_string()])
    );
    let (email, observed): (String, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT email, observed_at FROM identity_graph_users WHERE user_id = 9")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(email, "newer@example.com");
    assert_eq!(observed.timestamp_micros(), now.timestamp_micros());

    // Both in one chunk, older last: the newer read still wins.
    let chunk = [&newer, &older];
    let later = read("later@example.com", now + Span::seconds(5));
    assert!(graph.write_users(&chunk).await.iter().all(Result::is_ok));
    graph.write_user(&later).await.unwrap();
    assert_eq!(
        links_of(&pool, 9).await,
        BTreeSet::from(["email:later@example.com".to_string()])
    );
}

/// Awkward source values: `(id, email, phone, signup_ip, last_login_ip, device_id)`.
type Row = (
    i64,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const CORPUS: &[Row] = &[
    (
        1,
        Some(""),
        Some("+1 415 555 0100"),
        Some(" 10.0.0.1 "),
        None,
        Some("  "),
    ),
    (2, Some(" Mixed.Case@Example.COM "), None, None, None, None),
    (
        3,
        Some("\u{3000}spaced@example.com\u{00A0}"),
        Some("(415) 555-0100"),
        None,
        None,
        None,
    ),
    (4, None, Some("0044 20 7946 0000"), None, None, None),
    (
        5,
        None,
        Some("+44 20 7946 0000"),
        Some("010.0.0.1"),
        None,
        None,
    ),
    (
        6,
        None,
        None,
        Some("::ffff:10.0.0.1"),
        Some("10.0.0.1"),
        None,
    ),
    (7, Some("😀"), Some("😀"), Some("😀"), None, Some("📱")),
    (8, Some("a@b@c"), Some("12"), None, Some("not-an-ip"), None),
    (9, Some("   "), Some(""), Some(" "), Some("\t"), Some("")),
    (10, None, None, None, None, None),
    (11, Some("@example.com"), Some("555-0100"), None, None, None),
    (
        12,
        Some("x@"),
        None,
        Some("2001:DB8::1"),
        Some("2001:db8:0:0:0:0:0:1"),
        None,
    ),
    (13, None, Some("+15550001"), None, None, Some(" device-13 ")),
    (14, Some("plain"), None, None, Some("192.168.001.1"), None),
    (15, Some("first@example.com"), None, None, None, None),
];

async fn insert_corpus(pool: &PgPool) {
    for (id, email, phone, signup, last, device) in CORPUS {
        sqlx::query(
            "INSERT INTO users (id, email, phone, signup_ip, last_login_ip, device_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(email)
        .bind(phone)
        .bind(signup)
        .bind(last)
        .bind(device)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// The identifier set of one HTTP body, as `kind:value`; panics on a blank
/// or duplicated value.
fn identifiers_of_body(body: &Value) -> BTreeSet<String> {
    let ids = &body["identifiers"];
    let mut values: Vec<String> = Vec::new();
    for (field, kind) in [
        ("email", "email"),
        ("phone", "phone"),
        ("signup_ip", "ip"),
        ("last_login_ip", "ip"),
    ] {
        if let Some(value) = ids[field].as_str() {
            values.push(format!("{kind}:{value}"));
        }
    }
    for device in ids["device_ids"].as_array().unwrap() {
        values.push(format!("device:{}", device.as_str().unwrap()));
    }
    for value in &values {
        let (_, text) = value.split_once(':').unwrap();
        assert!(
            !text.is_empty() && text.trim() == text,
            "blank or untrimmed value in {body}"
        );
    }
    let set: BTreeSet<String> = values.iter().cloned().collect();
    assert_eq!(set.len(), values.len(), "a duplicated identifier in {body}");
    assert_eq!(body["email"], ids["email"]);
    assert_eq!(body["phone"], ids["phone"]);
    set
}

#[sqlx::test]
async fn both_graphs_receive_the_same_normalized_identifiers(pool: PgPool) {
    insert_corpus(&pool).await;
    let region = [("IDENTITY_GRAPH_PHONE_REGION", "US")];
    let (http_replica, graph) = Replica::and_graph(&pool, &region).await;
    let over_http = http_replica.run(fast("corpus-http")).await;
    let mut built_in_settings = BUILT_IN_GRAPH.to_vec();
    built_in_settings.extend_from_slice(&region);
    let built_in_replica = Replica::new(&pool, &built_in_settings);
    let built_in = built_in_replica.run(fast("corpus-built-in")).await;

    let expected: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::from([
        (1, BTreeSet::from(["phone:+14155550100", "ip:10.0.0.1"])),
        (2, BTreeSet::from(["email:mixed.case@example.com"])),
        (
            3,
            BTreeSet::from(["email:spaced@example.com", "phone:+14155550100"]),
        ),
        (5, BTreeSet::from(["phone:+442079460000"])),
        (6, BTreeSet::from(["ip:10.0.0.1"])),
        (7, BTreeSet::from(["device:📱"])),
        (12, BTreeSet::from(["ip:2001:db8::1"])),
        (13, BTreeSet::from(["device:device-13"])),
        (15, BTreeSet::from(["email:first@example.com"])),
    ]);
    for (id, want) in &expected {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        let body = graph
            .body_of(*id)
            .unwrap_or_else(|| panic!("user {id} reached the HTTP graph"));
        assert_eq!(identifiers_of_body(&body), want, "HTTP body of user {id}");
        assert_eq!(
            links_of(&pool, *id).await,
            want,
            "built-in links of user {id}"
        );
        assert!(body["observed_at"].is_string(), "{body}");
    }
    // With no identifier left, a user reaches neither graph.
    for id in [4, 8, 9, 10, 11, 14] {
        assert_eq!(graph.body_of(id), None, "user {id}");
        assert!(links_of(&pool, id).await.is_empty(), "user {id}");
    }
    for row in [&over_http, &built_in] {
        assert_eq!(row.processed, expected.len() as i64);
        assert_eq!(row.skipped_no_identifiers, 6);
        assert_eq!(row.failed, 0);
    }
    // Every dropped value is counted by kind and reason.
    let dropped = &built_in.dropped_identifiers.0;
    assert_eq!(dropped.get("email: blank"), Some(&2), "{dropped:?}");
    assert_eq!(
        dropped.get("email: not an address"),
        Some(&5),
        "{dropped:?}"
    );
    assert_eq!(
        dropped.get("phone: not a valid number"),
        Some(&5),
        "{dropped:?}"
    );
    assert_eq!(dropped.get("phone: blank"), Some(&1), "{dropped:?}");
    assert_eq!(dropped.get("ip: blank"), Some(&2), "{dropped:?}");
    assert_eq!(
        dropped.get("ip: not an IP address"),
        Some(&4),
        "{dropped:?}"
    );
    assert_eq!(dropped.get("device: blank"), Some(&2), "{dropped:?}");
    assert_eq!(over_http.dropped_identifiers.0, *dropped);

    // The coverage check agrees with the runner, user for user.
    for (replica, key, row) in [
        (&http_replica, "corpus-http", &over_http),
        (&built_in_replica, "corpus-built-in", &built_in),
    ] {
        let check = coverage(replica, key).await;
        assert_eq!(check.eligible_up_to_cursor, row.processed + row.failed);
        assert_eq!(check.unaccounted, 0);
        assert!(check.counters_match);
    }
    assert_eq!(
        coverage(&built_in_replica, "corpus-built-in")
            .await
            .missing_from_graph,
        Some(0)
    );
}

#[sqlx::test]
async fn without_a_phone_region_a_national_number_is_absent(pool: PgPool) {
    insert_corpus(&pool).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    replica.run(fast("no-region")).await;
    // "(415) 555-0100" has no country code and no region to read it in.
    assert_eq!(
        identifiers_of_body(&graph.body_of(3).unwrap()),
        BTreeSet::from(["email:spaced@example.com".to_string()])
    );
    let check = coverage(&replica, "no-region").await;
    let row = job_row(&pool, "no-region").await;
    assert_eq!(check.eligible_up_to_cursor, row.processed + row.failed);
    assert!(PhoneRegion::parse("XX").is_err());
}

/// Holds user `id`'s insert open on its own connection until committed.
async fn insert_and_hold(pool: &PgPool, id: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("late{id}@example.com"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[sqlx::test]
async fn a_late_commit_below_the_cursor_is_caught_up(pool: PgPool) {
    for id in 1..=100 {
        insert_user(&pool, id, Some(&format!("u{id}@example.com")), None).await;
    }
    let late = insert_and_hold(&pool, 101).await;
    insert_user(&pool, 102, Some("u102@example.com"), None).await;
    let (replica, graph) = Replica::and_graph(&pool, &[]).await;
    let first = replica.run(fast("late")).await;
    assert_eq!(first.status(), Some(JobStatus::Completed));
    assert_eq!(first.cursor, 102);
    assert_eq!(first.processed, 101);

    late.commit().await.unwrap();
    insert_user(&pool, 103, Some("u103@example.com"), None).await;
    let before = coverage(&replica, "late").await;
    assert_eq!(before.late_arrivals, 1, "{before:?}");
    assert!(!before.counters_match);
    assert_eq!(before.unaccounted, 1);

    let second = replica.run(fast("late")).await;
    assert_eq!(second.status(), Some(JobStatus::Completed));
    assert_eq!(second.cursor, 103);
    assert_eq!(second.processed, 103);
    let written = graph.written_counts();
    assert_eq!(written.get(&101), Some(&1), "the late user is written");
    assert!(
        written.values().all(|times| *times == 1),
        "no user is written twice: {:?}",
        written.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let after = coverage(&replica, "late").await;
    assert_eq!(after.late_arrivals, 0);
    assert!(after.counters_match, "{after:?}");
    assert_eq!(after.unaccounted, 0);

    // A third run finds nothing new: every user stays written once.
    replica.run(fast("late")).await;
    assert!(graph.written_counts().values().all(|times| *times == 1));
}

#[sqlx::test]
async fn a_user_inserted_far_below_the_cursor_is_caught_up(pool: PgPool) {
    // Ids 10, 20, …, 1000: gaps between every two users.
    for id in (10..=1000).step_by(10) {
        insert_user(&pool, id, Some(&format!("u{id}@example.com")), None).await;
    }
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    let first = replica.run(fast("restore")).await;
    assert_eq!((first.cursor, first.processed), (1000, 100));

    // A restore brings back users 15, 16 and 17 and 995.
    for id in [15, 16, 17, 995] {
        insert_user(&pool, id, Some(&format!("restored{id}@example.com")), None).await;
    }
    assert_eq!(coverage(&replica, "restore").await.late_arrivals, 4);
    let second = replica.run(fast("restore")).await;
    assert_eq!((second.cursor, second.processed), (1000, 104));
    for id in [15, 16, 17, 995] {
        assert_eq!(
            links_of(&pool, id).await,
            BTreeSet::from([format!("email:restored{id}@example.com")])
        );
    }
    let check = coverage(&replica, "restore").await;
    assert_eq!(check.late_arrivals, 0);
    assert!(check.counters_match);
    assert_eq!(check.missing_from_graph, Some(0));
    // The gaps were split around the caught-up users, not dropped: one
    // more user in the same gap is still found.
    insert_user(&pool, 12, Some("u12@example.com"), None).await;
    assert_eq!(coverage(&replica, "restore").await.late_arrivals, 1);
    assert_eq!(replica.run(fast("restore")).await.processed, 105);
}

#[sqlx::test]
async fn a_job_writes_to_the_graph_it_was_bound_to(pool: PgPool) {
    seed(&pool, 200).await;
    let built_in = Replica::new(&pool, BUILT_IN_GRAPH);
    let mut capped = fast("bound");
    capped["batch_size"] = json!(10);
    capped["sleep_ms"] = json!(200);
    capped["max_runtime_ms"] = json!(1_000);
    let paused = built_in.run(capped).await;
    assert_eq!(paused.status(), Some(JobStatus::Paused));
    assert_eq!(paused.graph.as_deref(), Some("postgres"));

    let graph = GraphServer::start().await;
    let elsewhere = Replica::with_graph(&pool, &graph, &[]);
    // The watchdog of a replica on another graph leaves the job alone.
    assert!(elsewhere.watchdog_tick().await.unwrap().is_empty());
    assert_eq!(
        job_row(&pool, "bound").await.status(),
        Some(JobStatus::Paused)
    );
    assert_eq!(graph.request_count(), 0);

    let refused = elsewhere.try_start(fast("bound")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Validation);
    assert!(
        refused.message.contains("postgres") && refused.message.contains(&graph.url),
        "{}",
        refused.message
    );

    // A fresh pass rebinds the job to the replica that starts it.
    let mut fresh = fast("bound");
    fresh["reset_cursor"] = json!(true);
    let rebound = elsewhere.run(fresh).await;
    assert_eq!(rebound.status(), Some(JobStatus::Completed));
    assert_eq!(
        rebound.graph.as_deref(),
        Some(format!("http {}", graph.url).as_str())
    );
    // Coverage reads the job's graph: no built-in count for an HTTP job.
    assert_eq!(coverage(&built_in, "bound").await.missing_from_graph, None);
}

#[sqlx::test]
async fn a_run_whose_database_hangs_starts_no_user_after_half_its_lease(pool: PgPool) {
    seed(&pool, 1_500).await;
    let graph = GraphServer::start().await;
    let ttl_ms = 2_000u64;
    let ttl = ttl_ms.to_string();
    let settings = |token: &'static str| -> Vec<(String, String)> {
        let mut vars = graph.sink_env();
        vars.retain(|(name, _)| *name != "IDENTITY_GRAPH_TOKEN");
        vars.push(("IDENTITY_GRAPH_TOKEN", token));
        vars.push(("IDENTITY_GRAPH_BACKFILL_LEASE_TTL_MS", ttl.as_str()));
        vars.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (a_vars, b_vars) = (settings("replica-a"), settings("replica-b"));

    // Replica A reaches Postgres through a proxy that will freeze.
    let url = database_url(&pool);
    let upstream = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let proxy = crate::harness::freezing_proxy::FreezingProxy::start(upstream.clone()).await;
    let proxied = url.replace(&upstream, &proxy.addr.to_string());
    let engine_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&proxied)
        .await
        .unwrap();
    let a = Replica::with_engine_pool(&pool, engine_pool, &pairs(&a_vars));
    let b = Replica::new(&pool, &pairs(&b_vars));

    // A slow graph and big batches: when the database freezes, A's window
    // still holds hundreds of users it could start without the database.
    graph.behave(|_, _| Reply::Slow(std::time::Duration::from_millis(10)));
    let started = a
        .start(json!({"job_key": "fenced", "sleep_ms": 0, "batch_size": 1000, "concurrency": 2}))
        .await;
    assert!(started.started);
    wait_for_cursor(&pool, "fenced", 1).await;
    proxy.freeze();
    let frozen_at = std::time::Instant::now();

    // Once the lease has expired, B's watchdog takes the job over.
    tokio::time::sleep(std::time::Duration::from_millis(ttl_ms + 500)).await;
    let taken_at = std::time::Instant::now();
    assert_eq!(b.watchdog_tick().await.unwrap(), ["fenced"]);
    let done = wait_until_status(&pool, "fenced", JobStatus::Completed).await;
    assert_eq!(done.failed, 0);
    assert!(lost_users(&pool, &graph).await.is_empty());

    let exchanges = graph.exchanges();
    let from = |token: &str| {
        exchanges
            .iter()
            .filter(|e| e.authorization == format!("Bearer {token}"))
            .collect::<Vec<_>>()
    };
    let (by_a, by_b) = (from("replica-a"), from("replica-b"));
    assert!(!by_a.is_empty() && !by_b.is_empty());
    let fence = frozen_at + std::time::Duration::from_millis(ttl_ms / 2 + 250);
    let a_last = by_a.iter().map(|e| e.arrived).max().unwrap();
    assert!(
        a_last <= fence,
        "replica A started a user {:?} after the freeze; the fence is half the lease ({} ms)",
        a_last - frozen_at,
        ttl_ms / 2
    );
    let a_answered = by_a.iter().map(|e| e.answered).max().unwrap();
    let b_first = by_b.iter().map(|e| e.arrived).min().unwrap();
    assert!(b_first >= taken_at, "B wrote only after it took the job");
    assert!(
        a_answered < b_first,
        "no user was in flight from both replicas at once"
    );
    // The users A was writing when it was fenced are B's to write again:
    // between them the two replicas sent every user. How many A sent before
    // the freeze depends on the machine's load, so it is not counted here.
    let a_users: BTreeSet<i64> = by_a.iter().map(|e| e.user_id).collect();
    let b_users: BTreeSet<i64> = by_b.iter().map(|e| e.user_id).collect();
    let eligible: BTreeSet<i64> = eligible_ids(&pool).await.into_iter().collect();
    assert_eq!(
        a_users.union(&b_users).copied().collect::<BTreeSet<i64>>(),
        eligible,
        "A sent {} users and B {}",
        a_users.len(),
        b_users.len()
    );
    proxy.thaw();
}

fn pairs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
