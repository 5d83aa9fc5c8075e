//! The built-in identity graph: identifier nodes and user→identifier links in
//! Postgres. Every write is an idempotent upsert.

use super::{IdentityGraph, SinkError, SourceUser};
use futures::future::BoxFuture;
use sqlx::PgPool;

pub struct PostgresGraph {
    pool: PgPool,
}

impl PostgresGraph {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn write(&self, user: &SourceUser) -> Result<(), sqlx::Error> {
        let mut identifiers = user.identifiers();
        // One lock order for every writer, so concurrent upserts cannot deadlock.
        identifiers.sort();
        identifiers.dedup();
        let kinds: Vec<&str> = identifiers.iter().map(|(kind, _)| *kind).collect();
        let values: Vec<&str> = identifiers.iter().map(|(_, value)| *value).collect();

        sqlx::query(
            "INSERT INTO identity_graph_users (user_id, email, phone, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE
               SET email = EXCLUDED.email, phone = EXCLUDED.phone, created_at = EXCLUDED.created_at,
                   synced_at = now()
             WHERE (identity_graph_users.email, identity_graph_users.phone, identity_graph_users.created_at)
                   IS DISTINCT FROM (EXCLUDED.email, EXCLUDED.phone, EXCLUDED.created_at)",
        )
        .bind(user.id)
        .bind(&user.email)
        .bind(&user.phone)
        .bind(user.created_at)
        .execute(&self.pool)
        .await?;
        if identifiers.is_empty() {
            return Ok(());
        }
        // Separate statements on purpose: the link insert takes a fresh
        // snapshot, so it sees identifiers a concurrent writer just created.
        sqlx::query(
            "INSERT INTO identity_graph_identifiers (kind, value)
             SELECT kind, value FROM unnest($1::text[], $2::text[]) AS t(kind, value)
             ORDER BY kind, value
             ON CONFLICT (kind, value) DO NOTHING",
        )
        .bind(&kinds)
        .bind(&values)
        .execute(&self.pool)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl IdentityGraph for PostgresGraph {
    fn write_user<'a>(&'a self, user: &'a SourceUser) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.write(user)
                .await
                .map_err(|e| SinkError(format!("identity graph database write failed: {e}")))
        })
    }

    fn is_built_in(&self) -> bool {
        true
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
