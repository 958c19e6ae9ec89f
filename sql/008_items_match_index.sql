-- Entity resolution looks each identifier up on its own, with its key and
-- value as parameters, so the (key, value) index is used: the first
-- version joined the whole array at once and the planner, assuming 100
-- elements, scanned every user's identifiers on each create (found by
-- bench/items.sh).

CREATE OR REPLACE FUNCTION defarm_item_create(p_owner text, p_ids jsonb,
                                              p_enriched jsonb,
                                              p_source uuid)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_dfid     text;
    v_key      text;
    v_value    text;
    v_found    text[] := '{}';
    v_matches  text[];
BEGIN
    PERFORM defarm_item_lock_identifiers(p_owner, p_ids);

    FOR v_key, v_value IN
        SELECT x->>'key', x->>'value' FROM jsonb_array_elements(p_ids) x
    LOOP
        v_found := v_found || ARRAY(
            SELECT ii.dfid FROM item_identifiers ii
            JOIN items i ON i.dfid = ii.dfid
            WHERE ii.key = v_key AND ii.value = v_value
              AND i.owner_id = p_owner AND i.status = 'Active');
    END LOOP;

    SELECT array_agg(DISTINCT d ORDER BY d) INTO v_matches
    FROM unnest(v_found) d;

    IF coalesce(array_length(v_matches, 1), 0) > 1 THEN
        RETURN QUERY SELECT NULL::text, false, NULL::jsonb, v_matches;
        RETURN;
    END IF;

    IF v_matches IS NOT NULL THEN
        v_dfid := v_matches[1];

        UPDATE items i
        SET enriched_data = i.enriched_data || p_enriched,
            source_entries = array_append(i.source_entries, p_source),
            last_modified = now()
        WHERE i.dfid = v_dfid;

        PERFORM defarm_item_add_identifiers(v_dfid, p_ids);

        RETURN QUERY SELECT v_dfid, false, defarm_item_json(v_dfid),
                            NULL::text[];
        RETURN;
    END IF;

    v_dfid := defarm_dfid();

    INSERT INTO items (dfid, owner_id, enriched_data, source_entries)
    VALUES (v_dfid, p_owner, p_enriched, ARRAY[p_source]);

    PERFORM defarm_item_add_identifiers(v_dfid, p_ids);

    RETURN QUERY SELECT v_dfid, true, defarm_item_json(v_dfid), NULL::text[];
END
$$;
