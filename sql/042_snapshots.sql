-- Snapshots (original-api.md §1.12): every change to an item's stored
-- state, and to a circuit's membership of items, is kept as a version
-- hash-chained to the version before it, in the transaction of the
-- change.  The original built them and threw them away.
--
-- Item snapshots are taken where the item's document is rendered (the
-- items_doc trigger of sql/013, whose function this file replaces: no new
-- trigger), so every writer of items is covered, and the state kept is
-- the document a read returns (items.doc), byte for byte.  Circuit
-- snapshots are taken by defarm_operation_complete(), the one function
-- that changes circuit_items; a circuit's state is the change (the items
-- added and removed) and the resulting item count, so a push costs the
-- same in a circuit of ten items as in one of a million, and the
-- membership at any version is the chain replayed.
--
-- Concurrent changes of one circuit do not wait for each other (pushes
-- are a hot path): a change that cannot take the circuit's chaining lock
-- at once stores its row pending, chained later by the next change that
-- takes the lock or by a read route.  Item snapshots take no lock: the
-- item's row orders the writes of one item.
--
-- One snapshot per transaction and subject: a transaction that changes
-- an item (or a circuit) more than once (a create renders the item, then
-- renders it again with its identifiers; a batch push) leaves one
-- version, of its final state.  The head of the chain is found by its
-- index; a change that leaves the document as it was stores nothing.
--
-- The hash of a snapshot, as a third party recomputes it: the lower-case
-- hex of SHA-256 over the UTF-8 text of these lines joined by "\n" (LF,
-- no final newline), each exactly as the snapshot's JSON shows it:
--
--   defarm-snapshot/1
--   kind            "item" or "circuit"
--   subject         the dfid, or the circuit_id (lower-case uuid)
--   snapshot_id     lower-case uuid
--   version         decimal, 1 for the first
--   parent_hash     the previous version's hash; empty for version 1
--   created_at      YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC, microseconds)
--   state_text      the state, the exact string that was stored
--
-- A chain is valid when every hash recomputes, versions run 1, 2, ...
-- without a gap, and each parent_hash is the hash of the version before.

-- (one index: an item's snapshot is found by its id among the item's
-- versions, which writes of items, the hot path, do not pay for)

CREATE TABLE item_snapshots (
    -- deferred: the snapshot of a new item is written before its row
    dfid            text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE
                    DEFERRABLE INITIALLY DEFERRED,
    version         int NOT NULL CHECK (version >= 1),
    snapshot_id     uuid NOT NULL,
    parent_hash     text,
    hash            text NOT NULL,
    state           text NOT NULL,
    created_at      timestamptz NOT NULL,
    xid             xid8 NOT NULL,          -- the writing transaction's

    PRIMARY KEY (dfid, version)
);

-- A circuit's version is chained by a transaction that holds the
-- circuit's lock (see defarm_circuit_snapshot_key).  A change that finds
-- it taken does not wait: its row is pending (no version, parent_hash or
-- hash; its state the change without item_count) and is chained by the
-- next holder, in seq order, oldest first.

CREATE TABLE circuit_snapshots (
    snapshot_id     uuid PRIMARY KEY,
    circuit_id      uuid NOT NULL REFERENCES circuits (circuit_id)
                    ON DELETE CASCADE,
    seq             bigserial NOT NULL,     -- the order of pending rows
    version         int CHECK (version >= 1),   -- NULL: pending
    parent_hash     text,
    hash            text,
    state           text NOT NULL,
    created_at      timestamptz NOT NULL,   -- the change's
    xid             xid8 NOT NULL,          -- the changing transaction's

    CONSTRAINT circuit_snapshots_version UNIQUE (circuit_id, version),
    CONSTRAINT circuit_snapshots_chained
        CHECK ((version IS NULL) = (hash IS NULL))
);

CREATE INDEX circuit_snapshots_pending ON circuit_snapshots (circuit_id, seq)
    WHERE version IS NULL;

