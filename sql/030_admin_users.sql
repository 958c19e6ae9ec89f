-- The rest of the admin side of users (issue 13): search, create, read
-- and update a user, grant credits to many users at once, and the
-- dashboard's statistics, all from the tables themselves.  Every answer
-- that shows a user is rendered by one function (defarm_admin_user_json).
-- A failure is a 4xx with its message, never the original's 200
-- {success: false}.
--
-- users gains what the original's UserResponse shows and the table did
-- not have:
--   updated_at          when the account last changed: set by a trigger,
--                       so every path of change moves it (the admin's
--                       routes, a password reset, make_admin.sh); not a
--                       login (last_login has its own column) and not a
--                       debit (the balance is credit_balances').
--   available_adapters  the adapters an administrator chose for this
--                       user; NULL: the tier's (tier_limits).

ALTER TABLE users ADD COLUMN updated_at timestamptz;
UPDATE users SET updated_at = created_at;
ALTER TABLE users ALTER COLUMN updated_at SET NOT NULL,
                  ALTER COLUMN updated_at SET DEFAULT now();

ALTER TABLE users ADD COLUMN available_adapters text[];

CREATE FUNCTION defarm_users_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- "UPDATE OF": a login's UPDATE of last_login does not even fire it

CREATE TRIGGER users_touch
    BEFORE UPDATE OF username, email, password_hash, tier, status, is_admin,
                     workspace_id, available_adapters
    ON users FOR EACH ROW
    WHEN ((OLD.username, OLD.email, OLD.password_hash, OLD.tier, OLD.status,
           OLD.is_admin, OLD.workspace_id, OLD.available_adapters)
          IS DISTINCT FROM
          (NEW.username, NEW.email, NEW.password_hash, NEW.tier, NEW.status,
           NEW.is_admin, NEW.workspace_id, NEW.available_adapters))
    EXECUTE FUNCTION defarm_users_touch();

-- The statuses a user can have: one list, which the table's CHECK and the
-- routes' validation both read (001 spelled it out in the CHECK).

CREATE FUNCTION defarm_user_statuses() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{Active,Suspended,Banned,PendingVerification,TrialExpired}'::text[]
$$;

ALTER TABLE users DROP CONSTRAINT users_status_check,
    ADD CONSTRAINT users_status_check
        CHECK (status = ANY (defarm_user_statuses()));

CREATE FUNCTION defarm_rfc3339(p_time timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- a LIKE pattern matching the text itself: "%", "_" and "\" escaped

CREATE FUNCTION defarm_like_escape(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(p, '([\\%_])', '\\\1', 'g')
$$;

-- the tiers, for a refusal's message

CREATE FUNCTION defarm_tier_names() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(tier, ', ' ORDER BY tier) FROM tier_limits
$$;

-- a field of the body present with another type: its message ("an
-- array", where defarm_field_type says "a array"); NULL when absent, of
-- the type, or null where p_nullable

CREATE FUNCTION defarm_field_check(p_body jsonb, p_key text, p_type text,
                                   p_nullable boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT (p_body ? p_key) OR jsonb_typeof(p_body -> p_key) = p_type
             OR (p_nullable AND jsonb_typeof(p_body -> p_key) = 'null')
            THEN NULL
        ELSE p_key || ' must be a'
             || CASE WHEN p_type IN ('array', 'object') THEN 'n ' ELSE ' ' END
             || p_type
    END
$$;

-- the first field of the body not in p_allowed: "Unknown field: <name>"

CREATE FUNCTION defarm_field_unknown(p_body jsonb, p_allowed text[])
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'Unknown field: ' || k || ' (expected: '
           || array_to_string(p_allowed, ', ') || ')'
    FROM jsonb_object_keys(p_body) k
    WHERE NOT (k = ANY (p_allowed))
    ORDER BY k LIMIT 1
$$;


-- UserResponse: what the admin's list, get and update show of a user

CREATE FUNCTION defarm_admin_user_json(u users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'user_id', u.id, 'username', u.username, 'email', u.email,
        'tier', u.tier, 'status', u.status,
        'credits', coalesce(defarm_credit_balance(u.id), 0),
        'created_at', defarm_rfc3339(u.created_at),
        'updated_at', defarm_rfc3339(u.updated_at),
        'last_login', defarm_rfc3339(u.last_login),
        'is_admin', u.is_admin, 'workspace_id', u.workspace_id,
        'limits', defarm_tier_limits_json(u.tier),
        'available_adapters', to_jsonb(u.available_adapters))
$$;


-- GET /api/admin/users?username=&email=&tier=&status=&is_admin=&offset=
-- &limit=: username and email are substrings (any case), the others
-- exact; p_query's values are strings (the query arguments)

CREATE FUNCTION defarm_admin_user_match(u users, p_query jsonb)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (p_query ->> 'username' IS NULL
            OR u.username ILIKE '%' || defarm_like_escape(p_query ->> 'username')
                                || '%' ESCAPE '\')
       AND (p_query ->> 'email' IS NULL
            OR u.email ILIKE '%' || defarm_like_escape(p_query ->> 'email')
                             || '%' ESCAPE '\')
       AND (p_query ->> 'tier' IS NULL OR u.tier = p_query ->> 'tier')
       AND (p_query ->> 'status' IS NULL OR u.status = p_query ->> 'status')
       AND (p_query ->> 'is_admin' IS NULL
            OR u.is_admin = (p_query ->> 'is_admin')::boolean)
$$;

CREATE FUNCTION defarm_admin_users(p_admin text, p_id text, p_query jsonb,
                                   p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit   int;
    v_offset  int := 0;
    v_total   bigint;
    v         jsonb;
BEGIN
    v_limit := defarm_limit_arg(p_query, 50);

    IF v_limit IS NULL THEN
        RETURN defarm_answer(400, 'limit must be 1 to 500');
    END IF;

    IF p_query ->> 'offset' IS NOT NULL THEN
        IF p_query ->> 'offset' !~ '^[0-9]{1,9}$' THEN
            RETURN defarm_answer(400, 'offset must be a whole number from 0 '
                                      'of at most 9 digits');
        END IF;
        v_offset := (p_query ->> 'offset')::int;
    END IF;

    IF p_query ->> 'tier' IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tier_limits t
                       WHERE t.tier = p_query ->> 'tier')
    THEN
        RETURN defarm_answer(400, 'tier must be one of: '
                                  || defarm_tier_names());
    END IF;

    IF p_query ->> 'status' IS NOT NULL
       AND NOT (p_query ->> 'status' = ANY (defarm_user_statuses()))
    THEN
        RETURN defarm_answer(400, 'status must be one of: '
                                  || array_to_string(defarm_user_statuses(),
                                                     ', '));
    END IF;

    IF p_query ->> 'is_admin' IS NOT NULL
       AND p_query ->> 'is_admin' NOT IN ('true', 'false')
    THEN
        RETURN defarm_answer(400, 'is_admin must be true or false');
    END IF;

    SELECT count(*) INTO v_total
    FROM users u WHERE defarm_admin_user_match(u, p_query);

    -- newest first; the id breaks ties, so that pages do not overlap
    SELECT coalesce(jsonb_agg(defarm_admin_user_json(u)
                              ORDER BY u.created_at DESC, u.id), '[]')
    INTO v
    FROM (SELECT u.id FROM users u
          WHERE defarm_admin_user_match(u, p_query)
          ORDER BY u.created_at DESC, u.id
          LIMIT v_limit OFFSET v_offset) p
    JOIN users u ON u.id = p.id;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'users', v, 'count', jsonb_array_length(v),
        'total', v_total)::text);
END
$$;


-- GET /api/admin/users/:user_id

CREATE FUNCTION defarm_admin_user_get(p_admin text, p_id text,
                                      p_query jsonb, p_user text)
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
        'success', true, 'user', defarm_admin_user_json(u))::text);
END
$$;


-- POST /api/admin/users {username, email, password, tier,
-- initial_credits?, workspace_id?}.  The module has checked the body's
-- fields as registration checks them (no unknown field, username, email,
-- password, workspace_id) and sends it without the password; this checks
-- the rest before the password is hashed, so that a bad tier or a taken
-- name costs no bcrypt.  The insert checks again (its unique constraints
-- decide between two concurrent creations).

CREATE FUNCTION defarm_admin_user_check(p_admin text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{username,email,tier,initial_credits,'
                                     'workspace_id}'),
        defarm_field_check(p_body, 'username', 'string', true),
        defarm_field_check(p_body, 'email', 'string', true),
        defarm_field_check(p_body, 'tier', 'string', true),
        defarm_field_check(p_body, 'initial_credits', 'number', true),
        defarm_field_check(p_body, 'workspace_id', 'string', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    -- the module has required username, email and password already
    IF p_body ->> 'username' IS NULL OR p_body ->> 'email' IS NULL THEN
        RETURN defarm_answer(400, 'username and email are required');
    END IF;

    IF p_body ->> 'tier' IS NULL THEN
        RETURN defarm_answer(400, 'tier is required');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM tier_limits t
                   WHERE t.tier = p_body ->> 'tier')
    THEN
        RETURN defarm_answer(400, 'tier must be one of: '
                                  || defarm_tier_names());
    END IF;

    IF p_body ->> 'initial_credits' !~ '^[0-9]{1,12}$' THEN
        RETURN defarm_answer(400, 'initial_credits must be a whole number '
                                  'from 0, of at most 12 digits');
    END IF;

    IF EXISTS (SELECT 1 FROM users WHERE username = p_body ->> 'username')
    THEN
        RETURN defarm_answer(409, 'Username already exists');
    END IF;

    IF EXISTS (SELECT 1 FROM users WHERE email = p_body ->> 'email') THEN
        RETURN defarm_answer(409, 'Email already exists');
    END IF;

    RETURN defarm_answer(200, NULL);
END
$$;

-- the same body, and the password's bcrypt hash (made in nginx's thread
-- pool) in p_hash.  A user made by an administrator is like a registered
-- one: "user-<uuid>", Active, not an admin, the tier's registration grant
-- (the users trigger), "<username>-workspace" unless workspace_id is
-- given; initial_credits are a Grant on top of it.

CREATE FUNCTION defarm_admin_user_create(p_admin text, p_id text,
                                         p_body jsonb, p_hash text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a             defarm_answer;
    u             users;
    v_credits     bigint;
    v_constraint  text;
BEGIN
    a := defarm_admin_user_check(p_admin, p_id, p_body, NULL);

    IF a.status <> 200 THEN
        RETURN a;
    END IF;

    IF p_hash IS NULL OR p_hash = '' THEN
        RAISE EXCEPTION 'defarm_admin_user_create: no password hash';
    END IF;

    BEGIN
        INSERT INTO users (id, username, email, password_hash, tier, status,
                           is_admin, workspace_id)
        VALUES ('user-' || gen_random_uuid(), p_body ->> 'username',
                p_body ->> 'email', p_hash, p_body ->> 'tier', 'Active',
                false,
                coalesce(p_body ->> 'workspace_id',
                         (p_body ->> 'username') || '-workspace'))
        RETURNING * INTO u;

    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;

        RETURN defarm_answer(409, CASE v_constraint
                                  WHEN 'users_email_key'
                                      THEN 'Email already exists'
                                  ELSE 'Username already exists' END);
    END;

    v_credits := coalesce((p_body ->> 'initial_credits')::bigint, 0);

    IF v_credits > 0 THEN
        PERFORM defarm_credit_change(u.id, v_credits, 'Grant',
                                     'admin_initial_credits', NULL,
                                     'Initial credits (Admin: '
                                     || v_credits || ')',
                                     p_admin);
    END IF;

    INSERT INTO admin_actions (admin_id, action_type, target_user_id,
                               details)
    VALUES (p_admin, 'UserCreated', u.id,
            jsonb_build_object('username', u.username, 'email', u.email,
                               'tier', u.tier,
                               'initial_credits', v_credits,
                               'workspace_id', u.workspace_id));

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true, 'message', 'User created successfully',
        'user_id', u.id, 'username', u.username)::text);
END
$$;


-- PUT /api/admin/users/:user_id {tier?, status?, credits?, is_admin?,
-- available_adapters?}: each value as UserResponse shows it (so null is
-- refused, but for available_adapters, where it means the tier's list);
-- credits is the balance to set, written to the ledger as a Grant or a
-- Penalty of the difference.  A status other than Active moves the token
-- version on, as a freeze does: the tokens issued before stay refused
-- after the status is Active again.  The module drops the user's cached
-- auth and API-key records after any update (they carry the status, the
-- tier and the admin flag).  Values equal to the user's are no change:
-- with none, nothing is written, logged or notified.

CREATE FUNCTION defarm_admin_user_update(p_admin text, p_id text,
                                         p_body jsonb, p_user text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    u             users;
    v_err         text;
    v_tier        text;
    v_status      text;
    v_admin       boolean;
    v_set_ad      boolean;
    v_adapters    text[];
    v_allowed     text[];
    v_bad         text;
    v_credits     bigint;
    v_balance     bigint;
    v_changes     text[] := '{}';
    v_text        text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    IF p_body = '{}' THEN
        RETURN defarm_answer(400, 'Nothing to update: give tier, status, '
                                  'credits, is_admin or available_adapters');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{tier,status,credits,is_admin,'
                                     'available_adapters}'),
        defarm_field_check(p_body, 'tier', 'string', false),
        defarm_field_check(p_body, 'status', 'string', false),
        defarm_field_check(p_body, 'credits', 'number', false),
        defarm_field_check(p_body, 'is_admin', 'boolean', false),
        defarm_field_check(p_body, 'available_adapters', 'array', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_body ? 'tier'
       AND NOT EXISTS (SELECT 1 FROM tier_limits t
                       WHERE t.tier = p_body ->> 'tier')
    THEN
        RETURN defarm_answer(400, 'tier must be one of: '
                                  || defarm_tier_names());
    END IF;

    IF p_body ? 'status'
       AND NOT (p_body ->> 'status' = ANY (defarm_user_statuses()))
    THEN
        RETURN defarm_answer(400, 'status must be one of: '
                                  || array_to_string(defarm_user_statuses(),
                                                     ', '));
    END IF;

    IF p_body ? 'credits' AND p_body ->> 'credits' !~ '^[0-9]{1,12}$' THEN
        RETURN defarm_answer(400, 'credits must be a whole number from 0, '
                                  'of at most 12 digits');
    END IF;

    v_set_ad := p_body ? 'available_adapters';

    IF jsonb_typeof(p_body -> 'available_adapters') = 'array' THEN
        IF EXISTS (SELECT 1
                   FROM jsonb_array_elements(p_body -> 'available_adapters') e
                   WHERE jsonb_typeof(e) <> 'string')
        THEN
            RETURN defarm_answer(400, 'available_adapters must be an array '
                                      'of strings');
        END IF;

        v_adapters := ARRAY(
            SELECT e FROM jsonb_array_elements_text(
                              p_body -> 'available_adapters')
                          WITH ORDINALITY x(e, n)
            ORDER BY n);

        -- every adapter there is: the Admin tier's list
        SELECT t.available_adapters INTO v_allowed
        FROM tier_limits t WHERE t.tier = 'Admin';

        SELECT a INTO v_bad FROM unnest(v_adapters) a
        WHERE NOT (a = ANY (coalesce(v_allowed, '{}')))
        LIMIT 1;

        IF v_bad IS NOT NULL THEN
            RETURN defarm_answer(400, 'Unknown adapter: ' || v_bad
                                      || ' (available: '
                                      || array_to_string(v_allowed, ', ')
                                      || ')');
        END IF;

        IF cardinality(v_adapters)
           <> (SELECT count(DISTINCT a) FROM unnest(v_adapters) a)
        THEN
            RETURN defarm_answer(400, 'available_adapters names an adapter '
                                      'twice');
        END IF;
    END IF;

    IF p_user = p_admin AND p_body -> 'is_admin' = 'false' THEN
        RETURN defarm_answer(400, 'An administrator cannot remove their own '
                                  'admin flag');
    END IF;

    IF p_user = p_admin AND p_body ->> 'status' <> 'Active' THEN
        RETURN defarm_answer(400, 'An administrator cannot suspend '
                                  'themselves');
    END IF;

    -- not FOR UPDATE: the items' foreign keys hold KEY SHARE locks on it
    SELECT * INTO u FROM users WHERE id = p_user FOR NO KEY UPDATE;

    IF u.id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    v_tier := coalesce(p_body ->> 'tier', u.tier);
    v_status := coalesce(p_body ->> 'status', u.status);
    v_admin := coalesce((p_body ->> 'is_admin')::boolean, u.is_admin);

    IF NOT v_set_ad THEN
        v_adapters := u.available_adapters;
    END IF;

    IF v_tier <> u.tier THEN
        v_changes := v_changes || ('tier: ' || u.tier || ' -> ' || v_tier);
    END IF;

    IF v_status <> u.status THEN
        v_changes := v_changes || ('status: ' || u.status || ' -> '
                                   || v_status);
    END IF;

    IF p_body ? 'credits' THEN
        v_credits := (p_body ->> 'credits')::bigint;

        -- held to the commit: the difference is the balance's of now
        SELECT credits INTO v_balance FROM credit_balances
        WHERE user_id = p_user FOR UPDATE;

        IF v_balance IS NULL THEN
            RAISE EXCEPTION 'user % has no credit balance', p_user;
        END IF;

        IF v_credits <> v_balance THEN
            v_changes := v_changes || ('credits: ' || v_balance || ' -> '
                                       || v_credits);
        END IF;
    END IF;

    IF v_admin <> u.is_admin THEN
        v_changes := v_changes || ('is_admin: ' || u.is_admin || ' -> '
                                   || v_admin);
    END IF;

    IF v_adapters IS DISTINCT FROM u.available_adapters THEN
        v_changes := v_changes || (
            'available_adapters: '
            || coalesce('[' || array_to_string(u.available_adapters, ', ')
                        || ']', 'tier default')
            || ' -> '
            || coalesce('[' || array_to_string(v_adapters, ', ') || ']',
                        'tier default'));
    END IF;

    v_text := array_to_string(v_changes, ', ');

    IF cardinality(v_changes) = 0 THEN
        RETURN defarm_answer(200, jsonb_build_object(
            'success', true, 'message', 'User updated successfully',
            'changes', v_text)::text);
    END IF;

    UPDATE users SET
        tier = v_tier, status = v_status, is_admin = v_admin,
        available_adapters = v_adapters,
        token_version = token_version
                        + CASE WHEN v_status <> u.status
                                    AND v_status <> 'Active'
                               THEN 1 ELSE 0 END,
        updated_at = now()
    WHERE id = p_user;

    IF v_credits <> v_balance THEN
        IF defarm_credit_change(
               p_user, v_credits - v_balance,
               CASE WHEN v_credits > v_balance THEN 'Grant'
                    ELSE 'Penalty' END,
               'admin_set_credits', NULL,
               'Set by an administrator: ' || v_balance || ' -> '
               || v_credits,
               p_admin) IS NULL
        THEN
            RAISE EXCEPTION 'the balance of % did not take %', p_user,
                            v_credits;
        END IF;
    END IF;

    INSERT INTO admin_actions (admin_id, action_type, target_user_id,
                               details)
    VALUES (p_admin, 'UpdateUser', p_user,
            jsonb_build_object('changes', v_text, 'update', p_body));

    PERFORM defarm_notify(ARRAY[p_user], 'AccountUpdated', 'Account updated',
                          'An administrator updated your account: '
                          || v_text,
                          jsonb_build_object('changes', v_text));

    IF v_adapters IS DISTINCT FROM u.available_adapters THEN
        PERFORM defarm_notify(
            ARRAY[p_user], 'AdaptersUpdated', 'Adapters updated',
            CASE WHEN v_adapters IS NULL
                 THEN 'Your available adapters are now your tier''s'
                 ELSE 'Your available adapters are now: '
                      || coalesce(nullif(array_to_string(v_adapters, ', '),
                                         ''), 'none')
            END,
            jsonb_build_object(
                'available_adapters',
                coalesce(to_jsonb(v_adapters),
                         defarm_tier_limits_json(v_tier)
                         -> 'available_adapters')));
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'User updated successfully',
        'changes', v_text)::text);
END
$$;


-- POST /api/admin/users/credits/bulk-grant {user_ids: [1..1000 strings],
-- amount: positive whole, reason}: one transaction; each user's grant is
-- a ledger row and a CreditsAdjusted notification; an unknown id, or an
-- id given again, is a failure of its own and the others go on.  The
-- balances are taken in id order, so two grants to overlapping lists
-- cannot deadlock; the answer keeps the order of the request.

CREATE FUNCTION defarm_admin_bulk_grant(p_admin text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err      text;
    v_amount   bigint;
    v_reason   text;
    v_n        int;
    v_after    bigint;
    r          record;
    v_results  jsonb := '[]';         -- [{n, user_id, error?}]
    v_ok       jsonb;
    v_failed   jsonb;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{user_ids,amount,reason}'),
        defarm_field_check(p_body, 'user_ids', 'array', true),
        defarm_field_check(p_body, 'amount', 'number', true),
        defarm_field_check(p_body, 'reason', 'string', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_reason := btrim(p_body ->> 'reason');

    IF p_body ->> 'user_ids' IS NULL OR p_body ->> 'amount' IS NULL
       OR coalesce(v_reason, '') = ''
    THEN
        RETURN defarm_answer(400, 'user_ids, amount and reason are '
                                  'required');
    END IF;

    v_n := jsonb_array_length(p_body -> 'user_ids');

    IF v_n NOT BETWEEN 1 AND 1000 THEN
        RETURN defarm_answer(400, 'user_ids must hold 1 to 1000 ids');
    END IF;

    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_body -> 'user_ids') e
               WHERE jsonb_typeof(e) <> 'string')
    THEN
        RETURN defarm_answer(400, 'user_ids must be strings');
    END IF;

    IF p_body ->> 'amount' !~ '^[0-9]{1,12}$' OR p_body ->> 'amount' = '0'
    THEN
        RETURN defarm_answer(400, 'amount must be a positive whole number '
                                  'of at most 12 digits');
    END IF;

    v_amount := (p_body ->> 'amount')::bigint;

    FOR r IN
        SELECT x.id, array_agg(x.n ORDER BY x.n) AS ns
        FROM jsonb_array_elements_text(p_body -> 'user_ids')
             WITH ORDINALITY x(id, n)
        GROUP BY x.id
        ORDER BY x.id
    LOOP
        v_after := defarm_credit_change(r.id, v_amount, 'Grant',
                                        'admin_bulk_grant', NULL,
                                        v_reason || ' (Admin bulk grant: '
                                        || v_amount || ')',
                                        p_admin);

        IF v_after IS NULL THEN
            v_results := v_results || jsonb_build_object(
                'n', r.ns[1], 'user_id', r.id, 'error', 'User not found');

        ELSE
            v_results := v_results || jsonb_build_object('n', r.ns[1],
                                                         'user_id', r.id);

            PERFORM defarm_notify(ARRAY[r.id], 'CreditsAdjusted',
                                  'Credits adjusted',
                                  'Your credits changed by ' || v_amount
                                  || ': ' || v_reason,
                                  jsonb_build_object('amount', v_amount,
                                                     'balance_after',
                                                     v_after));
        END IF;

        v_results := v_results || coalesce(
            (SELECT jsonb_agg(jsonb_build_object(
                        'n', d, 'user_id', r.id,
                        'error', 'Duplicate user_id (granted once)'))
             FROM unnest(r.ns[2:]) d),
            '[]');
    END LOOP;

    SELECT coalesce(jsonb_agg(e -> 'user_id' ORDER BY (e ->> 'n')::int)
                    FILTER (WHERE NOT e ? 'error'), '[]'),
           coalesce(jsonb_agg(e - 'n' ORDER BY (e ->> 'n')::int)
                    FILTER (WHERE e ? 'error'), '[]')
    INTO v_ok, v_failed
    FROM jsonb_array_elements(v_results) e;

    INSERT INTO admin_actions (admin_id, action_type, target_user_id,
                               details)
    VALUES (p_admin, 'BulkGrantCredits', NULL,
            jsonb_build_object('amount', v_amount, 'reason', v_reason,
                               'successful', v_ok,
                               'failed_count', jsonb_array_length(v_failed)));

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Bulk credit grant completed',
        'successful', v_ok, 'failed', v_failed, 'total_users', v_n,
        'successful_count', jsonb_array_length(v_ok),
        'failed_count', jsonb_array_length(v_failed))::text);
END
$$;


-- GET /api/admin/dashboard/stats: counted now, every tier and status
-- listed (0 included); credits issued are the ledger's positive rows,
-- consumed its Consumption rows

CREATE FUNCTION defarm_admin_dashboard_stats(p_admin text, p_id text,
                                             p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_answer(200, jsonb_build_object(
        'success', true,
        'stats', jsonb_build_object(
            'total_users', (SELECT count(*) FROM users),
            'users_by_tier',
                (SELECT coalesce(jsonb_object_agg(c.tier, c.n), '{}')
                 FROM (SELECT t.tier, count(u.id) AS n
                       FROM tier_limits t
                       LEFT JOIN users u ON u.tier = t.tier
                       GROUP BY t.tier) c),
            'users_by_status',
                (SELECT jsonb_object_agg(c.status, c.n)
                 FROM (SELECT s.status, count(u.id) AS n
                       FROM unnest(defarm_user_statuses()) s(status)
                       LEFT JOIN users u ON u.status = s.status
                       GROUP BY s.status) c),
            'total_credits_issued',
                (SELECT coalesce(sum(t.amount), 0)
                 FROM credit_transactions t WHERE t.amount > 0),
            'total_credits_consumed',
                (SELECT coalesce(sum(-t.amount), 0)
                 FROM credit_transactions t
                 WHERE t.transaction_type = 'Consumption'),
            'active_users_last_30_days',
                (SELECT count(*) FROM users u
                 WHERE u.last_login >= now() - interval '30 days'),
            'new_users_last_30_days',
                (SELECT count(*) FROM users u
                 WHERE u.created_at >= now() - interval '30 days'),
            'generated_at', defarm_rfc3339(now())))::text)
$$;
