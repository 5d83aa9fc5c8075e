//! The built-in graph's batched writes: the same graph as per-user writes,
//! concurrent writers with shared identifiers, one bad user failing alone,
//! and a lost connection that is tried again instead of failing users.

use crate::harness::*;
use chrono::{DateTime, Utc};
use identity_graph_backfill::backfill::{
    domain::JobStatus,
    identifiers::{GraphUser, Normalizer},
    sinks::{postgres::PostgresGraph, IdentityGraph},
    source::{self, SourceUser},
};
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

type GraphUsers = Vec<(i64, Option<String>, Option<String>, Option<DateTime<Utc>>)>;

/// Everything the graph holds, by value (no generated ids, no sync times).
#[derive(Debug, PartialEq, Eq)]
struct Graph {
    users: GraphUsers,
    identifiers: Vec<(String, String)>,
    links: Vec<(i64, String, String)>,
    /// Links whose identifier row does not exist; the links have no foreign
    /// key, so the writes themselves must keep this at 0.
    dangling_links: i64,
}

async fn graph_of(pool: &PgPool) -> Graph {
    Graph {
        users: sqlx::query_as(
            "SELECT user_id, email, phone, created_at FROM identity_graph_users ORDER BY user_id",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        identifiers: sqlx::query_as(
            "SELECT kind, value FROM identity_graph_identifiers ORDER BY kind, value",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        links: sqlx::query_as(
            "SELECT l.user_id, i.kind, i.value
             FROM identity_graph_links l JOIN identity_graph_identifiers i ON i.id = l.identifier_id
             ORDER BY 1, 2, 3",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        dangling_links: sqlx::query_scalar(
            "SELECT count(*) FROM identity_graph_links l
             WHERE NOT EXISTS (SELECT 1 FROM identity_graph_identifiers i WHERE i.id = l.identifier_id)",
        )
        .fetch_one(pool)
        .await
        .unwrap(),
    }
}

async fn empty_the_graph(pool: &PgPool) {
    sqlx::query(
        "TRUNCATE identity_graph_links, identity_graph_identifiers, identity_graph_users RESTART IDENTITY",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn source_users(pool: &PgPool) -> Vec<SourceUser> {
    let mut all = Vec::new();
    loop {
        let cursor = all.last().map_or(0, |u: &SourceUser| u.id);
        let page = source::users_after(pool, cursor, 1000).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The users a real run writes: not deleted, with an identifier.
fn eligible(users: &[GraphUser]) -> Vec<&GraphUser> {
    users
        .iter()
        .filter(|u| !u.deleted && u.has_identifiers())
        .collect()
}

fn user(id: i64, email: &str, device: &str, ip: &str) -> GraphUser {
    Normalizer::default().user(SourceUser {
        id,
        email: Some(email.to_string()),
        phone: None,
        created_at: DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap(),
        signup_ip: Some(ip.to_string()),
        last_login_ip: None,
        device_id: Some(device.to_string()),
        deleted_at: None,
        observed_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    })
}

/// A value no btree index can hold (random hex does not compress): the
/// identifier insert fails with "index row size … exceeds btree maximum".
fn unindexable_value() -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from_digit(((state >> 33) % 16) as u32, 16).unwrap()
        })
        .collect()
}

/// The built-in graph's write before chunks, kept here as the reference the
/// batched writes are compared with: three autocommitted statements per user.
async fn write_per_user(pool: &PgPool, user: &GraphUser) -> Result<(), sqlx::Error> {
    let (kinds, values): (Vec<&str>, Vec<&str>) = user
        .identifiers()
        .into_iter()
        .map(|(kind, value)| (kind.as_str(), value))
        .unzip();
    sqlx::query(
        "INSERT INTO identity_graph_users (user_id, email, phone, created_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
           SET email = EXCLUDED.email, phone = EXCLUDED.phone, created_at = EXCLUDED.created_at,
               synced_at = now()",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.phone)
    .bind(user.created_at)
    .execute(pool)
    .await?;
    // A write is the user's whole identity: links it no longer has go.
    sqlx::query(
        "DELETE FROM identity_graph_links l USING identity_graph_identifiers i
         WHERE l.user_id = $1 AND i.id = l.identifier_id
           AND (i.kind, i.value) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))",
    )
    .bind(user.id)
    .bind(&kinds)
    .bind(&values)
    .execute(pool)
    .await?;
    if kinds.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO identity_graph_identifiers (kind, value)
         SELECT kind, value FROM unnest($1::text[], $2::text[]) AS t(kind, value)
         ORDER BY kind, value
         ON CONFLICT (kind, value) DO NOTHING",
    )
    .bind(&kinds)
    .bind(&values)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO identity_graph_links (user_id, identifier_id)
         SELECT $1, i.id
         FROM unnest($2::text[], $3::text[]) AS t(kind, value)
         JOIN identity_graph_identifiers i USING (kind, value)
         ON CONFLICT DO NOTHING",
    )
    .bind(user.id)
    .bind(&kinds)
    .bind(&values)
    .execute(pool)
    .await?;
    Ok(())
}

