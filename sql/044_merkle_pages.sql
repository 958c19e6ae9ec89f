-- Merkle trees stored in pages, so that a proof is one read of a row.
--
-- sql/041 kept a tree one row per level, each level a bytea out of line,
-- and a proof fetched one TOAST slice per level and a window of leaves:
-- some sixty buffers and a statement that ran at a third of an item
-- read.  Here a tree's leaves are cut into pages of 32, one row each,
-- kept in line (STORAGE PLAIN, at most about 7 KB):
--
--   leaves  the page's leaves, sorted (its first one indexed: a leaf's
--           page is found by one index look-up);
--   paths   for each of them, its siblings at levels 0 to 4, 160 bytes:
--           the part of its proof inside the page's subtree;
--   upper   the siblings of the page's subtree at levels 5 and up, to
--           the root: the rest of the proof of every leaf of the page.
--
-- So a proof is the item, the event's leaf, the tree's row and one page,
-- read in one statement, and its path is one substring of the page and
-- its upper part, whatever the number of events.  A sibling past its
-- level's end is stored as the empty node, so nothing is tested on read:
-- what makes such a statement slow is the number of expressions it has
-- to compile and run at every execution, more than the rows it reads.
--
-- The levels from 5 up (a node a page) stay in merkle_levels, for the
-- writes.  A write hashes the pages from the first changed leaf on, as
-- before, and gives every page its new upper path (the root changed).
-- The rules of the tree are unchanged: the same roots and proofs, byte
-- for byte.

CREATE TABLE merkle_pages (
    tree_id             bigint NOT NULL
                        REFERENCES merkle_trees ON DELETE CASCADE,
    page                int NOT NULL,
    first_leaf          bytea NOT NULL,
    leaves              bytea NOT NULL,
    paths               bytea NOT NULL,
    upper               bytea NOT NULL,

    PRIMARY KEY (tree_id, page)
);

ALTER TABLE merkle_pages ALTER COLUMN first_leaf SET STORAGE PLAIN;
ALTER TABLE merkle_pages ALTER COLUMN leaves SET STORAGE PLAIN;
ALTER TABLE merkle_pages ALTER COLUMN paths SET STORAGE PLAIN;
ALTER TABLE merkle_pages ALTER COLUMN upper SET STORAGE PLAIN;

CREATE INDEX merkle_pages_leaf ON merkle_pages (tree_id, first_leaf);

-- levels: 1 + ceil(log2(leaf_count)), 0 for no leaf; the path of a proof
-- has height - 1 steps

ALTER TABLE merkle_trees ADD COLUMN height int NOT NULL DEFAULT 0;


-- a level's parents: its nodes paired, an odd last one with the empty node

CREATE FUNCTION defarm_merkle_up(p_nodes bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(defarm_merkle_pair(
               substring(p_nodes FROM i * 64 + 1 FOR 32),
               coalesce(nullif(substring(p_nodes FROM i * 64 + 33 FOR 32),
                               ''::bytea),
                        defarm_merkle_empty())),
               ''::bytea ORDER BY i), ''::bytea)
    FROM generate_series(0, (length(p_nodes) / 32 + 1) / 2 - 1) i
$$;

-- the path of the leaf at place p_local of a page: its siblings from
-- level 0 up, 32 bytes each, height - 1 of them (plain SQL, inlined where
-- it is used)

CREATE FUNCTION defarm_merkle_page_path(p_paths bytea, p_upper bytea,
                                        p_local int, p_height int)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT substring(substring(p_paths FROM p_local * 160 + 1 FOR 160)
                     || p_upper
                     FROM 1 FOR greatest(p_height - 1, 0) * 32)
$$;

