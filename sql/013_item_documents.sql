-- Render on write: an item's API JSON is stored with it (items.doc) and a
-- read returns it as it is, one index look-up.  The document is rendered
-- in the transaction that changes the item, by triggers, whichever
-- function made the change:
--
--   - a row written to items gets its document in a BEFORE trigger, from
--     the new row and the identifiers as this statement sees them;
--   - a statement that changes item_identifiers touches, at its end, the
--     items whose identifiers it changed (once each), and that UPDATE's
--     BEFORE trigger renders them again.
--
-- The rendering always happens with the item's row locked (an UPDATE
-- holds it to commit), and in a statement of its own (so with a snapshot
-- taken after the lock): of two transactions changing one item, the one
-- that renders last sees what the other committed.

-- PL/pgSQL, not SQL: a SQL function called from another function (a
-- trigger, a write's answer) is planned again on every call; PL/pgSQL
-- keeps its plans for the session.  Measured with pgbench calling
-- defarm_item_create(), one client: 1,030 tps with SQL functions, 1,814
-- with these.

CREATE OR REPLACE FUNCTION defarm_item_render(i items) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object(
        'dfid', i.dfid,
        'identifiers', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'namespace', ii.namespace, 'key', ii.key,
                       'value', ii.value, 'id_type', ii.id_type)
                   || CASE WHEN ii.id_type = 'Contextual'
                      THEN jsonb_build_object('scope', ii.scope)
                      ELSE jsonb_build_object(
                          'verified', ii.verified,
                          'verification_date',
                          to_char(ii.verification_date AT TIME ZONE 'UTC',
                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                      END
                   ORDER BY ii.id)
            FROM item_identifiers ii WHERE ii.dfid = i.dfid), '[]'),
        'enriched_data', i.enriched_data,
        'creation_timestamp', floor(extract(epoch FROM i.created_at))::bigint,
        'last_modified', floor(extract(epoch FROM i.last_modified))::bigint,
        'source_entries', to_jsonb(i.source_entries),
        'status', i.status);
END
$$;

-- one renderer: the functions that answer a write's item use it too

CREATE OR REPLACE FUNCTION defarm_item_json(p_dfid text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb;
BEGIN
    SELECT defarm_item_render(i) INTO v FROM items i WHERE i.dfid = p_dfid;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION defarm_item_add_identifiers(p_dfid text,
                                                       p_ids jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_identifiers (dfid, namespace, key, value, id_type, scope,
                                  verified, verification_date)
    SELECT p_dfid, x->>'namespace', x->>'key', x->>'value', x->>'id_type',
           x->>'scope', coalesce((x->>'verified')::boolean, false),
           (x->>'verification_date')::timestamptz
    FROM jsonb_array_elements(p_ids) WITH ORDINALITY AS t(x, n)
    ORDER BY n
    ON CONFLICT ON CONSTRAINT item_identifiers_unique DO NOTHING;
END
$$;

ALTER TABLE items ADD COLUMN doc text;

CREATE FUNCTION defarm_item_doc() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.doc := defarm_item_render(NEW)::text;
    RETURN NEW;
END
$$;

CREATE TRIGGER items_doc BEFORE INSERT OR UPDATE ON items
    FOR EACH ROW EXECUTE FUNCTION defarm_item_doc();

-- the items of the identifiers a statement inserted, updated or deleted

-- (an array, so that the items are found by their key: a join with a
-- transition table, which has no statistics, may be planned as a scan)

CREATE FUNCTION defarm_item_identifiers_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_dfids  text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_dfids := ARRAY(SELECT DISTINCT n.dfid FROM new_ids n);
    ELSIF TG_OP = 'UPDATE' THEN
        v_dfids := ARRAY(SELECT n.dfid FROM new_ids n
                         UNION SELECT o.dfid FROM old_ids o);
    ELSE
        v_dfids := ARRAY(SELECT DISTINCT o.dfid FROM old_ids o);
    END IF;

    IF cardinality(v_dfids) > 0 THEN
        UPDATE items SET doc = NULL WHERE dfid = ANY (v_dfids);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER item_identifiers_doc_insert AFTER INSERT ON item_identifiers
    REFERENCING NEW TABLE AS new_ids
    FOR EACH STATEMENT EXECUTE FUNCTION defarm_item_identifiers_changed();

CREATE TRIGGER item_identifiers_doc_update AFTER UPDATE ON item_identifiers
    REFERENCING NEW TABLE AS new_ids OLD TABLE AS old_ids
    FOR EACH STATEMENT EXECUTE FUNCTION defarm_item_identifiers_changed();

CREATE TRIGGER item_identifiers_doc_delete AFTER DELETE ON item_identifiers
    REFERENCING OLD TABLE AS old_ids
    FOR EACH STATEMENT EXECUTE FUNCTION defarm_item_identifiers_changed();

UPDATE items SET doc = NULL;

ALTER TABLE items ALTER COLUMN doc SET NOT NULL;
