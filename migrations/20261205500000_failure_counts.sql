-- Unresolved failures by class, kept current as failures are recorded,
-- retried, resolved and deleted, so the job page's grouped view and its
-- total read a handful of rows instead of counting a million (issue 23:
-- the grouped view answers in < 50 ms at 1,000,000 failures; counting the
-- rows took about 350 ms there).
--
-- Statement-level triggers with transition tables: one upsert per class per
-- statement, not one per row. The runner records a batch's failures in the
-- transaction that already locks the job's row for its checkpoint, so the
-- counter rows add no new contention. No foreign key: deleting a job
-- cascades to its failures, whose trigger then zeroes (and removes) the
-- counts after the job row is gone.
-- Replicas of the previous release keep recording failures while this
-- runs (docs/upgrades.md): hold their writes until the counts and the
-- triggers are both in place, so no batch falls between the count and the
-- trigger.
LOCK TABLE identity_graph_backfill_failures IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE identity_graph_backfill_failure_counts (
    job_key    text NOT NULL,
    class      text NOT NULL,
    unresolved bigint NOT NULL,
    PRIMARY KEY (job_key, class)
);

INSERT INTO identity_graph_backfill_failure_counts (job_key, class, unresolved)
SELECT job_key, class, count(*) FROM identity_graph_backfill_failures
WHERE resolved_at IS NULL GROUP BY job_key, class;

CREATE FUNCTION identity_graph_backfill_failure_counts_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO identity_graph_backfill_failure_counts AS counts (job_key, class, unresolved)
    SELECT job_key, class, count(*) FROM inserted WHERE resolved_at IS NULL
    GROUP BY job_key, class
    ON CONFLICT (job_key, class) DO UPDATE SET unresolved = counts.unresolved + EXCLUDED.unresolved;
    RETURN NULL;
END;
$$;

CREATE FUNCTION identity_graph_backfill_failure_counts_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO identity_graph_backfill_failure_counts AS counts (job_key, class, unresolved)
    SELECT job_key, class, sum(change) FROM (
        SELECT job_key, class, -1 AS change FROM before_update WHERE resolved_at IS NULL
        UNION ALL
        SELECT job_key, class, 1 FROM after_update WHERE resolved_at IS NULL
    ) AS changes
    GROUP BY job_key, class HAVING sum(change) <> 0
    ON CONFLICT (job_key, class) DO UPDATE SET unresolved = counts.unresolved + EXCLUDED.unresolved;
    DELETE FROM identity_graph_backfill_failure_counts
    WHERE unresolved = 0 AND job_key IN (SELECT job_key FROM before_update);
    RETURN NULL;
END;
$$;

CREATE FUNCTION identity_graph_backfill_failure_counts_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE identity_graph_backfill_failure_counts AS counts
    SET unresolved = counts.unresolved - gone.n
    FROM (SELECT job_key, class, count(*) AS n FROM deleted WHERE resolved_at IS NULL
          GROUP BY job_key, class) AS gone
    WHERE counts.job_key = gone.job_key AND counts.class = gone.class;
    DELETE FROM identity_graph_backfill_failure_counts
    WHERE unresolved = 0 AND job_key IN (SELECT job_key FROM deleted);
    RETURN NULL;
END;
$$;

CREATE TRIGGER identity_graph_backfill_failures_count_inserted
    AFTER INSERT ON identity_graph_backfill_failures
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION identity_graph_backfill_failure_counts_inserted();
CREATE TRIGGER identity_graph_backfill_failures_count_updated
    AFTER UPDATE ON identity_graph_backfill_failures
    REFERENCING OLD TABLE AS before_update NEW TABLE AS after_update
    FOR EACH STATEMENT EXECUTE FUNCTION identity_graph_backfill_failure_counts_updated();
CREATE TRIGGER identity_graph_backfill_failures_count_deleted
    AFTER DELETE ON identity_graph_backfill_failures
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION identity_graph_backfill_failure_counts_deleted();
