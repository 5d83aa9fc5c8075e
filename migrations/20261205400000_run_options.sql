-- The job's history (issue 23): each run keeps the options it started
-- with, so the timeline can say what every run was asked to do, not only
-- what the job holds now. NULL for runs recorded before this release.
ALTER TABLE identity_graph_backfill_runs ADD COLUMN options jsonb;
