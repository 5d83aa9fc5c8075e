-- The notification outbox: one row each time a job comes to rest (completed,
-- paused, failed, stopped). The trigger writes it in the same transaction as
-- the status change, whichever code path made it, so an event is never lost
-- to a crash; a replica's notifier delivers it to NOTIFY_WEBHOOK_URL later,
-- off the run's path, and records the outcome here.
CREATE TABLE identity_graph_backfill_notifications (
    id              bigserial PRIMARY KEY,
    job_key         text NOT NULL REFERENCES identity_graph_backfill_jobs (job_key)
                        ON DELETE CASCADE ON UPDATE CASCADE,
    event           text NOT NULL,
    pause_reason    text,
    dry_run         boolean NOT NULL,
    processed       bigint NOT NULL,
    failed          bigint NOT NULL,
    skipped         bigint NOT NULL,
    cursor          bigint NOT NULL,
    -- read by the notifier, not the trigger: a status change must never
    -- depend on reading the source (a run fails *because* it cannot)
    source_max_id   bigint,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- pending → delivered | expired
    state           text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    -- when the next attempt may start; a claim moves it past the attempt's timeout
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_outcome    text,
    delivered_at    timestamptz
);
CREATE INDEX identity_graph_backfill_notifications_due
    ON identity_graph_backfill_notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX identity_graph_backfill_notifications_by_job
    ON identity_graph_backfill_notifications (job_key, id DESC);

CREATE FUNCTION identity_graph_backfill_notify_rest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('completed', 'paused', 'failed', 'stopped')
       AND NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO identity_graph_backfill_notifications
            (job_key, event, pause_reason, dry_run, processed, failed, skipped, cursor,
             source_max_id, last_error)
        VALUES (NEW.job_key, NEW.status, NEW.pause_reason, NEW.dry_run, NEW.processed,
                NEW.failed, NEW.skipped, NEW.cursor, NULL, NEW.last_error);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER identity_graph_backfill_jobs_notify_rest
    AFTER UPDATE OF status ON identity_graph_backfill_jobs
    FOR EACH ROW EXECUTE FUNCTION identity_graph_backfill_notify_rest();
