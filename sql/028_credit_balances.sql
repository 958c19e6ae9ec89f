-- A balance is a narrow row of its own (credit_balances, as the original
-- named it), not a column of users: every item a user creates takes a
-- KEY SHARE lock on the user's row (the items' foreign key), and a debit
-- updating that same row turned each of them into a multixact, which cost
-- a single user's concurrent creations half their speed (bench/credits.sh).
-- Nothing references credit_balances, so a debit only meets other debits.
-- A debit is the last write of its transaction, so the row is held from
-- the debit to the commit only.

CREATE TABLE credit_balances (
    user_id     text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    credits     bigint NOT NULL CHECK (credits >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);   -- room on the page for the next version (HOT)

INSERT INTO credit_balances (user_id, credits, updated_at)
SELECT u.id, u.credits,
       coalesce((SELECT max(t.created_at) FROM credit_transactions t
                 WHERE t.user_id = u.id), u.created_at)
FROM users u;

ALTER TABLE users DROP COLUMN credits;

-- a ledger row is written with every debit: the fewer indexes and checks
-- it meets the better.  Its key is its sequence number (appended, not a
-- random uuid's place in an index; transaction_id stays, unindexed), and
-- it has no foreign key: every row is written by defarm_credit_change
-- after the update of the user's balance row, which has one, and the
-- ledger of a deleted user is history, kept.
ALTER TABLE credit_transactions
    DROP CONSTRAINT credit_transactions_user_id_fkey,
    DROP CONSTRAINT credit_transactions_pkey,
    ADD PRIMARY KEY (seq);

-- what a new account of a tier is given (the original: 100 on Basic)
ALTER TABLE tier_limits
    ADD COLUMN registration_credits bigint NOT NULL DEFAULT 0
    CHECK (registration_credits >= 0);
UPDATE tier_limits SET registration_credits = 100 WHERE tier = 'Basic';

CREATE OR REPLACE FUNCTION defarm_tier_limits_json(p_tier text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(t) - 'tier' - 'registration_credits'
    FROM tier_limits t WHERE t.tier = p_tier
$$;

CREATE FUNCTION defarm_credit_balance(p_user text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT credits FROM credit_balances WHERE user_id = p_user
$$;

CREATE OR REPLACE FUNCTION defarm_credit_change(p_user text, p_amount bigint,
                                                p_type text,
                                                p_operation text,
                                                p_reference text,
                                                p_description text,
                                                p_by text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_after  bigint;
BEGIN
    UPDATE credit_balances SET credits = credits + p_amount,
                               updated_at = now()
    WHERE user_id = p_user AND credits + p_amount >= 0
    RETURNING credits INTO v_after;

    IF v_after IS NULL THEN
        RETURN NULL;
    END IF;

    INSERT INTO credit_transactions (user_id, amount, transaction_type,
                                     operation, reference_id, description,
                                     balance_after, created_by)
    VALUES (p_user, p_amount, p_type, p_operation, p_reference,
            p_description, v_after, p_by);

    RETURN v_after;
END
$$;

-- a chargeable operation's debit of its tier's cost (credit_costs column
-- p_operation), or DF402 insufficient_credits with the cost and the
-- balance when the balance cannot pay, which rolls the operation back
-- with it (the module answers a DF4xx itself: ngx_defarm_pg_raised.c)

CREATE FUNCTION defarm_credit_charge(p_user text, p_operation text,
                                     p_reference text, p_description text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_cost  bigint;
    v_bal   bigint;
BEGIN
    SELECT CASE p_operation
               WHEN 'item_creation' THEN c.item_creation
               WHEN 'circuit_operation' THEN c.circuit_operation
               WHEN 'storage_migration' THEN c.storage_migration
               WHEN 'audit_export' THEN c.audit_export
               WHEN 'premium_adapter_usage' THEN c.premium_adapter_usage
               WHEN 'api_request' THEN c.api_request
           END
    INTO v_cost
    FROM users u JOIN credit_costs c ON c.tier = u.tier
    WHERE u.id = p_user;

    IF coalesce(v_cost, 0) > 0
       AND defarm_credit_change(p_user, -v_cost, 'Consumption', p_operation,
                                p_reference, p_description, p_user) IS NULL
    THEN
        v_bal := coalesce(defarm_credit_balance(p_user), 0);

        RAISE EXCEPTION USING ERRCODE = 'DF402',
            HINT = 'insufficient_credits',
            MESSAGE = 'Insufficient credits: the operation costs ' || v_cost
                      || ', the balance is ' || v_bal,
            DETAIL = jsonb_build_object('required', v_cost,
                                        'balance', v_bal)::text;
    END IF;
END
$$;

-- a new user's account, and its registration grant in the ledger

CREATE OR REPLACE FUNCTION defarm_credit_opening() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_balances (user_id, credits) VALUES (NEW.id, 0);

    PERFORM defarm_credit_change(NEW.id, l.registration_credits, 'Grant',
                                 'registration', NULL, 'Registration grant',
                                 NULL)
    FROM tier_limits l
    WHERE l.tier = NEW.tier AND l.registration_credits > 0;

    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION defarm_me_profile(p_user text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u  users;
BEGIN
    SELECT * INTO u FROM users WHERE id = p_user;

    IF u.id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'user_id', u.id, 'username', u.username, 'email', u.email,
        'tier', u.tier, 'credits', defarm_credit_balance(u.id),
        'status', u.status, 'is_admin', u.is_admin,
        'created_at', to_char(u.created_at AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'subscription', NULL,
        'limits', defarm_tier_limits_json(u.tier))::text);
END
$$;

CREATE OR REPLACE FUNCTION defarm_me_balance(p_user text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN u.id IS NULL THEN defarm_answer(404, 'User not found')
           ELSE defarm_answer(200, jsonb_build_object(
               'credits', b.credits, 'tier', u.tier,
               'last_updated', to_char(b.updated_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text)
           END
    FROM (SELECT p_user) x
    LEFT JOIN users u ON u.id = p_user
    LEFT JOIN credit_balances b ON b.user_id = p_user
$$;

-- a list's ?limit=1..500, p_default when absent, NULL when malformed

CREATE FUNCTION defarm_limit_arg(p_query jsonb, p_default int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_query ->> 'limit' IS NULL THEN p_default
        WHEN p_query ->> 'limit' ~ '^[0-9]{1,3}$'
             AND (p_query ->> 'limit')::int BETWEEN 1 AND 500
        THEN (p_query ->> 'limit')::int
    END
$$;

CREATE OR REPLACE FUNCTION defarm_credit_history(p_user text, p_query jsonb)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit  int;
    v_id     text;
    v        jsonb;
BEGIN
    v_limit := defarm_limit_arg(p_query, 50);

    IF v_limit IS NULL THEN
        RETURN defarm_answer(400, 'limit must be 1 to 500');
    END IF;

    SELECT id INTO v_id FROM users WHERE id = p_user;

    IF v_id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_credit_tx_json(t) ORDER BY t.seq DESC),
                    '[]')
    INTO v
    FROM (SELECT * FROM credit_transactions t WHERE t.user_id = p_user
          ORDER BY t.seq DESC LIMIT v_limit) t;

    RETURN defarm_answer(200, jsonb_build_object(
        'user_id', v_id, 'transactions', v,
        'count', jsonb_array_length(v),
        'total_credits', defarm_credit_balance(v_id))::text);
END
$$;

-- the admin's adjustment reads the balance from its row

CREATE OR REPLACE FUNCTION defarm_admin_credits(p_admin text, p_id text, p_body jsonb,
                                     p_user text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_amount  bigint;
    v_after   bigint;
    v_bal     bigint;
    v_err     text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'amount', 'number'),
                      defarm_field_type(p_body, 'reason', 'string'),
                      defarm_field_type(p_body, 'operation_type', 'string'));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_body ->> 'amount' IS NULL OR p_body ->> 'reason' IS NULL
       OR btrim(p_body ->> 'reason') = ''
    THEN
        RETURN defarm_answer(400, 'amount and reason are required');
    END IF;

    IF p_body ->> 'amount' !~ '^-?[0-9]{1,12}$' OR p_body ->> 'amount' = '0'
    THEN
        RETURN defarm_answer(400, 'amount must be a non-zero whole number '
                                  'of at most 12 digits');
    END IF;

    v_amount := (p_body ->> 'amount')::bigint;

    SELECT credits INTO v_bal FROM credit_balances WHERE user_id = p_user
    FOR UPDATE;

    IF v_bal IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    v_after := defarm_credit_change(
        p_user, v_amount,
        CASE WHEN v_amount > 0 THEN 'Grant' ELSE 'Penalty' END,
        coalesce(p_body ->> 'operation_type', 'admin_adjustment'), NULL,
        btrim(p_body ->> 'reason') || ' (Admin: ' || v_amount || ')',
        p_admin);

    IF v_after IS NULL THEN
        RETURN defarm_answer(409, 'The balance (' || v_bal || ') cannot go '
                                  'below zero');
    END IF;

    INSERT INTO admin_actions (admin_id, action_type, target_user_id,
                               details)
    VALUES (p_admin, 'AdjustCredits', p_user,
            jsonb_build_object('amount', v_amount,
                               'reason', p_body ->> 'reason',
                               'balance_after', v_after));

    PERFORM defarm_notify(ARRAY[p_user], 'CreditsAdjusted',
                          'Credits adjusted',
                          'Your credits changed by ' || v_amount
                          || ': ' || btrim(p_body ->> 'reason'),
                          jsonb_build_object('amount', v_amount,
                                             'balance_after', v_after));

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Credits adjusted successfully',
        'amount', v_amount, 'balance_after', v_after)::text);
END
$$;
