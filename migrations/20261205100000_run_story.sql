-- A run's story (issue 25).
--
-- What a dry run found a real run would do with the same users: write
-- them, or skip them as deleted or with no identifiers. Zero on real jobs.
ALTER TABLE identity_graph_backfill_jobs
    ADD COLUMN would_write bigint NOT NULL DEFAULT 0,
    ADD COLUMN would_skip_deleted bigint NOT NULL DEFAULT 0,
    ADD COLUMN would_skip_no_identifiers bigint NOT NULL DEFAULT 0;

-- Runs are numbered per job (1, 2, …), not by the global id.
ALTER TABLE identity_graph_backfill_runs ADD COLUMN run_number integer;
UPDATE identity_graph_backfill_runs r SET run_number = numbered.n
FROM (SELECT id, row_number() OVER (PARTITION BY job_key ORDER BY id) AS n
      FROM identity_graph_backfill_runs) AS numbered
WHERE r.id = numbered.id;

-- The chart: one sample per run about every 10 s, written by the run's
-- heartbeat; deleted with its run.
CREATE TABLE identity_graph_backfill_run_samples (
    run_id         bigint NOT NULL REFERENCES identity_graph_backfill_runs (id) ON DELETE CASCADE,
    sampled_at     timestamptz NOT NULL DEFAULT now(),
    -- users/s over the last few seconds (the heartbeat's rate)
    rate           double precision NOT NULL,
    -- the Identity Graph's p95 answer time, when the run called it
    latency_p95_ms double precision,
    PRIMARY KEY (run_id, sampled_at)
);