CREATE FUNCTION defarm_snapshot_time(p_time timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_time AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION defarm_snapshot_hash(p_kind text, p_subject text,
                                     p_id uuid, p_version int,
                                     p_parent text, p_time timestamptz,
                                     p_state text)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN encode(sha256(convert_to(
        'defarm-snapshot/1' || E'\n' || p_kind || E'\n' || p_subject
        || E'\n' || p_id::text || E'\n' || p_version::text || E'\n'
        || coalesce(p_parent, '') || E'\n' || defarm_snapshot_time(p_time)
        || E'\n' || p_state, 'UTF8')), 'hex');
END
$$;


-- an item's new state: a new version, or this transaction's version
-- rewritten (its parent stays)

CREATE FUNCTION defarm_item_snapshot(p_dfid text, p_state text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id       uuid;
    v_version  int;
    v_hash     text;
    v_at       timestamptz;
    v_xid      xid8;
    v_now      xid8 := pg_current_xact_id();
BEGIN
    SELECT s.snapshot_id, s.version, s.hash, s.created_at, s.xid
    INTO v_id, v_version, v_hash, v_at, v_xid
    FROM item_snapshots s WHERE s.dfid = p_dfid
    ORDER BY s.version DESC LIMIT 1;

    IF v_xid = v_now THEN
        UPDATE item_snapshots s
        SET state = p_state,
            hash = defarm_snapshot_hash('item', p_dfid, v_id, v_version,
                                        s.parent_hash, v_at, p_state)
        WHERE s.dfid = p_dfid AND s.version = v_version;
        RETURN;
    END IF;

    v_version := coalesce(v_version, 0) + 1;
    v_id := gen_random_uuid();

    INSERT INTO item_snapshots (snapshot_id, dfid, version, parent_hash,
                                hash, state, created_at, xid)
    VALUES (v_id, p_dfid, v_version, v_hash,
            defarm_snapshot_hash('item', p_dfid, v_id, v_version, v_hash,
                                 now(), p_state),
            p_state, now(), v_now);
END
$$;

-- sql/013's trigger function, with the snapshot of a changed document

CREATE OR REPLACE FUNCTION defarm_item_doc() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.doc := defarm_item_render(NEW)::text;

    IF TG_OP = 'INSERT' OR NEW.doc IS DISTINCT FROM OLD.doc THEN
        PERFORM defarm_item_snapshot(NEW.dfid, NEW.doc);
    END IF;

    RETURN NEW;
END
$$;


-- a circuit's state: {"added": [dfid], "removed": [dfid], "item_count"},
-- the sets sorted

CREATE FUNCTION defarm_circuit_snapshot_state(p_added text[],
                                              p_removed text[],
                                              p_count bigint)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'added', coalesce((SELECT jsonb_agg(d ORDER BY d)
                           FROM unnest(p_added) d), '[]'),
        'removed', coalesce((SELECT jsonb_agg(d ORDER BY d)
                             FROM unnest(p_removed) d), '[]'),
        'item_count', p_count)::text
$$;

-- The lock that chains one circuit's versions, transaction-scoped: held
-- from a chained change to commit, so that versions follow one another.
-- A change only tries it (pg_try_advisory_xact_lock): pushes into one
-- circuit never queue behind each other's commit; a change that misses
-- it leaves its row pending.

CREATE FUNCTION defarm_circuit_snapshot_key(p_circuit uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('circuit_snapshots:' || p_circuit::text, 0)
$$;

-- The pending rows of a circuit this transaction sees, chained in seq
-- order after the head, each with its item_count (the head's plus its
-- change).  The caller holds the lock.  A row whose transaction has not
-- committed is not seen, and is chained by a later holder.

CREATE FUNCTION defarm_circuit_snapshot_chain(p_circuit uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r          record;
    v_first    boolean := true;
    v_version  int;
    v_hash     text;
    v_count    bigint;
    v_added    text[];
    v_removed  text[];
    v_state    text;
    v_new      text;
BEGIN
    FOR r IN
        SELECT s.snapshot_id, s.state::jsonb AS st, s.created_at
        FROM circuit_snapshots s
        WHERE s.circuit_id = p_circuit AND s.version IS NULL
        ORDER BY s.seq
    LOOP
        IF v_first THEN
            SELECT s.version, s.hash, (s.state::jsonb ->> 'item_count')::bigint
            INTO v_version, v_hash, v_count
            FROM circuit_snapshots s
            WHERE s.circuit_id = p_circuit AND s.version IS NOT NULL
            ORDER BY s.version DESC LIMIT 1;

            v_version := coalesce(v_version, 0);
            v_count := coalesce(v_count, 0);
            v_first := false;
        END IF;

        v_added := ARRAY(SELECT jsonb_array_elements_text(r.st -> 'added'));
        v_removed := ARRAY(SELECT jsonb_array_elements_text(r.st
                                                            -> 'removed'));
        v_count := v_count + cardinality(v_added) - cardinality(v_removed);
        v_version := v_version + 1;
        v_state := defarm_circuit_snapshot_state(v_added, v_removed,
                                                 v_count);
        v_new := defarm_snapshot_hash('circuit', p_circuit::text,
                                      r.snapshot_id, v_version, v_hash,
                                      r.created_at, v_state);

        UPDATE circuit_snapshots
        SET version = v_version, parent_hash = v_hash, hash = v_new,
            state = v_state
        WHERE snapshot_id = r.snapshot_id;

        v_hash := v_new;
    END LOOP;
END
$$;

-- Before a read of a circuit's versions: its pending rows chained, waiting
-- for the lock (reads are not the hot path).  In a read-only transaction
-- (a standby) nothing is written: the read shows the chain as it is.

CREATE FUNCTION defarm_circuit_snapshot_settle(p_circuit uuid)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_read_only')::boolean
       OR NOT EXISTS (SELECT 1 FROM circuit_snapshots s
                      WHERE s.circuit_id = p_circuit AND s.version IS NULL)
    THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(defarm_circuit_snapshot_key(p_circuit));
    PERFORM defarm_circuit_snapshot_chain(p_circuit);
END
$$;

-- p_dfid went in (p_added) or out of the circuit: a new version, or this
-- transaction's version changed (the net change: an item pushed and
-- pulled in one transaction is neither added nor removed).  With the
-- lock, pending rows are chained first, then this change; without it,
-- this transaction's pending row takes the change.

CREATE FUNCTION defarm_circuit_snapshot(p_circuit uuid, p_dfid text,
                                        p_added boolean)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id       uuid;
    v_version  int;
    v_hash     text;
    v_at       timestamptz;
    v_xid      xid8;
    v_state    jsonb;
    v_added    text[] := '{}';
    v_removed  text[] := '{}';
    v_count    bigint := 0;
    v_locked   boolean;
    v_now      xid8 := pg_current_xact_id();
BEGIN
    v_locked := pg_try_advisory_xact_lock(
                    defarm_circuit_snapshot_key(p_circuit));

    IF v_locked THEN
        /* this transaction's own pending row too, if it has one */
        PERFORM defarm_circuit_snapshot_chain(p_circuit);

        SELECT s.snapshot_id, s.version, s.hash, s.created_at, s.xid,
               s.state::jsonb
        INTO v_id, v_version, v_hash, v_at, v_xid, v_state
        FROM circuit_snapshots s
        WHERE s.circuit_id = p_circuit AND s.version IS NOT NULL
        ORDER BY s.version DESC LIMIT 1;

        IF v_state IS NOT NULL THEN
            v_count := (v_state ->> 'item_count')::bigint;
        END IF;

    ELSE
        SELECT s.snapshot_id, s.xid, s.state::jsonb
        INTO v_id, v_xid, v_state
        FROM circuit_snapshots s
        WHERE s.circuit_id = p_circuit AND s.version IS NULL
          AND s.xid = v_now;
    END IF;

    IF v_xid = v_now THEN
        v_added := ARRAY(SELECT jsonb_array_elements_text(v_state
                                                          -> 'added'));
        v_removed := ARRAY(SELECT jsonb_array_elements_text(v_state
                                                            -> 'removed'));
    END IF;

    IF p_added THEN
        v_count := v_count + 1;
        IF p_dfid = ANY (v_removed) THEN
            v_removed := array_remove(v_removed, p_dfid);
        ELSE
            v_added := v_added || p_dfid;
        END IF;

    ELSE
        v_count := v_count - 1;
        IF p_dfid = ANY (v_added) THEN
            v_added := array_remove(v_added, p_dfid);
        ELSE
            v_removed := v_removed || p_dfid;
        END IF;
    END IF;

    IF NOT v_locked THEN
        IF v_xid = v_now THEN
            IF cardinality(v_added) = 0 AND cardinality(v_removed) = 0 THEN
                DELETE FROM circuit_snapshots WHERE snapshot_id = v_id;
            ELSE
                UPDATE circuit_snapshots
                SET state = defarm_circuit_snapshot_state(v_added,
                                                          v_removed, NULL)
                WHERE snapshot_id = v_id;
            END IF;
            RETURN;
        END IF;

        /* pending: version, hashes and item_count when it is chained */
        INSERT INTO circuit_snapshots (snapshot_id, circuit_id, state,
                                       created_at, xid)
        VALUES (gen_random_uuid(), p_circuit,
                defarm_circuit_snapshot_state(v_added, v_removed, NULL),
                now(), v_now);
        RETURN;
    END IF;

    IF v_xid = v_now THEN
        IF cardinality(v_added) = 0 AND cardinality(v_removed) = 0 THEN
            DELETE FROM circuit_snapshots WHERE snapshot_id = v_id;
            RETURN;
        END IF;

        UPDATE circuit_snapshots s
        SET state = defarm_circuit_snapshot_state(v_added, v_removed,
                                                  v_count),
            hash = defarm_snapshot_hash('circuit', p_circuit::text, v_id,
                                        v_version, s.parent_hash, v_at,
                                        defarm_circuit_snapshot_state(
                                            v_added, v_removed, v_count))
        WHERE s.snapshot_id = v_id;
        RETURN;
    END IF;

    v_version := coalesce(v_version, 0) + 1;
    v_id := gen_random_uuid();

    INSERT INTO circuit_snapshots (snapshot_id, circuit_id, version,
                                   parent_hash, hash, state, created_at, xid)
    SELECT v_id, p_circuit, v_version, v_hash,
           defarm_snapshot_hash('circuit', p_circuit::text, v_id, v_version,
                                v_hash, now(), st),
           st, now(), v_now
    FROM defarm_circuit_snapshot_state(v_added, v_removed, v_count) st;
END
$$;

-- A completed push or pull, with the snapshot of the membership it
-- changed.  Wrapped, not replaced: another file (sql/041, Merkle) wraps it
-- too, and each wrapper keeps the one before.  Whether the operation
-- changed the membership is what the row says before and after.

ALTER FUNCTION defarm_operation_complete(circuit_operations)
    RENAME TO defarm_operation_complete_unsnapshotted;

CREATE FUNCTION defarm_operation_complete(o circuit_operations)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_before  boolean;
    v_after   boolean;
BEGIN
    v_before := EXISTS (SELECT 1 FROM circuit_items
                        WHERE circuit_id = o.circuit_id AND dfid = o.dfid);

    PERFORM defarm_operation_complete_unsnapshotted(o);

    v_after := EXISTS (SELECT 1 FROM circuit_items
                       WHERE circuit_id = o.circuit_id AND dfid = o.dfid);

    IF v_before IS DISTINCT FROM v_after THEN
        PERFORM defarm_circuit_snapshot(o.circuit_id, o.dfid, v_after);
    END IF;
END
$$;


-- what is there already: version 1 of every item and of every circuit
-- that has items

INSERT INTO item_snapshots (snapshot_id, dfid, version, parent_hash, hash,
                            state, created_at, xid)
SELECT x.id, x.dfid, 1, NULL,
       defarm_snapshot_hash('item', x.dfid, x.id, 1, NULL, now(), x.doc),
       x.doc, now(), pg_current_xact_id()
FROM (SELECT gen_random_uuid() AS id, i.dfid, i.doc FROM items i) x;

INSERT INTO circuit_snapshots (snapshot_id, circuit_id, version,
                               parent_hash, hash, state, created_at, xid)
SELECT x.id, x.circuit_id, 1, NULL,
       defarm_snapshot_hash('circuit', x.circuit_id::text, x.id, 1, NULL,
                            now(), x.st),
       x.st, now(), pg_current_xact_id()
FROM (SELECT gen_random_uuid() AS id, ci.circuit_id,
             defarm_circuit_snapshot_state(array_agg(ci.dfid), '{}',
                                           count(*)) AS st
      FROM circuit_items ci GROUP BY ci.circuit_id) x;


-- A chain checked from its first version: where it breaks, if it does.
-- {valid, versions, head_hash, broken_at_version?, snapshot_id?, reason?}

CREATE FUNCTION defarm_snapshot_chain_check(p_kind text, p_subject text)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r          record;
    v_prev     text;
    v_expect   int := 1;
    v_reason   text;
BEGIN
    -- (CASE: the other kind's subject is never cast)
    FOR r IN
        SELECT s.dfid AS subject, s.snapshot_id, s.version, s.parent_hash,
               s.hash, s.state, s.created_at
        FROM item_snapshots s
        WHERE s.dfid = CASE WHEN p_kind = 'item' THEN p_subject END
        UNION ALL
        SELECT s.circuit_id::text, s.snapshot_id, s.version, s.parent_hash,
               s.hash, s.state, s.created_at
        FROM circuit_snapshots s
        WHERE s.circuit_id = CASE WHEN p_kind = 'circuit'
                                  THEN p_subject::uuid END
          AND s.version IS NOT NULL
        ORDER BY version
    LOOP
        v_reason := CASE
            WHEN r.version <> v_expect
            THEN 'version ' || v_expect || ' is missing'
            WHEN r.parent_hash IS DISTINCT FROM v_prev
            THEN 'parent_hash is not the hash of the version before'
            WHEN r.hash IS DISTINCT FROM defarm_snapshot_hash(
                     p_kind, r.subject, r.snapshot_id, r.version,
                     r.parent_hash, r.created_at, r.state)
            THEN 'hash does not match the snapshot''s content'
            END;

        IF v_reason IS NOT NULL THEN
            RETURN jsonb_build_object(
                'valid', false, 'versions', v_expect - 1,
                'head_hash', v_prev, 'broken_at_version', r.version,
                'snapshot_id', r.snapshot_id, 'reason', v_reason);
        END IF;

        v_prev := r.hash;
        v_expect := v_expect + 1;
    END LOOP;

    RETURN jsonb_build_object('valid', true, 'versions', v_expect - 1,
                              'head_hash', v_prev);
END
$$;


-- a dfid as items have them (DFID-YYYYMMDD-NNNNNN-CHK with its check, or
-- a local item's LID-<uuid>): the module's check, for paths it does not
-- check itself

CREATE FUNCTION defarm_dfid_valid(p text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m  text[];
BEGIN
    IF p IS NULL OR length(p) > 64 THEN
        RETURN false;
    END IF;

    IF p LIKE 'LID-%' THEN
        RETURN defarm_is_uuid(substr(p, 5));
    END IF;

    m := regexp_match(p, '^DFID-([0-9]{8})-([0-9]{6,})-([0-9A-F]+)$');

    RETURN m IS NOT NULL AND defarm_dfid_check(m[1] || m[2]) = m[3];
END
$$;

CREATE FUNCTION defarm_item_snapshot_json(s item_snapshots) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'snapshot_id', s.snapshot_id, 'kind', 'item', 'dfid', s.dfid,
        'version', s.version, 'parent_hash', s.parent_hash,
        'hash', s.hash, 'created_at', defarm_snapshot_time(s.created_at),
        'state', s.state::jsonb, 'state_text', s.state)
$$;

CREATE FUNCTION defarm_circuit_snapshot_json(s circuit_snapshots)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'snapshot_id', s.snapshot_id, 'kind', 'circuit',
        'circuit_id', s.circuit_id, 'version', s.version,
        'parent_hash', s.parent_hash, 'hash', s.hash,
        'created_at', defarm_snapshot_time(s.created_at),
        'state', s.state::jsonb, 'state_text', s.state)
$$;

-- the circuit's items at a version: the chain replayed (each item's last
-- change up to it is an addition)

CREATE FUNCTION defarm_circuit_snapshot_items(p_circuit uuid,
                                              p_version int)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(x.d ORDER BY x.d), '[]')
    FROM (SELECT DISTINCT ON (c.d) c.d, c.added
          FROM circuit_snapshots s
          CROSS JOIN LATERAL (
              SELECT a.d, true AS added
              FROM jsonb_array_elements_text(s.state::jsonb -> 'added') a(d)
              UNION ALL
              SELECT r.d, false
              FROM jsonb_array_elements_text(s.state::jsonb -> 'removed')
                   r(d)) c
          WHERE s.circuit_id = p_circuit AND s.version <= p_version
          ORDER BY c.d, s.version DESC) x
    WHERE x.added
$$;


-- ?limit=1..500 (50)&offset=: the page, or the 400 to give

CREATE FUNCTION defarm_snapshot_page(p_query jsonb, OUT o_limit int,
                                     OUT o_offset int,
                                     OUT o_error defarm_answer)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    o_limit := defarm_limit_arg(p_query, 50);
    o_offset := 0;

    IF o_limit IS NULL THEN
        o_error := defarm_answer(400, 'limit must be 1 to 500');
        RETURN;
    END IF;

    IF p_query ->> 'offset' IS NOT NULL THEN
        IF p_query ->> 'offset' !~ '^[0-9]{1,9}$' THEN
            o_error := defarm_answer(400, 'offset must be a whole number '
                                          'from 0 of at most 9 digits');
            RETURN;
        END IF;
        o_offset := (p_query ->> 'offset')::int;
    END IF;
END
$$;

-- an item the caller may read, by a well-formed dfid: NULL, or the answer

CREATE FUNCTION defarm_snapshot_item_may(p_dfid text, p_user text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_dfid_valid(p_dfid) THEN
        RETURN defarm_answer(400, 'Invalid DFID format');
    END IF;

    RETURN defarm_item_visible(p_dfid, p_user);
END
$$;

-- published in a circuit the public may see (as the public storage
-- history): NULL, or the answer

CREATE FUNCTION defarm_snapshot_item_public(p_dfid text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_dfid_valid(p_dfid) THEN
        RETURN defarm_answer(400, 'Invalid DFID format');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM circuit_items ci
                   JOIN circuits c ON c.circuit_id = ci.circuit_id
                   WHERE ci.dfid = p_dfid AND defarm_circuit_accessible(c)
                     AND coalesce(c.public_settings -> 'published_items',
                                  '[]') ? p_dfid)
    THEN
        RETURN defarm_answer(404, 'Item not found or not public');
    END IF;

    RETURN NULL;
END
$$;

-- the list of an item's snapshots, newest first (the item checked)

CREATE FUNCTION defarm_item_snapshots_page(p_dfid text, p_query jsonb)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pg  record;
    v   jsonb;
    n   bigint;
BEGIN
    pg := defarm_snapshot_page(p_query);

    IF pg.o_error IS NOT NULL THEN
        RETURN pg.o_error;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_item_snapshot_json(s)
                              ORDER BY s.version DESC), '[]')
    INTO v
    FROM (SELECT * FROM item_snapshots s WHERE s.dfid = p_dfid
          ORDER BY s.version DESC
          LIMIT pg.o_limit OFFSET pg.o_offset) s;

    SELECT count(*) INTO n FROM item_snapshots s WHERE s.dfid = p_dfid;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'dfid', p_dfid, 'snapshots', v,
        'count', jsonb_array_length(v), 'total', n,
        'limit', pg.o_limit, 'offset', pg.o_offset)::text);
