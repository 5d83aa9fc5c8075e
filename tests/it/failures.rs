//! A job's failures by what went wrong: the class each failure records, the
//! grouped counts, a filter, a search, keyset pages, and the CSV export with
//! its access rules.

use crate::harness::graph::{GraphServer, Reply};
use crate::harness::*;
use identity_graph_backfill::backfill::domain::JobStatus;
use serde_json::{json, Value};
use sqlx::PgPool;

const JOB: &str = "failure-workbench";

/// A job with a seeded set of unresolved failures: users 1..=300, of three
/// classes by `user_id % 3` (0 `http 400`, 1 `http 422`, 2 `timeout`), with a message that names the class and, for
/// every tenth user, "connection reset". Users 301..=310 failed but were
/// resolved since: no view may show them.
async fn seeded_failures(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO identity_graph_backfill_jobs (job_key, status, options)
         VALUES ($1, 'completed', $2)",
    )
    .bind(JOB)
    .bind(
        serde_json::to_value(request(json!({"job_key": JOB})).resolve(900_000).unwrap().0).unwrap(),
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error, resolved_at)
         SELECT $1, id,
                (ARRAY['http 400', 'http 422', 'timeout'])[id % 3 + 1],
                (ARRAY['http 400', 'http 422', 'timeout'])[id % 3 + 1]
                    || CASE WHEN id % 10 = 0 THEN ': connection reset by peer' ELSE ': rejected' END,
                CASE WHEN id > 300 THEN now() END
         FROM generate_series(1, 310) AS id",
    )
    .bind(JOB)
    .execute(pool)
    .await
    .unwrap();
}

