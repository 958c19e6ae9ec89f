-- Circuits: tokenizing a local item into a circuit (push-local), and
-- promoting local events onto a pushed item (push-events).  Each is one
-- function, one transaction.

-- who vouched for an item under which scheme ("user:<requester>" for a
-- tokenized local item, its value the LID)

CREATE TABLE item_aliases (
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    scheme              text NOT NULL,
    value               text NOT NULL,
    issuer_id           text NOT NULL,
    evidence_hash       text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),

    PRIMARY KEY (dfid, scheme, value)
);


-- POST /api/circuits/:id/push-local {local_id, enriched_data?}: Push.
-- The local item's own identifiers and data make the item (the original
-- used only what the request carried); enriched_data in the body is
-- merged over them.  A Canonical identifier matching one of the caller's
-- Active items enriches that item (ExistingItemEnriched), several is a
-- 409 with their DFIDs (ConflictDetected), none makes a new DFID
-- (NewItemCreated).  The LID -> DFID mapping is kept, an alias
-- user:<requester> recorded, the local item's events moved, the local item
-- retired, and the item pushed (Pending or Completed as a push is).

CREATE FUNCTION defarm_circuit_push_local(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a         defarm_answer;
    l         items;
    v_lid     text;
    v_ids     jsonb;
    v_data    jsonb;
    v_match   text[];
    v_dfid    text;
    v_state   text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_lid := p_body ->> 'local_id';

    IF v_lid IS NULL OR NOT defarm_is_uuid(v_lid) THEN
        RETURN defarm_answer(400, 'local_id must be a UUID');
    END IF;

    IF p_body ? 'identifiers' THEN
        RETURN defarm_answer(400, 'identifiers are the local item''s own: '
                                  'add them to it first');
    END IF;

    v_data := coalesce(p_body -> 'enriched_data', '{}');

    IF jsonb_typeof(v_data) <> 'object' THEN
        RETURN defarm_answer(400, 'enriched_data must be a object');
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'Push', 'pushing an item');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    PERFORM defarm_owner_lock(p_user);

    SELECT * INTO l FROM items
    WHERE local_id = v_lid::uuid AND owner_id = p_user
    FOR UPDATE;

    IF l.dfid IS NULL THEN
        RETURN defarm_answer(404, 'Local item not found: ' || v_lid);
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'namespace', ii.namespace, 'key', ii.key, 'value', ii.value,
               'id_type', ii.id_type, 'scope', ii.scope,
               'verified', ii.verified,
               'verification_date', ii.verification_date)
               ORDER BY ii.id), '[]')
    INTO v_ids
    FROM item_identifiers ii WHERE ii.dfid = l.dfid;

    SELECT array_agg(DISTINCT i.dfid ORDER BY i.dfid) INTO v_match
    FROM item_identifiers li
    JOIN item_identifiers ii ON ii.key = li.key AND ii.value = li.value
                            AND ii.id_type = 'Canonical'
    JOIN items i ON i.dfid = ii.dfid
    WHERE li.dfid = l.dfid AND li.id_type = 'Canonical'
      AND i.owner_id = p_user AND i.status = 'Active'
      AND i.local_id IS NULL;

    IF cardinality(v_match) > 1 THEN
        RETURN defarm_answer(409, 'ConflictDetected: the local item''s '
                                  'identifiers match '
                                  || array_to_string(v_match, ', '));
    END IF;

    IF cardinality(v_match) = 1 THEN
        v_dfid := v_match[1];
        v_state := 'ExistingItemEnriched';

        UPDATE items SET
            enriched_data = enriched_data || l.enriched_data || v_data,
            source_entries = source_entries || l.source_entries,
            last_modified = now()
        WHERE dfid = v_dfid;

    ELSE
        v_dfid := defarm_dfid();
        v_state := 'NewItemCreated';

        INSERT INTO items (dfid, owner_id, enriched_data, source_entries,
                           legacy_mode)
        VALUES (v_dfid, p_user, l.enriched_data || v_data, l.source_entries,
                false);
    END IF;

    -- the local item goes: its identifiers first, then the row
    DELETE FROM item_identifiers WHERE dfid = l.dfid;
    PERFORM defarm_item_add_identifiers(v_dfid, v_ids);
    UPDATE events SET dfid = v_dfid WHERE dfid = l.dfid;

    INSERT INTO lid_dfid_mappings (local_id, dfid, owner_id)
    VALUES (l.local_id, v_dfid, p_user)
    ON CONFLICT (local_id) DO UPDATE SET dfid = EXCLUDED.dfid;

    INSERT INTO item_aliases (dfid, scheme, value, issuer_id, evidence_hash)
    VALUES (v_dfid, 'user:' || p_user, v_lid, p_user,
            encode(sha256(convert_to(v_lid, 'UTF8')), 'hex'))
    ON CONFLICT DO NOTHING;

    DELETE FROM items WHERE dfid = l.dfid;

    a := defarm_circuit_move(p_user, p_id, v_dfid, 'Push');

    IF a.status <> 200 THEN
        -- already in the circuit (an existing item): tokenized all the same
        IF a.status = 409 THEN
            RETURN defarm_answer(200, jsonb_build_object(
                'success', true, 'data', jsonb_build_object(
                    'dfid', v_dfid, 'status', v_state,
                    'operation_id', NULL, 'local_id', v_lid,
                    'note', a.body))::text);
        END IF;

        RAISE EXCEPTION 'push after tokenizing failed: %', a.body;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', jsonb_build_object(
            'dfid', v_dfid, 'status', v_state,
            'operation_id', a.body::jsonb -> 'operation_id',
            'local_id', v_lid))::text);
