-- Tiers and credits: the tier limits and the credit costs are tables (one
-- place), and credits are a ledger: every change of a balance is a row of
-- credit_transactions written by the same statement sequence, in the same
-- transaction, as the balance update (defarm_credit_change), and the
-- balance never goes below zero (the UPDATE itself refuses).

CREATE TABLE tier_limits (
    tier                        text PRIMARY KEY,
    max_items_per_month         bigint,           -- NULL: unlimited
    max_circuits                bigint,
    max_storage_locations       bigint,
    max_api_requests_per_hour   bigint,
    max_workspace_members       bigint,
    available_adapters          text[] NOT NULL,
    can_use_premium_adapters    boolean NOT NULL,
    max_audit_retention_days    int NOT NULL,
    priority_support            boolean NOT NULL
);

INSERT INTO tier_limits VALUES
    ('Basic', 1000, 5, 1, 100, 3, '{ipfs-ipfs}', false, 30, false),
    ('Professional', 10000, 25, 3, 1000, 10,
     '{ipfs-ipfs,stellar_testnet-ipfs}', false, 90, true),
    ('Enterprise', NULL, NULL, NULL, 10000, NULL,
     '{ipfs-ipfs,stellar_testnet-ipfs,stellar_mainnet-ipfs}', true, 365, true),
    ('Admin', NULL, NULL, NULL, NULL, NULL,
     '{ipfs-ipfs,stellar_testnet-ipfs,stellar_mainnet-ipfs,'
     'ethereum_goerli-ipfs,polygon-arweave}', true, 3650, true);

CREATE TABLE credit_costs (
    tier                    text PRIMARY KEY REFERENCES tier_limits (tier),
    item_creation           int NOT NULL,
    circuit_operation       int NOT NULL,
    storage_migration       int NOT NULL,
    audit_export            int NOT NULL,
    premium_adapter_usage   int NOT NULL,
    api_request             int NOT NULL
);

INSERT INTO credit_costs VALUES
    ('Basic', 2, 3, 10, 20, 10, 1),
    ('Professional', 1, 2, 5, 10, 5, 0),
    ('Enterprise', 1, 1, 3, 5, 2, 0),
    ('Admin', 1, 1, 3, 5, 2, 0);