fn user_ids(page: &Value) -> Vec<i64> {
    page["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["user_id"].as_i64().unwrap())
        .collect()
}

/// Every page of `filter` (a `failures` body without `after_user_id`),
/// following `next_after_user_id`; the pages must not overlap.
async fn all_pages(admin: &Admin, filter: Value) -> (Vec<i64>, usize) {
    let (mut ids, mut pages, mut after) = (Vec::new(), 0, None::<i64>);
    loop {
        let mut body = filter.clone();
        body["job_key"] = json!(JOB);
        if let Some(after) = after {
            body["after_user_id"] = json!(after);
        }
        let (status, page) = admin.send("failures", body).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        ids.extend(user_ids(&page));
        match page["next_after_user_id"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    (ids, pages)
}

#[sqlx::test]
async fn the_job_answer_groups_unresolved_failures_by_class_largest_first(pool: PgPool) {
    seeded_failures(&pool).await;
    // One more 'timeout' failure makes that class the largest.
    sqlx::query(
        "INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error)
         VALUES ($1, 1000, 'timeout', 'timeout: no answer')",
    )
    .bind(JOB)
    .execute(&pool)
    .await
    .unwrap();
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, job) = admin.job(JOB).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        job["failure_classes"],
        json!([
            {"class": "timeout", "count": 101},
            {"class": "http 400", "count": 100},
            {"class": "http 422", "count": 100},
        ])
    );
}

#[sqlx::test]
async fn pages_follow_the_keyset_and_a_filter_and_a_search_narrow_them(pool: PgPool) {
    seeded_failures(&pool).await;
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;

    let (every, pages) = all_pages(&admin, json!({"limit": 40})).await;
    assert_eq!(
        every,
        (1..=300).collect::<Vec<_>>(),
        "every unresolved failure once, in order"
    );
    assert_eq!(pages, 8, "300 rows at 40 a page");

    let (http_400, _) = all_pages(&admin, json!({"class": "http 400", "limit": 25})).await;
    assert_eq!(
        http_400,
        (1..=300).filter(|id| id % 3 == 0).collect::<Vec<_>>()
    );

    // A search inside the message, case-insensitive, within a class.
    let (reset, _) = all_pages(
        &admin,
        json!({"class": "http 422", "q": "CONNECTION RESET"}),
    )
    .await;
    assert_eq!(
        reset,
        (1..=300)
            .filter(|id| id % 3 == 1 && id % 10 == 0)
            .collect::<Vec<_>>()
    );

    // A whole number is a user id, not text: a message naming user 77 is
    // not user 77's failure.
    sqlx::query(
        "INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error)
         VALUES ($1, 1001, 'http 409', 'http 409: a duplicate of user 77')",
    )
    .bind(JOB)
    .execute(&pool)
    .await
    .unwrap();
    let (one_user, _) = all_pages(&admin, json!({"q": " 77 "})).await;
    assert_eq!(one_user, [77]);
    let (by_text, _) = all_pages(&admin, json!({"q": "of user 77"})).await;
    assert_eq!(by_text, [1001]);
    sqlx::query("DELETE FROM identity_graph_backfill_failures WHERE user_id = 1001")
        .execute(&pool)
        .await
        .unwrap();

    // LIKE's own characters are taken literally.
    let (none, _) = all_pages(&admin, json!({"q": "%"})).await;
    assert!(none.is_empty(), "{none:?}");

    // A full last page still says there may be more; the next page is empty.
    let (status, page) = admin
        .send(
            "failures",
            json!({"job_key": JOB, "after_user_id": 299, "limit": 1}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(user_ids(&page), [300]);
    let (_, last) = admin
        .send(
            "failures",
            json!({"job_key": JOB, "after_user_id": 300, "limit": 1}),
        )
        .await;
    assert_eq!(user_ids(&last), Vec::<i64>::new());
    assert_eq!(last["next_after_user_id"], Value::Null);
}

#[sqlx::test]
async fn bad_failures_requests_are_clear_errors(pool: PgPool) {
    seeded_failures(&pool).await;
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    for (body, status, field) in [
        (json!({"job_key": JOB, "limit": 0}), 422, Some("limit")),
        (json!({"job_key": JOB, "limit": 501}), 422, Some("limit")),
        (
            json!({"job_key": JOB, "q": "x".repeat(201)}),
            422,
            Some("q"),
        ),
        (
            json!({"job_key": JOB, "class": "c".repeat(65)}),
            422,
            Some("class"),
        ),
        (json!({"job_key": "no-such-job"}), 404, None),
    ] {
        let (got, answer) = admin.send("failures", body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
}

#[sqlx::test]
async fn a_run_records_the_graphs_answer_as_the_failures_class(pool: PgPool) {
    seed(&pool, 60).await;
    let graph = GraphServer::start().await;
    graph.behave(|id, _| match id % 10 {
        3 => Reply::Status(400),
        7 => Reply::Status(422),
        _ => Reply::Ok,
    });
    let replica = Replica::with_graph(&pool, &graph, &[]);
    let row = replica
        .run(json!({"job_key": "classes", "batch_size": 20, "sleep_ms": 0}))
        .await;
    let detail = replica.detail("classes").await.unwrap();
    let classes: Vec<(&str, i64)> = detail
        .failure_classes
        .iter()
        .map(|c| (c.class.as_str(), c.count))
        .collect();
    let eligible = eligible_ids(&pool).await;
    let count_of = |rest: i64| eligible.iter().filter(|id| *id % 10 == rest).count() as i64;
    assert_eq!(row.failed, count_of(3) + count_of(7));
    let mut expected = vec![("http 400", count_of(3)), ("http 422", count_of(7))];
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    assert_eq!(classes, expected);
}

async fn export(app: &TestApp, cookie: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(app.url(&format!(
        "/api/identity-graph-backfill/failures.csv?{query}"
    )));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

#[sqlx::test]
async fn the_csv_export_holds_exactly_the_filtered_rows(pool: PgPool) {
    seeded_failures(&pool).await;
    let (app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let query = format!("job_key={JOB}&class=http%20422&q=reset");
    let response = export(&app, Some(&admin.cookie), &query).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "user_id,class,message,attempts,first_failed_at,last_failed_at"
    );
    let exported: Vec<i64> = lines
        .map(|line| line.split(',').next().unwrap().parse().unwrap())
        .collect();
    let (listed, _) = all_pages(&admin, json!({"class": "http 422", "q": "reset"})).await;
    assert_eq!(exported, listed);
    assert_eq!(exported.len(), 10);

    // Unfiltered, it holds every unresolved failure and none resolved.
    let all = export(&app, Some(&admin.cookie), &format!("job_key={JOB}"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(all.lines().count(), 1 + 300);
}

#[sqlx::test]
async fn the_csv_export_has_the_job_answers_access_rules(pool: PgPool) {
    seeded_failures(&pool).await;
    let app = TestApp::with_admins(&pool, BUILT_IN_GRAPH).await;
    let query = format!("job_key={JOB}");
    let signed_out = export(&app, None, &query).await;
    assert_eq!(signed_out.status(), 401);
    let viewer = app.session(NOT_ALLOWED).await;
    let off_list = export(&app, Some(&viewer), &query).await;
    assert_eq!(off_list.status(), 403);
    let body = off_list.text().await.unwrap();
    assert!(!body.contains("rejected"), "no failure leaks: {body}");

    let admin = app.session(ALLOWED).await;
    let missing = export(&app, Some(&admin), "job_key=no-such-job").await;
    assert_eq!(missing.status(), 404);
    let bad = export(
        &app,
        Some(&admin),
        &format!("job_key={JOB}&q={}", "x".repeat(201)),
    )
    .await;
    assert_eq!(bad.status(), 422);
}

#[sqlx::test]
async fn a_filtered_retry_sends_exactly_the_filtered_users_and_resolves_them(pool: PgPool) {
    seed(&pool, 80).await;
    let graph = GraphServer::start().await;
    graph.behave(|id, _| match id % 10 {
        3 => Reply::Status(400),
        7 => Reply::Status(422),
        _ => Reply::Ok,
    });
    let replica = Replica::with_graph(&pool, &graph, &[]);
    let key = "filtered-retry";
    replica
        .run(json!({"job_key": key, "batch_size": 20, "sleep_ms": 0}))
        .await;
    let still_422: Vec<i64> = eligible_ids(&pool)
        .await
        .into_iter()
        .filter(|id| id % 10 == 7)
        .collect();
    let the_400s: Vec<i64> = eligible_ids(&pool)
        .await
        .into_iter()
        .filter(|id| id % 10 == 3)
        .collect();
    assert!(!the_400s.is_empty() && !still_422.is_empty());

    // The graph is fixed; only the `http 400` failures are retried.
    graph.behave(|_, _| Reply::Ok);
    let before = graph.exchanges().len();
    let row = replica
        .run(
            json!({"job_key": key, "mode": "failed-only", "failure_class": "http 400",
                    "batch_size": 7, "sleep_ms": 0}),
        )
        .await;
    assert_eq!(row.status().unwrap(), JobStatus::Completed);
    let mut retried: Vec<i64> = graph.exchanges()[before..]
        .iter()
        .map(|e| e.user_id)
        .collect();
    retried.sort_unstable();
    assert_eq!(
        retried, the_400s,
        "the graph saw exactly the filtered users"
    );

    let unresolved: Vec<(i64, String)> = sqlx::query_as(
        "SELECT user_id, class FROM identity_graph_backfill_failures
         WHERE job_key = $1 AND resolved_at IS NULL ORDER BY user_id",
    )
    .bind(key)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        unresolved.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        still_422
    );
    assert!(unresolved.iter().all(|(_, class)| class == "http 422"));

    // The run's options keep the filter, so a resume retries the same set.
    let detail = replica.detail(key).await.unwrap();
    let filter = detail
        .job
        .options
        .failure_filter
        .expect("the filter is kept");
    assert_eq!(filter.class.as_deref(), Some("http 400"));
}

#[sqlx::test]
async fn a_failure_filter_on_a_full_run_is_refused(pool: PgPool) {
    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    for (body, field) in [
        (json!({"failure_class": "http 400"}), "failure_class"),
        (
            json!({"mode": "full", "failure_search": "reset"}),
            "failure_search",
        ),
        (
            json!({"mode": "failed-only", "failure_class": 4}),
            "failure_class",
        ),
        (
            json!({"mode": "failed-only", "failure_search": "x".repeat(201)}),
            "failure_search",
        ),
    ] {
        let (status, answer) = admin.start(body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM identity_graph_backfill_jobs").await,
        0
    );
}

/// The counts the grouped view reads, against a count of the rows: the
/// same classes (no row left at zero or below) with the same numbers.
async fn counts_match_rows(pool: &PgPool, step: &str) {
    let (kept, counted): (Vec<String>, Vec<String>) = sqlx::query_as(
        "SELECT
             coalesce((SELECT array_agg(job_key || '/' || class || '=' || unresolved ORDER BY job_key, class)
                       FROM identity_graph_backfill_failure_counts), '{}'),
             coalesce((SELECT array_agg(job_key || '/' || class || '=' || n ORDER BY job_key, class)
                       FROM (SELECT job_key, class, count(*) AS n FROM identity_graph_backfill_failures
                             WHERE resolved_at IS NULL GROUP BY job_key, class) AS rows), '{}')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(kept, counted, "after {step}");
}

#[sqlx::test]
async fn the_kept_counts_follow_every_change_to_the_failures(pool: PgPool) {
    seeded_failures(&pool).await;
    counts_match_rows(&pool, "seeding").await;
    // A retry that fails again, another way, and a new failure: the runner's upsert.
    sqlx::query(
        "INSERT INTO identity_graph_backfill_failures (job_key, user_id, class, error)
         SELECT $1, user_id, 'connection', 'connection refused'
         FROM unnest(ARRAY[3, 4, 305, 999]::bigint[]) AS t(user_id)
         ON CONFLICT (job_key, user_id) DO UPDATE SET
             class = EXCLUDED.class, error = EXCLUDED.error, resolved_at = NULL,
             attempts = identity_graph_backfill_failures.attempts + 1",
    )
    .bind(JOB)
    .execute(&pool)
    .await
    .unwrap();
    counts_match_rows(&pool, "a retry that failed again").await;
    sqlx::query(
        "UPDATE identity_graph_backfill_failures SET resolved_at = now()
         WHERE job_key = $1 AND user_id = ANY(ARRAY[1, 2, 3, 999]) AND resolved_at IS NULL",
    )
    .bind(JOB)
    .execute(&pool)
    .await
    .unwrap();
    counts_match_rows(&pool, "resolving").await;

    let (_app, admin) = app_with_admin(&pool, BUILT_IN_GRAPH).await;
    let (status, detail) = admin.job(JOB).await;
    assert_eq!(status, 200, "{detail}");
    let total: i64 = detail["failure_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_i64().unwrap())
        .sum();
    assert_eq!(detail["unresolved_failures"], json!(total));
    assert_eq!(
        total,
        300 - 3 + 1,
        "300 seeded, 3 resolved, user 305 failed again"
    );

    // A renamed key carries its failures (ON UPDATE CASCADE), then the job goes.
    sqlx::query("UPDATE identity_graph_backfill_jobs SET job_key = 'renamed' WHERE job_key = $1")
        .bind(JOB)
        .execute(&pool)
        .await
        .unwrap();
    counts_match_rows(&pool, "renaming the job").await;
    sqlx::query("DELETE FROM identity_graph_backfill_jobs WHERE job_key = 'renamed'")
        .execute(&pool)
        .await
        .unwrap();
    counts_match_rows(&pool, "deleting the job").await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM identity_graph_backfill_failure_counts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "a deleted job leaves no counts behind");
}