END
$$;


-- POST /api/circuits/:id/push-events {local_event_ids: [uuid], dfid}:
-- Push, and the item in the circuit and the caller's.  Each local event
-- (the caller's) moves onto the item; one identical to an event the item
-- has (same hash) is merged into it instead.  An unknown event is named
-- in the answer, not skipped in silence.

CREATE FUNCTION defarm_circuit_push_events(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    v_dfid   text;
    x        jsonb;
    e        events;
    o        events;
    v_hash   text;
    v_out    jsonb := '[]';
    v_moved  int := 0;
    v_dedup  int := 0;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_body -> 'local_event_ids') IS DISTINCT FROM 'array'
       OR jsonb_typeof(p_body -> 'dfid') IS DISTINCT FROM 'string'
    THEN
        RETURN defarm_answer(400, 'The body must be {"local_event_ids": '
                                  '[uuid], "dfid": string}');
    END IF;

    IF jsonb_array_length(p_body -> 'local_event_ids') NOT BETWEEN 1 AND 500
    THEN
        RETURN defarm_answer(400, 'local_event_ids must hold 1 to 500 ids');
    END IF;

    FOR x IN SELECT * FROM jsonb_array_elements(p_body -> 'local_event_ids')
    LOOP
        IF jsonb_typeof(x) <> 'string' OR NOT defarm_is_uuid(x #>> '{}') THEN
            RETURN defarm_answer(400, 'Invalid local event id: ' || x::text);
        END IF;
    END LOOP;

    v_dfid := p_body ->> 'dfid';

    a := defarm_circuit_may(p_id, p_user, 'Push', 'pushing events');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    PERFORM 1 FROM items i JOIN circuit_items ci ON ci.dfid = i.dfid
    WHERE i.dfid = v_dfid AND i.owner_id = p_user
      AND ci.circuit_id = p_id::uuid
    FOR SHARE OF i;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Item not found in this circuit: '
                                  || v_dfid);
    END IF;

    FOR x IN SELECT * FROM jsonb_array_elements(p_body -> 'local_event_ids')
    LOOP
        SELECT * INTO e FROM events
        WHERE local_event_id = (x #>> '{}')::uuid AND owner_id = p_user
        FOR UPDATE;

        IF e.event_id IS NULL THEN
            v_out := v_out || jsonb_build_array(jsonb_build_object(
                'local_event_id', x, 'event_id', NULL, 'dfid', v_dfid,
                'was_deduplicated', false, 'original_event_id', NULL,
                'error_message', 'Local event not found'));
            CONTINUE;
        END IF;

        v_hash := defarm_event_hash(v_dfid, e.event_type, e.owner_id,
                                    e.metadata);

        SELECT * INTO o FROM events WHERE content_hash = v_hash FOR UPDATE;

        IF o.event_id IS NOT NULL THEN
            UPDATE events SET metadata = e.metadata || metadata
            WHERE event_id = o.event_id;
            DELETE FROM events WHERE event_id = e.event_id;
            v_dedup := v_dedup + 1;

            v_out := v_out || jsonb_build_array(jsonb_build_object(
                'local_event_id', e.local_event_id,
                'event_id', o.event_id, 'dfid', v_dfid,
                'was_deduplicated', true,
                'original_event_id', o.event_id));
        ELSE
            UPDATE events SET dfid = v_dfid, local_event_id = NULL,
                              content_hash = v_hash
            WHERE event_id = e.event_id;
            v_moved := v_moved + 1;

            v_out := v_out || jsonb_build_array(jsonb_build_object(
                'local_event_id', e.local_event_id,
                'event_id', e.event_id, 'dfid', v_dfid,
                'was_deduplicated', false, 'original_event_id', NULL));
        END IF;
    END LOOP;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'circuit_id', p_id, 'events_pushed', v_moved,
        'events_deduplicated', v_dedup, 'events', v_out)::text);
END
$$;
