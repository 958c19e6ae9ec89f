-- A claim answers each job's max_attempts itself, and makes a job whole
-- at its first claim: a webhook's (defarm_webhook_materialize, sql/035),
-- an upload's (defarm_storage_materialize, sql/034).  The module read it by
-- joining the claim's rows with jobs in the same statement; but that
-- statement's snapshot is older than the claim's (a volatile function
-- takes a new one for each of its statements), so a job queued in
-- between was claimed, leased and then dropped by the join: never run,
-- it waited out its lease (60 s by default) to be claimed again.

DROP FUNCTION defarm_job_claim(text[], int, int);

CREATE FUNCTION defarm_job_claim(p_kinds text[], p_n int, p_lease_ms int)
RETURNS TABLE (job_id bigint, kind text, payload jsonb, attempts int,
               lease_token uuid, max_attempts int)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs j SET state = 'Dead', finished_at = now(),
                      lease_token = NULL,
                      last_error = coalesce(j.last_error || '; ', '')
                                   || 'the lease ran out on the last attempt'
    WHERE j.state = 'Running' AND j.lease_until < now()
      AND j.attempts >= j.max_attempts AND j.kind = ANY (p_kinds);

    RETURN QUERY
    WITH due AS (
        SELECT x.job_id FROM jobs x
        WHERE x.kind = ANY (p_kinds)
          AND ((x.state = 'Pending' AND x.next_attempt_at <= now())
               OR (x.state = 'Running' AND x.lease_until < now()))
        ORDER BY x.next_attempt_at
        LIMIT p_n
        FOR UPDATE SKIP LOCKED)
    UPDATE jobs j SET state = 'Running', attempts = j.attempts + 1,
                      lease_until = now() + p_lease_ms * interval '1 ms',
                      lease_token = gen_random_uuid(),
                      payload = CASE
                          WHEN j.kind = 'webhook' AND NOT j.payload ? 'body'
                              THEN defarm_webhook_materialize(j.payload)
                          WHEN j.kind = 'ipfs_upload'
                               AND NOT j.payload ? 'doc'
                              THEN defarm_storage_materialize(j.payload)
                          ELSE j.payload END
    FROM due
    WHERE j.job_id = due.job_id
    RETURNING j.job_id, j.kind, j.payload, j.attempts, j.lease_token,
              j.max_attempts;
END
$$;

-- A job's NOTIFY wakes the runners at its commit.  Each NOTIFY takes a
-- lock of the whole database's notification queue at its commit, which
-- made committing transactions queue behind one another: so one
-- transaction among those queueing jobs at a time notifies (it holds a
-- transaction advisory lock; the others, failing to take it, do not).
-- Their jobs are not left waiting: one that commits before the notifier
-- is claimed at the notifier's wake; one that commits after it, by the
-- claim every runner makes as a job of its ends, or, when none was
-- running, at the runner's poll (defarm_jobs interval).

CREATE OR REPLACE FUNCTION defarm_job_enqueue(p_kind text, p_payload jsonb,
                                              p_max_attempts int DEFAULT 5,
                                              p_backoff_ms int DEFAULT 1000,
                                              p_max_backoff_ms int
                                                  DEFAULT 300000)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id  bigint;
BEGIN
    INSERT INTO jobs (kind, payload, max_attempts, backoff_ms,
                      max_backoff_ms)
    VALUES (p_kind, p_payload, p_max_attempts, p_backoff_ms,
            p_max_backoff_ms)
    RETURNING job_id INTO v_id;

    -- hashtext('defarm_jobs'): the key of the one notifier
    IF pg_try_advisory_xact_lock(-2075034305) THEN
        PERFORM pg_notify('defarm_jobs', p_kind);
    END IF;

    RETURN v_id;
END
$$;