-- a path as the proofs' JSON: [{"hash", "position"}, ...], from the leaf
-- up; "right" when the sibling is on the right (the node's index is even)

CREATE FUNCTION defarm_merkle_path_json(p_path bytea, p_pos int)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '[' || coalesce(string_agg(
               '{"hash":"' || encode(substring(p_path FROM k * 32 + 1
                                               FOR 32), 'hex')
               || CASE WHEN (p_pos >> k) & 1 = 0
                       THEN '","position":"right"}'
                       ELSE '","position":"left"}' END,
               ',' ORDER BY k), '') || ']'
    FROM generate_series(0, length(p_path) / 32 - 1) k
$$;

-- the sibling of node p_index of a level of p_count nodes, from the
-- level's nodes from node p_base on; past the level's end the empty node

CREATE FUNCTION defarm_merkle_sibling(p_nodes bytea, p_base int,
                                      p_index int, p_count int)
RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN (p_index # 1) < p_count
                THEN substring(p_nodes FROM ((p_index # 1) - p_base) * 32 + 1
                               FOR 32)
                ELSE defarm_merkle_empty() END
$$;

-- The levels above new leaves (p_leaves, all of level 0), hashed again
-- from leaf p_from on: the pages before that leaf's page are kept (their
-- subtrees did not change) but get the new upper path; the levels from 5
-- up reuse their stored nodes before the first changed one.  Root, height
-- and count recorded.

CREATE OR REPLACE FUNCTION defarm_merkle_levels(p_tree bigint,
                                                p_leaves bytea, p_from int)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_count   int := length(p_leaves) / 32;
    v_pages   int := (length(p_leaves) / 32 + 31) / 32;
    v_b0      int;
    v_height  int := 0;
    v_old     int;
    v_low     bytea[];        -- level j from node v_b0 32 >> j on, at j + 1
    v_up      bytea[];        -- level k, whole, at k - 4 (k >= 5)
    v_lower   bytea;
    v_prefix  bytea;
    v_from    int;
    v_root    bytea;
    k         int;
BEGIN
    SELECT t.height INTO v_old FROM merkle_trees t WHERE t.tree_id = p_tree;

    IF v_count = 0 THEN
        DELETE FROM merkle_pages WHERE tree_id = p_tree;
        DELETE FROM merkle_levels WHERE tree_id = p_tree;
        UPDATE merkle_trees
        SET leaf_count = 0, height = 0, root = defarm_merkle_empty(),
            updated_at = now()
        WHERE tree_id = p_tree;
        RETURN;
    END IF;

    WHILE (1::bigint << v_height) < v_count LOOP
        v_height := v_height + 1;
    END LOOP;
    v_height := v_height + 1;

    -- one page (no upper path) is written again whole
    v_b0 := CASE WHEN v_height <= 6 THEN 0
                 ELSE least(greatest(p_from, 0) / 32, v_pages) END;

    -- levels 0 to 4 from page v_b0 on
    v_low[1] := substring(p_leaves FROM v_b0 * 1024 + 1);
    FOR j IN 1 .. 4 LOOP
        v_low[j + 1] := CASE WHEN j < v_height
                             THEN defarm_merkle_up(v_low[j])
                             ELSE ''::bytea END;
    END LOOP;

    IF v_height <= 5 THEN
        v_root := substring(v_low[v_height] FROM 1 FOR 32);
    ELSE
        -- level 5, a node a page: the stored ones before page v_b0
        SELECT substring(m.nodes FROM 1 FOR v_b0 * 32) INTO v_prefix
        FROM merkle_levels m WHERE m.tree_id = p_tree AND m.level = 5;

        v_prefix := coalesce(v_prefix, ''::bytea);

        IF length(v_prefix) <> v_b0 * 32 THEN
            -- not what the pages say: everything hashed again
            PERFORM defarm_merkle_levels(p_tree, p_leaves, 0);
            RETURN;
        END IF;

        v_lower := v_prefix || defarm_merkle_up(v_low[5]);
        v_up[1] := v_lower;
        v_from := v_b0;
        k := 5;

        LOOP
            INSERT INTO merkle_levels (tree_id, level, nodes)
            VALUES (p_tree, k, v_lower)
            ON CONFLICT (tree_id, level) DO UPDATE SET nodes = EXCLUDED.nodes;

            EXIT WHEN length(v_lower) <= 32;

            k := k + 1;
            v_from := v_from / 2;

            SELECT substring(m.nodes FROM 1 FOR v_from * 32) INTO v_prefix
            FROM merkle_levels m WHERE m.tree_id = p_tree AND m.level = k;

            IF coalesce(length(v_prefix), -1) <> v_from * 32 THEN
                v_prefix := ''::bytea;
                v_from := 0;
            END IF;

            v_lower := v_prefix
                       || defarm_merkle_up(substring(v_lower
                                                     FROM v_from * 64 + 1));
            v_up[k - 4] := v_lower;
        END LOOP;

        v_root := v_lower;
    END IF;

    DELETE FROM merkle_levels
    WHERE tree_id = p_tree AND (level < 5 OR level >= v_height);

    -- the pages from v_b0 on, written again; those before, a new upper path
    DELETE FROM merkle_pages WHERE tree_id = p_tree AND page >= v_b0;

    INSERT INTO merkle_pages (tree_id, page, first_leaf, leaves, paths,
                              upper)
    SELECT p_tree, b, substring(p_leaves FROM b * 1024 + 1 FOR 32),
           substring(p_leaves FROM b * 1024 + 1 FOR 1024),
           (SELECT string_agg(defarm_merkle_sibling(
                       v_low[j + 1], (v_b0 * 32) >> j, (b * 32 + l) >> j,
                       ((v_count - 1) >> j) + 1),
                       ''::bytea ORDER BY l, j)
            FROM generate_series(0, least(31, v_count - b * 32 - 1)) l,
                 generate_series(0, 4) j),
           coalesce((SELECT string_agg(defarm_merkle_sibling(
                         v_up[u - 4], 0, b >> (u - 5),
                         length(v_up[u - 4]) / 32),
                         ''::bytea ORDER BY u)
                     FROM generate_series(5, v_height - 2) u), ''::bytea)
    FROM generate_series(v_b0, v_pages - 1) b;

    IF v_height > 6 OR v_old > 6 THEN
        UPDATE merkle_pages g
        SET upper = coalesce((SELECT string_agg(defarm_merkle_sibling(
                        v_up[u - 4], 0, g.page >> (u - 5),
                        length(v_up[u - 4]) / 32),
                        ''::bytea ORDER BY u)
                    FROM generate_series(5, v_height - 2) u), ''::bytea)
        WHERE g.tree_id = p_tree AND g.page < v_b0;
    END IF;

    UPDATE merkle_trees
    SET leaf_count = v_count, height = v_height, root = v_root,
        updated_at = now()
    WHERE tree_id = p_tree;
END
$$;

-- all the leaves of a tree, from its pages

CREATE FUNCTION defarm_merkle_leaves(p_tree bigint) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(string_agg(g.leaves, ''::bytea ORDER BY g.page),
                            ''::bytea)
            FROM merkle_pages g WHERE g.tree_id = p_tree);
END
$$;

CREATE OR REPLACE FUNCTION defarm_merkle_apply(p_tree bigint,
                                               p_del bytea[], p_add bytea[])
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

    v_nodes := coalesce(defarm_merkle_leaves(p_tree), ''::bytea);
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

-- the position of p_leaf in a tree, or NULL: the page whose first leaf is
-- the greatest not above it, then its place there

CREATE OR REPLACE FUNCTION defarm_merkle_locate(p_tree bigint, p_count int,
                                                p_leaf bytea)
RETURNS int
LANGUAGE plpgsql STABLE AS $$
DECLARE
    g  record;
BEGIN
    SELECT p.page, p.leaves INTO g
    FROM merkle_pages p
    WHERE p.tree_id = p_tree AND p.first_leaf <= p_leaf
    ORDER BY p.first_leaf DESC LIMIT 1;

    FOR i IN 0 .. coalesce(length(g.leaves) / 32 - 1, -1) LOOP
        IF substring(g.leaves FROM i * 32 + 1 FOR 32) = p_leaf THEN
            RETURN g.page * 32 + i;
        END IF;
    END LOOP;

    RETURN NULL;
END
$$;

-- a leaf's path as the proofs' JSON

CREATE OR REPLACE FUNCTION defarm_merkle_path_text(p_tree bigint, p_pos int)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT defarm_merkle_path_json(defarm_merkle_page_path(
                       g.paths, g.upper, p_pos & 31, t.height), p_pos)
            FROM merkle_trees t
            JOIN merkle_pages g ON g.tree_id = t.tree_id
                               AND g.page = p_pos / 32
            WHERE t.tree_id = p_tree);
END
$$;

-- GET /api/merkle/items/:dfid/merkle-proof/:event_id and its public
-- variant (see 041): every case, the answer made in SQL

CREATE OR REPLACE FUNCTION defarm_merkle_item_proof_answer(p_dfid text,
    p_event uuid, p_reader text, p_public boolean)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r      record;
    v_pos  int;
BEGIN
    SELECT i.owner_id, l.leaf, l.leaf_data, t.tree_id, t.leaf_count,
           t.root, t.updated_at
    INTO r
    FROM items i
    LEFT JOIN merkle_event_leaves l
        ON l.event_id = p_event AND l.dfid = i.dfid
    LEFT JOIN merkle_trees t ON t.dfid = i.dfid
    WHERE i.dfid = p_dfid;

    IF NOT p_public AND r.owner_id IS DISTINCT FROM p_reader
       AND NOT defarm_item_readable(p_dfid, p_reader)
    THEN
        RETURN defarm_answer(404, 'Item not found: ' || p_dfid);
    END IF;

    IF r.leaf IS NOT NULL AND r.tree_id IS NOT NULL THEN
        v_pos := defarm_merkle_locate(r.tree_id, r.leaf_count, r.leaf);
    END IF;

    IF v_pos IS NULL THEN
        RETURN defarm_answer(404, 'Event not found in this item: '
                                  || p_event);
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
        || ',"path":' || defarm_merkle_path_text(r.tree_id, v_pos)
        || ',"merkle_root":"' || encode(r.root, 'hex')
        || '","root_updated_at":' || to_json(r.updated_at)::text || '}');
