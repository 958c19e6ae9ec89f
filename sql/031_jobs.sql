-- Durable jobs: the work a change causes outside its request (webhook
-- deliveries, e-mails, uploads).  A job is inserted by the transaction of
-- the change that causes it (defarm_job_enqueue), so a committed change
-- never loses its job and a rolled-back one never has one; its NOTIFY
-- goes out at the commit.  The nginx workers of every node claim due
-- jobs (defarm_job_claim: FOR UPDATE SKIP LOCKED, each claim with a lease
-- and a token of its own), run them on the event loop and record the
-- outcome with that token (defarm_job_done, defarm_job_failed): a job
-- whose worker died is claimed again when its lease runs out, and the
-- late outcome of a lost lease is ignored.  Failures are retried after
-- exponentially growing delays with jitter, up to max_attempts; then the
-- job is Dead, kept with its last error.

CREATE TABLE jobs (
    job_id           bigserial PRIMARY KEY,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'Pending'
                     CHECK (state IN ('Pending', 'Running', 'Done', 'Dead')),
    attempts         int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    backoff_ms       int NOT NULL DEFAULT 1000 CHECK (backoff_ms >= 0),
    max_backoff_ms   int NOT NULL DEFAULT 300000,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    lease_token      uuid,
    last_error       text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state = 'Pending';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'Running';

CREATE FUNCTION defarm_job_enqueue(p_kind text, p_payload jsonb,
                                   p_max_attempts int DEFAULT 5,
                                   p_backoff_ms int DEFAULT 1000,
                                   p_max_backoff_ms int DEFAULT 300000)
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

    PERFORM pg_notify('defarm_jobs', p_kind);

    RETURN v_id;
END
$$;

-- up to p_n due jobs of the kinds this worker runs, leased for p_lease_ms;
-- a job whose lease ran out with no attempt left is Dead instead

CREATE FUNCTION defarm_job_claim(p_kinds text[], p_n int, p_lease_ms int)
RETURNS TABLE (job_id bigint, kind text, payload jsonb, attempts int,
               lease_token uuid)
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
    RETURNING j.job_id, j.kind, j.payload, j.attempts, j.lease_token;
END
$$;

CREATE FUNCTION defarm_job_done(p_id bigint, p_token uuid, p_result jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET state = 'Done', result = p_result, finished_at = now(),
                    lease_until = NULL, lease_token = NULL
    WHERE job_id = p_id AND lease_token = p_token AND state = 'Running';

    RETURN FOUND;
END
$$;

-- a failed attempt: again after backoff * 2^(attempts - 1), at most
-- max_backoff, with a jitter of up to a fifth either way; Dead when no
-- attempt is left or the failure is final

CREATE FUNCTION defarm_job_failed(p_id bigint, p_token uuid, p_error text,
                                  p_final boolean, p_result jsonb)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_state  text;
BEGIN
    UPDATE jobs j SET
        state = CASE WHEN p_final OR j.attempts >= j.max_attempts
                     THEN 'Dead' ELSE 'Pending' END,
        next_attempt_at = now() + least(
            j.max_backoff_ms::float8,
            j.backoff_ms * power(2, greatest(j.attempts - 1, 0)))
            * (0.8 + random() * 0.4) * interval '1 ms',
        finished_at = CASE WHEN p_final OR j.attempts >= j.max_attempts
                           THEN now() END,
        last_error = left(p_error, 2000), result = p_result,
        lease_until = NULL, lease_token = NULL
    WHERE j.job_id = p_id AND j.lease_token = p_token AND j.state = 'Running'
    RETURNING j.state INTO v_state;

    RETURN v_state;
END
$$;

-- for /metrics: how many jobs each kind has in each state

CREATE FUNCTION defarm_job_counts()
RETURNS TABLE (kind text, state text, n bigint)
LANGUAGE sql STABLE AS $$
    SELECT kind, state, count(*) FROM jobs GROUP BY kind, state
$$;
