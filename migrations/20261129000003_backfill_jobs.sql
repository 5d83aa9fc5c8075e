-- One row per job key; the database is the truth for every replica (DESIGN §3, §6).
CREATE TABLE identity_graph_backfill_jobs (
    job_key                text PRIMARY KEY,
    status                 text NOT NULL,
    dry_run                boolean NOT NULL DEFAULT false,
    mode                   text NOT NULL DEFAULT 'full',
    options                jsonb NOT NULL,
    cursor                 bigint NOT NULL DEFAULT 0,
    processed              bigint NOT NULL DEFAULT 0,
    failed                 bigint NOT NULL DEFAULT 0,
    skipped                bigint NOT NULL DEFAULT 0,
    skipped_dry_run        bigint NOT NULL DEFAULT 0,
    skipped_deleted        bigint NOT NULL DEFAULT 0,
    skipped_no_identifiers bigint NOT NULL DEFAULT 0,
    consecutive_failures   integer NOT NULL DEFAULT 0,
    last_error             text,
    pause_reason           text,
    stop_requested         boolean NOT NULL DEFAULT false,
    started_by             text,
    stopped_by             text,
    started_at             timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    finished_at            timestamptz,
    -- the lease: which replica runs it, and when it last said so
    owner                  text,
    heartbeat_at           timestamptz,
    -- the current run, for throughput
    run_started_at         timestamptz,
    run_scanned            bigint NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identity_graph_backfill_jobs_status ON identity_graph_backfill_jobs (status);

CREATE TABLE identity_graph_backfill_failures (
    job_key         text NOT NULL REFERENCES identity_graph_backfill_jobs (job_key) ON DELETE CASCADE,
    user_id         bigint NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    PRIMARY KEY (job_key, user_id)
);
CREATE INDEX identity_graph_backfill_failures_unresolved
    ON identity_graph_backfill_failures (job_key, user_id) WHERE resolved_at IS NULL;

-- The audit trail: every run, who or what started it, who stopped it, how it ended.
CREATE TABLE identity_graph_backfill_runs (
    id          bigserial PRIMARY KEY,
    job_key     text NOT NULL REFERENCES identity_graph_backfill_jobs (job_key) ON DELETE CASCADE,
    trigger     text NOT NULL,
    started_by  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    outcome     text,
    stopped_by  text,
    stopped_at  timestamptz,
    processed   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    owner       text NOT NULL
);
CREATE INDEX identity_graph_backfill_runs_job ON identity_graph_backfill_runs (job_key, started_at DESC);