END
$$;

-- The proof route's statement (GET /api/merkle/items/:dfid/merkle-proof/
-- :event_id): a row for a proof the caller may have, its parts as
-- columns, which the module writes as the same JSON as the function above
-- (src/api/ngx_defarm_api_merkle.c); the JSON strings escaped here.  No
-- row otherwise: the module then asks defarm_merkle_item_proof_get, which
-- answers every case (a bad id, an unknown event or item, another user's
-- item).  Plain SQL, inlined into the prepared statement.

DROP FUNCTION defarm_merkle_item_proof_fast(text, text, jsonb, text);

CREATE FUNCTION defarm_merkle_item_proof_fast(p_user text, p_dfid text,
                                              p_query jsonb, p_event text)
RETURNS TABLE (dfid_json text, event_id text, leaf_hash text,
               leaf_data_json text, leaf_index int, leaf_count int,
               path text, merkle_root text, updated_at_json text)
LANGUAGE sql STABLE AS $$
    SELECT to_json(i.dfid)::text, l.event_id::text, encode(l.leaf, 'hex'),
           CASE WHEN i.owner_id = p_user
                     OR defarm_merkle_event_readable(l.event_id, p_user)
                THEN to_json(l.leaf_data)::text END,
           x.page * 32 + x.local, t.leaf_count,
           encode(defarm_merkle_page_path(x.paths, x.upper, x.local,
                                          t.height), 'hex'),
           encode(t.root, 'hex'), to_json(t.updated_at)::text
    FROM items i
    JOIN merkle_event_leaves l
        ON l.event_id = defarm_uuid_or_null(p_event) AND l.dfid = i.dfid
    JOIN merkle_trees t ON t.dfid = i.dfid
    CROSS JOIN LATERAL (
        SELECT y.page, y.paths, y.upper, (y.found - 1) / 32 AS local
        FROM (SELECT g.page, g.paths, g.upper,
                     position(l.leaf IN g.leaves) AS found
              FROM merkle_pages g
              WHERE g.tree_id = t.tree_id AND g.first_leaf <= l.leaf
              ORDER BY g.first_leaf DESC LIMIT 1) y
        WHERE y.found > 0 AND (y.found - 1) % 32 = 0 OFFSET 0) x
    WHERE i.dfid = p_dfid
      AND (i.owner_id = p_user OR defarm_item_readable(i.dfid, p_user))
