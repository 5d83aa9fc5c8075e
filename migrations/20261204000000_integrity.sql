-- Integrity: newest read wins in the built-in graph, late arrivals below the
-- cursor are caught up, identifiers dropped by normalization are counted,
-- and a job is bound to one Identity Graph.

-- The database time at which the source row written was read; an older
-- read of the same user is ignored. NULL for rows written before this column.
ALTER TABLE identity_graph_users ADD COLUMN observed_at timestamptz;

-- Ids the scan found absent below its cursor: between after_id and before_id
-- (both exclusive) no user was visible when the scan passed. A user that
-- appears there later (a late commit, an import with a low id) is a late
-- arrival, and the job's next run catches it up and splits the gap.
CREATE TABLE identity_graph_backfill_gaps (
    job_key   text NOT NULL REFERENCES identity_graph_backfill_jobs (job_key)
              ON DELETE CASCADE ON UPDATE CASCADE,
    after_id  bigint NOT NULL,
    before_id bigint NOT NULL,
    PRIMARY KEY (job_key, after_id),
    CHECK (before_id > after_id + 1)
);

ALTER TABLE identity_graph_backfill_jobs
    -- "kind: reason" → how many values normalization dropped, e.g. {"email: not an address": 12}
    ADD COLUMN dropped_identifiers jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The Identity Graph the job writes to: 'postgres', or 'http <url without credentials>'.
    -- NULL until a real run binds it (dry runs write nowhere).
    ADD COLUMN graph text;
