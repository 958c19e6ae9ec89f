-- Merkle trees: an item's root over its events, a circuit's root over its
-- items' roots, inclusion proofs that anyone can check offline.  The
-- original's rules with SHA-256 in place of BLAKE3 (docs/api.md "Merkle"
-- has them exactly):
--   event leaf    SHA-256(UTF-8 "event_id|event_type|timestamp_nanos|
--                 source|metadata_json"), metadata_json canonical;
--   circuit leaf  SHA-256(UTF-8 "dfid|item_root_hex");
--   leaves sorted by their raw bytes (= lowercase hex order);
--   a parent      SHA-256(UTF-8 "left_hex|right_hex"), lowercase hex;
--   an odd node   paired, on its right, with SHA-256(UTF-8 "EMPTY_NODE");
--   one leaf      is the root; no leaf: the root is the empty node.
--
-- Each tree is stored, one row per level, its nodes' raw 32-byte hashes
-- end to end in a bytea kept out of line uncompressed (STORAGE EXTERNAL),
-- so substring() fetches only the TOAST chunks it needs: a proof reads
-- one node per level and the binary search's leaves, never every event.
-- A write changes the leaves in memory and hashes again only the nodes
-- from the first changed position on (sorted leaves shift on insert).
--
-- The trees follow the event writes through the functions that make them
-- (wrapped below, each renamed *_unmerkled and called by a function of
-- its own name), not triggers: items, events and pushes are benchmarked,
-- and the cost stays visible where the write is.  Lock order: an item's
-- tree, then its circuits' trees in circuit order.

CREATE TABLE merkle_trees (
    tree_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dfid                text UNIQUE REFERENCES items (dfid) ON DELETE CASCADE,
    circuit_id          uuid UNIQUE
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    leaf_count          int NOT NULL DEFAULT 0,
    root                bytea NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CHECK ((dfid IS NULL) <> (circuit_id IS NULL))
);

-- level 0 the sorted leaves, the last level the root alone

CREATE TABLE merkle_levels (
    tree_id             bigint NOT NULL
                        REFERENCES merkle_trees ON DELETE CASCADE,
    level               int NOT NULL,
    nodes               bytea NOT NULL,

    PRIMARY KEY (tree_id, level)
);

ALTER TABLE merkle_levels ALTER COLUMN nodes SET STORAGE EXTERNAL;

-- which leaf stands for which event (what a change must take out), and
-- the string it is the hash of (what a proof shows)

CREATE TABLE merkle_event_leaves (
    event_id            uuid PRIMARY KEY,
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    leaf                bytea NOT NULL,
    leaf_data           text NOT NULL
);

CREATE INDEX merkle_event_leaves_dfid ON merkle_event_leaves (dfid);

CREATE TABLE merkle_circuit_leaves (
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    dfid                text NOT NULL,
    item_root           bytea NOT NULL,
    leaf                bytea NOT NULL,

    PRIMARY KEY (circuit_id, dfid)
);

CREATE INDEX merkle_circuit_leaves_dfid ON merkle_circuit_leaves (dfid);

-- a circuit whose leaves changed since its levels were hashed: rows only
-- added by the writes (no row they would all lock), taken by the next
-- read of the circuit's tree (defarm_merkle_circuit_fresh)

CREATE TABLE merkle_circuit_dirty (
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    marked_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX merkle_circuit_dirty_circuit ON merkle_circuit_dirty (circuit_id);


CREATE FUNCTION defarm_merkle_empty() RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256('EMPTY_NODE'::bytea)
$$;

CREATE FUNCTION defarm_merkle_pair(p_left bytea, p_right bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(encode(p_left, 'hex') || '|'
                             || encode(p_right, 'hex'), 'UTF8'))
$$;

CREATE FUNCTION defarm_merkle_leaf_data(e events) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT e.event_id::text || '|' || e.event_type || '|'
           || (extract(epoch FROM e.created_at) * 1000000000)::bigint::text
           || '|' || e.owner_id || '|' || defarm_canonical_json(e.metadata)
$$;

CREATE FUNCTION defarm_merkle_circuit_leaf(p_dfid text, p_root bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(p_dfid || '|' || encode(p_root, 'hex'), 'UTF8'))
$$;

-- the first position whose leaf is not below p_leaf, in sorted leaves
-- held in memory

CREATE FUNCTION defarm_merkle_bound(p_nodes bytea, p_leaf bytea)
RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    lo   int := 0;
    hi   int := length(p_nodes) / 32;
    mid  int;
BEGIN
    WHILE lo < hi LOOP
        mid := (lo + hi) / 2;
        IF substring(p_nodes FROM mid * 32 + 1 FOR 32) < p_leaf THEN
            lo := mid + 1;
        ELSE
            hi := mid;
        END IF;
    END LOOP;

    RETURN lo;
END
$$;

-- the first leaf to look at for p_leaf: the leaves are hashes, spread
-- evenly, so a leaf's rank is close to its value times the count (within
-- a few times sqrt(count)/2), and the 512 leaves from 256 before that
-- guess hold it nearly always

CREATE FUNCTION defarm_merkle_guess(p_leaf bytea, p_count int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(0, ((get_byte(p_leaf, 0) * 65536
                         + get_byte(p_leaf, 1) * 256
                         + get_byte(p_leaf, 2))::bigint
                        * p_count / 16777216)::int - 256)
$$;

-- the position of p_leaf in the stored leaves, or NULL: those 512 leaves
-- read at once (substring() fetches only their TOAST chunks), else a
-- binary search over the stored leaves, 32 bytes read a step

CREATE FUNCTION defarm_merkle_locate(p_tree bigint, p_count int,
                                     p_leaf bytea)
RETURNS int
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lo      int := 0;
    hi      int := p_count;
    mid     int;
    v       bytea;
    v_from  int := defarm_merkle_guess(p_leaf, p_count);
BEGIN
    SELECT position(p_leaf IN substring(m.nodes FROM v_from * 32 + 1
                                        FOR 512 * 32))
    INTO mid
    FROM merkle_levels m WHERE m.tree_id = p_tree AND m.level = 0;

    IF mid > 0 AND (mid - 1) % 32 = 0 THEN
        RETURN v_from + (mid - 1) / 32;
    END IF;

    WHILE lo < hi LOOP
        mid := (lo + hi) / 2;

        SELECT substring(m.nodes FROM mid * 32 + 1 FOR 32) INTO v
        FROM merkle_levels m WHERE m.tree_id = p_tree AND m.level = 0;

        IF v = p_leaf THEN
            RETURN mid;
        ELSIF v < p_leaf THEN
            lo := mid + 1;
        ELSE
            hi := mid;
        END IF;
    END LOOP;

    RETURN NULL;
END
$$;

-- the levels above new leaves, hashed again from position p_from of the
-- leaves on (what precedes it is unchanged and kept); the root and the
-- count recorded

CREATE FUNCTION defarm_merkle_levels(p_tree bigint, p_leaves bytea,
                                     p_from int)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_lower   bytea := p_leaves;
    v_level   int := 0;
    v_from    int := p_from;
    v_prefix  bytea;
    v_new     bytea;
    v_count   int;
BEGIN
    INSERT INTO merkle_levels (tree_id, level, nodes)
    VALUES (p_tree, 0, p_leaves)
    ON CONFLICT (tree_id, level) DO UPDATE SET nodes = EXCLUDED.nodes;

    WHILE length(v_lower) > 32 LOOP
        v_count := length(v_lower) / 32;
        v_level := v_level + 1;
        v_from := v_from / 2;

        SELECT substring(m.nodes FROM 1 FOR v_from * 32) INTO v_prefix
        FROM merkle_levels m
        WHERE m.tree_id = p_tree AND m.level = v_level;

        -- a level the tree did not have, or shorter: hashed from its start
        v_prefix := coalesce(v_prefix, ''::bytea);
        v_from := length(v_prefix) / 32;

        SELECT v_prefix || coalesce(string_agg(defarm_merkle_pair(
                   substring(v_lower FROM i * 64 + 1 FOR 32),
                   coalesce(nullif(substring(v_lower FROM i * 64 + 33
                                             FOR 32), ''::bytea),
                            defarm_merkle_empty())),
                   ''::bytea ORDER BY i), ''::bytea)
        INTO v_new
        FROM generate_series(v_from, (v_count + 1) / 2 - 1) i;

        INSERT INTO merkle_levels (tree_id, level, nodes)
        VALUES (p_tree, v_level, v_new)
        ON CONFLICT (tree_id, level) DO UPDATE SET nodes = EXCLUDED.nodes;

        v_lower := v_new;
    END LOOP;

    DELETE FROM merkle_levels WHERE tree_id = p_tree AND level > v_level;

    UPDATE merkle_trees
    SET leaf_count = length(p_leaves) / 32,
        root = CASE WHEN length(v_lower) = 0 THEN defarm_merkle_empty()
                    ELSE v_lower END,
        updated_at = now()
    WHERE tree_id = p_tree;
END
$$;

-- take leaves out of a tree and put others in (the caller holds the
-- tree's row lock)

CREATE FUNCTION defarm_merkle_apply(p_tree bigint, p_del bytea[],
                                    p_add bytea[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_nodes  bytea;
    v_from   int;
    v_pos    int;
    x        bytea;
BEGIN
    IF coalesce(cardinality(p_del), 0) + coalesce(cardinality(p_add), 0) = 0
    THEN
        RETURN;
    END IF;

    SELECT m.nodes INTO v_nodes FROM merkle_levels m
    WHERE m.tree_id = p_tree AND m.level = 0;

    v_nodes := coalesce(v_nodes, ''::bytea);
    v_from := length(v_nodes) / 32;

    FOREACH x IN ARRAY coalesce(p_del, '{}') LOOP
        v_pos := defarm_merkle_bound(v_nodes, x);

        IF substring(v_nodes FROM v_pos * 32 + 1 FOR 32) = x THEN
            v_nodes := overlay(v_nodes PLACING ''::bytea
                               FROM v_pos * 32 + 1 FOR 32);
            v_from := least(v_from, v_pos);
        END IF;
    END LOOP;

    FOREACH x IN ARRAY coalesce(p_add, '{}') LOOP
        v_pos := defarm_merkle_bound(v_nodes, x);

        IF substring(v_nodes FROM v_pos * 32 + 1 FOR 32)
           IS DISTINCT FROM x
        THEN
            v_nodes := overlay(v_nodes PLACING x FROM v_pos * 32 + 1 FOR 0);
            v_from := least(v_from, v_pos);
        END IF;
    END LOOP;

    PERFORM defarm_merkle_levels(p_tree, v_nodes, v_from);
END
$$;

-- an item's or a circuit's tree, made if missing, locked

CREATE FUNCTION defarm_merkle_tree(p_dfid text, p_circuit uuid)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_tree  bigint;
BEGIN
    SELECT t.tree_id INTO v_tree FROM merkle_trees t
    WHERE (t.dfid = p_dfid OR t.circuit_id = p_circuit)
    FOR UPDATE;

    IF v_tree IS NULL THEN
        INSERT INTO merkle_trees (dfid, circuit_id, root)
        VALUES (p_dfid, p_circuit, defarm_merkle_empty())
        ON CONFLICT DO NOTHING;

        SELECT t.tree_id INTO v_tree FROM merkle_trees t
        WHERE (t.dfid = p_dfid OR t.circuit_id = p_circuit)
        FOR UPDATE;
    END IF;

    RETURN v_tree;
END
$$;

-- an item's root: the empty node while it has no event; NULL for no item

CREATE FUNCTION defarm_merkle_item_root_raw(p_dfid text) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(t.root, defarm_merkle_empty())
            FROM items i LEFT JOIN merkle_trees t ON t.dfid = i.dfid
            WHERE i.dfid = p_dfid);
END
$$;

CREATE FUNCTION defarm_merkle_item_root(p_dfid text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(defarm_merkle_item_root_raw(p_dfid), 'hex')
$$;

-- the item's leaf in a circuit's tree as the item now stands: put in,
-- changed or taken out.  A circuit's leaves follow every write; its
-- levels are hashed again at its next read (defarm_merkle_circuit_fresh):
-- pushes into one circuit are many, concurrent and benchmarked, and
-- hashing its levels at each would serialize them on the tree and cost
-- as many hashes as the circuit has items, each time.

CREATE FUNCTION defarm_merkle_circuit_item(p_circuit uuid, p_dfid text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_root  bytea;
    v_old   bytea;
    v_new   bytea;
BEGIN
    IF EXISTS (SELECT 1 FROM circuit_items ci
               WHERE ci.circuit_id = p_circuit AND ci.dfid = p_dfid)
    THEN
        v_root := defarm_merkle_item_root_raw(p_dfid);
    END IF;

    IF v_root IS NOT NULL THEN
        v_new := defarm_merkle_circuit_leaf(p_dfid, v_root);
    END IF;

    SELECT l.leaf INTO v_old FROM merkle_circuit_leaves l
    WHERE l.circuit_id = p_circuit AND l.dfid = p_dfid
    FOR UPDATE;

    IF v_old IS NOT DISTINCT FROM v_new THEN
        RETURN;
    END IF;

    IF v_new IS NULL THEN
        DELETE FROM merkle_circuit_leaves
        WHERE circuit_id = p_circuit AND dfid = p_dfid;
    ELSE
        INSERT INTO merkle_circuit_leaves (circuit_id, dfid, item_root, leaf)
        VALUES (p_circuit, p_dfid, v_root, v_new)
        ON CONFLICT (circuit_id, dfid) DO UPDATE
        SET item_root = EXCLUDED.item_root, leaf = EXCLUDED.leaf;
    END IF;

    INSERT INTO merkle_circuit_dirty (circuit_id) VALUES (p_circuit);
END
$$;

-- a circuit's levels hashed again from its leaves if they changed since;
-- the marks taken are those this transaction sees (a write not yet
-- committed leaves its own for the next read)

CREATE FUNCTION defarm_merkle_circuit_fresh(p_circuit uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_tree    bigint;
    v_leaves  bytea;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM merkle_circuit_dirty d
                   WHERE d.circuit_id = p_circuit)
    THEN
        RETURN;
    END IF;

    v_tree := defarm_merkle_tree(NULL, p_circuit);

    DELETE FROM merkle_circuit_dirty WHERE circuit_id = p_circuit;

    IF NOT FOUND THEN
        RETURN;         -- another read took them while this one waited
    END IF;

    SELECT coalesce(string_agg(l.leaf, ''::bytea ORDER BY l.leaf), '')
    INTO v_leaves
    FROM merkle_circuit_leaves l WHERE l.circuit_id = p_circuit;

    PERFORM defarm_merkle_levels(v_tree, v_leaves, 0);
END
$$;

-- every circuit an item is in (or was in, by its leaf) follows its root

CREATE FUNCTION defarm_merkle_item_circuits(p_dfid text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c  uuid;
BEGIN
    FOR c IN SELECT ci.circuit_id FROM circuit_items ci
             WHERE ci.dfid = p_dfid
             UNION
             SELECT l.circuit_id FROM merkle_circuit_leaves l
             WHERE l.dfid = p_dfid
             ORDER BY 1
    LOOP
        PERFORM defarm_merkle_circuit_item(c, p_dfid);
    END LOOP;
END
$$;

-- bring an item's tree in line with its events: those of p_events, or
-- (NULL) all of them; a leaf that changed is taken out and the new one put
-- in, once for all, and the circuits follow

CREATE FUNCTION defarm_merkle_item_sync(p_dfid text, p_events uuid[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_tree      bigint;
    v_del       bytea[];
    v_add       bytea[];
    v_del_ids   uuid[];
    v_add_ids   uuid[];
    v_add_data  text[];
    v_before    bytea;
    o           record;
BEGIN
    IF p_dfid IS NULL OR p_dfid LIKE 'LOCAL-EVENT-%' THEN
        RETURN;
    END IF;

    v_tree := defarm_merkle_tree(p_dfid, NULL);

    IF v_tree IS NULL THEN
        RETURN;
    END IF;

    IF p_events IS NULL THEN
        SELECT array_agg(l.leaf) FILTER (WHERE l.leaf IS NOT NULL),
               array_agg(l.event_id) FILTER (WHERE l.leaf IS NOT NULL),
               array_agg(e.leaf) FILTER (WHERE e.leaf IS NOT NULL),
               array_agg(e.event_id) FILTER (WHERE e.leaf IS NOT NULL),
               array_agg(e.data) FILTER (WHERE e.leaf IS NOT NULL)
        INTO v_del, v_del_ids, v_add, v_add_ids, v_add_data
        FROM (SELECT ev.event_id, d.data,
                     sha256(convert_to(d.data, 'UTF8')) AS leaf
              FROM events ev,
                   LATERAL (SELECT defarm_merkle_leaf_data(ev) AS data) d
              WHERE ev.dfid = p_dfid) e
        FULL JOIN (SELECT ml.event_id, ml.leaf FROM merkle_event_leaves ml
                   WHERE ml.dfid = p_dfid) l
            ON l.event_id = e.event_id
        WHERE e.leaf IS DISTINCT FROM l.leaf;
    ELSE
        SELECT array_agg(l.leaf) FILTER (WHERE l.leaf IS NOT NULL),
               array_agg(l.event_id) FILTER (WHERE l.leaf IS NOT NULL),
               array_agg(e.leaf) FILTER (WHERE e.leaf IS NOT NULL),
               array_agg(e.event_id) FILTER (WHERE e.leaf IS NOT NULL),
               array_agg(e.data) FILTER (WHERE e.leaf IS NOT NULL)
        INTO v_del, v_del_ids, v_add, v_add_ids, v_add_data
        FROM (SELECT ev.event_id, d.data,
                     sha256(convert_to(d.data, 'UTF8')) AS leaf
              FROM events ev,
                   LATERAL (SELECT defarm_merkle_leaf_data(ev) AS data) d
              WHERE ev.event_id = ANY (p_events) AND ev.dfid = p_dfid) e
        FULL JOIN (SELECT ml.event_id, ml.leaf FROM merkle_event_leaves ml
                   WHERE ml.event_id = ANY (p_events)
                     AND ml.dfid = p_dfid) l
            ON l.event_id = e.event_id
        WHERE e.leaf IS DISTINCT FROM l.leaf;
    END IF;

    IF v_del IS NULL AND v_add IS NULL THEN
        RETURN;
    END IF;

    -- an event that came from another item leaves that item's tree
    FOR o IN SELECT ml.dfid, array_agg(ml.leaf) AS leaves
             FROM merkle_event_leaves ml
             WHERE ml.event_id = ANY (v_add_ids) AND ml.dfid <> p_dfid
             GROUP BY ml.dfid ORDER BY ml.dfid
    LOOP
        PERFORM defarm_merkle_apply(defarm_merkle_tree(o.dfid, NULL),
                                    o.leaves, NULL);
        DELETE FROM merkle_event_leaves
        WHERE dfid = o.dfid AND leaf = ANY (o.leaves);
        PERFORM defarm_merkle_item_circuits(o.dfid);
    END LOOP;

    DELETE FROM merkle_event_leaves
    WHERE event_id = ANY (v_del_ids) AND dfid = p_dfid;

    INSERT INTO merkle_event_leaves (event_id, dfid, leaf, leaf_data)
    SELECT a.id, p_dfid, a.leaf, a.data
    FROM unnest(v_add_ids, v_add, v_add_data) a (id, leaf, data)
    ON CONFLICT (event_id) DO UPDATE
    SET dfid = EXCLUDED.dfid, leaf = EXCLUDED.leaf,
        leaf_data = EXCLUDED.leaf_data;

    SELECT t.root INTO v_before FROM merkle_trees t WHERE t.tree_id = v_tree;

    PERFORM defarm_merkle_apply(v_tree, v_del, v_add);

    IF (SELECT t.root FROM merkle_trees t WHERE t.tree_id = v_tree)
       IS DISTINCT FROM v_before
    THEN
        PERFORM defarm_merkle_item_circuits(p_dfid);
    END IF;
END
$$;

-- the trees built again from the rows, all leaves at once: the migration,
-- a bulk load, or a check that what was maintained is what the rows give

CREATE FUNCTION defarm_merkle_item_rebuild(p_dfid text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_tree    bigint;
    v_leaves  bytea;
BEGIN
    v_tree := defarm_merkle_tree(p_dfid, NULL);

    DELETE FROM merkle_event_leaves WHERE dfid = p_dfid;

    INSERT INTO merkle_event_leaves (event_id, dfid, leaf, leaf_data)
    SELECT e.event_id, e.dfid, sha256(convert_to(d.data, 'UTF8')), d.data
    FROM events e, LATERAL (SELECT defarm_merkle_leaf_data(e) AS data) d
    WHERE e.dfid = p_dfid
    ON CONFLICT (event_id) DO UPDATE
    SET dfid = EXCLUDED.dfid, leaf = EXCLUDED.leaf,
        leaf_data = EXCLUDED.leaf_data;

    SELECT coalesce(string_agg(l.leaf, ''::bytea ORDER BY l.leaf), '')
    INTO v_leaves
    FROM merkle_event_leaves l WHERE l.dfid = p_dfid;

    PERFORM defarm_merkle_levels(v_tree, v_leaves, 0);
    PERFORM defarm_merkle_item_circuits(p_dfid);

    RETURN defarm_merkle_item_root(p_dfid);
END
$$;

CREATE FUNCTION defarm_merkle_circuit_rebuild(p_circuit uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_tree    bigint;
    v_leaves  bytea;
BEGIN
    v_tree := defarm_merkle_tree(NULL, p_circuit);

    DELETE FROM merkle_circuit_dirty WHERE circuit_id = p_circuit;
    DELETE FROM merkle_circuit_leaves WHERE circuit_id = p_circuit;

    INSERT INTO merkle_circuit_leaves (circuit_id, dfid, item_root, leaf)
    SELECT p_circuit, ci.dfid, r.root,
           defarm_merkle_circuit_leaf(ci.dfid, r.root)
    FROM circuit_items ci,
         LATERAL (SELECT defarm_merkle_item_root_raw(ci.dfid) AS root) r
    WHERE ci.circuit_id = p_circuit;

    SELECT coalesce(string_agg(l.leaf, ''::bytea ORDER BY l.leaf), '')
    INTO v_leaves
    FROM merkle_circuit_leaves l WHERE l.circuit_id = p_circuit;

    PERFORM defarm_merkle_levels(v_tree, v_leaves, 0);

    RETURN (SELECT encode(t.root, 'hex') FROM merkle_trees t
            WHERE t.tree_id = v_tree);
END
$$;


-- The writes that change events or a circuit's items, wrapped: the
-- original does its work, then the trees follow.

ALTER FUNCTION defarm_event_create(text, text, text, text, jsonb)
    RENAME TO defarm_event_create_unmerkled;

CREATE FUNCTION defarm_event_create(p_owner text, p_dfid text, p_type text,
                                    p_visibility text, p_metadata jsonb)
RETURNS TABLE (outcome text, event jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_outcome  text;
    v_event    jsonb;
BEGIN
    SELECT c.outcome, c.event INTO v_outcome, v_event
    FROM defarm_event_create_unmerkled(p_owner, p_dfid, p_type,
                                       p_visibility, p_metadata) c;

    IF v_outcome = 'ok' AND p_dfid IS NOT NULL
       AND NOT (v_event ->> 'was_deduplicated')::boolean
    THEN
        PERFORM defarm_merkle_item_sync(p_dfid,
                                        ARRAY[(v_event ->> 'event_id')::uuid]);
    END IF;

    RETURN QUERY SELECT v_outcome, v_event;
END
$$;

ALTER FUNCTION defarm_event_metadata(text, uuid, jsonb)
    RENAME TO defarm_event_metadata_unmerkled;

CREATE FUNCTION defarm_event_metadata(p_owner text, p_event uuid,
                                      p_metadata jsonb)
RETURNS TABLE (outcome text, event jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_outcome  text;
    v_event    jsonb;
BEGIN
    SELECT c.outcome, c.event INTO v_outcome, v_event
    FROM defarm_event_metadata_unmerkled(p_owner, p_event, p_metadata) c;

    IF v_outcome = 'ok' THEN
        PERFORM defarm_merkle_item_sync(
            (SELECT e.dfid FROM events e WHERE e.event_id = p_event),
            ARRAY[p_event]);
    END IF;

    RETURN QUERY SELECT v_outcome, v_event;
END
$$;

-- the push's or pull's event: made in this transaction, so stamped now()

ALTER FUNCTION defarm_circuit_event(text, circuits, text, text, uuid)
    RENAME TO defarm_circuit_event_unmerkled;

CREATE FUNCTION defarm_circuit_event(p_type text, c circuits, p_dfid text,
                                     p_user text, p_op uuid)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM defarm_circuit_event_unmerkled(p_type, c, p_dfid, p_user, p_op);

    PERFORM defarm_merkle_item_sync(p_dfid, ARRAY(
        SELECT e.event_id FROM events e
        WHERE e.dfid = p_dfid AND e.created_at = now()));
END
$$;

-- the item enters or leaves the circuit's tree (its own tree locked
-- first: the lock order)

ALTER FUNCTION defarm_operation_complete(circuit_operations)
    RENAME TO defarm_operation_complete_unmerkled;

CREATE FUNCTION defarm_operation_complete(o circuit_operations)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM defarm_operation_complete_unmerkled(o);
    PERFORM defarm_merkle_tree(o.dfid, NULL);
    PERFORM defarm_merkle_circuit_item(o.circuit_id, o.dfid);
END
$$;

-- tokenization moves a local item's events to the DFID; pushing local
-- events moves them into the item or merges them into an equal one

ALTER FUNCTION defarm_circuit_push_local(text, text, jsonb, text)
    RENAME TO defarm_circuit_push_local_unmerkled;

CREATE FUNCTION defarm_circuit_push_local(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_push_local_unmerkled(p_user, p_id, p_body, p_arg);

    IF a.status < 300 THEN
        PERFORM defarm_merkle_item_sync(a.body::jsonb #>> '{data,dfid}',
                                        NULL);
    END IF;

    RETURN a;
END
$$;

ALTER FUNCTION defarm_circuit_push_events(text, text, jsonb, text)
    RENAME TO defarm_circuit_push_events_unmerkled;

CREATE FUNCTION defarm_circuit_push_events(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_push_events_unmerkled(p_user, p_id, p_body, p_arg);

    IF a.status < 300 THEN
        PERFORM defarm_merkle_item_sync(p_body ->> 'dfid', ARRAY(
            SELECT (x ->> 'event_id')::uuid
            FROM jsonb_array_elements(a.body::jsonb -> 'events') x
            WHERE x ->> 'event_id' IS NOT NULL));
    END IF;

    RETURN a;
END
$$;


-- Proofs.  The path runs from the leaf up: at each level the sibling's
-- hash and its side.

-- (PL/pgSQL, here and for the other reads of a route: a SQL function
-- with a FROM is planned again at every call, PL/pgSQL keeps its plans)

-- (PL/pgSQL, here and for the other reads of a route: a SQL function
-- with a FROM is planned again at every call, PL/pgSQL keeps its plans)
--
-- The path as JSON text, made directly (the proof route is benchmarked):
-- one read of the tree's levels, a node each; a sibling past the level's
-- end is the empty node.

CREATE FUNCTION defarm_merkle_path_text(p_tree bigint, p_pos int)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT '[' || coalesce(string_agg(
               '{"hash":"' || encode(coalesce(nullif(substring(m.nodes
                   FROM ((p_pos >> m.level) # 1) * 32 + 1 FOR 32),
                   ''::bytea), defarm_merkle_empty()), 'hex')
               || CASE WHEN (p_pos >> m.level) & 1 = 0
                       THEN '","position":"right"}'
                       ELSE '","position":"left"}' END,
               ',' ORDER BY m.level), '') || ']'
    FROM merkle_levels m
    WHERE m.tree_id = p_tree AND octet_length(m.nodes) > 32);
END
$$;

-- GET /api/merkle/items/:dfid/merkle-proof/:event_id and its public
-- variant: the proof that an event is in its item's tree, for p_reader
-- (who must be able to read the item, unless p_public: the caller checked
-- that it is published).  The leaf data to whoever may read the event.
-- One read finds the item, the leaf, its tree and its position (nearly
-- always: see defarm_merkle_guess), one more the path; the JSON is made
-- as text.

CREATE FUNCTION defarm_merkle_item_proof_answer(p_dfid text, p_event uuid,
                                                p_reader text,
                                                p_public boolean)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      record;
    v_pos  int;
BEGIN
    SELECT i.owner_id, l.leaf, l.leaf_data, t.tree_id, t.leaf_count,
           t.root, t.updated_at, w.start,
           (SELECT position(l.leaf IN substring(m.nodes
                                                FROM w.start * 32 + 1
                                                FOR 512 * 32))
            FROM merkle_levels m
            WHERE m.tree_id = t.tree_id AND m.level = 0) AS found
    INTO r
    FROM items i
    LEFT JOIN merkle_event_leaves l
        ON l.event_id = p_event AND l.dfid = i.dfid
    LEFT JOIN merkle_trees t ON t.dfid = i.dfid
    LEFT JOIN LATERAL (SELECT defarm_merkle_guess(l.leaf, t.leaf_count)
                              AS start) w ON true
    WHERE i.dfid = p_dfid;

    IF NOT p_public AND r.owner_id IS DISTINCT FROM p_reader
       AND NOT defarm_item_readable(p_dfid, p_reader)
    THEN
        RETURN defarm_answer(404, 'Item not found: ' || p_dfid);
    END IF;

    IF r.leaf IS NULL OR r.tree_id IS NULL THEN
        RETURN defarm_answer(404, 'Event not found in this item: '
                                  || p_event);
    END IF;

    IF r.found > 0 AND (r.found - 1) % 32 = 0 THEN
        v_pos := r.start + (r.found - 1) / 32;
    ELSE
        v_pos := defarm_merkle_locate(r.tree_id, r.leaf_count, r.leaf);
        IF v_pos IS NULL THEN
            RETURN defarm_answer(404, 'Event not found in this item: '
                                      || p_event);
        END IF;
    END IF;

    -- an item's events are its owner's
    RETURN defarm_answer(200,
        '{"proof_type":"event_in_item","hash_algorithm":"SHA-256"'
        || ',"dfid":' || to_json(p_dfid)::text
        || ',"event_id":"' || p_event::text
        || '","leaf_hash":"' || encode(r.leaf, 'hex') || '"'
        || CASE WHEN r.owner_id = p_reader
                     OR defarm_merkle_event_readable(p_event, p_reader)
                THEN ',"leaf_data":' || to_json(r.leaf_data)::text
                ELSE '' END
        || ',"leaf_index":' || v_pos
        || ',"leaf_count":' || r.leaf_count
        || ',"path":' || (
            -- defarm_merkle_path_text's statement, here: one call less
            SELECT '[' || coalesce(string_agg(
                '{"hash":"' || encode(coalesce(nullif(substring(m.nodes
                    FROM ((v_pos >> m.level) # 1) * 32 + 1 FOR 32),
                    ''::bytea), defarm_merkle_empty()), 'hex')
                || CASE WHEN (v_pos >> m.level) & 1 = 0
                        THEN '","position":"right"}'
                        ELSE '","position":"left"}' END,
                ',' ORDER BY m.level), '') || ']'
            FROM merkle_levels m
            WHERE m.tree_id = r.tree_id AND octet_length(m.nodes) > 32)
        || ',"merkle_root":"' || encode(r.root, 'hex')
        || '","root_updated_at":' || to_json(r.updated_at)::text || '}');
END
$$;

-- the proof that an event is in its item's tree, with the leaf data, NULL
-- if it is not (what other parts use: attestations)

CREATE FUNCTION defarm_merkle_item_proof(p_dfid text, p_event_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_merkle_item_proof_answer(p_dfid, p_event_id,
        (SELECT i.owner_id FROM items i WHERE i.dfid = p_dfid), true);

    RETURN CASE WHEN a.status = 200 THEN a.body::jsonb END;
END
$$;

CREATE FUNCTION defarm_merkle_circuit_proof(p_circuit uuid, p_dfid text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    l      merkle_circuit_leaves;
    t      merkle_trees;
    v_pos  int;
BEGIN
    PERFORM defarm_merkle_circuit_fresh(p_circuit);

    SELECT * INTO l FROM merkle_circuit_leaves
    WHERE circuit_id = p_circuit AND dfid = p_dfid;

    SELECT * INTO t FROM merkle_trees WHERE circuit_id = p_circuit;

    IF l.leaf IS NULL OR t.tree_id IS NULL THEN
        RETURN NULL;
    END IF;

    v_pos := defarm_merkle_locate(t.tree_id, t.leaf_count, l.leaf);

    IF v_pos IS NULL THEN
        RETURN NULL;
    END IF;

    RETURN jsonb_build_object(
        'proof_type', 'item_in_circuit', 'hash_algorithm', 'SHA-256',
        'circuit_id', p_circuit, 'dfid', p_dfid,
        'item_root', encode(l.item_root, 'hex'),
        'leaf_hash', encode(l.leaf, 'hex'),
        'leaf_data', p_dfid || '|' || encode(l.item_root, 'hex'),
        'leaf_index', v_pos, 'leaf_count', t.leaf_count,
        'path', defarm_merkle_path_text(t.tree_id, v_pos)::jsonb,
        'merkle_root', encode(t.root, 'hex'),
        'root_updated_at', t.updated_at);
END
$$;

-- the root a proof leads to (its JSON checked by defarm_merkle_proof_error
-- first)

CREATE FUNCTION defarm_merkle_proof_root(p_proof jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v  bytea := decode(lower(p_proof ->> 'leaf_hash'), 'hex');
    s  jsonb;
BEGIN
    FOR s IN SELECT * FROM jsonb_array_elements(p_proof -> 'path') LOOP
        IF s ->> 'position' = 'right' THEN
            v := defarm_merkle_pair(v, decode(lower(s ->> 'hash'), 'hex'));
        ELSE
            v := defarm_merkle_pair(decode(lower(s ->> 'hash'), 'hex'), v);
        END IF;
    END LOOP;

    RETURN encode(v, 'hex');
END
$$;

CREATE FUNCTION defarm_merkle_is_hash(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(p) = 'string' AND p #>> '{}' ~ '^[0-9a-fA-F]{64}$'
$$;

CREATE FUNCTION defarm_merkle_proof_error(p_proof jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN jsonb_typeof(p_proof) IS DISTINCT FROM 'object'
            THEN 'proof must be an object'
        WHEN NOT coalesce(defarm_merkle_is_hash(p_proof -> 'leaf_hash'),
                          false)
            THEN 'proof.leaf_hash must be 64 hexadecimal digits'
        WHEN jsonb_typeof(p_proof -> 'path') IS DISTINCT FROM 'array'
            THEN 'proof.path must be an array'
        WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(p_proof -> 'path') s
                     WHERE jsonb_typeof(s) <> 'object'
                        OR NOT defarm_merkle_is_hash(s -> 'hash')
                        OR s -> 'position' IS NULL
                        OR s ->> 'position' NOT IN ('left', 'right'))
            THEN 'proof.path must hold {"hash": 64 hexadecimal digits, '
                 || '"position": "left" or "right"}'
        WHEN jsonb_array_length(p_proof -> 'path') > 64
            THEN 'proof.path is longer than 64 steps'
        WHEN p_proof ? 'merkle_root'
             AND NOT defarm_merkle_is_hash(p_proof -> 'merkle_root')
            THEN 'proof.merkle_root must be 64 hexadecimal digits'
        WHEN p_proof ? 'leaf_data'
             AND jsonb_typeof(p_proof -> 'leaf_data') NOT IN ('string', 'null')
            THEN 'proof.leaf_data must be a string'
    END
$$;


-- Routes.  An item's: whoever may read it (its owner, an administrator, a
-- member of a circuit it is in); a circuit's: its members.  The event's
-- leaf data (its metadata) only to whoever may read the event.

CREATE FUNCTION defarm_merkle_event_readable(p_event uuid, p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM events e
                   WHERE e.event_id = p_event
                     AND (e.visibility = 'Public' OR e.owner_id = p_user
                          OR (e.visibility = 'CircuitOnly'
                              AND defarm_circuit_shares(e.dfid, p_user))))
$$;

CREATE FUNCTION defarm_merkle_item_root_json(p_dfid text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
        'dfid', i.dfid,
        'merkle_root', encode(coalesce(t.root, defarm_merkle_empty()), 'hex'),
        'event_count', coalesce(t.leaf_count, 0),
        'hash_algorithm', 'SHA-256',
        'updated_at', t.updated_at)
    FROM items i LEFT JOIN merkle_trees t ON t.dfid = i.dfid
    WHERE i.dfid = p_dfid);
END
$$;

CREATE FUNCTION defarm_merkle_circuit_root_json(p_circuit uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM defarm_merkle_circuit_fresh(p_circuit);

    RETURN (SELECT jsonb_build_object(
        'circuit_id', c.circuit_id,
        'merkle_root', encode(coalesce(t.root, defarm_merkle_empty()), 'hex'),
        'item_count', coalesce(t.leaf_count, 0),
        'hash_algorithm', 'SHA-256',
        'updated_at', t.updated_at)
    FROM circuits c LEFT JOIN merkle_trees t ON t.circuit_id = c.circuit_id
    WHERE c.circuit_id = p_circuit);
END
$$;

-- GET /api/merkle/items/:dfid/merkle-root

CREATE FUNCTION defarm_merkle_item_root_get(p_user text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM items i
                   WHERE i.dfid = p_id AND i.owner_id = p_user)
       AND NOT defarm_item_readable(p_id, p_user)
    THEN
        RETURN defarm_answer(404, 'Item not found: ' || p_id);
    END IF;

    RETURN defarm_answer(200, defarm_merkle_item_root_json(p_id)::text);
END
$$;

-- GET /api/merkle/items/:dfid/merkle-proof/:event_id

CREATE FUNCTION defarm_merkle_item_proof_get(p_user text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_is_uuid(p_arg) THEN
        RETURN defarm_answer(400, 'Invalid event ID format');
    END IF;

    RETURN defarm_merkle_item_proof_answer(p_id, p_arg::uuid, p_user, false);
END
$$;

-- GET /api/merkle/circuits/:id/merkle-root

CREATE FUNCTION defarm_merkle_circuit_root_get(p_user text, p_id text,
                                               p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
BEGIN
    RETURN coalesce(defarm_circuit_readable(p_id, p_user),
                    defarm_answer(200, defarm_merkle_circuit_root_json(
                                           p_id::uuid)::text));
END
$$;

-- GET /api/merkle/circuits/:id/merkle-proof/:dfid

CREATE FUNCTION defarm_merkle_circuit_proof_get(p_user text, p_id text,
                                                p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    v_proof  jsonb;
BEGIN
    a := defarm_circuit_readable(p_id, p_user);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v_proof := defarm_merkle_circuit_proof(p_id::uuid, p_arg);

    IF v_proof IS NULL THEN
        RETURN defarm_answer(404, 'Item not found in this circuit: '
                                  || p_arg);
    END IF;

    RETURN defarm_answer(200, v_proof::text);
END
$$;

-- POST /api/merkle/verify-proof and /api/public/merkle/verify-proof
-- {proof, expected_root?}: recomputes the root from the proof alone (and
-- the leaf from leaf_data when given); valid when it equals the expected
-- root, or the proof's own merkle_root when none is given

CREATE FUNCTION defarm_merkle_verify(p_user text, p_id text, p_body jsonb,
                                     p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err       text;
    v_proof     jsonb;
    v_root      text;
    v_expected  text;
    v_leaf_ok   boolean;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := defarm_field_unknown(p_body, '{proof,expected_root}');
    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF NOT p_body ? 'proof' THEN
        RETURN defarm_answer(400, 'proof is required');
    END IF;

    v_proof := p_body -> 'proof';
    v_err := defarm_merkle_proof_error(v_proof);

    IF v_err IS NULL AND p_body ? 'expected_root'
       AND jsonb_typeof(p_body -> 'expected_root') <> 'null'
       AND NOT defarm_merkle_is_hash(p_body -> 'expected_root')
    THEN
        v_err := 'expected_root must be 64 hexadecimal digits';
    END IF;

    IF v_err IS NULL AND NOT coalesce(
           defarm_merkle_is_hash(p_body -> 'expected_root'),
           defarm_merkle_is_hash(v_proof -> 'merkle_root'), false)
    THEN
        v_err := 'expected_root is required when the proof has no '
                 || 'merkle_root';
    END IF;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_root := defarm_merkle_proof_root(v_proof);
    v_expected := lower(coalesce(p_body ->> 'expected_root',
                                 v_proof ->> 'merkle_root'));

    IF v_proof ->> 'leaf_data' IS NOT NULL THEN
        v_leaf_ok := encode(sha256(convert_to(v_proof ->> 'leaf_data',
                                              'UTF8')), 'hex')
                     = lower(v_proof ->> 'leaf_hash');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'valid', v_root = v_expected AND v_leaf_ok IS NOT FALSE,
        'computed_root', v_root,
        'expected_root', v_expected,
        'root_matches', v_root = v_expected,
        'leaf_data_matches', v_leaf_ok,
        'hash_algorithm', 'SHA-256')::text);
END
$$;

-- POST /api/merkle/circuits/:id/sync-check {remote_root?, remote_items?:
-- [{dfid, merkle_root}]}: the circuit's root and its items' roots here
-- against another copy's

CREATE FUNCTION defarm_merkle_sync_check(p_user text, p_id text,
                                         p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a            defarm_answer;
    v_err        text;
    v_local      jsonb;
    v_remote     text;
    v_missing_l  jsonb;
    v_missing_r  jsonb;
    v_mismatch   jsonb;
    v_items      boolean;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{remote_root,remote_items}'),
        defarm_field_check(p_body, 'remote_items', 'array', true));

    IF v_err IS NULL AND p_body ? 'remote_root'
       AND jsonb_typeof(p_body -> 'remote_root') <> 'null'
       AND NOT defarm_merkle_is_hash(p_body -> 'remote_root')
    THEN
        v_err := 'remote_root must be 64 hexadecimal digits';
    END IF;

    IF v_err IS NULL AND jsonb_typeof(p_body -> 'remote_items') = 'array'
       AND EXISTS (
           SELECT 1 FROM jsonb_array_elements(p_body -> 'remote_items') x
           WHERE jsonb_typeof(x) <> 'object'
              OR jsonb_typeof(x -> 'dfid') IS DISTINCT FROM 'string'
              OR NOT coalesce(defarm_merkle_is_hash(x -> 'merkle_root'),
                              false))
    THEN
        v_err := 'remote_items must hold {"dfid": string, "merkle_root": '
                 || '64 hexadecimal digits}';
    END IF;

    IF v_err IS NULL AND p_body ->> 'remote_root' IS NULL
       AND jsonb_typeof(p_body -> 'remote_items') IS DISTINCT FROM 'array'
    THEN
        v_err := 'remote_root or remote_items is required';
    END IF;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    a := defarm_circuit_readable(p_id, p_user);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v_local := defarm_merkle_circuit_root_json(p_id::uuid);
    v_remote := lower(p_body ->> 'remote_root');
    v_items := coalesce(jsonb_typeof(p_body -> 'remote_items') = 'array',
                        false);

    IF v_items THEN
        WITH l AS (SELECT ci.dfid,
                          encode(defarm_merkle_item_root_raw(ci.dfid), 'hex')
                              AS root
                   FROM circuit_items ci
                   WHERE ci.circuit_id = p_id::uuid),
             r AS (SELECT DISTINCT ON (x ->> 'dfid') x ->> 'dfid' AS dfid,
                          lower(x ->> 'merkle_root') AS root
                   FROM jsonb_array_elements(p_body -> 'remote_items') x)
        SELECT coalesce(jsonb_agg(r.dfid ORDER BY r.dfid)
                        FILTER (WHERE l.dfid IS NULL), '[]'),
               coalesce(jsonb_agg(l.dfid ORDER BY l.dfid)
                        FILTER (WHERE r.dfid IS NULL), '[]'),
               coalesce(jsonb_agg(jsonb_build_object(
                            'dfid', l.dfid, 'local_root', l.root,
                            'remote_root', r.root) ORDER BY l.dfid)
                        FILTER (WHERE l.root <> r.root), '[]')
        INTO v_missing_l, v_missing_r, v_mismatch
        FROM l FULL JOIN r ON r.dfid = l.dfid;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'circuit_id', p_id::uuid,
        'local_root', v_local -> 'merkle_root',
        'remote_root', v_remote,
        'roots_match', CASE WHEN v_remote IS NOT NULL
                            THEN v_local ->> 'merkle_root' = v_remote END,
        'item_count', v_local -> 'item_count',
        'missing_locally', v_missing_l,
        'missing_remotely', v_missing_r,
        'mismatched', v_mismatch,
        'in_sync', (v_remote IS NULL OR v_local ->> 'merkle_root' = v_remote)
                   AND (NOT v_items
                        OR (v_missing_l = '[]' AND v_missing_r = '[]'
                            AND v_mismatch = '[]')))::text);
END
$$;


-- The public variants: an item published in a circuit the public may see
-- (defarm_circuit_accessible), a circuit the public may see.

CREATE FUNCTION defarm_merkle_item_public(p_dfid text, p_circuit uuid)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM circuit_items ci
                   JOIN circuits c ON c.circuit_id = ci.circuit_id
                   WHERE ci.dfid = p_dfid
                     AND (p_circuit IS NULL OR ci.circuit_id = p_circuit)
                     AND defarm_circuit_accessible(c)
                     AND coalesce(c.public_settings -> 'published_items',
                                  '[]') ? p_dfid)
$$;

CREATE FUNCTION defarm_merkle_circuit_public(p_id text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM circuits c
                   WHERE c.circuit_id = p_id::uuid
                     AND defarm_circuit_accessible(c))
    THEN
        RETURN defarm_answer(404, 'Circuit not found or not public');
    END IF;

    RETURN NULL;
END
$$;

-- GET /api/public/merkle/items/:dfid/merkle-root

CREATE FUNCTION defarm_public_merkle_item_root(p_user text, p_id text,
                                               p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_merkle_item_public(p_id, NULL) THEN
        RETURN defarm_answer(404, 'Item not found or not public');
    END IF;

    RETURN defarm_answer(200, defarm_merkle_item_root_json(p_id)::text);
END
$$;

-- GET /api/public/merkle/items/:dfid/merkle-proof/:event_id: the leaf data
-- of a Public event only

CREATE FUNCTION defarm_public_merkle_item_proof(p_user text, p_id text,
                                                p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_is_uuid(p_arg) THEN
        RETURN defarm_answer(400, 'Invalid event ID format');
    END IF;

    IF NOT defarm_merkle_item_public(p_id, NULL) THEN
        RETURN defarm_answer(404, 'Item not found or not public');
    END IF;

    RETURN defarm_merkle_item_proof_answer(p_id, p_arg::uuid, NULL, true);
END
$$;

-- GET /api/public/merkle/circuits/:id/merkle-root

CREATE FUNCTION defarm_public_merkle_circuit_root(p_user text, p_id text,
                                                  p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
BEGIN
    RETURN coalesce(defarm_merkle_circuit_public(p_id),
                    defarm_answer(200, defarm_merkle_circuit_root_json(
                                           p_id::uuid)::text));
END
$$;

-- GET /api/public/merkle/circuits/:id/merkle-proof/:dfid: an item
-- published in that circuit

CREATE FUNCTION defarm_public_merkle_circuit_proof(p_user text, p_id text,
                                                   p_query jsonb,
                                                   p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    v_proof  jsonb;
BEGIN
    a := defarm_merkle_circuit_public(p_id);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF NOT defarm_merkle_item_public(p_arg, p_id::uuid) THEN
        RETURN defarm_answer(404, 'Item not found or not public');
    END IF;

    v_proof := defarm_merkle_circuit_proof(p_id::uuid, p_arg);

    IF v_proof IS NULL THEN
        RETURN defarm_answer(404, 'Item not found in this circuit: '
                                  || p_arg);
    END IF;

    RETURN defarm_answer(200, v_proof::text);
END
$$;


-- what was written before this migration: every tree built once

SELECT defarm_merkle_item_rebuild(i.dfid) FROM items i
WHERE EXISTS (SELECT 1 FROM events e WHERE e.dfid = i.dfid)
ORDER BY i.dfid;

SELECT defarm_merkle_circuit_rebuild(c.circuit_id) FROM circuits c
WHERE EXISTS (SELECT 1 FROM circuit_items ci
              WHERE ci.circuit_id = c.circuit_id)
ORDER BY c.circuit_id;


-- GET /api/merkle/items/:dfid/merkle-proof/:event_id, as one plain
-- statement (no PL/pgSQL): the leaf's position found in its window and the
-- path read in the same query, the answer made as text; anything else (a
-- bad id, an unknown event or item, a leaf outside its window, another
-- user's item) is answered by defarm_merkle_item_proof_get, byte for byte
-- the same.  About 1.6 times faster in PostgreSQL (pgbench, 10,000 events).

CREATE FUNCTION defarm_uuid_or_null(p text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF defarm_is_uuid(p) THEN
        RETURN p::uuid;
    END IF;

    RETURN NULL;
END
$$;

CREATE FUNCTION defarm_merkle_item_proof_fast(p_user text, p_dfid text,
                                              p_query jsonb, p_event text)
RETURNS SETOF defarm_answer
LANGUAGE sql STABLE AS $$
WITH f AS (
SELECT '{"proof_type":"event_in_item","hash_algorithm":"SHA-256","dfid":' || to_json(i.dfid)::text
    || ',"event_id":"' || l.event_id::text || '","leaf_hash":"' || encode(l.leaf, 'hex') || '"'
    || CASE WHEN i.owner_id = p_user OR defarm_merkle_event_readable(l.event_id, p_user)
            THEN ',"leaf_data":' || to_json(l.leaf_data)::text ELSE '' END
    || ',"leaf_index":' || p.pos || ',"leaf_count":' || t.leaf_count
    || ',"path":[' || coalesce((SELECT string_agg('{"hash":"'
           || CASE WHEN ((p.pos >> m.level) # 1) * 32 < octet_length(m.nodes)
                   THEN encode(substring(m.nodes FROM ((p.pos >> m.level) # 1) * 32 + 1 FOR 32), 'hex')
                   ELSE encode(defarm_merkle_empty(), 'hex') END
           || CASE WHEN (p.pos >> m.level) & 1 = 0 THEN '","position":"right"}' ELSE '","position":"left"}' END,
           ',' ORDER BY m.level)
        FROM merkle_levels m WHERE m.tree_id = t.tree_id AND octet_length(m.nodes) > 32), '')
    || '],"merkle_root":"' || encode(t.root, 'hex') || '","root_updated_at":' || to_json(t.updated_at)::text || '}' AS body
FROM items i
JOIN merkle_event_leaves l ON l.event_id = defarm_uuid_or_null(p_event) AND l.dfid = i.dfid
JOIN merkle_trees t ON t.dfid = i.dfid
CROSS JOIN LATERAL (SELECT w.start + (x.found - 1) / 32 AS pos
    FROM (SELECT defarm_merkle_guess(l.leaf, t.leaf_count) AS start) w,
    LATERAL (SELECT position(l.leaf IN substring(m0.nodes FROM w.start * 32 + 1 FOR 512 * 32)) AS found
             FROM merkle_levels m0 WHERE m0.tree_id = t.tree_id AND m0.level = 0) x
    WHERE x.found > 0 AND (x.found - 1) % 32 = 0 OFFSET 0) p
WHERE i.dfid = p_dfid AND (i.owner_id = p_user OR defarm_item_readable(i.dfid, p_user)))
SELECT 200 AS status, body FROM f
UNION ALL
SELECT a.status, a.body FROM defarm_merkle_item_proof_get(p_user, p_dfid, '{}'::jsonb, p_event) a
WHERE NOT EXISTS (SELECT 1 FROM f)
$$;
