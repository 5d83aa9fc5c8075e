//! The built-in identity graph: identifier nodes and user→identifier links in
//! Postgres. Every write replaces the user's identity (its row and exactly
//! its current links) unless the graph holds a newer read of the user; it is
//! idempotent.
//!
//! The runner hands the graph chunks of users. A chunk is written in one
//! transaction of three set-based statements (users, identifiers, links),
//! whatever its size, so the cost per user is a share of three statements
//! rather than three round trips and three plans. A chunk that fails for a
//! reason that may be one user's fault is split in halves until the users at
//! fault are found; each of them fails alone.

use super::pool_wait::ChunkConnections;
use super::{GraphBinding, GraphUser, IdentityGraph, SinkError};
use crate::backfill::transient::is_transient;
use futures::future::BoxFuture;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// The most users one transaction writes. A batch of the runner (at most
/// 1,000 users) is split into chunks of at most this many, spread over the
/// run's concurrency.
pub const MAX_CHUNK: usize = 500;

/// How often a chunk is tried when the database fails for a reason that
/// passes (a lost connection, a deadlock, a pool time-out), before every user
/// of it fails with that error.
pub const MAX_ATTEMPTS: u32 = 3;

pub struct PostgresGraph {
    pool: PgPool,
    /// Chunks wait here for a connection rather than fail (`pool_wait`).
    connections: ChunkConnections,
    base_backoff: Duration,
}

/// The users upsert: a user's row is replaced unless the graph already holds
/// this read of it or a newer one (`observed_at`), so a re-delivered write
/// changes nothing. `ORDER BY` makes every writer take the users'
/// row locks in one order, and the lock is taken even when the newer-read
/// guard turns the update down. Returns the users this write applies to,
/// and whether each is new to the graph (a new user has no links to drop).
const UPSERT_USERS: &str = "
    INSERT INTO identity_graph_users (user_id, email, phone, created_at, observed_at)
    SELECT user_id, email, phone, created_at, observed_at
    FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         AS t(user_id, email, phone, created_at, observed_at)
    ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
      SET email = EXCLUDED.email, phone = EXCLUDED.phone, created_at = EXCLUDED.created_at,
          observed_at = EXCLUDED.observed_at, synced_at = now()
    WHERE identity_graph_users.observed_at IS NULL
       OR identity_graph_users.observed_at < EXCLUDED.observed_at
    RETURNING user_id, (xmax = 0) AS inserted";

/// The identifier nodes, distinct, in one order for every writer (the
/// arrays come sorted by byte order and are inserted in array order, so the
/// sort costs no collation here). A writer that meets an identifier another
/// transaction inserted and has not committed waits for it, and because all
/// writers insert in the same order, no two can wait for each other. Returns
/// the identifiers this statement inserted, with their ids.
const INSERT_IDENTIFIERS: &str = "
    INSERT INTO identity_graph_identifiers (kind, value)
    SELECT kind, value FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(kind, value, n)
    ORDER BY n
    ON CONFLICT (kind, value) DO NOTHING
    RETURNING id, kind, value";

/// The links: each written user's links become exactly its identifiers.
/// An identifier this chunk inserted comes with its id; any other is looked
/// up, in a separate statement after the identifiers on purpose: under READ
/// COMMITTED it takes a fresh snapshot, so it sees an identifier that another
/// writer committed while the statement before waited for it. The lookup is
/// a correlated probe, which can only be planned as a probe of the
/// `(kind, value)` unique index (a join may be planned as a hash join over a
/// sequential scan while the table is small, and a prepared generic plan
/// keeps it as the table grows). A lookup that finds nothing would insert a
/// NULL and fail the chunk loudly rather than drop a link.
///
/// Links of a user that was already in the graph (`$5`) and are not among
/// its identifiers now are deleted: the write is the user's whole identity,
/// like the HTTP graph's `PUT`. Only the writer holding the user's row lock
/// (taken by the users upsert) touches that user's links, so the delete adds
/// no lock another chunk could wait on in another order.
const REPLACE_LINKS: &str = "
    WITH wanted AS MATERIALIZED (
        SELECT t.user_id,
               coalesce(t.identifier_id,
                        (SELECT i.id FROM identity_graph_identifiers i
                         WHERE i.kind = t.kind AND i.value = t.value)) AS identifier_id
        FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[])
             AS t(user_id, identifier_id, kind, value)),
    stale AS (
        DELETE FROM identity_graph_links l
        WHERE l.user_id = ANY($5::int8[])
          AND NOT EXISTS (SELECT 1 FROM wanted w
                          WHERE w.user_id = l.user_id AND w.identifier_id = l.identifier_id))
    INSERT INTO identity_graph_links (user_id, identifier_id)
    SELECT user_id, identifier_id FROM wanted
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING";

