-- Metering: what an operation costs (defarm_credits on) and what a tier
-- allows (defarm_tier_limits on), enforced in the transaction of the
-- operation itself.  The module passes both switches to every session as
-- settings (defarm.credits, defarm.tier_limits: the connection's options),
-- so the item functions, whoever calls them, meter the same way.
--
-- Metered: an item created (POST /api/items, a batch's items, a local
-- item, a pending item approved or resolved into a new item) counts
-- towards the month's items and costs item_creation; a circuit created
-- counts towards the circuits owned; a push or pull costs
-- circuit_operation, refunded when the circuit rejects it.  Not metered:
-- an enrichment of an existing item, a split, a local item becoming a
-- real one (it was paid for when it was made).  A refusal raises DF402 or
-- DF403 (ngx_defarm_pg_raised.c), which takes the operation back with it.

CREATE FUNCTION defarm_setting_on(p_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting(p_name, true), '') = 'on'
$$;

CREATE FUNCTION defarm_tier_refuse(p_kind text, p_what text, p_limit bigint,
                                   p_tier text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'DF403', HINT = p_kind,
        MESSAGE = 'The ' || p_tier || ' tier allows ' || p_limit || ' '
                  || p_what,
        DETAIL = jsonb_build_object('limit', p_limit,
                                    'tier', p_tier)::text;
END
$$;

-- items created per user and month (UTC), counted whatever the tier so
-- that a change of tier meets the true count

CREATE TABLE usage_months (
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    month       date NOT NULL,
    items       bigint NOT NULL,
    PRIMARY KEY (user_id, month)
);

INSERT INTO usage_months (user_id, month, items)
SELECT i.owner_id, date_trunc('month', now() AT TIME ZONE 'UTC')::date,
       count(*)
FROM items i
WHERE i.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC')
                      AT TIME ZONE 'UTC'
GROUP BY i.owner_id;

-- a new item of p_owner: counted, then paid for, the last writes of the
-- transaction so that the user's rows are held from here to the commit

CREATE FUNCTION defarm_item_metered(p_owner text, p_dfid text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_tier   text;
    v_limit  bigint;
    v_n      bigint;
BEGIN
    IF defarm_setting_on('defarm.tier_limits') THEN
        SELECT u.tier, l.max_items_per_month INTO v_tier, v_limit
        FROM users u JOIN tier_limits l ON l.tier = u.tier
        WHERE u.id = p_owner;

        INSERT INTO usage_months AS m (user_id, month, items)
        VALUES (p_owner, date_trunc('month', now() AT TIME ZONE 'UTC')::date,
                1)
        ON CONFLICT (user_id, month) DO UPDATE SET items = m.items + 1
            WHERE v_limit IS NULL OR m.items < v_limit
        RETURNING m.items INTO v_n;

        IF v_n IS NULL OR v_n > coalesce(v_limit, v_n) THEN
            PERFORM defarm_tier_refuse('monthly_item_limit_exceeded',
                                       'items a month', v_limit, v_tier);
        END IF;
    END IF;

    IF defarm_setting_on('defarm.credits') THEN
        PERFORM defarm_credit_charge(p_owner, 'item_creation', p_dfid,
                                     'Item creation');
    END IF;
END
$$;

-- The item creators metered by name: each is wrapped under its own name,
-- so that every caller (the routes, the batch, the pending resolution)
-- goes through the meter without being rewritten.

ALTER FUNCTION defarm_item_create(text, jsonb, jsonb, uuid)
    RENAME TO defarm_item_create_unmetered;

CREATE FUNCTION defarm_item_create(p_owner text, p_ids jsonb,
                                   p_enriched jsonb, p_source uuid)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[])
LANGUAGE plpgsql AS $$
DECLARE
    r  record;
BEGIN
    SELECT * INTO r FROM defarm_item_create_unmetered(p_owner, p_ids,
                                                      p_enriched, p_source);

    IF r.created THEN
        PERFORM defarm_item_metered(p_owner, r.dfid);
    END IF;

    RETURN QUERY SELECT r.dfid, r.created, r.item, r.conflicts;
END
$$;

ALTER FUNCTION defarm_local_create(text, jsonb, jsonb)
    RENAME TO defarm_local_create_unmetered;

CREATE FUNCTION defarm_local_create(p_owner text, p_ids jsonb,
                                    p_enriched jsonb)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_lid  uuid;
BEGIN
    v_lid := defarm_local_create_unmetered(p_owner, p_ids, p_enriched);

    PERFORM defarm_item_metered(p_owner, 'LID-' || v_lid);

    RETURN v_lid;
END
$$;

-- approving a pending item makes a new item; its other resolutions go
-- through defarm_item_create

ALTER FUNCTION defarm_pending_resolve(text, uuid, text, jsonb, jsonb)
    RENAME TO defarm_pending_resolve_unmetered;

CREATE FUNCTION defarm_pending_resolve(p_owner text, p_id uuid,
                                       p_action text, p_ids jsonb,
                                       p_enriched jsonb)
RETURNS TABLE (outcome text, answer jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    r  record;
BEGIN
    SELECT * INTO r FROM defarm_pending_resolve_unmetered(p_owner, p_id,
                                                          p_action, p_ids,
                                                          p_enriched);

    IF p_action = 'approve' AND r.outcome = 'ok' THEN
        PERFORM defarm_item_metered(p_owner, r.answer -> 'item' ->> 'dfid');
    END IF;

    RETURN QUERY SELECT r.outcome, r.answer;
END
$$;

-- the charged creation of sql/027 is replaced by the meter
DROP FUNCTION defarm_item_create_charged(text, jsonb, jsonb, uuid, boolean);


-- POST /api/items with an Idempotency-Key: the key is claimed first (a
-- retry arriving while the first is in flight waits for it on the key),
-- the answer is kept with it, and a retry gets that answer again without
-- running (or paying for) anything; the same key with another request is
-- refused.  Keys are kept 24 hours; each keyed request clears a few that
-- expired.  A request that failed (402, 403, 5xx) rolled its key back with
-- it, so its retry runs again.

CREATE TABLE idempotency_keys (
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          text NOT NULL,
    operation    text NOT NULL,
    fingerprint  text NOT NULL,
    answer       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- the key's answer, or NULL when the key is new (and now claimed)

CREATE FUNCTION defarm_idempotency_claim(p_user text, p_key text,
                                         p_operation text,
                                         p_fingerprint text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    k  idempotency_keys;
BEGIN
    DELETE FROM idempotency_keys WHERE ctid IN (
        SELECT ctid FROM idempotency_keys
        WHERE created_at < now() - interval '24 hours'
        ORDER BY created_at LIMIT 4
        FOR UPDATE SKIP LOCKED);

    INSERT INTO idempotency_keys (user_id, key, operation, fingerprint)
    VALUES (p_user, p_key, p_operation, p_fingerprint)
    ON CONFLICT DO NOTHING;

    IF FOUND THEN
        RETURN NULL;
    END IF;

    SELECT * INTO k FROM idempotency_keys
    WHERE user_id = p_user AND key = p_key;

    IF k.operation <> p_operation OR k.fingerprint <> p_fingerprint
       OR k.answer IS NULL
    THEN
        RAISE EXCEPTION USING ERRCODE = 'DF422',
            HINT = 'idempotency_key_reused',
            MESSAGE = 'This Idempotency-Key was used with another request';
    END IF;

    RETURN k.answer;
END
$$;

CREATE FUNCTION defarm_item_create_once(p_owner text, p_ids jsonb,
                                        p_enriched jsonb, p_source uuid,
                                        p_key text)
RETURNS TABLE (dfid text, created boolean, item jsonb, conflicts text[],
               pending_id uuid, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_answer  jsonb;
    r         record;
BEGIN
    IF p_key IS NOT NULL THEN
        v_answer := defarm_idempotency_claim(
            p_owner, p_key, 'item_creation',
            md5(jsonb_build_array(p_ids, p_enriched, p_source)::text));

        IF v_answer IS NOT NULL THEN
            RETURN QUERY SELECT v_answer ->> 'dfid',
                (v_answer ->> 'created')::boolean, v_answer -> 'item',
                CASE WHEN v_answer -> 'conflicts' = 'null' THEN NULL
                     ELSE ARRAY(SELECT jsonb_array_elements_text(
                                    v_answer -> 'conflicts')) END,
                (v_answer ->> 'pending_id')::uuid, true;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO r FROM defarm_item_create_or_hold(p_owner, p_ids,
                                                    p_enriched, p_source);

    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET answer = jsonb_build_object(
            'dfid', r.dfid, 'created', r.created, 'item', r.item,
            'conflicts', to_jsonb(r.conflicts), 'pending_id', r.pending_id)
        WHERE k.user_id = p_owner AND k.key = p_key;
    END IF;

    RETURN QUERY SELECT r.dfid, r.created, r.item, r.conflicts,
                        r.pending_id, false;
END
$$;


-- circuits owned: counted under the owner's lock, so that two creations
-- at once cannot both take the last place

CREATE FUNCTION defarm_circuit_owned_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_tier   text;
    v_limit  bigint;
BEGIN
    IF NOT defarm_setting_on('defarm.tier_limits') THEN
        RETURN NEW;
    END IF;

    SELECT u.tier, l.max_circuits INTO v_tier, v_limit
    FROM users u JOIN tier_limits l ON l.tier = u.tier
    WHERE u.id = NEW.owner_id;

    IF v_limit IS NULL THEN
        RETURN NEW;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended(
        'circuits:' || NEW.owner_id, 0));

    IF (SELECT count(*) FROM circuits c
        WHERE c.owner_id = NEW.owner_id AND c.status <> 'Inactive')
       >= v_limit
    THEN
        PERFORM defarm_tier_refuse('circuit_limit_exceeded', 'circuits',
                                   v_limit, v_tier);
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER circuits_owned_check BEFORE INSERT ON circuits
    FOR EACH ROW EXECUTE FUNCTION defarm_circuit_owned_check();

-- a push or pull is paid by its requester when asked for, and refunded if
-- the circuit rejects it

CREATE FUNCTION defarm_circuit_operation_charge() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_paid  bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF defarm_setting_on('defarm.credits') THEN
            PERFORM defarm_credit_charge(NEW.requester_id,
                                         'circuit_operation',
                                         NEW.operation_id::text,
                                         'Circuit ' || lower(
                                             NEW.operation_type));
        END IF;

        RETURN NULL;
    END IF;

    SELECT -sum(t.amount) INTO v_paid
    FROM credit_transactions t
    WHERE t.user_id = NEW.requester_id
      AND t.reference_id = NEW.operation_id::text
      AND t.operation = 'circuit_operation';

    IF coalesce(v_paid, 0) > 0 THEN
        PERFORM defarm_credit_change(NEW.requester_id, v_paid, 'Refund',
                                     'circuit_operation',
                                     NEW.operation_id::text,
                                     'Circuit ' || lower(NEW.operation_type)
                                     || ' rejected', NEW.decided_by);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_operations_charge
    AFTER INSERT ON circuit_operations
    FOR EACH ROW EXECUTE FUNCTION defarm_circuit_operation_charge();

CREATE TRIGGER circuit_operations_refund
    AFTER UPDATE OF status ON circuit_operations
    FOR EACH ROW
    WHEN (OLD.status = 'Pending' AND NEW.status = 'Rejected')
    EXECUTE FUNCTION defarm_circuit_operation_charge();

CREATE INDEX credit_transactions_circuit_operation
    ON credit_transactions (reference_id)
    WHERE operation = 'circuit_operation';
