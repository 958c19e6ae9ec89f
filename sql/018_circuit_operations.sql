-- Circuits: pushing items in and pulling them out, the operations and
-- their approval, the circuit's items and activity log.  An item pushed
-- into a circuit (completed) is readable by its members until it is
-- pulled; writes stay its owner's.  A push or a pull writes its operation,
-- its PushedToCircuit / PulledFromCircuit event and its activity in one
-- transaction.

CREATE TABLE circuit_items (
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    added_by            text NOT NULL,
    added_at            timestamptz NOT NULL DEFAULT now(),
    permissions         text[] NOT NULL DEFAULT '{read,verify}',

    PRIMARY KEY (circuit_id, dfid)
);

CREATE INDEX circuit_items_dfid ON circuit_items (dfid);

-- metadata, who decided and why are kept (the original lost them)

CREATE TABLE circuit_operations (
    operation_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    operation_type      text NOT NULL CHECK (operation_type IN ('Push', 'Pull')),
    requester_id        text NOT NULL,
    status              text NOT NULL
                        CHECK (status IN ('Pending', 'Completed', 'Rejected')),
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    decided_by          text,
    decided_at          timestamptz
);

CREATE INDEX circuit_operations_circuit
    ON circuit_operations (circuit_id, created_at DESC);

-- one pending operation per item and circuit at a time
CREATE UNIQUE INDEX circuit_operations_pending
    ON circuit_operations (circuit_id, dfid) WHERE status = 'Pending';

CREATE TABLE circuit_activities (
    activity_id         text PRIMARY KEY,
    activity_type       text NOT NULL,
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    dfids               text[] NOT NULL,
    user_id             text NOT NULL,
    status              text NOT NULL DEFAULT 'Success',
    details             jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX circuit_activities_circuit
    ON circuit_activities (circuit_id, created_at DESC);


-- may p_user read the item: its owner, an administrator, or a member of
-- a circuit it is in

CREATE FUNCTION defarm_item_readable(p_dfid text, p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM items i
                   WHERE i.dfid = p_dfid AND i.owner_id = p_user)
        OR EXISTS (SELECT 1 FROM circuit_items ci
                   JOIN circuit_members m ON m.circuit_id = ci.circuit_id
                   WHERE ci.dfid = p_dfid AND m.member_id = p_user)
        OR defarm_is_admin(p_user)
$$;

CREATE FUNCTION defarm_operation_json(o circuit_operations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'operation_id', o.operation_id, 'circuit_id', o.circuit_id,
        'dfid', o.dfid, 'operation_type', o.operation_type,
        'requester_id', o.requester_id,
        'timestamp', floor(extract(epoch FROM o.created_at))::bigint,
        'status', o.status, 'metadata', o.metadata,
        'decided_by', o.decided_by,
        'decided_at', floor(extract(epoch FROM o.decided_at))::bigint)
$$;

-- the activity of a completed operation

CREATE FUNCTION defarm_circuit_activity(p_type text, p_circuit uuid,
                                        p_dfid text, p_user text)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO circuit_activities (activity_id, activity_type, circuit_id,
                                    dfids, user_id, details)
    VALUES ('ACTIVITY-' || to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                   'YYYYMMDDHH24MISSUS')
            || '-' || substr(md5(gen_random_uuid()::text), 1, 8),
            p_type, p_circuit, ARRAY[p_dfid], p_user,
            jsonb_build_object('items_count', 1, 'success_count', 1,
                               'failed_items', '[]'::jsonb,
                               'enrichment_matches', '[]'::jsonb,
                               'permissions', NULL, 'error_message', NULL))
$$;

-- the PushedToCircuit / PulledFromCircuit event, on the item's owner