$$;

DROP FUNCTION defarm_merkle_guess(bytea, int);

-- An item deleted leaves the trees of the circuits it was in: its
-- circuit_items rows go by their foreign key, which no wrapped function
-- sees, and its leaf would stay until a rebuild.  The circuits are marked
-- for their next read, as a pull marks them.

CREATE FUNCTION defarm_merkle_items_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM merkle_circuit_leaves l
        USING deleted_items d
        WHERE l.dfid = d.dfid
        RETURNING l.circuit_id)
    INSERT INTO merkle_circuit_dirty (circuit_id)
    SELECT DISTINCT g.circuit_id FROM gone g
    JOIN circuits c ON c.circuit_id = g.circuit_id;

    RETURN NULL;
END
$$;

CREATE TRIGGER merkle_items_deleted AFTER DELETE ON items
    REFERENCING OLD TABLE AS deleted_items
    FOR EACH STATEMENT EXECUTE FUNCTION defarm_merkle_items_deleted();

-- inlined where it is called (the PL/pgSQL one was a call per proof)

CREATE OR REPLACE FUNCTION defarm_uuid_or_null(p text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN defarm_is_uuid(p) THEN p::uuid END
$$;

-- the trees there are, in pages; merkle_levels keeps levels 5 and up

DO $$
DECLARE
    v_tree    bigint;
    v_leaves  bytea;
BEGIN
    FOR v_tree, v_leaves IN
        SELECT t.tree_id, m.nodes FROM merkle_trees t
        JOIN merkle_levels m ON m.tree_id = t.tree_id AND m.level = 0
        ORDER BY t.tree_id
    LOOP
        PERFORM defarm_merkle_levels(v_tree, v_leaves, 0);
    END LOOP;
END
$$;

DELETE FROM merkle_levels WHERE level < 5;
