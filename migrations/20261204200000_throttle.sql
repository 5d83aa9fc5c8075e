-- The brake of a running job, as its replica last reported it (the
-- heartbeat writes it about once a second; the run's end clears it): the
-- rate, the in-flight limit, the graph's p50 and p95, and what holds it.
ALTER TABLE identity_graph_backfill_jobs ADD COLUMN throttle jsonb;
