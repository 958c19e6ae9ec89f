-- Notifications, stored.  Circuit changes notify the people concerned, in
-- the transaction of the change (triggers), whichever function made it:
--   join request made      -> the owner and members with ManageMembers
--   join request decided   -> the requester
--   member added           -> that member (not the owner, at creation)
--   member's role changed  -> that member
--   push waiting approval  -> the owner and members with ManageMembers
--   pending push decided   -> the requester
-- "seq" orders a user's notifications for a feed (the WebSocket channel,
-- later) and each one is also announced with NOTIFY defarm_notification
-- '<user_id> <seq>' at commit, so a listener needs no polling.

CREATE TABLE notifications (
    notification_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq                 bigserial,
    user_id             text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    notification_type   text NOT NULL,
    title               text NOT NULL,
    message             text NOT NULL,
    data                jsonb NOT NULL DEFAULT '{}',
    is_read             boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    read_at             timestamptz
);

CREATE INDEX notifications_user ON notifications (user_id, seq DESC);
CREATE INDEX notifications_unread ON notifications (user_id)
    WHERE NOT is_read;

CREATE FUNCTION defarm_notify(p_users text[], p_type text, p_title text,
                              p_message text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n  notifications;
BEGIN
    FOR n IN
        INSERT INTO notifications (user_id, notification_type, title,
                                   message, data)
        SELECT DISTINCT u, p_type, p_title, p_message, p_data
        FROM unnest(p_users) u WHERE u IS NOT NULL
        RETURNING *
    LOOP
        PERFORM pg_notify('defarm_notification', n.user_id || ' ' || n.seq);
    END LOOP;
END
$$;

-- the owner and the members who may decide (ManageMembers)

CREATE FUNCTION defarm_circuit_deciders(p_circuit uuid) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(DISTINCT m.member_id) FROM circuit_members m
    WHERE m.circuit_id = p_circuit
      AND (m.role = 'Owner' OR 'ManageMembers' = ANY (m.permissions))
$$;

CREATE FUNCTION defarm_circuit_name(p_circuit uuid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT name FROM circuits WHERE circuit_id = p_circuit
$$;


CREATE FUNCTION defarm_notify_join_request() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_data  jsonb := jsonb_build_object('circuit_id', NEW.circuit_id,
                                        'requester_id', NEW.requester_id);
    v_name  text := defarm_circuit_name(NEW.circuit_id);
BEGIN
    IF NEW.status = 'Pending'
       AND (TG_OP = 'INSERT' OR OLD.status <> 'Pending')
    THEN
        PERFORM defarm_notify(defarm_circuit_deciders(NEW.circuit_id),
                              'JoinRequestReceived', 'Join request',
                              NEW.requester_id || ' asks to join ' || v_name,
                              v_data || jsonb_build_object('message',
                                                           NEW.message));

    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'Pending'
          AND NEW.status IN ('Approved', 'Rejected')
    THEN
        PERFORM defarm_notify(ARRAY[NEW.requester_id],
                              'JoinRequest' || NEW.status,
                              'Join request ' || lower(NEW.status),
                              'Your request to join ' || v_name || ' was '
                              || lower(NEW.status),
                              v_data || jsonb_build_object('decided_by',
                                                           NEW.decided_by));
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_join_requests_notify
    AFTER INSERT OR UPDATE ON circuit_join_requests
    FOR EACH ROW EXECUTE FUNCTION defarm_notify_join_request();


CREATE FUNCTION defarm_notify_member() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_data  jsonb := jsonb_build_object('circuit_id', NEW.circuit_id,
                                        'role', NEW.role,
                                        'custom_role_name',
                                        NEW.custom_role_name,
                                        'permissions',
                                        to_jsonb(NEW.permissions));
BEGIN
    IF TG_OP = 'INSERT' AND NEW.role <> 'Owner' THEN
        PERFORM defarm_notify(ARRAY[NEW.member_id], 'MemberAdded',
                              'Added to a circuit',
                              'You were added to '
                              || defarm_circuit_name(NEW.circuit_id)
                              || ' as ' || NEW.role, v_data);

    ELSIF TG_OP = 'UPDATE'
          AND (NEW.permissions IS DISTINCT FROM OLD.permissions
               OR NEW.custom_role_name IS DISTINCT FROM OLD.custom_role_name)
    THEN
        PERFORM defarm_notify(ARRAY[NEW.member_id], 'RoleChanged',
                              'Your role changed',
                              'Your role in '
                              || defarm_circuit_name(NEW.circuit_id)
                              || ' is now '
                              || coalesce(NEW.custom_role_name, NEW.role),
                              v_data);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_members_notify
    AFTER INSERT OR UPDATE ON circuit_members
    FOR EACH ROW EXECUTE FUNCTION defarm_notify_member();


CREATE FUNCTION defarm_notify_operation() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_data  jsonb := jsonb_build_object('circuit_id', NEW.circuit_id,
                                        'dfid', NEW.dfid,
                                        'operation_id', NEW.operation_id,
                                        'operation_type',
                                        NEW.operation_type);
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status = 'Pending' THEN
        PERFORM defarm_notify(defarm_circuit_deciders(NEW.circuit_id),
                              'CircuitItemPendingApproval',
                              'An item waits for approval',
                              NEW.requester_id || ' asks to '
                              || lower(NEW.operation_type) || ' '
                              || NEW.dfid, v_data);

    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'Pending'
          AND NEW.status <> 'Pending'
    THEN
        PERFORM defarm_notify(ARRAY[NEW.requester_id],
                              CASE WHEN NEW.status = 'Completed'
                                   THEN 'CircuitItemApproved'
                                   ELSE 'CircuitItemRejected' END,
                              'Your ' || lower(NEW.operation_type) || ' was '
                              || CASE WHEN NEW.status = 'Completed'
                                      THEN 'approved' ELSE 'rejected' END,
                              NEW.dfid || ' in '
                              || defarm_circuit_name(NEW.circuit_id),
                              v_data || jsonb_build_object(
                                  'decided_by', NEW.decided_by,
                                  'reason',
                                  NEW.metadata ->> 'rejection_reason'));
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_operations_notify
    AFTER INSERT OR UPDATE ON circuit_operations
    FOR EACH ROW EXECUTE FUNCTION defarm_notify_operation();


-- the routes: a caller's own notifications only

CREATE FUNCTION defarm_notification_json(n notifications) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', n.notification_id, 'user_id', n.user_id,
        'notification_type', n.notification_type, 'title', n.title,
        'message', n.message, 'read', n.is_read,
        'timestamp', floor(extract(epoch FROM n.created_at))::bigint,
        'data', n.data)
$$;

-- GET /api/notifications?since=<unix>&limit=1..200 (50)&unread_only=

CREATE FUNCTION defarm_notifications_list(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_since   bigint;
    v_limit   int := 50;
    v_unread  text := lower(coalesce(p_query ->> 'unread_only', 'false'));
    v         text;
BEGIN
    IF p_query ->> 'since' IS NOT NULL THEN
        IF p_query ->> 'since' !~ '^[0-9]{1,12}$' THEN
            RETURN defarm_answer(400, 'since must be a Unix time in '
                                      'seconds');
        END IF;
        v_since := (p_query ->> 'since')::bigint;
    END IF;

    IF p_query ->> 'limit' IS NOT NULL THEN
        IF p_query ->> 'limit' !~ '^[0-9]{1,3}$'
           OR (p_query ->> 'limit')::int NOT BETWEEN 1 AND 200
        THEN
            RETURN defarm_answer(400, 'limit must be 1 to 200');
        END IF;
        v_limit := (p_query ->> 'limit')::int;
    END IF;

    IF v_unread NOT IN ('true', 'false') THEN
        RETURN defarm_answer(400, 'unread_only must be true or false');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_notification_json(n)
                              ORDER BY n.seq DESC), '[]')::text
    INTO v
    FROM (SELECT * FROM notifications n
          WHERE n.user_id = p_user
            AND (v_since IS NULL OR n.created_at >= to_timestamp(v_since))
            AND (v_unread = 'false' OR NOT n.is_read)
          ORDER BY n.seq DESC LIMIT v_limit) n;

    RETURN defarm_answer(200, v);