#[sqlx::test]
async fn a_batched_run_builds_the_same_graph_as_per_user_writes(pool: PgPool) {
    seed(&pool, 3_000).await;
    let users: Vec<GraphUser> = source_users(&pool)
        .await
        .into_iter()
        .map(|row| Normalizer::default().user(row))
        .collect();
    let graph = PostgresGraph::new(pool.clone());

    // Today's writes: three autocommitted statements per eligible user.
    for u in eligible(&users) {
        write_per_user(&pool, u).await.unwrap();
    }
    let per_user = graph_of(&pool).await;
    assert_eq!(per_user.users.len(), eligible(&users).len());
    assert!(
        per_user.links.len() > per_user.identifiers.len(),
        "the demo users share identifiers"
    );

    // The same users through a real run, which writes them in chunks.
    empty_the_graph(&pool).await;
    let row = Replica::new(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")])
        .run(json!({"sleep_ms": 0, "batch_size": 1000, "concurrency": 4}))
        .await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 0);
    assert_eq!(graph_of(&pool).await, per_user);

    // Chunks of any size, written twice (at least once delivery), agree too.
    empty_the_graph(&pool).await;
    let all = eligible(&users);
    for (size, users) in [(1, &all[..300]), (7, &all[..]), (500, &all[..])] {
        for chunk in users.chunks(size) {
            let outcomes = graph.write_users(chunk).await;
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        }
    }
    assert_eq!(graph_of(&pool).await, per_user);
}

#[sqlx::test]
async fn rewriting_a_chunk_changes_nothing_and_a_changed_user_is_updated(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    let mut users: Vec<GraphUser> = (1..=20)
        .map(|id| user(id, &format!("u{id}@example.com"), "device-a", "10.0.0.1"))
        .collect();
    let chunk: Vec<&GraphUser> = users.iter().collect();
    assert!(graph.write_users(&chunk).await.iter().all(Result::is_ok));
    let xmins = |pool: PgPool| async move {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT 'u' || user_id || ':' || xmin FROM identity_graph_users
             UNION ALL SELECT 'i' || id || ':' || xmin FROM identity_graph_identifiers
             UNION ALL SELECT 'l' || user_id || '/' || identifier_id || ':' || xmin FROM identity_graph_links
             ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let before = xmins(pool.clone()).await;
    assert!(graph.write_users(&chunk).await.iter().all(Result::is_ok));
    assert_eq!(
        xmins(pool.clone()).await,
        before,
        "an unchanged chunk writes no row"
    );

    let original = users.clone();
    // A later read of user 5, with a new email.
    users[4].email = Some("changed@example.com".into());
    users[4].observed_at += chrono::Duration::seconds(1);
    let chunk: Vec<&GraphUser> = users.iter().collect();
    assert!(graph.write_users(&chunk).await.iter().all(Result::is_ok));
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM identity_graph_users WHERE user_id = 5")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some("changed@example.com"));

    let emails: Vec<String> = sqlx::query_scalar(
        "SELECT i.value FROM identity_graph_links l
         JOIN identity_graph_identifiers i ON i.id = l.identifier_id
         WHERE l.user_id = 5 AND i.kind = 'email'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        emails,
        ["changed@example.com"],
        "the old email's link is gone"
    );

    // Per-user writes of the same two versions agree (the old email's node
    // stays in both, linked to nobody).
    let batched = graph_of(&pool).await;
    empty_the_graph(&pool).await;
    for u in original.iter().chain(&users) {
        write_per_user(&pool, u).await.unwrap();
    }
    assert_eq!(graph_of(&pool).await, batched);
}

#[sqlx::test]
async fn concurrent_chunks_sharing_identifiers_neither_deadlock_nor_lose_links(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    // 600 users over 12 devices, 30 IPs and 5 shared emails: every chunk
    // shares identifiers with every other.
    let users: Vec<GraphUser> = (1..=600)
        .map(|id| {
            user(
                id,
                &format!("household{}@example.net", id % 5),
                &format!("device-{}", (id * 7) % 12),
                &format!("10.0.0.{}", (id * 13) % 30),
            )
        })
        .collect();
    let refs: Vec<&GraphUser> = users.iter().collect();
    for u in &refs {
        write_per_user(&pool, u).await.unwrap();
    }
    let expected = graph_of(&pool).await;
    assert_eq!(expected.dangling_links, 0);

    for round in 0..5 {
        empty_the_graph(&pool).await;
        // Two jobs over the same users at once, chunked differently, and
        // eight chunks of one job at once: 24 writers in all.
        let job_a = refs.chunks(50 + round);
        let job_b = refs.chunks(75 - round);
        let writers = job_a.chain(job_b).map(|chunk| graph.write_users(chunk));
        let outcomes =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(writers))
                .await
                .expect("no writer waits forever");
        for outcome in outcomes.into_iter().flatten() {
            outcome.unwrap();
        }
        assert_eq!(graph_of(&pool).await, expected, "round {round}");
    }
}