CREATE FUNCTION defarm_circuit_event(p_type text, c circuits, p_dfid text,
                                     p_user text, p_op uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_meta   jsonb;
    v_owner  text;
BEGIN
    SELECT owner_id INTO v_owner FROM items WHERE dfid = p_dfid;

    v_meta := jsonb_build_object(
        'circuit_id', c.circuit_id, 'requester_id', p_user,
        'operation', CASE WHEN p_type = 'PushedToCircuit' THEN 'push'
                          ELSE 'pull' END,
        'operation_id', p_op);

    INSERT INTO events (dfid, owner_id, event_type, visibility, metadata,
                        content_hash)
    VALUES (p_dfid, v_owner, p_type,
            CASE WHEN c.allow_public_visibility THEN 'Public'
                 ELSE 'CircuitOnly' END,
            v_meta, defarm_event_hash(p_dfid, p_type, v_owner, v_meta))
    ON CONFLICT (content_hash) DO NOTHING;
END
$$;

-- completing an operation: the item goes in or out

CREATE FUNCTION defarm_operation_complete(o circuit_operations)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF o.operation_type = 'Push' THEN
        INSERT INTO circuit_items (circuit_id, dfid, added_by)
        VALUES (o.circuit_id, o.dfid, o.requester_id)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM circuit_items
        WHERE circuit_id = o.circuit_id AND dfid = o.dfid;
    END IF;

    PERFORM defarm_circuit_activity(o.operation_type, o.circuit_id, o.dfid,
                                    o.requester_id);
END
$$;


-- POST /api/circuits/:id/push/:dfid and /pull/:dfid: Push (the item must
-- be the caller's) or Pull (the item must be in the circuit)

CREATE FUNCTION defarm_circuit_move(p_user text, p_id text, p_dfid text,
                                    p_type text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    c        circuits;
    o        circuit_operations;
    v_state  text;
BEGIN
    a := defarm_circuit_may(p_id, p_user, p_type,
                            lower(p_type) || 'ing an item');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid FOR SHARE;

    IF c.status <> 'Active' THEN
        RETURN defarm_answer(409, 'The circuit is ' || lower(c.status));
    END IF;

    IF p_type = 'Push' THEN
        -- the item's row locked: a concurrent pull of it waits
        PERFORM 1 FROM items
        WHERE dfid = p_dfid AND owner_id = p_user FOR SHARE;

        IF NOT FOUND THEN
            RETURN defarm_answer(404, 'Item not found');
        END IF;

        PERFORM 1 FROM circuit_items
        WHERE circuit_id = c.circuit_id AND dfid = p_dfid;

        IF FOUND THEN
            RETURN defarm_answer(409, 'The item is already in the circuit');
        END IF;

    ELSE
        PERFORM 1 FROM items WHERE dfid = p_dfid FOR SHARE;

        PERFORM 1 FROM circuit_items
        WHERE circuit_id = c.circuit_id AND dfid = p_dfid FOR UPDATE;

        IF NOT FOUND THEN
            RETURN defarm_answer(404, 'Item is not in this circuit');
        END IF;
    END IF;

    v_state := CASE WHEN (p_type = 'Push' AND c.require_approval_for_push)
                      OR (p_type = 'Pull' AND c.require_approval_for_pull)
                    THEN 'Pending' ELSE 'Completed' END;

    BEGIN
        INSERT INTO circuit_operations (circuit_id, dfid, operation_type,
                                        requester_id, status, metadata)
        VALUES (c.circuit_id, p_dfid, p_type, p_user, v_state,
                jsonb_build_object('requested_via', 'api'))
        RETURNING * INTO o;
    EXCEPTION WHEN unique_violation THEN
        RETURN defarm_answer(409, 'An operation on this item is already '
                                  'pending');
    END;

    IF v_state = 'Completed' THEN
        PERFORM defarm_operation_complete(o);
    END IF;

    PERFORM defarm_circuit_event(CASE WHEN p_type = 'Push'
                                      THEN 'PushedToCircuit'
                                      ELSE 'PulledFromCircuit' END,
                                 c, p_dfid, p_user, o.operation_id);

    RETURN defarm_answer(200, defarm_operation_json(o)::text);
END
$$;

CREATE FUNCTION defarm_circuit_push(p_user text, p_id text, p_body jsonb,
                                    p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_move(p_user, p_id, p_arg, 'Push')
$$;

CREATE FUNCTION defarm_circuit_pull(p_user text, p_id text, p_body jsonb,
                                    p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_move(p_user, p_id, p_arg, 'Pull')
$$;


-- GET /api/circuits/:id/operations, .../operations/pending (p_arg not
-- NULL): members

CREATE FUNCTION defarm_circuit_operations(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a         defarm_answer;
    v  text;
BEGIN
    a := defarm_circuit_readable(p_id, p_user);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_operation_json(o)
                              ORDER BY o.created_at DESC, o.operation_id),
                    '[]')::text
    INTO v
    FROM circuit_operations o
    WHERE o.circuit_id = p_id::uuid
      AND (p_arg IS NULL OR o.status = 'Pending');

    RETURN defarm_answer(200, v);
END
$$;


CREATE FUNCTION defarm_circuit_pending_ops(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_circuit_operations(p_user, p_id, p_body, 'pending')
$$;


-- approving or rejecting a pending operation: ManageMembers, the actor
-- the caller (never an id from the body); p_circuit NULL for the
-- /operations/:id/approve form

CREATE FUNCTION defarm_circuit_decide_op(p_user text, p_circuit text,
                                         p_op text, p_body jsonb,
                                         p_approve boolean)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a       defarm_answer;
    v_err   text;
    o       circuit_operations;
BEGIN
    IF NOT defarm_is_uuid(p_op) THEN
        RETURN defarm_answer(400, 'Invalid operation ID format');
    END IF;

    IF p_circuit IS NOT NULL AND NOT defarm_is_uuid(p_circuit) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF p_body IS NOT NULL AND jsonb_typeof(p_body) <> 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := defarm_field_type(p_body, 'reason', 'string');

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    -- the caller's member row first, then the operation: the order of
    -- defarm_circuit_move(), so the two cannot deadlock
    SELECT * INTO o FROM circuit_operations
    WHERE operation_id = p_op::uuid
      AND (p_circuit IS NULL OR circuit_id = p_circuit::uuid);

    -- another circuit's operation is as unknown as none
    IF o.operation_id IS NULL
       OR NOT defarm_circuit_visible(o.circuit_id, p_user)
    THEN
        RETURN defarm_answer(404, 'Operation not found');
    END IF;

    a := defarm_circuit_may(o.circuit_id::text, p_user, 'ManageMembers',
                            'deciding an operation');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO o FROM circuit_operations
    WHERE operation_id = o.operation_id FOR UPDATE;

    IF o.status <> 'Pending' THEN
        RETURN defarm_answer(409, 'The operation is already '
                                  || lower(o.status));
    END IF;

    UPDATE circuit_operations SET
        status = CASE WHEN p_approve THEN 'Completed' ELSE 'Rejected' END,
        decided_by = p_user, decided_at = now(),
        metadata = metadata || CASE WHEN p_approve
            THEN jsonb_build_object('approved_by', p_user,
                                    'approved_at', extract(epoch FROM now())::bigint)
            ELSE jsonb_build_object('rejected_by', p_user,
                                    'rejected_at', extract(epoch FROM now())::bigint,
                                    'rejection_reason', p_body ->> 'reason')
            END
    WHERE operation_id = o.operation_id
    RETURNING * INTO o;

    IF p_approve THEN
        PERFORM defarm_operation_complete(o);
    END IF;

    RETURN defarm_answer(200, defarm_operation_json(o)::text);
END
$$;

-- POST /api/circuits/operations/:operation_id/approve

CREATE FUNCTION defarm_operation_approve(p_user text, p_id text,
                                         p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_decide_op(p_user, NULL, p_arg, p_body, true)
$$;

-- POST /api/circuits/:id/pending-items/:pending_id/approve, .../reject

CREATE FUNCTION defarm_pending_item_approve(p_user text, p_id text,
                                            p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    o  jsonb;
BEGIN
    a := defarm_circuit_decide_op(p_user, p_id, p_arg, p_body, true);

    IF a.status <> 200 THEN
        RETURN a;
    END IF;

    o := a.body::jsonb;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Item approved and added to circuit',
        'data', jsonb_build_object(
            'circuit_id', o -> 'circuit_id', 'dfid', o -> 'dfid',
            'pushed_by', o -> 'requester_id', 'pushed_at', o -> 'timestamp',
            'approved_by', o -> 'decided_by',
            'approved_at', o -> 'decided_at', 'status', 'active'))::text);
END
$$;

CREATE FUNCTION defarm_pending_item_reject(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_decide_op(p_user, p_id, p_arg, p_body, false);

    IF a.status <> 200 THEN
        RETURN a;
    END IF;

    RETURN defarm_answer(200, '{"success": true, "message": "Item rejected"}');
END
$$;


-- GET /api/circuits/:id/pending-items: members

CREATE FUNCTION defarm_circuit_pending_items(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a         defarm_answer;
    v  jsonb;
BEGIN
    a := defarm_circuit_readable(p_id, p_user);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'pending_id', o.operation_id, 'dfid', o.dfid,
               'pushed_by', o.requester_id,
               'pushed_at', floor(extract(epoch FROM o.created_at))::bigint,
               'status', o.status,
               'item_preview', (SELECT jsonb_build_object(
                                    'identifiers', d -> 'identifiers',
                                    'enriched_data', d -> 'enriched_data')
                                FROM (SELECT i.doc::jsonb AS d FROM items i
                                      WHERE i.dfid = o.dfid) x))
               ORDER BY o.created_at, o.operation_id), '[]')
    INTO v
    FROM circuit_operations o
    WHERE o.circuit_id = p_id::uuid AND o.status = 'Pending'
      AND o.operation_type = 'Push';

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;


-- GET /api/circuits/:id/items?include_events=: members; the events are
-- those a member may read (Public and CircuitOnly, and the caller's own)

CREATE FUNCTION defarm_circuit_items(p_user text, p_id text, p_query jsonb,
                                     p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a         defarm_answer;
    v_events  text := lower(coalesce(p_query ->> 'include_events',
                                     'false'));
    v         text;
BEGIN
    a := defarm_circuit_readable(p_id, p_user);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF v_events NOT IN ('true', 'false') THEN
        RETURN defarm_answer(400, 'include_events must be true or false');
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'dfid', ci.dfid, 'circuit_id', ci.circuit_id,
               'circuit_name', c.name, 'pushed_by', ci.added_by,
               'pushed_at', floor(extract(epoch FROM ci.added_at))::bigint,
               'permissions', to_jsonb(ci.permissions))
           || CASE WHEN v_events = 'true' THEN jsonb_build_object(
                  'events', coalesce((
                      SELECT jsonb_agg(defarm_event_json(e)
                                       ORDER BY e.created_at, e.event_id)
                      FROM events e
                      WHERE e.dfid = ci.dfid
                        AND (e.visibility IN ('Public', 'CircuitOnly')
                             OR e.owner_id = p_user)), '[]'))
              ELSE '{}'::jsonb END
           ORDER BY ci.added_at, ci.dfid), '[]')::text
    INTO v
    FROM circuit_items ci JOIN circuits c ON c.circuit_id = ci.circuit_id
    WHERE ci.circuit_id = p_id::uuid;

    RETURN defarm_answer(200, v);
END
$$;


-- GET /api/circuits/:id/activities: members

CREATE FUNCTION defarm_circuit_activities(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r         defarm_answer;
    v  text;
BEGIN
    r := defarm_circuit_readable(p_id, p_user);
    IF r IS NOT NULL THEN
        RETURN r;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'activity_id', a.activity_id,
               'activity_type', a.activity_type,
               'circuit_id', a.circuit_id, 'circuit_name', c.name,
               'item_dfids', to_jsonb(a.dfids), 'user_id', a.user_id,
               'timestamp', floor(extract(epoch FROM a.created_at))::bigint,
               'status', a.status, 'details', a.details)
           ORDER BY a.created_at DESC, a.activity_id), '[]')::text
    INTO v
    FROM circuit_activities a JOIN circuits c ON c.circuit_id = a.circuit_id
    WHERE a.circuit_id = p_id::uuid;

    RETURN defarm_answer(200, v);
END
$$;
