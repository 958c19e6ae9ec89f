-- Merge and split, each one function: the rows involved are locked (in
-- dfid order) before anything is read, so a concurrent enrich waits and
-- lands before or after, never halfway.

-- Merge p_secondary into p_primary: identifiers added (deduplicated),
-- enriched data merged (the secondary's keys win), source entries
-- appended, confidence the mean; the secondary becomes Merged.
-- outcome: ok, not_found (either is not the caller's), not_active.

CREATE FUNCTION defarm_item_merge(p_owner text, p_primary text,
                                  p_secondary text)
RETURNS TABLE (outcome text, item jsonb) LANGUAGE plpgsql AS $$
DECLARE
    n  int;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    PERFORM 1 FROM items i
    WHERE i.dfid IN (p_primary, p_secondary) AND i.owner_id = p_owner
    ORDER BY i.dfid FOR UPDATE;

    SELECT count(*) INTO n
    FROM items i
    WHERE i.dfid IN (p_primary, p_secondary) AND i.owner_id = p_owner;

    IF n < 2 THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    IF EXISTS (SELECT 1 FROM items i
               WHERE i.dfid IN (p_primary, p_secondary)
                 AND i.status <> 'Active')
    THEN
        RETURN QUERY SELECT 'not_active'::text, NULL::jsonb;
        RETURN;
    END IF;

    UPDATE items p
    SET enriched_data = p.enriched_data || s.enriched_data,
        source_entries = p.source_entries || s.source_entries,
        confidence_score = (p.confidence_score + s.confidence_score) / 2,
        last_modified = now()
    FROM items s
    WHERE p.dfid = p_primary AND s.dfid = p_secondary;

    INSERT INTO item_identifiers (dfid, namespace, key, value, id_type,
                                  scope, verified, verification_date)
    SELECT p_primary, ii.namespace, ii.key, ii.value, ii.id_type, ii.scope,
           ii.verified, ii.verification_date
    FROM item_identifiers ii WHERE ii.dfid = p_secondary
    ORDER BY ii.id
    ON CONFLICT ON CONSTRAINT item_identifiers_unique DO NOTHING;

    UPDATE items i SET status = 'Merged', last_modified = now()
    WHERE i.dfid = p_secondary;

    RETURN QUERY SELECT 'ok'::text, defarm_item_json(p_primary);
END
$$;

-- Split: the listed identifiers (each must be on the item) move to a new
-- item with a new DFID, whose source entry is the original's first; the
-- original becomes Split.  outcome: ok, not_found, not_active, or
-- missing:<n> (the 1-based index of an identifier not on the item).

CREATE FUNCTION defarm_item_split(p_owner text, p_dfid text, p_ids jsonb)
RETURNS TABLE (outcome text, original jsonb, created jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_item     items;
    v_new      text;
    v_missing  bigint;
BEGIN
    PERFORM defarm_owner_lock(p_owner);

    SELECT * INTO v_item FROM items i
    WHERE i.dfid = p_dfid AND i.owner_id = p_owner FOR UPDATE;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;

    IF v_item.status <> 'Active' THEN
        RETURN QUERY SELECT 'not_active'::text, NULL::jsonb, NULL::jsonb;
        RETURN;
    END IF;

    SELECT min(t.n) INTO v_missing
    FROM jsonb_array_elements(p_ids) WITH ORDINALITY AS t(x, n)
    WHERE NOT EXISTS (
        SELECT 1 FROM item_identifiers ii
        WHERE ii.dfid = p_dfid AND ii.namespace = t.x->>'namespace'
          AND ii.key = t.x->>'key' AND ii.value = t.x->>'value');

    IF v_missing IS NOT NULL THEN
        RETURN QUERY SELECT 'missing:' || v_missing, NULL::jsonb,
                            NULL::jsonb;
        RETURN;
    END IF;

    v_new := defarm_dfid();

    INSERT INTO items (dfid, owner_id, source_entries)
    VALUES (v_new, p_owner, v_item.source_entries[1:1]);

    UPDATE item_identifiers ii SET dfid = v_new
    FROM jsonb_array_elements(p_ids) x
    WHERE ii.dfid = p_dfid AND ii.namespace = x->>'namespace'
      AND ii.key = x->>'key' AND ii.value = x->>'value';

    UPDATE items i SET status = 'Split', last_modified = now()
    WHERE i.dfid = p_dfid;

    RETURN QUERY SELECT 'ok'::text, defarm_item_json(p_dfid),
                        defarm_item_json(v_new);
END
$$;
