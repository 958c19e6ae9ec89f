-- Items, their identifiers, and the functions that change them.
--
-- Every write that must not interleave with another (create with entity
-- resolution, enrich) is one function, run as one statement: identifiers
-- are serialised by transaction-scoped advisory locks taken in one order,
-- so two concurrent creates with the same new identifier make one item.
-- Items are rendered to the API's JSON here, once, by defarm_item_json().

-- DFIDs: DFID-YYYYMMDD-NNNNNN-CHK, the sequence from one database sequence
-- (the original's per-process counters restarted at 1 and collided).

CREATE SEQUENCE dfid_seq;

CREATE FUNCTION defarm_dfid_check(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    h  bigint := 0;
    i  int;
BEGIN
    -- h = h * 31 + byte, as a uint32; the check is h mod 65535, in hex
    FOR i IN 1 .. length(body) LOOP
        h := (h * 31 + ascii(substr(body, i, 1))) % 4294967296;
    END LOOP;
    RETURN upper(to_hex(h % 65535));
END
$$;

CREATE FUNCTION defarm_dfid() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    d  text := to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD');
    s  text := nextval('dfid_seq')::text;
    n  text := lpad(s, greatest(6, length(s)), '0');
BEGIN
    RETURN 'DFID-' || d || '-' || n || '-' || defarm_dfid_check(d || n);
END
$$;

CREATE TABLE items (
    dfid                text PRIMARY KEY,
    owner_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status              text NOT NULL DEFAULT 'Active',
    enriched_data       jsonb NOT NULL DEFAULT '{}',
    source_entries      uuid[] NOT NULL DEFAULT '{}',
    confidence_score    double precision NOT NULL DEFAULT 1.0,
    legacy_mode         boolean NOT NULL DEFAULT true,
    local_id            uuid UNIQUE,          -- a local item: LID-<uuid>
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_modified       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX items_owner_created ON items (owner_id, created_at DESC, dfid);
CREATE INDEX items_status ON items (status);

CREATE TABLE item_identifiers (
    id                  bigserial PRIMARY KEY,
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    namespace           text NOT NULL DEFAULT 'generic',
    key                 text NOT NULL,
    value               text NOT NULL,
    id_type             text NOT NULL DEFAULT 'Contextual'
                        CHECK (id_type IN ('Canonical', 'Contextual')),
    scope               text,
    verified            boolean NOT NULL DEFAULT false,
    verification_date   timestamptz,

    CONSTRAINT item_identifiers_unique UNIQUE (dfid, namespace, key, value)
);

CREATE INDEX item_identifiers_key_value ON item_identifiers (key, value);
CREATE INDEX item_identifiers_namespace ON item_identifiers (namespace);

-- An item as the API shows it (ItemResponse).

CREATE FUNCTION defarm_item_json(p_dfid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
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
        'status', i.status)
    FROM items i WHERE i.dfid = p_dfid
$$;

-- Identifiers arrive checked and complete (namespace, key, value, id_type,
-- scope, verified, verification_date) from the module.

CREATE FUNCTION defarm_item_add_identifiers(p_dfid text, p_ids jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO item_identifiers (dfid, namespace, key, value, id_type, scope,
                                  verified, verification_date)
    SELECT p_dfid, x->>'namespace', x->>'key', x->>'value', x->>'id_type',
           x->>'scope', coalesce((x->>'verified')::boolean, false),
           (x->>'verification_date')::timestamptz
    FROM jsonb_array_elements(p_ids) WITH ORDINALITY AS t(x, n)
    ORDER BY n
    ON CONFLICT ON CONSTRAINT item_identifiers_unique DO NOTHING
$$;

-- Serialises writers of the same identifiers of one owner, in one order.

CREATE FUNCTION defarm_item_lock_identifiers(p_owner text, p_ids jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    k  bigint;
BEGIN
    FOR k IN
        SELECT DISTINCT hashtextextended(p_owner || chr(31) || (x->>'key')
                                         || chr(31) || (x->>'value'), 0) AS h
        FROM jsonb_array_elements(p_ids) x
        ORDER BY h
    LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
END
$$;

-- The caller's Active, tokenized items that have one of these identifiers
-- (key and value).  Each identifier is looked up on its own, with its key
-- and value as parameters, so the (key, value) index is used: a join with
-- the whole array made the planner (assuming 100 elements) scan every
-- user's identifiers.  Local items are merged through their own workflow.

CREATE FUNCTION defarm_item_matches(p_owner text, p_ids jsonb)
RETURNS text[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_key    text;
    v_value  text;
    v_found  text[] := '{}';
BEGIN
    FOR v_key, v_value IN
        SELECT x->>'key', x->>'value' FROM jsonb_array_elements(p_ids) x
    LOOP
        v_found := v_found || ARRAY(
            SELECT ii.dfid FROM item_identifiers ii
            JOIN items i ON i.dfid = ii.dfid
            WHERE ii.key = v_key AND ii.value = v_value
              AND i.owner_id = p_owner AND i.status = 'Active'
              AND i.local_id IS NULL);
    END LOOP;

    RETURN (SELECT array_agg(DISTINCT d ORDER BY d) FROM unnest(v_found) d);
END
$$;

-- Admins read every item, event and receipt (writes stay the owner's).

CREATE FUNCTION defarm_is_admin(p_user text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT u.is_admin AND u.status = 'Active'
                     FROM users u WHERE u.id = p_user), false)
$$;

-- Writes that touch several of an owner's items (batch, merge, split, the
-- local workflow, pending resolution) take this first: they run one at a
-- time per owner, so their row locks can never form a cycle.

CREATE FUNCTION defarm_owner_lock(p_owner text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('owner:' || p_owner, 0))
$$;

-- Create, or enrich the item of the caller that already has one of these
-- identifiers (the original's entity resolution).  Returns the dfid,
-- whether it is new, the item's JSON, and the dfids of the other items
-- the identifiers matched when they match more than one (then nothing is
-- written).

CREATE FUNCTION defarm_item_create(p_owner text, p_ids jsonb,
                                   p_enriched jsonb, p_source uuid)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_dfid     text;
    v_matches  text[];
    v_try      int;
BEGIN
    PERFORM defarm_item_lock_identifiers(p_owner, p_ids);

    /*
     * The matched item may stop being Active (merged, split, deprecated)
     * between the match and the update: then the update finds no row and
     * the identifiers are resolved again (a merge moved them on).
     */

    FOR v_try IN 1 .. 3 LOOP
        v_matches := defarm_item_matches(p_owner, p_ids);

        IF coalesce(array_length(v_matches, 1), 0) > 1 THEN
            RETURN QUERY SELECT NULL::text, false, NULL::jsonb, v_matches;
            RETURN;
        END IF;

        EXIT WHEN v_matches IS NULL;

        v_dfid := v_matches[1];

        UPDATE items i
        SET enriched_data = i.enriched_data || p_enriched,
            source_entries = array_append(i.source_entries, p_source),
            last_modified = now()
        WHERE i.dfid = v_dfid AND i.status = 'Active';

        IF FOUND THEN
            PERFORM defarm_item_add_identifiers(v_dfid, p_ids);

            RETURN QUERY SELECT v_dfid, false, defarm_item_json(v_dfid),
                                NULL::text[];
            RETURN;
        END IF;
    END LOOP;

    IF v_matches IS NOT NULL THEN
        RETURN QUERY SELECT NULL::text, false, NULL::jsonb, v_matches;
        RETURN;
    END IF;

    v_dfid := defarm_dfid();

    INSERT INTO items (dfid, owner_id, enriched_data, source_entries)
    VALUES (v_dfid, p_owner, p_enriched, ARRAY[p_source]);

    PERFORM defarm_item_add_identifiers(v_dfid, p_ids);

    RETURN QUERY SELECT v_dfid, true, defarm_item_json(v_dfid), NULL::text[];
END
$$;

-- PUT: merge enriched data (key overwrite), add identifiers not present,
-- append a source entry.  outcome: ok, not_found (not the caller's item),
-- not_active (merged, split or deprecated: what it gains would be lost).

CREATE FUNCTION defarm_item_enrich(p_owner text, p_dfid text, p_ids jsonb,
                                   p_enriched jsonb)
RETURNS TABLE (outcome text, item jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF p_ids IS NOT NULL THEN
        PERFORM defarm_item_lock_identifiers(p_owner, p_ids);
    END IF;

    UPDATE items i
    SET enriched_data = i.enriched_data || coalesce(p_enriched, '{}'),
        source_entries = CASE WHEN p_enriched IS NULL THEN i.source_entries
                         ELSE array_append(i.source_entries,
                                           gen_random_uuid()) END,
        last_modified = now()
    WHERE i.dfid = p_dfid AND i.owner_id = p_owner AND i.status = 'Active';

    IF NOT FOUND THEN
        RETURN QUERY SELECT CASE WHEN EXISTS (
                                SELECT 1 FROM items i
                                WHERE i.dfid = p_dfid
                                  AND i.owner_id = p_owner)
                            THEN 'not_active' ELSE 'not_found' END,
                            NULL::jsonb;
        RETURN;
    END IF;

    IF p_ids IS NOT NULL THEN
        PERFORM defarm_item_add_identifiers(p_dfid, p_ids);
    END IF;

    RETURN QUERY SELECT 'ok'::text, defarm_item_json(p_dfid);
END
$$;

-- Soft delete: the item stays, Deprecated.  outcome: ok, not_found.

CREATE FUNCTION defarm_item_deprecate(p_owner text, p_dfid text)
RETURNS TABLE (outcome text, item jsonb) LANGUAGE plpgsql AS $$
BEGIN
    UPDATE items i SET status = 'Deprecated', last_modified = now()
    WHERE i.dfid = p_dfid AND i.owner_id = p_owner;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    RETURN QUERY SELECT 'ok'::text, defarm_item_json(p_dfid);
END
$$;