CREATE TABLE credit_transactions (
    transaction_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq                 bigserial,
    user_id             text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount              bigint NOT NULL,
    transaction_type    text NOT NULL
                        CHECK (transaction_type IN ('Grant', 'Penalty',
                                                    'Consumption', 'Refund')),
    operation           text,
    reference_id        text,
    description         text NOT NULL,
    balance_after       bigint NOT NULL CHECK (balance_after >= 0),
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX credit_transactions_user ON credit_transactions (user_id, seq DESC);

-- the one way a balance changes: NULL when the balance would go below
-- zero (nothing written), else the new balance

CREATE FUNCTION defarm_credit_change(p_user text, p_amount bigint,
                                     p_type text, p_operation text,
                                     p_reference text, p_description text,
                                     p_by text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_after  bigint;
BEGIN
    UPDATE users SET credits = credits + p_amount
    WHERE id = p_user AND credits + p_amount >= 0
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

-- a new user's first credits are a ledger row too

CREATE FUNCTION defarm_credit_opening() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.credits > 0 THEN
        INSERT INTO credit_transactions (user_id, amount, transaction_type,
                                         operation, description,
                                         balance_after)
        VALUES (NEW.id, NEW.credits, 'Grant', 'registration',
                'Registration grant', NEW.credits);
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER users_credit_opening AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION defarm_credit_opening();

-- the ledger of the balances already there
INSERT INTO credit_transactions (user_id, amount, transaction_type,
                                 operation, description, balance_after)
SELECT id, credits, 'Grant', 'opening', 'Opening balance', credits
FROM users WHERE credits > 0;

CREATE FUNCTION defarm_tier_limits_json(p_tier text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(t) - 'tier' FROM tier_limits t WHERE t.tier = p_tier
$$;

CREATE FUNCTION defarm_credit_tx_json(t credit_transactions) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'transaction_id', t.transaction_id, 'amount', t.amount,
        'transaction_type', t.transaction_type,
        'operation', t.operation, 'reference_id', t.reference_id,
        'description', t.description,
        'timestamp', to_char(t.created_at AT TIME ZONE 'UTC',
                             'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'balance_after', t.balance_after)
$$;


-- GET /users/me/profile, /credit/users/current

CREATE FUNCTION defarm_me_profile(p_user text, p_id text, p_query jsonb,
                                  p_arg text)
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
        'tier', u.tier, 'credits', u.credits, 'status', u.status,
        'is_admin', u.is_admin,
        'created_at', to_char(u.created_at AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'subscription', NULL,
        'limits', defarm_tier_limits_json(u.tier))::text);
END
$$;

-- GET /users/me/credits/balance

CREATE FUNCTION defarm_me_balance(p_user text, p_id text, p_query jsonb,
                                  p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN u.id IS NULL THEN defarm_answer(404, 'User not found')
           ELSE defarm_answer(200, jsonb_build_object(
               'credits', u.credits, 'tier', u.tier,
               'last_updated', to_char(coalesce(
                   (SELECT max(t.created_at) FROM credit_transactions t
                    WHERE t.user_id = u.id), u.created_at)
                   AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text)
           END
    FROM (SELECT p_user) x LEFT JOIN users u ON u.id = p_user
$$;

-- the transactions of a user, newest first (self-service and admin)

CREATE FUNCTION defarm_credit_history(p_user text, p_query jsonb)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit  int := 50;
    u        users;
    v        jsonb;
BEGIN
    IF p_query ->> 'limit' IS NOT NULL THEN
        IF p_query ->> 'limit' !~ '^[0-9]{1,3}$'
           OR (p_query ->> 'limit')::int NOT BETWEEN 1 AND 500
        THEN
            RETURN defarm_answer(400, 'limit must be 1 to 500');
        END IF;
        v_limit := (p_query ->> 'limit')::int;
    END IF;

    SELECT * INTO u FROM users WHERE id = p_user;

    IF u.id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_credit_tx_json(t) ORDER BY t.seq DESC),
                    '[]')
    INTO v
    FROM (SELECT * FROM credit_transactions t WHERE t.user_id = p_user
          ORDER BY t.seq DESC LIMIT v_limit) t;

    RETURN defarm_answer(200, jsonb_build_object(
        'user_id', u.id, 'transactions', v,
        'count', jsonb_array_length(v), 'total_credits', u.credits)::text);
END
$$;

CREATE FUNCTION defarm_me_history(p_user text, p_id text, p_query jsonb,
                                  p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_credit_history(p_user, p_query)
$$;

-- GET /users/me/credits/costs

CREATE FUNCTION defarm_me_costs(p_user text, p_id text, p_query jsonb,
                                p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN c.tier IS NULL THEN defarm_answer(404, 'User not found')
           ELSE defarm_answer(200, to_jsonb(c)::text) END
    FROM (SELECT p_user) x
    LEFT JOIN users u ON u.id = p_user
    LEFT JOIN credit_costs c ON c.tier = u.tier
$$;


-- POST /api/admin/users/:user_id/credits {amount (may be negative),
-- reason, operation_type?}

CREATE FUNCTION defarm_admin_credits(p_admin text, p_id text, p_body jsonb,
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

    SELECT credits INTO v_bal FROM users WHERE id = p_user FOR UPDATE;

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

-- GET /api/admin/users/:user_id/credits/history?limit=

CREATE FUNCTION defarm_admin_credit_history(p_admin text, p_id text,
                                            p_query jsonb, p_user text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_credit_history(p_user, p_query);

    IF a.status <> 200 THEN
        RETURN a;
    END IF;

    RETURN defarm_answer(200, (a.body::jsonb
                               || '{"success": true}'::jsonb)::text);
END
$$;
