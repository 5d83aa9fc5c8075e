-- Live tuning: every change of a running job's knobs (`tune`), who made it,
-- when, and the value before and after.
CREATE TABLE identity_graph_backfill_tunings (
    id        bigserial PRIMARY KEY,
    job_key   text NOT NULL REFERENCES identity_graph_backfill_jobs (job_key)
              ON DELETE CASCADE ON UPDATE CASCADE,
    tuned_by  text NOT NULL,
    tuned_at  timestamptz NOT NULL DEFAULT now(),
    field     text NOT NULL,
    old_value bigint NOT NULL,
    new_value bigint NOT NULL
);
CREATE INDEX identity_graph_backfill_tunings_job ON identity_graph_backfill_tunings (job_key, id DESC);
