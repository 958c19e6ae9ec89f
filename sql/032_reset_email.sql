-- Password-reset e-mails, sent as jobs (defarm_smtp on: the session
-- setting defarm.smtp): the e-mail job is inserted by the transaction that
-- issues the token, so an issued token always has its e-mail and a
-- refused one never does.  A job's payload may name the keys it carries
-- only for as long as it runs ("scrub"): they are removed when it is Done
-- or Dead, so a finished reset e-mail keeps no token in the database.

CREATE FUNCTION defarm_job_scrub() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('Done', 'Dead') AND NEW.payload ? 'scrub' THEN
        NEW.payload := (NEW.payload - ARRAY(
            SELECT jsonb_array_elements_text(NEW.payload -> 'scrub')))
            || jsonb_build_object('scrubbed', NEW.payload -> 'scrub');
        NEW.payload := NEW.payload - 'scrub';
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_scrub BEFORE UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION defarm_job_scrub();

ALTER FUNCTION defarm_reset_issue(text, text, text, text, text, int)
    RENAME TO defarm_reset_issue_unsent;

CREATE FUNCTION defarm_reset_issue(p_email text, p_username text,
                                   p_token text, p_ip text, p_agent text,
                                   p_limit int)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_user  text;
    u       users;
BEGIN
    SELECT * INTO v_user FROM defarm_reset_issue_unsent(p_email, p_username,
                                                        p_token, p_ip,
                                                        p_agent, p_limit);

    IF v_user IS NULL THEN
        RETURN;
    END IF;

    IF defarm_setting_on('defarm.smtp') THEN
        SELECT * INTO u FROM users WHERE id = v_user;

        PERFORM defarm_job_enqueue('email', jsonb_build_object(
            'to', u.email,
            'subject', 'DeFarm password reset',
            'text', 'Hello ' || u.username || E',\n\n'
                    || E'Someone asked to reset the password of your DeFarm '
                    || E'account.\nYour reset token, valid for 30 '
                    || E'minutes:\n\n    ' || p_token || E'\n\n'
                    || E'If it was not you, ignore this message: your '
                    || E'password stays as it is.\n',
            'purpose', 'password_reset', 'user_id', u.id,
            'scrub', jsonb_build_array('text')),
            8, 2000, 600000);
    END IF;

    RETURN NEXT v_user;
END
$$;
