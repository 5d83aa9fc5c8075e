-- Every failure says what kind of error it was (`http 400`, `timeout`,
-- `sqlstate 23` …), so a job's failures can be grouped, filtered, exported
-- and retried by reason. Failures recorded before this have no class.
ALTER TABLE identity_graph_backfill_failures
    ADD COLUMN class text NOT NULL DEFAULT 'unclassified';
ALTER TABLE identity_graph_backfill_failures ALTER COLUMN class DROP DEFAULT;

-- The grouped counts, and a class's failures in user id order (keyset pages).
CREATE INDEX identity_graph_backfill_failures_by_class
    ON identity_graph_backfill_failures (job_key, class, user_id) WHERE resolved_at IS NULL;

-- A search inside the messages. pg_trgm is a trusted extension: a database
-- owner may create it without superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX identity_graph_backfill_failures_message_search
    ON identity_graph_backfill_failures USING gin (error gin_trgm_ops) WHERE resolved_at IS NULL;