impl PostgresGraph {
    pub fn new(pool: PgPool) -> Self {
        Self {
            connections: ChunkConnections::for_pool(&pool),
            pool,
            base_backoff: Duration::from_millis(100),
        }
    }

    /// Writes one chunk in one transaction. Users are deduplicated by id
    /// (the newest read wins, then the last one given), identifiers and
    /// links by value.
    async fn write_chunk(&self, users: &[&GraphUser]) -> Result<(), sqlx::Error> {
        let mut by_id: BTreeMap<i64, &GraphUser> = BTreeMap::new();
        for user in users {
            let newest = by_id
                .get(&user.id)
                .is_none_or(|held| held.observed_at <= user.observed_at);
            if newest {
                by_id.insert(user.id, user);
            }
        }
        let mut ids = Vec::with_capacity(by_id.len());
        let mut emails = Vec::with_capacity(by_id.len());
        let mut phones = Vec::with_capacity(by_id.len());
        let mut created = Vec::with_capacity(by_id.len());
        let mut observed = Vec::with_capacity(by_id.len());
        for (id, user) in &by_id {
            ids.push(*id);
            emails.push(user.email.as_deref());
            phones.push(user.phone.as_deref());
            created.push(user.created_at);
            observed.push(user.observed_at);
        }

        // Waits (held back by the window) while every connection is busy.
        let (_permit, mut tx) = self.connections.begin(&self.pool).await?;
        // The chunk need not wait for its own WAL flush: the runner counts
        // these users as written only by its checkpoint, a later transaction
        // committed synchronously, and flushing that commit flushes all WAL
        // written before it, this chunk's included. A crash before that
        // checkpoint loses nothing the job has recorded; the users are sent
        // again from the cursor.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let applied: Vec<(i64, bool)> = sqlx::query_as(UPSERT_USERS)
            .bind(&ids)
            .bind(&emails)
            .bind(&phones)
            .bind(&created)
            .bind(&observed)
            .fetch_all(&mut *tx)
            .await?;
        // A user the graph holds a newer read of keeps what it has.
        let mut identifiers: BTreeSet<(&str, &str)> = BTreeSet::new();
        let (mut link_users, mut link_kinds, mut link_values) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut replaced = Vec::new();
        for (id, inserted) in &applied {
            if !inserted {
                replaced.push(*id);
            }
            let Some(user) = by_id.get(id) else { continue };
            for (kind, value) in user.identifiers() {
                identifiers.insert((kind.as_str(), value));
                link_users.push(*id);
                link_kinds.push(kind.as_str());
                link_values.push(value);
            }
        }
        let (kinds, values): (Vec<&str>, Vec<&str>) = identifiers.into_iter().unzip();
        let inserted: Vec<(i64, String, String)> = if kinds.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(INSERT_IDENTIFIERS)
                .bind(&kinds)
                .bind(&values)
                .fetch_all(&mut *tx)
                .await?
        };
        if !link_users.is_empty() || !replaced.is_empty() {
            let new_ids: HashMap<(&str, &str), i64> = inserted
                .iter()
                .map(|(id, kind, value)| ((kind.as_str(), value.as_str()), *id))
                .collect();
            let link_ids: Vec<Option<i64>> = link_kinds
                .iter()
                .zip(&link_values)
                .map(|(kind, value)| new_ids.get(&(*kind, *value)).copied())
                .collect();
            sqlx::query(REPLACE_LINKS)
                .bind(&link_users)
                .bind(&link_ids)
                .bind(&link_kinds)
                .bind(&link_values)
                .bind(&replaced)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// `write_chunk`, tried again after trouble that passes by itself: a
    /// lost connection comes back on another one, a deadlock resolves.
    async fn write_chunk_patiently(&self, users: &[&GraphUser]) -> Result<(), (sqlx::Error, u32)> {
        let mut attempt = 1;
        loop {
            match self.write_chunk(users).await {
                Ok(()) => return Ok(()),
                Err(error) if is_transient(&error) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        users = users.len(),
                        "identity graph write failed, retrying: {error}"
                    );
                    tokio::time::sleep(self.base_backoff * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                Err(error) => return Err((error, attempt)),
            }
        }
    }

    /// Writes `users` and returns one outcome per user, splitting the chunk
    /// in halves when it fails for a reason that may be one user's fault.
    fn write_isolating<'a>(
        &'a self,
        users: &'a [&'a GraphUser],
    ) -> BoxFuture<'a, Vec<Result<(), SinkError>>> {
        Box::pin(async move {
            if users.is_empty() {
                return Vec::new();
            }
            match self.write_chunk_patiently(users).await {
                Ok(()) => vec![Ok(()); users.len()],
                Err((error, _)) if users.len() > 1 && may_be_one_users_fault(&error) => {
                    let (left, right) = users.split_at(users.len() / 2);
                    let mut outcomes = self.write_isolating(left).await;
                    outcomes.extend(self.write_isolating(right).await);
                    outcomes
                }
                Err((error, attempts)) => {
                    let mut message = format!("identity graph database write failed: {error}");
                    if is_transient(&error) {
                        message.push_str(&format!(" (after {attempts} attempts)"));
                    }
                    vec![Err(SinkError::permanent(error_class(&error), message)); users.len()]
                }
            }
        })
    }
}