END
$$;

CREATE FUNCTION defarm_item_snapshot_head(p_dfid text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb;
BEGIN
    SELECT defarm_item_snapshot_json(s) INTO v
    FROM item_snapshots s WHERE s.dfid = p_dfid
    ORDER BY s.version DESC LIMIT 1;

    IF v IS NULL THEN
        RETURN defarm_answer(404, 'No snapshots for this item');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;


-- GET /items/:dfid/snapshots ?limit=&offset=

CREATE FUNCTION defarm_item_snapshots(p_user text, p_id text,
                                      p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_snapshot_item_may(p_id, p_user),
                    defarm_item_snapshots_page(p_id, p_query));
END
$$;

-- GET /items/:dfid/snapshots/latest

CREATE FUNCTION defarm_item_snapshot_latest(p_user text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_snapshot_item_may(p_id, p_user),
                    defarm_item_snapshot_head(p_id));
END
$$;

-- GET /items/:dfid/snapshots/:snapshot_id

CREATE FUNCTION defarm_item_snapshot_get(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer := defarm_snapshot_item_may(p_id, p_user);
    v  jsonb;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF NOT defarm_is_uuid(p_arg) THEN
        RETURN defarm_answer(400, 'Invalid snapshot ID format');
    END IF;

    SELECT defarm_item_snapshot_json(s) INTO v
    FROM item_snapshots s
    WHERE s.snapshot_id = p_arg::uuid AND s.dfid = p_id;

    IF v IS NULL THEN
        RETURN defarm_answer(404, 'Snapshot not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;

-- GET /items/:dfid/snapshots/verify: the chain checked, and whether its
-- head is the item's document now

CREATE FUNCTION defarm_item_snapshots_verify(p_user text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer := defarm_snapshot_item_may(p_id, p_user);
    v  jsonb;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v := jsonb_build_object('kind', 'item', 'dfid', p_id)
         || defarm_snapshot_chain_check('item', p_id);

    v := v || jsonb_build_object('matches_current', coalesce((
        SELECT s.state = i.doc
        FROM items i
        JOIN item_snapshots s ON s.dfid = i.dfid
        WHERE i.dfid = p_id
        ORDER BY s.version DESC LIMIT 1), false));

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;


-- a circuit's snapshot, with the items in the circuit at its version

CREATE FUNCTION defarm_circuit_snapshot_full(s circuit_snapshots)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT defarm_circuit_snapshot_json(s)
           || jsonb_build_object('items',
                                 defarm_circuit_snapshot_items(s.circuit_id,
                                                               s.version))
$$;

-- GET /circuits/:circuit_id/snapshots ?limit=&offset=: members

CREATE FUNCTION defarm_circuit_snapshots(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a   defarm_answer := defarm_circuit_readable(p_id, p_user);
    pg  record;
    v   jsonb;
    n   bigint;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    PERFORM defarm_circuit_snapshot_settle(p_id::uuid);

    pg := defarm_snapshot_page(p_query);

    IF pg.o_error IS NOT NULL THEN
        RETURN pg.o_error;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_circuit_snapshot_json(s)
                              ORDER BY s.version DESC), '[]')
    INTO v
    FROM (SELECT * FROM circuit_snapshots s
          WHERE s.circuit_id = p_id::uuid AND s.version IS NOT NULL
          ORDER BY s.version DESC
          LIMIT pg.o_limit OFFSET pg.o_offset) s;

    SELECT count(*) INTO n FROM circuit_snapshots s
    WHERE s.circuit_id = p_id::uuid AND s.version IS NOT NULL;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'circuit_id', p_id::uuid, 'snapshots', v,
        'count', jsonb_array_length(v), 'total', n,
        'limit', pg.o_limit, 'offset', pg.o_offset)::text);
END
$$;

-- GET /circuits/:circuit_id/snapshots/latest (p_snapshot NULL) and
-- GET /circuits/:circuit_id/snapshots/:snapshot_id: one version, with
-- the membership at it

CREATE FUNCTION defarm_circuit_snapshot_one(p_user text, p_id text,
                                            p_snapshot text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer := defarm_circuit_readable(p_id, p_user);
    v  jsonb;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF p_snapshot IS NOT NULL AND NOT defarm_is_uuid(p_snapshot) THEN
        RETURN defarm_answer(400, 'Invalid snapshot ID format');
    END IF;

    PERFORM defarm_circuit_snapshot_settle(p_id::uuid);

    SELECT defarm_circuit_snapshot_full(s) INTO v
    FROM circuit_snapshots s
    WHERE s.circuit_id = p_id::uuid AND s.version IS NOT NULL
      AND (p_snapshot IS NULL OR s.snapshot_id = p_snapshot::uuid)
    ORDER BY s.version DESC LIMIT 1;

    IF v IS NULL THEN
        RETURN defarm_answer(404, CASE WHEN p_snapshot IS NULL
                                       THEN 'No snapshots for this circuit'
                                       ELSE 'Snapshot not found' END);
    END IF;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;

CREATE FUNCTION defarm_circuit_snapshot_latest(p_user text, p_id text,
                                               p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_snapshot_one(p_user, p_id, NULL)
$$;

CREATE FUNCTION defarm_circuit_snapshot_get(p_user text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_snapshot_one(p_user, p_id, p_arg)
$$;

-- GET /circuits/:circuit_id/snapshots/verify: the chain checked, and
-- whether its replay is the circuit's items now

CREATE FUNCTION defarm_circuit_snapshots_verify(p_user text, p_id text,
                                                p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer := defarm_circuit_readable(p_id, p_user);
    v  jsonb;
    h  int;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    PERFORM defarm_circuit_snapshot_settle(p_id::uuid);

    v := jsonb_build_object('kind', 'circuit', 'circuit_id', p_id::uuid)
         || defarm_snapshot_chain_check('circuit', p_id);

    SELECT max(s.version) INTO h FROM circuit_snapshots s
    WHERE s.circuit_id = p_id::uuid;

    v := v || jsonb_build_object('matches_current',
        defarm_circuit_snapshot_items(p_id::uuid, coalesce(h, 0))
        = (SELECT coalesce(jsonb_agg(ci.dfid ORDER BY ci.dfid), '[]')
           FROM circuit_items ci WHERE ci.circuit_id = p_id::uuid));

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;


-- GET /api/public/snapshots/items/:dfid/snapshots ?limit=&offset=

CREATE FUNCTION defarm_public_item_snapshots(p_user text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_snapshot_item_public(p_id),
                    defarm_item_snapshots_page(p_id, p_query));
END
$$;

-- GET /api/public/snapshots/items/:dfid/snapshots/latest

CREATE FUNCTION defarm_public_item_snapshot_latest(p_user text, p_id text,
                                                   p_query jsonb,
                                                   p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_snapshot_item_public(p_id),
                    defarm_item_snapshot_head(p_id));
END
$$;