/// An identifier another transaction inserted and has not committed: the
/// chunk waits for it, then links to the committed row (or, when the other
/// transaction rolls back, inserts it itself).
#[sqlx::test]
async fn a_chunk_waits_for_an_uncommitted_identifier_and_links_to_it(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    for commit in [true, false] {
        empty_the_graph(&pool).await;
        let mut other = pool.begin().await.unwrap();
        let other_id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_graph_identifiers (kind, value) VALUES ('device', 'device-shared') RETURNING id",
        )
        .fetch_one(&mut *other)
        .await
        .unwrap();
        let users: Vec<GraphUser> = (1..=10)
            .map(|id| {
                user(
                    id,
                    &format!("u{id}@example.com"),
                    "device-shared",
                    "10.1.1.1",
                )
            })
            .collect();
        let refs: Vec<&GraphUser> = users.iter().collect();
        let write = graph.write_users(&refs);
        tokio::pin!(write);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut write)
                .await
                .is_err(),
            "the chunk waits for the other transaction"
        );
        if commit {
            other.commit().await.unwrap();
        } else {
            other.rollback().await.unwrap();
        }
        let outcomes = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let linked: Vec<i64> = sqlx::query_scalar(
            "SELECT l.user_id FROM identity_graph_links l JOIN identity_graph_identifiers i ON i.id = l.identifier_id
             WHERE i.kind = 'device' AND i.value = 'device-shared' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(linked, (1..=10).collect::<Vec<i64>>(), "commit {commit}");
        let device_id: i64 = sqlx::query_scalar(
            "SELECT id FROM identity_graph_identifiers WHERE kind = 'device' AND value = 'device-shared'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(device_id == other_id, commit);
    }
}

#[sqlx::test]
async fn one_bad_user_in_a_chunk_fails_alone(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    let bad = unindexable_value();
    let mut users: Vec<GraphUser> = (1..=40)
        .map(|id| {
            user(
                id,
                &format!("u{id}@example.com"),
                &format!("device-{id}"),
                "10.2.2.2",
            )
        })
        .collect();
    users[16].device_id = Some(bad.clone());
    users[30].device_id = Some(format!("{bad}-2"));
    let refs: Vec<&GraphUser> = users.iter().collect();

    let outcomes = graph.write_users(&refs).await;
    assert_eq!(outcomes.len(), 40);
    for (u, outcome) in users.iter().zip(&outcomes) {
        match u.id {
            17 | 31 => {
                let error = outcome.as_ref().unwrap_err();
                assert!(
                    error.message.contains("index row"),
                    "user {}: {error}",
                    u.id
                );
            }
            _ => assert!(outcome.is_ok(), "user {}: {outcome:?}", u.id),
        }
    }
    // The graph holds exactly what per-user writes of the good users make.
    let batched = graph_of(&pool).await;
    empty_the_graph(&pool).await;
    for u in &users {
        let result = write_per_user(&pool, u).await;
        assert_eq!(result.is_err(), u.id == 17 || u.id == 31);
    }
    let mut per_user = graph_of(&pool).await;
    // A per-user write that fails at its identifiers has already upserted
    // the user: the old path left a user without links, the batch does not.
    per_user.users.retain(|(id, ..)| *id != 17 && *id != 31);
    assert_eq!(batched, per_user);
}