END
$$;

CREATE FUNCTION defarm_notifications_unread(p_user text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_answer(200, jsonb_build_object('unread_count', count(*))
                              ::text)
    FROM notifications WHERE user_id = p_user AND NOT is_read
$$;

CREATE FUNCTION defarm_notification_read(p_user text, p_id text,
                                         p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    n  notifications;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid notification ID format');
    END IF;

    UPDATE notifications
    SET is_read = true, read_at = coalesce(read_at, now())
    WHERE notification_id = p_id::uuid AND user_id = p_user
    RETURNING * INTO n;

    IF n.notification_id IS NULL THEN
        RETURN defarm_answer(404, 'Notification not found');
    END IF;

    RETURN defarm_answer(200, defarm_notification_json(n)::text);
END
$$;

CREATE FUNCTION defarm_notification_delete(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid notification ID format');
    END IF;

    DELETE FROM notifications
    WHERE notification_id = p_id::uuid AND user_id = p_user;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Notification not found');
    END IF;

    RETURN defarm_answer(200, '{"success": true}');
END
$$;

CREATE FUNCTION defarm_notifications_read_all(p_user text, p_id text,
                                              p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_n  bigint;
BEGIN
    UPDATE notifications SET is_read = true, read_at = now()
    WHERE user_id = p_user AND NOT is_read;

    GET DIAGNOSTICS v_n = ROW_COUNT;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'marked', v_n)::text);
END
$$;
