-- scripts/chaos: what the Identity Graph test server acknowledged, against
-- the job row, the failure rows and the source users. The acknowledged user
-- ids arrive on standard input, one per line; the answer is one JSON object.
--   psql "$RUN_DB" -X -At -v job_key=chaos -f chaos/reconcile.sql < acked.txt
\set ON_ERROR_STOP 1
\set QUIET 1
CREATE TEMP TABLE chaos_acked (user_id bigint NOT NULL);
\copy chaos_acked FROM pstdin
CREATE TEMP TABLE chaos_acked_ids AS SELECT DISTINCT user_id FROM chaos_acked;
CREATE UNIQUE INDEX ON chaos_acked_ids (user_id);

-- Eligible: not deleted, and at least one non-blank identifier. These are the
-- users the runner must write (or record as failed); every other user is
-- skipped with reason `deleted` or `no-identifiers`.
CREATE TEMP TABLE chaos_eligible AS
    SELECT id FROM users
    WHERE deleted_at IS NULL
      AND num_nonnulls(nullif(btrim(email), ''), nullif(btrim(phone), ''),
                       nullif(btrim(signup_ip), ''), nullif(btrim(last_login_ip), ''),
                       nullif(btrim(device_id), '')) > 0;
CREATE UNIQUE INDEX ON chaos_eligible (id);

CREATE TEMP TABLE chaos_unresolved AS
    SELECT user_id FROM identity_graph_backfill_failures
    WHERE job_key = :'job_key' AND resolved_at IS NULL;
CREATE UNIQUE INDEX ON chaos_unresolved (user_id);

-- Lost: eligible, never acknowledged by the graph, and not recorded as an
-- unresolved failure. Nobody would ever notice these users are missing.
CREATE TEMP TABLE chaos_lost AS
    SELECT e.id FROM chaos_eligible e
    WHERE NOT EXISTS (SELECT 1 FROM chaos_acked_ids a WHERE a.user_id = e.id)
      AND NOT EXISTS (SELECT 1 FROM chaos_unresolved f WHERE f.user_id = e.id);

SELECT json_build_object(
    'job_found', j.job_key IS NOT NULL,
    'status', j.status,
    'pause_reason', j.pause_reason,
    'last_error', j.last_error,
    'cursor', coalesce(j.cursor, 0),
    'processed', coalesce(j.processed, 0),
    'failed', coalesce(j.failed, 0),
    'skipped', coalesce(j.skipped, 0),
    'skipped_dry_run', coalesce(j.skipped_dry_run, 0),
    'skipped_deleted', coalesce(j.skipped_deleted, 0),
    'skipped_no_identifiers', coalesce(j.skipped_no_identifiers, 0),
    'users', (SELECT count(*) FROM users),
    'max_user_id', (SELECT coalesce(max(id), 0) FROM users),
    'users_le_cursor', (SELECT count(*) FROM users WHERE id <= coalesce(j.cursor, 0)),
    'deleted_le_cursor', (SELECT count(*) FROM users
                          WHERE id <= coalesce(j.cursor, 0) AND deleted_at IS NOT NULL),
    'no_identifiers_le_cursor', (SELECT count(*) FROM users u
                                 WHERE u.id <= coalesce(j.cursor, 0) AND u.deleted_at IS NULL
                                   AND NOT EXISTS (SELECT 1 FROM chaos_eligible e WHERE e.id = u.id)),
    'eligible', (SELECT count(*) FROM chaos_eligible),
    'eligible_le_cursor', (SELECT count(*) FROM chaos_eligible WHERE id <= coalesce(j.cursor, 0)),
    'unresolved', (SELECT count(*) FROM chaos_unresolved),
    'unresolved_not_eligible_or_beyond_cursor',
        (SELECT count(*) FROM chaos_unresolved f
         WHERE f.user_id > coalesce(j.cursor, 0)
            OR NOT EXISTS (SELECT 1 FROM chaos_eligible e WHERE e.id = f.user_id)),
    'acked_unique', (SELECT count(*) FROM chaos_acked_ids),
    'acked_total', (SELECT count(*) FROM chaos_acked),
    'acked_not_eligible', (SELECT count(*) FROM chaos_acked_ids a
                           WHERE NOT EXISTS (SELECT 1 FROM chaos_eligible e WHERE e.id = a.user_id)),
    'acked_not_eligible_ids', (SELECT coalesce(json_agg(user_id ORDER BY user_id), '[]') FROM
                               (SELECT a.user_id FROM chaos_acked_ids a
                                WHERE NOT EXISTS (SELECT 1 FROM chaos_eligible e WHERE e.id = a.user_id)
                                ORDER BY a.user_id LIMIT 20) t),
    'acked_and_unresolved', (SELECT count(*) FROM chaos_unresolved f
                             JOIN chaos_acked_ids a ON a.user_id = f.user_id),
    'lost', (SELECT count(*) FROM chaos_lost),
    'lost_le_cursor', (SELECT count(*) FROM chaos_lost WHERE id <= coalesce(j.cursor, 0)),
    'lost_ids', (SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM
                 (SELECT id FROM chaos_lost ORDER BY id LIMIT 20) t),
    'lost_ids_le_cursor', (SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM
                           (SELECT id FROM chaos_lost WHERE id <= coalesce(j.cursor, 0)
                            ORDER BY id LIMIT 20) t),
    'runs', (SELECT count(*) FROM identity_graph_backfill_runs r WHERE r.job_key = :'job_key'),
    'negative_runs', (SELECT count(*) FROM identity_graph_backfill_runs r
                      WHERE r.job_key = :'job_key' AND least(r.processed, r.failed, r.skipped) < 0),
    'open_runs', (SELECT count(*) FROM identity_graph_backfill_runs r
                  WHERE r.job_key = :'job_key' AND r.ended_at IS NULL),
    'run_outcomes', (SELECT coalesce(json_object_agg(outcome, n), '{}') FROM
                     (SELECT coalesce(outcome, 'open') AS outcome, count(*) AS n
                      FROM identity_graph_backfill_runs r WHERE r.job_key = :'job_key'
                      GROUP BY 1) t)
)
FROM (SELECT 1) AS one
LEFT JOIN identity_graph_backfill_jobs j ON j.job_key = :'job_key';
