-- Scale: the coverage check is stored on the job (computed once when a run
-- ends, or on "Check again"), never on a page load; the console's queries
-- have indexes that match their ORDER BY and WHERE.

ALTER TABLE identity_graph_backfill_jobs
    -- The last coverage check's result (the API's `Coverage`, without `checked_at`).
    ADD COLUMN coverage jsonb,
    -- When that check read the source: the result is as of this time.
    ADD COLUMN coverage_checked_at timestamptz,
    -- Why the last check could not finish (e.g. it ran past COVERAGE_CHECK_TIMEOUT_MS);
    -- NULL after a check that finished.
    ADD COLUMN coverage_error text;

-- recent_failures: WHERE job_key = $1 AND resolved_at IS NULL
-- ORDER BY last_failed_at DESC, user_id DESC LIMIT n.
CREATE INDEX identity_graph_backfill_failures_recent
    ON identity_graph_backfill_failures (job_key, last_failed_at DESC, user_id DESC)
    WHERE resolved_at IS NULL;

-- recent_runs: WHERE job_key = $1 ORDER BY id DESC LIMIT n.
CREATE INDEX identity_graph_backfill_runs_job_id ON identity_graph_backfill_runs (job_key, id DESC);
