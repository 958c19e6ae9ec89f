-- Batch create: each entry is created (with entity resolution) as by
-- defarm_item_create, or is an {"error": ...} the module already found;
-- the identifiers of the whole batch are locked first, in one order, so
-- two concurrent batches cannot deadlock.  Returns the API's answer and
-- the DFIDs of existing items the batch enriched (their caches go).

CREATE FUNCTION defarm_item_create_batch(p_owner text, p_items jsonb)
RETURNS TABLE (answer jsonb, enriched text[]) LANGUAGE plpgsql AS $$
DECLARE
    x         jsonb;
    r         record;
    results   jsonb := '[]';
    ok        int := 0;
    failed    int := 0;
    touched   text[] := '{}';
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    PERFORM defarm_item_lock_identifiers(p_owner, coalesce((
        SELECT jsonb_agg(i)
        FROM jsonb_array_elements(p_items) e,
             jsonb_array_elements(coalesce(e->'identifiers', '[]')) i),
        '[]'));

    FOR x IN SELECT e FROM jsonb_array_elements(p_items) e LOOP

        IF x ? 'error' THEN
            results := results || jsonb_build_array(jsonb_build_object(
                'success', false, 'item', NULL, 'error', x->>'error'));
            failed := failed + 1;
            CONTINUE;
        END IF;

        SELECT * INTO r
        FROM defarm_item_create(p_owner, x->'identifiers',
                                x->'enriched_data',
                                (x->>'source_entry')::uuid);

        IF r.conflicts IS NOT NULL THEN
            results := results || jsonb_build_array(jsonb_build_object(
                'success', false, 'item', NULL,
                'error', 'The identifiers match several items: '
                         || array_to_string(r.conflicts, ', ')));
            failed := failed + 1;
            CONTINUE;
        END IF;

        IF NOT r.created THEN
            touched := touched || r.dfid;
        END IF;

        results := results || jsonb_build_array(jsonb_build_object(
            'success', true, 'item', r.item, 'error', NULL));
        ok := ok + 1;
    END LOOP;

    RETURN QUERY SELECT jsonb_build_object('success_count', ok,
                                           'failed_count', failed,
                                           'results', results),
                        touched;
END
$$;
