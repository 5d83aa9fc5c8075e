-- Dry runs live under `<key>:dry-run`, leases belong to one run, and the
-- retry-old-failures pass continues where the last run left it.

-- A job's key may be renamed (below); its failures and runs follow it.
ALTER TABLE identity_graph_backfill_failures
    DROP CONSTRAINT identity_graph_backfill_failures_job_key_fkey,
    ADD CONSTRAINT identity_graph_backfill_failures_job_key_fkey
        FOREIGN KEY (job_key) REFERENCES identity_graph_backfill_jobs (job_key)
        ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE identity_graph_backfill_runs
    DROP CONSTRAINT identity_graph_backfill_runs_job_key_fkey,
    ADD CONSTRAINT identity_graph_backfill_runs_job_key_fkey
        FOREIGN KEY (job_key) REFERENCES identity_graph_backfill_jobs (job_key)
        ON DELETE CASCADE ON UPDATE CASCADE;

-- Earlier releases recorded a dry run on a named key under that key itself,
-- where it moved the real job's cursor. Move each such rehearsal to its
-- `:dry-run` twin so the real key starts from nothing. A row whose twin
-- already exists, or whose key would grow past 120 characters, stays; a real
-- start on it is refused because its dry_run flag never changes.
UPDATE identity_graph_backfill_jobs j
SET job_key = j.job_key || ':dry-run', updated_at = now()
WHERE j.dry_run
  AND j.job_key NOT LIKE '%:dry-run'
  AND length(j.job_key) <= 112
  AND j.status NOT IN ('running', 'stopping')
  AND NOT EXISTS (
      SELECT 1 FROM identity_graph_backfill_jobs twin WHERE twin.job_key = j.job_key || ':dry-run');

-- The retry pass: the last failed user id it handled, and the cursor it
-- covers up to. NULL position = no pass in progress.
ALTER TABLE identity_graph_backfill_jobs
    ADD COLUMN retry_position bigint,
    ADD COLUMN retry_until bigint,
    -- the highest source user id when the current run started: the progress bar's 100%
    ADD COLUMN source_max_id bigint;
