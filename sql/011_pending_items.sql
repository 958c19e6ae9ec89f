-- Pending (quarantined) items, kept (the original discarded them): a
-- create whose identifiers match several of the caller's items is stored
-- here instead, to be approved (a new item), modified (new identifiers or
-- data, then created with entity resolution) or rejected.

CREATE TABLE pending_items (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    identifiers         jsonb NOT NULL,
    enriched_data       jsonb NOT NULL DEFAULT '{}',
    source_entry        uuid,
    reason              text NOT NULL,
    reason_details      text,
    priority            int NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    metadata            jsonb NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'Pending'
                        CHECK (status IN ('Pending', 'Approved', 'Rejected')),
    resolved_dfid       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz
);

CREATE INDEX pending_items_owner ON pending_items (owner_id, status,
                                                   created_at);

CREATE FUNCTION defarm_pending_json(p pending_items) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', p.id, 'identifiers', p.identifiers,
        'enriched_data', p.enriched_data, 'source_entry', p.source_entry,
        'reason', p.reason, 'reason_details', p.reason_details,
        'priority', p.priority,
        'created_at', floor(extract(epoch FROM p.created_at))::bigint,
        'metadata', p.metadata, 'status', p.status,
        'resolved_dfid', p.resolved_dfid)
$$;

-- Create, or quarantine when the identifiers match several items.

CREATE FUNCTION defarm_item_create_or_hold(p_owner text, p_ids jsonb,
                                           p_enriched jsonb, p_source uuid)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[],
               pending_id uuid)
LANGUAGE plpgsql AS $$
DECLARE
    r     record;
    v_id  uuid;
BEGIN
    SELECT * INTO r FROM defarm_item_create(p_owner, p_ids, p_enriched,
                                            p_source);

    IF r.conflicts IS NULL THEN
        RETURN QUERY SELECT r.dfid, r.created, r.item, NULL::text[],
                            NULL::uuid;
        RETURN;
    END IF;

    INSERT INTO pending_items (owner_id, identifiers, enriched_data,
                               source_entry, reason, reason_details,
                               priority, metadata)
    VALUES (p_owner, p_ids, p_enriched, p_source, 'ConflictingDFIDs',
            'The identifiers match several items: '
            || array_to_string(r.conflicts, ', '), 3,
            jsonb_build_object('conflicting_dfids', to_jsonb(r.conflicts)))
    RETURNING id INTO v_id;

    RETURN QUERY SELECT NULL::text, false, NULL::jsonb, r.conflicts, v_id;
END
$$;

-- Resolve a pending item of the caller.  approve: a new item with its
-- identifiers and data (no resolution: a person decided); modify: the new
-- identifiers and/or data replace the held ones, then a create with
-- resolution (held again if it still conflicts); reject.  outcome: ok,
-- not_found, resolved (already), conflict (modify still conflicts).

CREATE FUNCTION defarm_pending_resolve(p_owner text, p_id uuid,
                                       p_action text, p_ids jsonb,
                                       p_enriched jsonb)
RETURNS TABLE (outcome text, answer jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_p     pending_items;
    v_dfid  text;
    r       record;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    SELECT * INTO v_p FROM pending_items p
    WHERE p.id = p_id AND p.owner_id = p_owner FOR UPDATE;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    IF v_p.status <> 'Pending' THEN
        RETURN QUERY SELECT 'resolved'::text, NULL::jsonb;
        RETURN;
    END IF;

    IF p_action = 'reject' THEN
        UPDATE pending_items p SET status = 'Rejected', resolved_at = now()
        WHERE p.id = p_id RETURNING * INTO v_p;

        RETURN QUERY SELECT 'ok'::text, jsonb_build_object(
            'pending', defarm_pending_json(v_p), 'item', NULL);
        RETURN;
    END IF;

    IF p_action = 'approve' THEN
        PERFORM defarm_item_lock_identifiers(p_owner, v_p.identifiers);

        v_dfid := defarm_dfid();

        INSERT INTO items (dfid, owner_id, enriched_data, source_entries)
        VALUES (v_dfid, p_owner, v_p.enriched_data,
                CASE WHEN v_p.source_entry IS NULL THEN '{}'::uuid[]
                     ELSE ARRAY[v_p.source_entry] END);

        PERFORM defarm_item_add_identifiers(v_dfid, v_p.identifiers);

    ELSE
        SELECT * INTO r
        FROM defarm_item_create(p_owner,
                                coalesce(p_ids, v_p.identifiers),
                                coalesce(p_enriched, v_p.enriched_data),
                                coalesce(v_p.source_entry,
                                         gen_random_uuid()));

        IF r.conflicts IS NOT NULL THEN
            UPDATE pending_items p
            SET identifiers = coalesce(p_ids, v_p.identifiers),
                enriched_data = coalesce(p_enriched, v_p.enriched_data),
                reason_details = 'The identifiers match several items: '
                                 || array_to_string(r.conflicts, ', ')
            WHERE p.id = p_id;

            RETURN QUERY SELECT 'conflict'::text, NULL::jsonb;
            RETURN;
        END IF;

        v_dfid := r.dfid;
    END IF;

    UPDATE pending_items p
    SET status = 'Approved', resolved_at = now(), resolved_dfid = v_dfid
    WHERE p.id = p_id RETURNING * INTO v_p;

    RETURN QUERY SELECT 'ok'::text, jsonb_build_object(
        'pending', defarm_pending_json(v_p),
        'item', defarm_item_json(v_dfid));
END
$$;
