-- Local items: items not yet tokenized, named LID-<uuid>, with their
-- merge (three strategies), unmerge, duplicate groups and bulk organize.
-- The LID -> DFID mapping is kept when a local item is tokenized, so the
-- mapping keeps answering afterwards (the original deleted the LID row and
-- never read its mapping back).

CREATE TABLE lid_dfid_mappings (
    local_id            uuid PRIMARY KEY,
    dfid                text NOT NULL REFERENCES items (dfid)
                        ON DELETE CASCADE,
    owner_id            text NOT NULL REFERENCES users (id)
                        ON DELETE CASCADE,
    tokenized_at        timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION defarm_local_create(p_owner text, p_ids jsonb,
                                    p_enriched jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_lid  uuid := gen_random_uuid();
BEGIN
    INSERT INTO items (dfid, owner_id, enriched_data, legacy_mode, local_id)
    VALUES ('LID-' || v_lid, p_owner, p_enriched, false, v_lid);

    PERFORM defarm_item_add_identifiers('LID-' || v_lid, p_ids);

    RETURN v_lid;
END
$$;

-- One value merged into another by a strategy.

CREATE FUNCTION defarm_merge_value(p_strategy text, p_old jsonb,
                                   p_new jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_old IS NULL THEN p_new
        WHEN p_strategy = 'keep_first' THEN p_old
        WHEN p_strategy = 'append'
             AND jsonb_typeof(p_old) = 'array'
             AND jsonb_typeof(p_new) = 'array' THEN
            p_old || coalesce((
                SELECT jsonb_agg(e ORDER BY n)
                FROM jsonb_array_elements(p_new) WITH ORDINALITY AS t(e, n)
                WHERE NOT p_old @> jsonb_build_array(e)), '[]')
        WHEN p_strategy = 'append'
             AND jsonb_typeof(p_old) = 'object'
             AND jsonb_typeof(p_new) = 'object' THEN p_old || p_new
        ELSE p_new
    END
$$;

CREATE FUNCTION defarm_merge_data(p_strategy text, p_old jsonb,
                                  p_new jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_strategy = 'keep_first' THEN p_old
    ELSE p_old || coalesce((
        SELECT jsonb_object_agg(n.key,
                                defarm_merge_value(p_strategy,
                                                   p_old -> n.key, n.value))
        FROM jsonb_each(p_new) n), '{}')
    END
$$;

-- Merge local items into a master, in the order given.  outcome: ok,
-- not_found (an item is not the caller's local item), not_active (the
-- master or an item to merge is not Active).

CREATE FUNCTION defarm_local_merge(p_owner text, p_master uuid,
                                   p_merge uuid[], p_strategy text)
RETURNS TABLE (outcome text, answer jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_lid     uuid;
    v_master  items;
    v_item    items;
    v_data    jsonb;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    PERFORM 1 FROM items i
    WHERE i.local_id = ANY (p_merge || p_master) AND i.owner_id = p_owner
    ORDER BY i.dfid FOR UPDATE;

    IF (SELECT count(*) FROM items i
        WHERE i.local_id = ANY (p_merge || p_master)
          AND i.owner_id = p_owner
          AND i.dfid LIKE 'LID-%') < cardinality(p_merge) + 1
    THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    IF EXISTS (SELECT 1 FROM items i
               WHERE i.local_id = ANY (p_merge || p_master)
                 AND i.status <> 'Active')
    THEN
        RETURN QUERY SELECT 'not_active'::text, NULL::jsonb;
        RETURN;
    END IF;

    SELECT * INTO v_master FROM items i WHERE i.local_id = p_master;
    v_data := v_master.enriched_data;

    FOREACH v_lid IN ARRAY p_merge LOOP
        SELECT * INTO v_item FROM items i WHERE i.local_id = v_lid;

        v_data := defarm_merge_data(p_strategy, v_data, v_item.enriched_data);

        UPDATE items i
        SET source_entries = ARRAY(
                SELECT DISTINCT unnest(i.source_entries
                                       || v_item.source_entries)),
            last_modified = now()
        WHERE i.local_id = p_master;

        INSERT INTO item_identifiers (dfid, namespace, key, value, id_type,
                                      scope, verified, verification_date)
        SELECT v_master.dfid, ii.namespace, ii.key, ii.value, ii.id_type,
               ii.scope, ii.verified, ii.verification_date
        FROM item_identifiers ii WHERE ii.dfid = v_item.dfid
        ORDER BY ii.id
        ON CONFLICT ON CONSTRAINT item_identifiers_unique DO NOTHING;

        UPDATE items i
        SET status = 'MergedInto:LID-' || p_master, last_modified = now()
        WHERE i.local_id = v_lid;
    END LOOP;

    UPDATE items i SET enriched_data = v_data, last_modified = now()
    WHERE i.local_id = p_master
    RETURNING * INTO v_master;

    RETURN QUERY SELECT 'ok'::text, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object(
            'master_lid', p_master,
            'merged_count', cardinality(p_merge),
            'merged_lids', to_jsonb(p_merge),
            'master_item', jsonb_build_object(
                'dfid', v_master.dfid,
                'local_id', v_master.local_id,
                'enriched_data', v_master.enriched_data,
                'last_modified', to_char(v_master.last_modified
                                         AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD"T"HH24:MI:SS"Z"'))));
END
$$;

-- Undo a merge of one local item: it is Active again (the master keeps
-- what it gained).  outcome: ok, not_found, not_merged.

CREATE FUNCTION defarm_local_unmerge(p_owner text, p_lid uuid)
RETURNS TABLE (outcome text, answer jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_item    items;
    v_master  text;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    SELECT * INTO v_item FROM items i
    WHERE i.local_id = p_lid AND i.owner_id = p_owner FOR UPDATE;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    IF v_item.status NOT LIKE 'MergedInto:LID-%' THEN
        RETURN QUERY SELECT 'not_merged'::text, NULL::jsonb;
        RETURN;
    END IF;

    v_master := substr(v_item.status, length('MergedInto:LID-') + 1);

    UPDATE items i SET status = 'Active', last_modified = now()
    WHERE i.local_id = p_lid;

    RETURN QUERY SELECT 'ok'::text, jsonb_build_object(
        'success', true,
        'restored_lid', p_lid,
        'previous_master_lid', v_master,
        'restored_item', defarm_item_json(v_item.dfid));
END
$$;

-- The caller's Active local items grouped by their first canonical
-- identifier (namespace:key and value), groups of two or more; the
-- suggested master is the oldest.

CREATE FUNCTION defarm_local_groups(p_owner text, p_namespace text)
RETURNS TABLE (identifier_key text, identifier_value text,
               lids uuid[], dfids text[])
LANGUAGE sql STABLE AS $$
    WITH firsts AS (
        SELECT DISTINCT ON (i.dfid) i.dfid, i.local_id, i.created_at,
               ii.namespace || ':' || ii.key AS k, ii.value AS v
        FROM items i JOIN item_identifiers ii ON ii.dfid = i.dfid
        WHERE i.owner_id = p_owner AND i.local_id IS NOT NULL
          AND i.status = 'Active' AND ii.id_type = 'Canonical'
          AND (p_namespace IS NULL OR ii.namespace = p_namespace)
        ORDER BY i.dfid, ii.id)
    SELECT f.k, f.v,
           array_agg(f.local_id ORDER BY f.created_at, f.dfid),
           array_agg(f.dfid ORDER BY f.created_at, f.dfid)
    FROM firsts f
    GROUP BY f.k, f.v
    HAVING count(*) > 1
    ORDER BY f.k, f.v
$$;

CREATE FUNCTION defarm_local_duplicates(p_owner text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH g AS (SELECT * FROM defarm_local_groups(p_owner, NULL))
    SELECT jsonb_build_object(
        'success', true,
        'duplicate_groups', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'identifier_key', g.identifier_key,
                'identifier_value', g.identifier_value,
                'items', (
                    SELECT jsonb_agg(jsonb_build_object(
                        'local_id', i.local_id, 'dfid', i.dfid,
                        'created', to_char(i.created_at AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                        'enriched_data', i.enriched_data,
                        'identifiers_count', (
                            SELECT count(*) FROM item_identifiers ii
                            WHERE ii.dfid = i.dfid))
                        ORDER BY i.created_at, i.dfid)
                    FROM items i WHERE i.dfid = ANY (g.dfids)),
                'suggested_master_lid', g.lids[1],
                'conflicts', coalesce((
                    SELECT jsonb_agg(c.key ORDER BY c.key)
                    FROM (SELECT e.key
                          FROM items i, jsonb_each(i.enriched_data) e
                          WHERE i.dfid = ANY (g.dfids)
                          GROUP BY e.key
                          HAVING count(DISTINCT e.value) > 1) c), '[]'))
                ORDER BY g.identifier_key, g.identifier_value)
            FROM g), '[]'),
        'summary', jsonb_build_object(
            'total_items', (SELECT count(*) FROM items i
                            WHERE i.owner_id = p_owner
                              AND i.local_id IS NOT NULL
                              AND i.status = 'Active'),
            'duplicate_groups', (SELECT count(*) FROM g),
            'items_in_duplicates', (SELECT coalesce(sum(cardinality(g.lids)),
                                                    0) FROM g)))
$$;

-- Merge every duplicate group into its oldest item (or only say what
-- would be done, p_dry_run).

CREATE FUNCTION defarm_local_organize(p_owner text, p_namespace text,
                                      p_strategy text, p_dry_run boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    g        record;
    r        record;
    ops      jsonb := '[]';
    before   bigint;
    merged   bigint := 0;
    groups   bigint := 0;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    SELECT count(*) INTO before FROM items i
    WHERE i.owner_id = p_owner AND i.local_id IS NOT NULL
      AND i.status = 'Active';

    FOR g IN SELECT * FROM defarm_local_groups(p_owner, p_namespace) LOOP
        groups := groups + 1;

        IF p_dry_run THEN
            ops := ops || jsonb_build_array(jsonb_build_object(
                'master_lid', g.lids[1], 'merged_lids', to_jsonb(g.lids[2:]),
                'status', 'skipped', 'reason', 'dry run'));
            merged := merged + cardinality(g.lids) - 1;
            CONTINUE;
        END IF;

        SELECT * INTO r FROM defarm_local_merge(p_owner, g.lids[1],
                                                g.lids[2:], p_strategy);

        ops := ops || jsonb_build_array(jsonb_build_object(
            'master_lid', g.lids[1], 'merged_lids', to_jsonb(g.lids[2:]),
            'status', CASE WHEN r.outcome = 'ok' THEN 'success'
                           ELSE 'error' END,
            'reason', CASE WHEN r.outcome = 'ok' THEN NULL
                           ELSE r.outcome END));

        IF r.outcome = 'ok' THEN
            merged := merged + cardinality(g.lids) - 1;
        END IF;
    END LOOP;

    RETURN jsonb_build_object(
        'success', true,
        'operations', ops,
        'summary', jsonb_build_object(
            'items_before', before,
            'items_after', before - merged,
            'merged_count', merged,
            'groups_processed', groups),
        'dry_run', p_dry_run);
END
$$;

-- LID -> DFID: LocalOnly while local, Tokenized once mapped.

CREATE FUNCTION defarm_local_mapping(p_owner text, p_lid uuid)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('success', true, 'data', jsonb_build_object(
        'local_id', p_lid, 'dfid', m.dfid,
        'status', CASE WHEN m.dfid IS NULL THEN 'LocalOnly'
                       ELSE 'Tokenized' END))
    FROM (SELECT p_lid) x(l)
    LEFT JOIN lid_dfid_mappings m
           ON m.local_id = p_lid AND m.owner_id = p_owner
    WHERE m.dfid IS NOT NULL
       OR EXISTS (SELECT 1 FROM items i
                  WHERE i.local_id = p_lid AND i.owner_id = p_owner)
$$;
