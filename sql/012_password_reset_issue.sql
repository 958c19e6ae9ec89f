-- Issue a password reset token unless the user has had p_limit in the last
-- hour.  A function, not one statement: a statement's count is taken from
-- the snapshot it started with, so concurrent requests for one user all
-- counted the same rows and all inserted.  Here the per-user lock is taken
-- first and the count, a later statement of a volatile function, sees what
-- the previous holder committed.  Returns the user's id, or no row.

CREATE FUNCTION defarm_reset_issue(p_email text, p_username text,
                                   p_token text, p_ip text, p_agent text,
                                   p_limit int)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_user  text;
BEGIN
    SELECT id INTO v_user FROM users
    WHERE (p_email IS NOT NULL AND email = p_email)
       OR (p_email IS NULL AND username = p_username)
    LIMIT 1;

    IF v_user IS NULL THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended('reset:' || v_user, 0));

    IF (SELECT count(*) FROM password_reset_tokens
        WHERE user_id = v_user
          AND created_at > now() - interval '1 hour') >= p_limit
    THEN
        RETURN;
    END IF;

    INSERT INTO password_reset_tokens
        (user_id, token_hash, expires_at, ip_address, user_agent)
    VALUES (v_user, encode(sha256(decode(p_token, 'hex')), 'hex'),
            now() + interval '30 minutes', p_ip, p_agent);

    RETURN NEXT v_user;
END
$$;
