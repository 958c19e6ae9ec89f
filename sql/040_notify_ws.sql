-- The WebSocket channel of notifications (src/ws/).  A worker with sockets
-- LISTENs on defarm_notification; what it hears:
--
--   '<user_id> <seq> <notification JSON>'  a new notification, whole
--   '<user_id> <seq>'                      one too big for a NOTIFY's
--                                          8000 bytes: the worker reads it
--   '<user_id> - <reason>'                 the user's sockets must close
--                                          (frozen, banned, deleted, or
--                                          their tokens revoked)
--
-- so that a notification reaches its sockets with no query at all.


CREATE OR REPLACE FUNCTION defarm_notify(p_users text[], p_type text,
                                         p_title text, p_message text,
                                         p_data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n        notifications;
    v_head   text;
    v_json   text;
BEGIN
    FOR n IN
        INSERT INTO notifications (user_id, notification_type, title,
                                   message, data)
        SELECT DISTINCT u, p_type, p_title, p_message, p_data
        FROM unnest(p_users) u WHERE u IS NOT NULL
        RETURNING *
    LOOP
        v_head := n.user_id || ' ' || n.seq;
        v_json := defarm_notification_json(n)::text;

        IF octet_length(v_head) + octet_length(v_json) < 7990 THEN
            PERFORM pg_notify('defarm_notification',
                              v_head || ' ' || v_json);
        ELSE
            PERFORM pg_notify('defarm_notification', v_head);
        END IF;
    END LOOP;
END
$$;


-- A user's sockets close when they may no longer be open.  Deferred to
-- the commit, so that the notification of the same change (AccountFrozen)
-- is announced, and delivered, before the close.

CREATE FUNCTION defarm_ws_user_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('defarm_notification',
                          OLD.id || ' - account deleted');

    ELSIF NEW.status IS DISTINCT FROM OLD.status
          AND NEW.status <> 'Active'
    THEN
        PERFORM pg_notify('defarm_notification',
                          NEW.id || ' - account '
                          || CASE NEW.status WHEN 'Suspended' THEN 'frozen'
                                             ELSE lower(NEW.status) END);

    ELSIF NEW.token_version IS DISTINCT FROM OLD.token_version THEN
        PERFORM pg_notify('defarm_notification',
                          NEW.id || ' - token revoked');
    END IF;

    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER users_ws_gone
    AFTER UPDATE OF status, token_version OR DELETE ON users
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION defarm_ws_user_gone();


-- A socket opens: the user's unread count, and the newest seq it covers
-- (what a catch-up starts after).  "count seq".

CREATE FUNCTION defarm_ws_open(p_user text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE NOT is_read) || ' '
           || coalesce(max(seq), 0)
    FROM notifications WHERE user_id = p_user
$$;


-- One notification too big for its NOTIFY: the frame's JSON, or nothing.

CREATE FUNCTION defarm_ws_notification(p_user text, p_seq bigint)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT defarm_notification_json(n)::text FROM notifications n
    WHERE n.user_id = p_user AND n.seq = p_seq
$$;


-- After a time without LISTEN (the connection failed, or is new): what
-- each user's sockets may have missed, given as lines "<user_id> <seq>"
-- (the newest seq they had).  At most 100 a user, oldest first: more is a
-- lag, and the REST list has them all.

CREATE FUNCTION defarm_ws_since(p_users text)
RETURNS TABLE (user_id text, seq bigint, notification text)
LANGUAGE sql STABLE AS $$
    SELECT w.u, n.seq, defarm_notification_json(n)::text
    FROM (SELECT split_part(l, ' ', 1) AS u,
                 split_part(l, ' ', 2)::bigint AS s
          FROM unnest(string_to_array(p_users, E'\n')) l
          WHERE l <> '') w
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT * FROM notifications x
            WHERE x.user_id = w.u AND x.seq > w.s
            ORDER BY x.seq DESC LIMIT 100) last
        ORDER BY last.seq) n
$$;


-- {"action":"mark_read","notification_id"} from a socket: the frame that
-- answers it.

CREATE FUNCTION defarm_ws_mark_read(p_user text, p_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_found  boolean;
BEGIN
    IF p_id IS NULL
       OR p_id !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    THEN
        RETURN jsonb_build_object('type', 'error', 'message',
                                  'notification_id must be a UUID')::text;
    END IF;

    UPDATE notifications
    SET is_read = true, read_at = coalesce(read_at, now())
    WHERE notification_id = p_id::uuid AND user_id = p_user;

    v_found := FOUND;

    IF NOT v_found THEN
        RETURN jsonb_build_object('type', 'error', 'message',
                                  'Notification not found')::text;
    END IF;

    RETURN (SELECT jsonb_build_object('type', 'unread_count',
                                      'count', count(*))::text
            FROM notifications
            WHERE user_id = p_user AND NOT is_read);
END
$$;
