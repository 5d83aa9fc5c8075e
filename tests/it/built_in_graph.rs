//! The built-in Postgres identity graph: as an adapter, and as the target of
//! a real run.

use crate::harness::*;
use identity_graph_backfill::backfill::{
    domain::JobStatus,
    identifiers::{GraphUser, Normalizer},
    sinks::{postgres::linked_users, postgres::PostgresGraph, IdentityGraph},
    source::SourceUser,
};
use serde_json::json;
use sqlx::PgPool;

fn user(id: i64, email: &str, device: Option<&str>) -> GraphUser {
    Normalizer::default().user(SourceUser {
        id,
        email: Some(email.into()),
        phone: None,
        created_at: chrono::Utc::now(),
        signup_ip: None,
        last_login_ip: None,
        device_id: device.map(str::to_string),
        deleted_at: None,
        observed_at: chrono::Utc::now(),
    })
}

#[sqlx::test]
async fn the_postgres_graph_links_shared_identifiers_idempotently(pool: PgPool) {
    let graph = PostgresGraph::new(pool.clone());
    let alice = user(1, "alice@example.com", Some("device-shared"));
    let bob = user(2, "bob@example.com", Some("device-shared"));
    let carol = user(3, "carol@example.com", Some("device-other"));
    for u in [&alice, &bob, &carol] {
        graph.write_user(u).await.unwrap();
    }
    let linked = linked_users(&pool, 1).await.unwrap();
    assert_eq!(
        linked,
        vec![(2, "device".to_string(), "device-shared".to_string())]
    );
    assert!(linked_users(&pool, 3).await.unwrap().is_empty());

    let snapshot = |pool: PgPool| async move {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT row_to_json(t)::text FROM (
                SELECT 'u' AS k, user_id::text AS a, synced_at::text AS b, xmin::text AS c FROM identity_graph_users
                UNION ALL SELECT 'i', id::text, kind || value, xmin::text FROM identity_graph_identifiers
                UNION ALL SELECT 'l', user_id::text, identifier_id::text, xmin::text FROM identity_graph_links
             ) t ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let before = snapshot(pool.clone()).await;
    graph.write_user(&alice).await.unwrap();
    graph.write_user(&bob).await.unwrap();
    assert_eq!(
        snapshot(pool.clone()).await,
        before,
        "writing the same users again changes nothing"
    );

    // Concurrent writers of users that share an identifier still link.
    let writes = (10..40).map(|id| {
        let graph = &graph;
        async move {
            graph
                .write_user(&user(
                    id,
                    &format!("u{id}@example.com"),
                    Some("device-crowd"),
                ))
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    assert_eq!(linked_users(&pool, 10).await.unwrap().len(), 29);
}

#[sqlx::test]
async fn a_real_run_into_the_built_in_graph_links_demo_users(pool: PgPool) {
    seed(&pool, 2_000).await;
    let replica = Replica::new(&pool, BUILT_IN_GRAPH);
    let row = replica
        .run(json!({"sleep_ms": 0, "batch_size": 500, "concurrency": 16}))
        .await;
    assert_eq!(row.status(), Some(JobStatus::Completed));
    assert_eq!(row.failed, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_users").await,
        eligible_ids(&pool).await.len() as i64
    );
    let shared = count(
        &pool,
        "SELECT count(*) FROM (SELECT identifier_id FROM identity_graph_links GROUP BY 1 HAVING count(*) > 1) s",
    )
    .await;
    assert!(shared > 10, "the demo data shares identifiers: {shared}");
}
