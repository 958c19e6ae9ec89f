-- A claim answers each job's max_attempts itself.  The module read it by
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
                      lease_token = gen_random_uuid()
    FROM due
    WHERE j.job_id = due.job_id
    RETURNING j.job_id, j.kind, j.payload, j.attempts, j.lease_token,
              j.max_attempts;
END
$$;