/// Whether a failed chunk is worth splitting to find the users at fault.
/// Trouble that passes (see `is_transient`) is everybody's, and so is a
/// missing table, a missing privilege, a read-only server: splitting would
/// only multiply the failing transactions. Anything else from the database —
/// a value too large for the index (54000), a constraint or a trigger that
/// rejects a row (23xxx, P0001), a bad value (22xxx) — may be one user's.
fn may_be_one_users_fault(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) if !is_transient(error) => !db.code().is_some_and(|code| {
            // 42: undefined table or column, insufficient privilege …;
            // 0A: feature not supported; 25: e.g. a read-only transaction;
            // 28/3D/3F: authorization, unknown database or schema.
            ["42", "0A", "25", "28", "3D", "3F"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// A database error's failure class: its SQLSTATE class (`sqlstate 23`
/// for a constraint, `sqlstate 40` for a serialization failure), or what
/// kept the statement from the database.
fn error_class(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("sqlstate {}", code.get(..2).unwrap_or(&code)),
            None => "database".to_string(),
        },
        sqlx::Error::PoolTimedOut => "timeout".to_string(),
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            "connection".to_string()
        }
        _ => "database".to_string(),
    }
}

impl IdentityGraph for PostgresGraph {
    fn write_user<'a>(&'a self, user: &'a GraphUser) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let users = [user];
            let mut outcomes = self.write_isolating(&users).await;
            outcomes
                .pop()
                .unwrap_or_else(|| Err(SinkError::permanent("adapter", "no outcome for the user")))
        })
    }

    fn write_users<'a>(
        &'a self,
        users: &'a [&'a GraphUser],
    ) -> BoxFuture<'a, Vec<Result<(), SinkError>>> {
        self.write_isolating(users)
    }

    fn preferred_chunk(&self) -> usize {
        MAX_CHUNK
    }

    fn is_built_in(&self) -> bool {
        true
    }

    fn binding(&self) -> GraphBinding {
        GraphBinding::built_in()
    }
}

/// Users linked to `user_id` through any shared identifier, with what they share.
pub async fn linked_users(
    pool: &PgPool,
    user_id: i64,
) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT other.user_id, i.kind, i.value
         FROM identity_graph_links mine
         JOIN identity_graph_links other ON other.identifier_id = mine.identifier_id AND other.user_id <> mine.user_id
         JOIN identity_graph_identifiers i ON i.id = mine.identifier_id
         WHERE mine.user_id = $1
         ORDER BY other.user_id, i.kind",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}
