-- Circuits: batch push, and the activity log across circuits.

-- POST /api/circuits/:id/push/batch {items: [{dfid, data?}]} (1 to 100):
-- each item pushed as POST /push/:dfid would, its own answer in results

CREATE FUNCTION defarm_circuit_push_batch(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    x        jsonb;
    v_ok     int := 0;
    v_bad    int := 0;
    v_res    jsonb := '[]';
    v_dfid   text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_body -> 'items') IS DISTINCT FROM 'array'
    THEN
        RETURN defarm_answer(400, 'The body must be {"items": [{"dfid"}]}');
    END IF;

    IF jsonb_array_length(p_body -> 'items') NOT BETWEEN 1 AND 100 THEN
        RETURN defarm_answer(400, 'items must hold 1 to 100 entries');
    END IF;

    FOR x IN SELECT * FROM jsonb_array_elements(p_body -> 'items') LOOP
        IF jsonb_typeof(x) <> 'object'
           OR jsonb_typeof(x -> 'dfid') IS DISTINCT FROM 'string'
        THEN
            RETURN defarm_answer(400, 'Each item must be {"dfid": string}');
        END IF;
    END LOOP;

    -- the circuit and the permission first: a refusal is the whole answer
    a := defarm_circuit_may(p_id, p_user, 'Push', 'pushing an item');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    FOR x IN SELECT * FROM jsonb_array_elements(p_body -> 'items') LOOP
        v_dfid := x ->> 'dfid';
        a := defarm_circuit_move(p_user, p_id, v_dfid, 'Push');

        IF a.status = 200 THEN
            v_ok := v_ok + 1;
            v_res := v_res || jsonb_build_array(jsonb_build_object(
                'dfid', v_dfid, 'success', true, 'error_message', NULL,
                'operation', a.body::jsonb));
        ELSE
            v_bad := v_bad + 1;
            v_res := v_res || jsonb_build_array(jsonb_build_object(
                'dfid', v_dfid, 'success', false, 'error_message', a.body));
        END IF;
    END LOOP;

    RETURN defarm_answer(200, jsonb_build_object(
        'success_count', v_ok, 'failed_count', v_bad,
        'results', v_res)::text);
END
$$;


-- GET /api/activities, GET /api/activities/user/:user_id: the activities
-- of the circuits the caller is in (all for an administrator), newest
-- first, at most 200

CREATE FUNCTION defarm_activities(p_user text, p_id text, p_query jsonb,
                                  p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_admin  boolean := defarm_is_admin(p_user);
    v        text;
BEGIN
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.created_at DESC, x.id),
                    '[]')::text
    INTO v
    FROM (SELECT a.activity_id AS id, a.created_at,
                 jsonb_build_object(
                     'activity_id', a.activity_id,
                     'activity_type', a.activity_type,
                     'circuit_id', a.circuit_id, 'circuit_name', c.name,
                     'item_dfids', to_jsonb(a.dfids), 'user_id', a.user_id,
                     'timestamp',
                     floor(extract(epoch FROM a.created_at))::bigint,
                     'status', a.status, 'details', a.details) AS j
          FROM circuit_activities a
          JOIN circuits c ON c.circuit_id = a.circuit_id
          WHERE (p_arg IS NULL OR a.user_id = p_arg)
            AND (v_admin OR EXISTS (SELECT 1 FROM circuit_members m
                                    WHERE m.circuit_id = a.circuit_id
                                      AND m.member_id = p_user))
          ORDER BY a.created_at DESC, a.activity_id
          LIMIT 200) x;

    RETURN defarm_answer(200, v);
END
$$;