#[sqlx::test]
async fn a_real_run_fails_only_the_bad_user(pool: PgPool) {
    seed(&pool, 2_000).await;
    let victim: i64 = sqlx::query_scalar(
        "UPDATE users SET device_id = $1
         WHERE id = (SELECT min(id) FROM users WHERE id > 1000 AND deleted_at IS NULL) RETURNING id",
    )
    .bind(unindexable_value())
    .fetch_one(&pool)
    .await
    .unwrap();
    let row = Replica::new(&pool, &[("IDENTITY_GRAPH_SINK", "postgres")])
        .run(json!({"sleep_ms": 0, "batch_size": 1000, "concurrency": 2}))
        .await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 1);
    let failures: Vec<(i64, String)> = sqlx::query_as(
        "SELECT user_id, error FROM identity_graph_backfill_failures WHERE resolved_at IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, victim);
    assert!(failures[0].1.contains("index row"), "{}", failures[0].1);
    let written: Vec<i64> =
        sqlx::query_scalar("SELECT user_id FROM identity_graph_users ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected = eligible_ids(&pool).await;
    expected.retain(|id| *id != victim);
    assert_eq!(written, expected);
}

/// A connection lost mid-chunk is trouble that passes: the chunk is written
/// again on another connection, and no user fails.
#[sqlx::test]
async fn a_chunk_whose_connection_is_killed_is_written_again(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    // Hold the chunk at its identifiers: another transaction has inserted
    // one of them and not committed.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO identity_graph_identifiers (kind, value) VALUES ('ip', '10.3.3.3')")
        .execute(&mut *other)
        .await
        .unwrap();
    let users: Vec<GraphUser> = (1..=30)
        .map(|id| {
            user(
                id,
                &format!("u{id}@example.com"),
                &format!("device-{id}"),
                "10.3.3.3",
            )
        })
        .collect();
    let refs: Vec<&GraphUser> = users.iter().collect();
    let write = graph.write_users(&refs);
    tokio::pin!(write);

    let blocked = || async {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%INSERT INTO identity_graph_identifiers%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pids
    };
    let mut killed = None;
    for _ in 0..100 {
        tokio::select! {
            outcomes = &mut write => panic!("the chunk finished while held: {outcomes:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if let Some(pid) = blocked().await.first().copied() {
            if killed.is_none() {
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&pool)
                    .await
                    .unwrap();
                killed = Some(pid);
            } else if killed != Some(pid) {
                break; // tried again, on another connection, and held again
            }
        }
    }
    assert!(killed.is_some(), "the chunk never waited");
    other.commit().await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(graph_of(&pool).await.users.len(), 30);
}

#[sqlx::test]
async fn a_chunk_waits_for_a_busy_pool_instead_of_failing_its_users(pool: PgPool) {
    // A pool of 6 with a 100 ms acquire time-out: chunks may take 2 of its
    // connections (4 stay for heartbeats and checkpoints).
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_millis(100))
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let graph = PostgresGraph::new(small.clone());
    // Every connection is busy for 1.5 s: ten times the time-out, longer
    // than three attempts with their backoff.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(small.acquire().await.unwrap());
    }
    let users: Vec<GraphUser> = (1..=40)
        .map(|id| {
            user(
                id,
                &format!("u{id}@example.com"),
                &format!("d{id}"),
                "10.0.0.1",
            )
        })
        .collect();
    let chunks: Vec<Vec<&GraphUser>> = users.chunks(5).map(|c| c.iter().collect()).collect();
    let writes = futures::future::join_all(chunks.iter().map(|chunk| graph.write_users(chunk)));
    let release = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        drop(held);
    };
    let (outcomes, ()) = tokio::join!(writes, release);
    let failed: Vec<_> = outcomes.iter().flatten().filter(|o| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "no user fails for a busy pool: {failed:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_users").await,
        40
    );
}
