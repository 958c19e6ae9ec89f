-- Storage adapters: where an item's JSON is stored outside the database.
--
-- An administrator configures adapters (adapter_configs: an endpoint, its
-- authentication, secrets sealed as the webhooks' are, sql/033); a circuit
-- chooses one (circuit_adapters, tier-gated); a push completed in such a
-- circuit queues an upload of the item's document as an 'ipfs_upload'
-- job of the push's own transaction (sql/031), and the job's success
-- writes the storage record and the CID timeline entry in the transaction
-- that records it.  An upload never runs inside a request.
--
-- Only IPFS can be reached from here.  The Stellar adapters' configs are
-- accepted, and a push through them is refused (503 adapter_unavailable)
-- rather than pretended; the indexing progress of their networks says
-- that no listener runs.

CREATE TABLE adapter_configs (
    config_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL,
    description         text NOT NULL DEFAULT '',
    adapter_type        text NOT NULL,
    connection_details  jsonb NOT NULL,       -- without its secrets
    api_key             bytea,                -- sealed
    secret_key          bytea,                -- sealed
    contract_configs    jsonb,
    is_active           boolean NOT NULL DEFAULT true,
    is_default          boolean NOT NULL DEFAULT false,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- one default per adapter type: the one its uploads go through
CREATE UNIQUE INDEX adapter_configs_default ON adapter_configs (adapter_type)
    WHERE is_default;

CREATE TABLE circuit_adapters (
    circuit_id              uuid PRIMARY KEY
                            REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    adapter_type            text NOT NULL,
    sponsor_adapter_access  boolean NOT NULL DEFAULT false,
    requires_approval       boolean NOT NULL DEFAULT false,
    auto_migrate_existing   boolean NOT NULL DEFAULT false,
    configured_by           text NOT NULL,
    configured_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_history (
    record_id           bigserial PRIMARY KEY,
    dfid                text NOT NULL REFERENCES items (dfid) ON DELETE CASCADE,
    adapter_type        text NOT NULL,
    storage_location    jsonb NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now(),
    triggered_by        text NOT NULL,
    triggered_by_id     text,
    is_active           boolean NOT NULL DEFAULT true,
    is_primary          boolean NOT NULL DEFAULT false,
    metadata            jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX storage_history_dfid ON storage_history (dfid, record_id DESC);

CREATE TABLE item_cid_timeline (
    id                      bigserial PRIMARY KEY,
    dfid                    text NOT NULL,
    cid                     text NOT NULL,
    event_sequence          int NOT NULL,
    blockchain_timestamp    timestamptz,
    ipcm_transaction_hash   text,
    network                 text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),

    UNIQUE (dfid, event_sequence)
);

CREATE TABLE blockchain_indexing_progress (
    network                 text PRIMARY KEY,
    last_indexed_ledger     bigint NOT NULL DEFAULT 0,
    last_confirmed_ledger   bigint NOT NULL DEFAULT 0,
    last_indexed_at         timestamptz,
    status                  text NOT NULL DEFAULT 'not_running',
    error_message           text,
    total_events_indexed    bigint NOT NULL DEFAULT 0,
    last_error_at           timestamptz
);

INSERT INTO blockchain_indexing_progress (network, error_message) VALUES
    ('stellar-testnet', 'No listener runs: the network cannot be reached '
                        'from this deployment'),
    ('stellar-mainnet', 'No listener runs: the network cannot be reached '
                        'from this deployment');

-- an item's uploads still to come, found by item
CREATE INDEX jobs_storage_dfid ON jobs ((payload ->> 'dfid'))
    WHERE kind = 'ipfs_upload';


-- an adapter type as the API names it ("ipfs-ipfs"), from that or its
-- PascalCase name ("IpfsIpfs"); NULL for none known

CREATE FUNCTION defarm_adapter_type(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p IN ('none', 'None') THEN 'none'
        WHEN p IN ('ipfs-ipfs', 'IpfsIpfs') THEN 'ipfs-ipfs'
        WHEN p IN ('stellar_testnet-ipfs', 'StellarTestnetIpfs')
            THEN 'stellar_testnet-ipfs'
        WHEN p IN ('stellar_mainnet-ipfs', 'StellarMainnetIpfs')
            THEN 'stellar_mainnet-ipfs'
        WHEN p IN ('ethereum_goerli-ipfs', 'EthereumGoerliIpfs')
            THEN 'ethereum_goerli-ipfs'
        WHEN p IN ('polygon-arweave', 'PolygonArweave') THEN 'polygon-arweave'
        WHEN p ~ '^custom-[A-Za-z0-9_.-]{1,64}$' THEN p
    END
$$;

CREATE FUNCTION defarm_adapter_types_text() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'none, ipfs-ipfs, stellar_testnet-ipfs, stellar_mainnet-ipfs, '
           'ethereum_goerli-ipfs, polygon-arweave or custom-<name>'
$$;

-- the adapters a user may use: the administrator's list, or the tier's

CREATE FUNCTION defarm_user_adapters(p_user text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(u.available_adapters, t.available_adapters)
    FROM users u JOIN tier_limits t ON t.tier = u.tier
    WHERE u.id = p_user
$$;

-- the config an adapter type's uploads go through: its default, else its
-- newest active one

CREATE FUNCTION defarm_adapter_config_for(p_type text)
RETURNS adapter_configs
LANGUAGE sql STABLE AS $$
    SELECT * FROM adapter_configs
    WHERE adapter_type = p_type AND is_active
    ORDER BY is_default DESC, created_at DESC
    LIMIT 1
$$;

-- a push through an adapter that cannot be reached: refused whole

CREATE FUNCTION defarm_adapter_unavailable(p_type text, p_why text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'DF503',
        HINT = 'adapter_unavailable',
        MESSAGE = 'The ' || p_type || ' adapter is unavailable: ' || p_why,
        DETAIL = jsonb_build_object('adapter_type', p_type)::text;
END
$$;

-- why p_type cannot store anything now, or NULL when it can

CREATE FUNCTION defarm_adapter_unusable(p_type text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_type <> 'ipfs-ipfs'
            THEN 'its network cannot be reached from this deployment'
        WHEN (defarm_adapter_config_for(p_type)).config_id IS NULL
            THEN 'no active adapter configuration for it'
    END
$$;


-- AdapterConfig as answered: the connection without its secrets, which
-- are never returned (has_api_key, has_secret_key say whether they are set)

CREATE FUNCTION defarm_adapter_config_json(a adapter_configs) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'config_id', a.config_id, 'name', a.name,
        'description', a.description, 'adapter_type', a.adapter_type,
        'connection_details', a.connection_details
            || jsonb_build_object('has_api_key', a.api_key IS NOT NULL,
                                  'has_secret_key', a.secret_key IS NOT NULL),
        'contract_configs', a.contract_configs,
        'is_active', a.is_active, 'is_default', a.is_default,
        'created_by', a.created_by,
        'created_at', defarm_rfc3339(a.created_at),
        'updated_at', defarm_rfc3339(a.updated_at))
$$;

-- the fields of a config's body, checked; p_new: a creation (name,
-- adapter_type and connection_details.endpoint required).  NULL or the
-- message of a 400.

CREATE FUNCTION defarm_adapter_config_check(p_body jsonb, p_new boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c      jsonb := p_body -> 'connection_details';
    v_err  text;
    v_at   jsonb;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN 'The body must be a JSON object';
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, ARRAY['name', 'description',
            'adapter_type', 'connection_details', 'contract_configs',
            'is_active']),
        defarm_field_check(p_body, 'name', 'string', false),
        defarm_field_check(p_body, 'description', 'string', true),
        defarm_field_check(p_body, 'adapter_type', 'string', false),
        defarm_field_check(p_body, 'connection_details', 'object', false),
        defarm_field_check(p_body, 'contract_configs', 'object', true),
        defarm_field_check(p_body, 'is_active', 'boolean', false));

    IF v_err IS NOT NULL THEN
        RETURN v_err;
    END IF;

    IF p_new AND (NOT p_body ? 'name' OR NOT p_body ? 'adapter_type'
                  OR c IS NULL)
    THEN
        RETURN 'name, adapter_type and connection_details are required';
    END IF;

    IF p_body ? 'name' AND (btrim(p_body ->> 'name') = ''
                            OR length(p_body ->> 'name') > 200)
    THEN
        RETURN 'name must be 1 to 200 characters';
    END IF;

    IF length(p_body ->> 'description') > 2000 THEN
        RETURN 'description is at most 2000 characters';
    END IF;

    IF p_body ? 'adapter_type'
       AND coalesce(defarm_adapter_type(p_body ->> 'adapter_type'), 'none')
           = 'none'
    THEN
        RETURN 'adapter_type must be one of: ipfs-ipfs, stellar_testnet-ipfs,'
               ' stellar_mainnet-ipfs, ethereum_goerli-ipfs, polygon-arweave '
               'or custom-<name>';
    END IF;

    IF c IS NULL THEN
        RETURN NULL;
    END IF;

    v_err := coalesce(
        defarm_field_unknown(c, ARRAY['endpoint', 'api_key', 'secret_key',
            'auth_type', 'timeout_ms', 'retry_attempts',
            'max_concurrent_requests', 'custom_headers']),
        defarm_field_check(c, 'endpoint', 'string', false),
        defarm_field_check(c, 'api_key', 'string', true),
        defarm_field_check(c, 'secret_key', 'string', true),
        defarm_field_check(c, 'timeout_ms', 'number', false),
        defarm_field_check(c, 'retry_attempts', 'number', false),
        defarm_field_check(c, 'max_concurrent_requests', 'number', false),
        defarm_field_check(c, 'custom_headers', 'object', false));

    IF v_err IS NOT NULL THEN
        RETURN 'connection_details.' || v_err;
    END IF;

    IF NOT c ? 'endpoint' THEN
        RETURN 'connection_details.endpoint is required';
    END IF;

    IF c ->> 'endpoint' !~ '^https?://[^/?#@\s]+(/[^?#\s]*)?$'
       OR length(c ->> 'endpoint') > 2000
    THEN
        RETURN 'connection_details.endpoint must be an http or https URL '
               'without a query or credentials';
    END IF;

    v_at := c -> 'auth_type';

    IF v_at IS NOT NULL
       AND NOT (v_at IN ('"None"', '"ApiKey"', '"Bearer"', '"BasicAuth"',
                         '"OAuth2"')
                OR (jsonb_typeof(v_at) = 'object'
                    AND jsonb_typeof(v_at -> 'Custom') = 'string'
                    AND (SELECT count(*) FROM jsonb_object_keys(v_at)) = 1))
    THEN
        RETURN 'connection_details.auth_type must be None, ApiKey, Bearer, '
               'BasicAuth, OAuth2 or {"Custom": "<header name>"}';
    END IF;

    IF (c ? 'timeout_ms' AND NOT (c ->> 'timeout_ms') ~ '^[0-9]{1,6}$')
       OR (c ->> 'timeout_ms')::numeric NOT BETWEEN 100 AND 300000
    THEN
        RETURN 'connection_details.timeout_ms must be a whole number from '
               '100 to 300000';
    END IF;

    IF (c ? 'retry_attempts' AND NOT (c ->> 'retry_attempts') ~ '^[0-9]{1,2}$')
       OR (c ->> 'retry_attempts')::numeric > 20
    THEN
        RETURN 'connection_details.retry_attempts must be a whole number '
               'from 0 to 20';
    END IF;

    IF c ? 'max_concurrent_requests'
       AND NOT (c ->> 'max_concurrent_requests') ~ '^[1-9][0-9]{0,3}$'
    THEN
        RETURN 'connection_details.max_concurrent_requests must be a whole '
               'number from 1 to 9999';
    END IF;

    IF EXISTS (SELECT 1 FROM jsonb_each(coalesce(c -> 'custom_headers',
                                                 '{}')) h
               WHERE jsonb_typeof(h.value) <> 'string'
                  OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,64}$'
                  OR h.value #>> '{}' ~ '[\r\n]')
    THEN
        RETURN 'connection_details.custom_headers must map header names to '
               'strings without line breaks';
    END IF;

    RETURN NULL;
END
$$;

-- the stored connection: the body's, without its secrets, with defaults

CREATE FUNCTION defarm_adapter_connection(c jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'endpoint', c ->> 'endpoint',
        'auth_type', coalesce(c -> 'auth_type', '"None"'),
        'timeout_ms', coalesce((c ->> 'timeout_ms')::int, 60000),
        'retry_attempts', coalesce((c ->> 'retry_attempts')::int, 3),
        'max_concurrent_requests',
            coalesce((c ->> 'max_concurrent_requests')::int, 10),
        'custom_headers', coalesce(c -> 'custom_headers', '{}'))
$$;

-- a config's body refused: 400 for what the checks find, 503 for secrets
-- given to a node that cannot seal them; NULL when it may be stored

CREATE FUNCTION defarm_adapter_config_refusal(p_body jsonb, p_new boolean)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN defarm_adapter_config_check(p_body, p_new) IS NOT NULL
            THEN defarm_answer(400, defarm_adapter_config_check(p_body,
                                                                p_new))
        WHEN (p_body #>> '{connection_details,api_key}' IS NOT NULL
              OR p_body #>> '{connection_details,secret_key}' IS NOT NULL)
             AND defarm_secret_key() IS NULL
            THEN defarm_answer(503, 'Adapter secrets need defarm_secret_key '
                                    'on this node')
    END
$$;

CREATE FUNCTION defarm_adapter_config_find(p_id text) RETURNS adapter_configs
LANGUAGE sql STABLE AS $$
    SELECT * FROM adapter_configs
    WHERE defarm_is_uuid(p_id) AND config_id = p_id::uuid
$$;


-- GET /api/admin/adapters?active_only=true|false

CREATE FUNCTION defarm_admin_adapters(p_admin text, p_id text,
                                      p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_active  text := coalesce(p_query ->> 'active_only', 'false');
    v         jsonb;
BEGIN
    IF v_active NOT IN ('true', 'false') THEN
        RETURN defarm_answer(400, 'active_only must be true or false');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_adapter_config_json(a)
                              ORDER BY a.created_at, a.config_id), '[]')
    INTO v
    FROM adapter_configs a
    WHERE v_active = 'false' OR a.is_active;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'configs', v,
        'count', jsonb_array_length(v))::text);
END
$$;

-- POST /api/admin/adapters

CREATE FUNCTION defarm_admin_adapter_create(p_admin text, p_id text,
                                            p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  adapter_configs;
    c  jsonb;
    r  defarm_answer;
BEGIN
    r := defarm_adapter_config_refusal(p_body, true);

    IF r IS NOT NULL THEN
        RETURN r;
    END IF;

    c := p_body -> 'connection_details';

    INSERT INTO adapter_configs (name, description, adapter_type,
                                 connection_details, api_key, secret_key,
                                 contract_configs, is_active, created_by)
    VALUES (btrim(p_body ->> 'name'), coalesce(p_body ->> 'description', ''),
            defarm_adapter_type(p_body ->> 'adapter_type'),
            defarm_adapter_connection(c),
            defarm_seal(c ->> 'api_key'), defarm_seal(c ->> 'secret_key'),
            p_body -> 'contract_configs',
            coalesce((p_body ->> 'is_active')::boolean, true), p_admin)
    RETURNING * INTO a;

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true, 'message', 'Adapter configuration created',
        'config', defarm_adapter_config_json(a))::text);
END
$$;

-- GET /api/admin/adapters/:config_id

CREATE FUNCTION defarm_admin_adapter_get(p_admin text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  adapter_configs := defarm_adapter_config_find(p_arg);
BEGIN
    IF a.config_id IS NULL THEN
        RETURN defarm_answer(404, 'Adapter configuration not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'config', defarm_adapter_config_json(a))::text);
END
$$;

-- PUT /api/admin/adapters/:config_id: the fields given; a secret given
-- replaces the stored one, null removes it

CREATE FUNCTION defarm_admin_adapter_update(p_admin text, p_id text,
                                            p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  adapter_configs;
    c  jsonb;
    r  defarm_answer;
BEGIN
    r := defarm_adapter_config_refusal(p_body, false);

    IF r IS NOT NULL THEN
        RETURN r;
    END IF;

    SELECT * INTO a FROM adapter_configs
    WHERE defarm_is_uuid(p_arg) AND config_id = p_arg::uuid
    FOR UPDATE;

    IF a.config_id IS NULL THEN
        RETURN defarm_answer(404, 'Adapter configuration not found');
    END IF;

    c := p_body -> 'connection_details';

    UPDATE adapter_configs SET
        name = coalesce(btrim(p_body ->> 'name'), name),
        description = CASE WHEN p_body ? 'description'
                           THEN coalesce(p_body ->> 'description', '')
                           ELSE description END,
        adapter_type = coalesce(defarm_adapter_type(
                                    p_body ->> 'adapter_type'),
                                adapter_type),
        connection_details = CASE WHEN c IS NULL THEN connection_details
                                  ELSE defarm_adapter_connection(
                                           connection_details || c) END,
        api_key = CASE WHEN c ? 'api_key' THEN defarm_seal(c ->> 'api_key')
                       ELSE api_key END,
        secret_key = CASE WHEN c ? 'secret_key'
                          THEN defarm_seal(c ->> 'secret_key')
                          ELSE secret_key END,
        contract_configs = CASE WHEN p_body ? 'contract_configs'
                                THEN p_body -> 'contract_configs'
                                ELSE contract_configs END,
        is_active = coalesce((p_body ->> 'is_active')::boolean, is_active),
        -- a default moved to another type stops being its old type's
        is_default = is_default
                     AND coalesce(defarm_adapter_type(
                                      p_body ->> 'adapter_type'),
                                  adapter_type) = adapter_type,
        updated_at = now()
    WHERE config_id = a.config_id
    RETURNING * INTO a;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Adapter configuration updated',
        'config', defarm_adapter_config_json(a))::text);
END
$$;

-- DELETE /api/admin/adapters/:config_id: really deleted (the storage
-- records made through it keep its id in their metadata)

CREATE FUNCTION defarm_admin_adapter_delete(p_admin text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM adapter_configs
    WHERE defarm_is_uuid(p_arg) AND config_id = p_arg::uuid;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Adapter configuration not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'message', 'Adapter configuration deleted')::text);
END
$$;

-- POST /api/admin/adapters/:config_id/set-default: the default of its
-- adapter type (the others of that type stop being it); active too

CREATE FUNCTION defarm_admin_adapter_default(p_admin text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  adapter_configs;
BEGIN
    SELECT * INTO a FROM adapter_configs
    WHERE defarm_is_uuid(p_arg) AND config_id = p_arg::uuid
    FOR UPDATE;

    IF a.config_id IS NULL THEN
        RETURN defarm_answer(404, 'Adapter configuration not found');
    END IF;

    -- the type's configs in one order: two set-defaults of one type queue
    PERFORM 1 FROM adapter_configs
    WHERE adapter_type = a.adapter_type FOR UPDATE;

    UPDATE adapter_configs SET is_default = false, updated_at = now()
    WHERE adapter_type = a.adapter_type AND is_default
      AND config_id <> a.config_id;

    UPDATE adapter_configs SET is_default = true, is_active = true,
                               updated_at = now()
    WHERE config_id = a.config_id
    RETURNING * INTO a;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'message', 'Adapter configuration is now the default for '
                   || a.adapter_type,
        'config', defarm_adapter_config_json(a))::text);
END
$$;


-- A circuit's adapter ----------------------------------------------------

CREATE FUNCTION defarm_circuit_adapter_json(p_circuit uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'adapter_type', coalesce(ca.adapter_type, 'none'),
        'sponsor_adapter_access', coalesce(ca.sponsor_adapter_access, false),
        'requires_approval', coalesce(ca.requires_approval, false),
        'auto_migrate_existing', coalesce(ca.auto_migrate_existing, false),
        'configured_by', coalesce(ca.configured_by, 'system'),
        'configured_at', defarm_rfc3339(coalesce(ca.configured_at,
                                                 c.created_at)))
    FROM circuits c
    LEFT JOIN circuit_adapters ca ON ca.circuit_id = c.circuit_id
    WHERE c.circuit_id = p_circuit
$$;

-- GET /api/circuits/:id/adapter: a member's read

CREATE FUNCTION defarm_circuit_adapter_get(p_user text, p_id text,
                                           p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_circuit_readable(p_id, p_user),
                    defarm_answer(200, defarm_circuit_adapter_json(
                                           p_id::uuid)::text));
END
$$;

-- the tiers that may set each adapter on a circuit: none and ipfs-ipfs
-- every tier; Stellar testnet from Professional, mainnet from Enterprise;
-- any other type nobody

CREATE FUNCTION defarm_adapter_tier_allows(p_type text, p_tier text)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_type
        WHEN 'none' THEN true
        WHEN 'ipfs-ipfs' THEN true
        WHEN 'stellar_testnet-ipfs'
            THEN p_tier IN ('Professional', 'Enterprise', 'Admin')
        WHEN 'stellar_mainnet-ipfs' THEN p_tier IN ('Enterprise', 'Admin')
        ELSE false
    END
$$;

-- sets a circuit's adapter from {adapter_type, ...} for p_user (whose
-- right to was checked); NULL, or the answer of a refusal

CREATE FUNCTION defarm_circuit_adapter_set(p_circuit uuid, p_user text,
                                           p_body jsonb)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
    v_tier  text;
    v_err   text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The adapter configuration must be a '
                                  'JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, ARRAY['adapter_type',
            'sponsor_adapter_access', 'requires_approval',
            'auto_migrate_existing']),
        defarm_field_check(p_body, 'adapter_type', 'string', true),
        defarm_field_check(p_body, 'sponsor_adapter_access', 'boolean',
                           false),
        defarm_field_check(p_body, 'requires_approval', 'boolean', false),
        defarm_field_check(p_body, 'auto_migrate_existing', 'boolean',
                           false));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_type := coalesce(p_body ->> 'adapter_type', 'none');

    IF defarm_adapter_type(v_type) IS NULL THEN
        RETURN defarm_answer(400, 'adapter_type must be one of: '
                                  || defarm_adapter_types_text());
    END IF;

    v_type := defarm_adapter_type(v_type);

    SELECT tier INTO v_tier FROM users WHERE id = p_user;

    IF NOT defarm_adapter_tier_allows(v_type, v_tier) THEN
        RETURN defarm_answer(403, 'Your tier (' || coalesce(v_tier, '?')
                                  || ') cannot use the ' || v_type
                                  || ' adapter');
    END IF;

    INSERT INTO circuit_adapters (circuit_id, adapter_type,
                                  sponsor_adapter_access, requires_approval,
                                  auto_migrate_existing, configured_by)
    VALUES (p_circuit, v_type,
            coalesce((p_body ->> 'sponsor_adapter_access')::boolean, false),
            coalesce((p_body ->> 'requires_approval')::boolean, false),
            coalesce((p_body ->> 'auto_migrate_existing')::boolean, false),
            p_user)
    ON CONFLICT (circuit_id) DO UPDATE SET
        adapter_type = EXCLUDED.adapter_type,
        sponsor_adapter_access = EXCLUDED.sponsor_adapter_access,
        requires_approval = EXCLUDED.requires_approval,
        auto_migrate_existing = EXCLUDED.auto_migrate_existing,
        configured_by = EXCLUDED.configured_by,
        configured_at = now();

    RETURN NULL;
END
$$;

-- PUT /api/circuits/:id/adapter: the owner or ManagePermissions; the
-- members are told (CircuitAdapterConfigUpdated)

CREATE FUNCTION defarm_circuit_adapter_put(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    j  jsonb;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'setting the circuit''s adapter');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    a := defarm_circuit_adapter_set(p_id::uuid, p_user, p_body);
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    j := defarm_circuit_adapter_json(p_id::uuid);

    PERFORM defarm_notify(
        ARRAY(SELECT m.member_id FROM circuit_members m
              WHERE m.circuit_id = p_id::uuid),
        'CircuitAdapterConfigUpdated', 'Circuit adapter updated',
        'The circuit ' || defarm_circuit_name(p_id::uuid)
        || ' now stores through ' || (j ->> 'adapter_type'),
        jsonb_build_object('circuit_id', p_id::uuid,
                           'adapter_type', j ->> 'adapter_type',
                           'configured_by', p_user));

    RETURN defarm_answer(200, j::text);
END
$$;

-- POST /api/circuits with adapter_config: the circuit is created, then its
-- adapter set under the same rules as PUT; a refusal takes the circuit
-- back (the whole statement is one transaction)

ALTER FUNCTION defarm_circuit_create(text, text, jsonb, text)
    RENAME TO defarm_circuit_create_base;

CREATE FUNCTION defarm_circuit_create(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a      defarm_answer;
    r      defarm_answer;
    v_cfg  jsonb := p_body -> 'adapter_config';
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object'
       OR v_cfg IS NULL OR jsonb_typeof(v_cfg) = 'null'
    THEN
        RETURN defarm_circuit_create_base(p_user, p_id, p_body, p_arg);
    END IF;

    a := defarm_circuit_create_base(p_user, p_id, p_body - 'adapter_config',
                                    p_arg);

    IF a.status <> 200 THEN
        RETURN a;
    END IF;

    BEGIN
        r := defarm_circuit_adapter_set((a.body::jsonb ->> 'circuit_id')::uuid,
                                        p_user, v_cfg);
        IF r IS NOT NULL THEN
            RAISE EXCEPTION 'refused' USING ERRCODE = 'DF000';
        END IF;
    EXCEPTION WHEN SQLSTATE 'DF000' THEN
        -- the circuit goes too: this block's subtransaction does not hold
        -- it, so it is deleted (nothing else can see it yet)
        DELETE FROM circuits
        WHERE circuit_id = (a.body::jsonb ->> 'circuit_id')::uuid;
        RETURN defarm_answer(r.status, 'adapter_config: ' || r.body);
    END;

    RETURN a;
END
$$;


-- Pushes through an adapter ----------------------------------------------

-- before a push is recorded: the circuit's adapter must be one the pusher
-- may use (unless the circuit sponsors it) and one that can store now;
-- else the push is refused whole (a batch with it, a tokenization too).
-- A push completed at once queues its upload here.

CREATE FUNCTION defarm_push_adapter_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ca     circuit_adapters;
    v_why  text;
BEGIN
    SELECT * INTO ca FROM circuit_adapters
    WHERE circuit_id = NEW.circuit_id;

    IF ca.adapter_type IS NULL OR ca.adapter_type = 'none' THEN
        RETURN NEW;
    END IF;

    IF NOT ca.sponsor_adapter_access
       AND NOT ca.adapter_type = ANY (coalesce(defarm_user_adapters(
                                                   NEW.requester_id), '{}'))
    THEN
        RAISE EXCEPTION USING ERRCODE = 'DF403', HINT = 'auth_error',
            MESSAGE = 'Adapter permission denied: This circuit requires '''
                      || ca.adapter_type || ''' adapter access. You '
                      'currently have access to: '
                      || coalesce(array_to_string(defarm_user_adapters(
                                      NEW.requester_id), ', '), 'none');
    END IF;

    v_why := defarm_adapter_unusable(ca.adapter_type);

    IF v_why IS NOT NULL THEN
        PERFORM defarm_adapter_unavailable(ca.adapter_type, v_why);
    END IF;

    -- a push completed at once is uploaded (one waiting for approval, when
    -- approved: defarm_push_storage); queued here, where the adapter is at
    -- hand, in the push's (sub)transaction
    IF NEW.status = 'Completed' THEN
        PERFORM defarm_storage_enqueue(NEW.dfid, ca.adapter_type,
                                       'circuit_push',
                                       NEW.operation_id::text,
                                       NEW.requester_id);
    END IF;

    RETURN NEW;
END
$$;

CREATE TRIGGER circuit_operations_adapter_check
    BEFORE INSERT ON circuit_operations
    FOR EACH ROW WHEN (NEW.operation_type = 'Push')
    EXECUTE FUNCTION defarm_push_adapter_check();

-- an upload of the item through p_type: an 'ipfs_upload' job of the
-- caller's transaction, small (what and why); the document and the
-- adapter's connection are added at its first claim
-- (defarm_storage_materialize, called by defarm_job_claim), off the
-- request's path

CREATE FUNCTION defarm_storage_enqueue(p_dfid text, p_type text,
                                       p_triggered_by text, p_by_id text,
                                       p_user text)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT defarm_job_enqueue('ipfs_upload', jsonb_build_object(
        'dfid', p_dfid, 'adapter_type', p_type,
        'triggered_by', p_triggered_by, 'triggered_by_id', p_by_id,
        'requested_by', p_user),
        coalesce((a.connection_details ->> 'retry_attempts')::int, 3) + 1,
        2000, 300000)
    FROM (SELECT (defarm_adapter_config_for(p_type)).*) a
$$;

-- an upload's job made whole, at its first claim: the item's document as
-- it is then, and the connection of the adapter's config then
-- (defarm_adapter_config_for); an item or a config gone meanwhile leaves
-- the job without them, and its runner ends it

CREATE FUNCTION defarm_storage_materialize(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT p || jsonb_build_object(
        'config_id', a.config_id,
        'endpoint', a.connection_details ->> 'endpoint',
        'auth_type', a.connection_details -> 'auth_type',
        'timeout_ms', a.connection_details -> 'timeout_ms',
        'headers', a.connection_details -> 'custom_headers',
        'sealed_api_key', translate(encode(a.api_key, 'base64'), E'\n', ''),
        'sealed_secret_key', translate(encode(a.secret_key, 'base64'),
                                       E'\n', ''),
        'doc', (SELECT i.doc FROM items i WHERE i.dfid = p ->> 'dfid'),
        -- kept only while it runs (sql/032): the document is the item's
        -- and the keys, though sealed, need not outlive the upload
        'scrub', '["doc", "sealed_api_key", "sealed_secret_key"]'::jsonb)
    FROM (SELECT (defarm_adapter_config_for(p ->> 'adapter_type')).*) a
$$;

-- a push approved in a circuit with an adapter: the item is uploaded
-- now, not when the push was asked for (what IPFS holds cannot be taken
-- back), if the adapter can still store

CREATE FUNCTION defarm_push_storage() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
BEGIN
    SELECT adapter_type INTO v_type FROM circuit_adapters
    WHERE circuit_id = NEW.circuit_id;

    IF v_type IS NULL OR v_type = 'none' THEN
        RETURN NULL;
    END IF;

    IF defarm_adapter_unusable(v_type) IS NOT NULL THEN
        PERFORM defarm_adapter_unavailable(v_type,
                                           defarm_adapter_unusable(v_type));
    END IF;

    PERFORM defarm_storage_enqueue(NEW.dfid, v_type, 'circuit_push',
                                   NEW.operation_id::text, NEW.requester_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_operations_storage_approved
    AFTER UPDATE OF status ON circuit_operations
    FOR EACH ROW WHEN (NEW.operation_type = 'Push'
                       AND OLD.status = 'Pending'
                       AND NEW.status = 'Completed')
    EXECUTE FUNCTION defarm_push_storage();

-- an upload done: its storage record (the item's primary location from
-- now on) and its CID timeline entry, in the transaction that records it

CREATE FUNCTION defarm_storage_job_done() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_cid  text := NEW.result ->> 'cid';
    v_seq  int;
BEGIN
    IF v_cid IS NULL
       OR NOT EXISTS (SELECT 1 FROM items
                      WHERE dfid = NEW.payload ->> 'dfid')
    THEN
        RETURN NULL;                        -- the item went meanwhile
    END IF;

    -- one writer of an item's history at a time: sequences stay dense
    PERFORM pg_advisory_xact_lock(hashtext('storage:'
                                           || (NEW.payload ->> 'dfid')));

    UPDATE storage_history SET is_primary = false
    WHERE dfid = NEW.payload ->> 'dfid' AND is_primary;

    INSERT INTO storage_history (dfid, adapter_type, storage_location,
                                 triggered_by, triggered_by_id, is_primary,
                                 metadata)
    VALUES (NEW.payload ->> 'dfid', NEW.payload ->> 'adapter_type',
            jsonb_build_object('IPFS', jsonb_build_object(
                'cid', v_cid,
                'pinned', coalesce((NEW.result ->> 'pinned')::boolean,
                                   false))),
            NEW.payload ->> 'triggered_by', NEW.payload ->> 'triggered_by_id',
            true,
            jsonb_build_object(
                'network', 'ipfs', 'ipfs_cid', v_cid,
                'ipfs_pinned', coalesce((NEW.result ->> 'pinned')::boolean,
                                        false),
                'size', NEW.result -> 'size',
                'config_id', NEW.payload -> 'config_id',
                'job_id', NEW.job_id,
                'requested_by', NEW.payload -> 'requested_by'));

    SELECT coalesce(max(event_sequence), 0) + 1 INTO v_seq
    FROM item_cid_timeline WHERE dfid = NEW.payload ->> 'dfid';

    INSERT INTO item_cid_timeline (dfid, cid, event_sequence,
                                   blockchain_timestamp, network)
    VALUES (NEW.payload ->> 'dfid', v_cid, v_seq, now(), 'ipfs');

    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_storage_done AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.kind = 'ipfs_upload' AND NEW.state = 'Done'
                       AND OLD.state <> 'Done')
    EXECUTE FUNCTION defarm_storage_job_done();


-- Reads ------------------------------------------------------------------

-- a storage record as answered

CREATE FUNCTION defarm_storage_record_json(s storage_history) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'record_id', s.record_id,
        'adapter_type', s.adapter_type,
        'network', s.metadata ->> 'network',
        'nft_mint_tx', s.metadata ->> 'nft_mint_tx',
        'ipcm_update_tx', s.metadata ->> 'ipcm_update_tx',
        'ipfs_cid', s.metadata ->> 'ipfs_cid',
        'ipfs_pinned', s.metadata -> 'ipfs_pinned',
        'nft_contract', s.metadata ->> 'nft_contract',
        'storage_location', s.storage_location,
        'stored_at', defarm_rfc3339(s.stored_at),
        'triggered_by', s.triggered_by,
        'triggered_by_id', s.triggered_by_id,
        'is_active', s.is_active,
        'is_primary', s.is_primary)
$$;

CREATE FUNCTION defarm_storage_records(p_dfid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(defarm_storage_record_json(s)
                              ORDER BY s.record_id DESC), '[]')
    FROM storage_history s WHERE s.dfid = p_dfid
$$;

-- the uploads of an item not done yet (queued, running, retried, dead)

CREATE FUNCTION defarm_storage_pending(p_dfid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'job_id', j.job_id, 'adapter_type', j.payload ->> 'adapter_type',
               'state', j.state, 'attempts', j.attempts,
               'last_error', j.last_error,
               'triggered_by', j.payload ->> 'triggered_by',
               'queued_at', defarm_rfc3339(j.created_at))
               ORDER BY j.job_id), '[]')
    FROM jobs j
    WHERE j.kind = 'ipfs_upload' AND j.payload ->> 'dfid' = p_dfid
      AND j.state <> 'Done'
$$;

CREATE FUNCTION defarm_storage_data(p_dfid text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'dfid', p_dfid,
        'records', defarm_storage_records(p_dfid),
        'primary_location', (SELECT defarm_storage_record_json(s)
                             FROM storage_history s
                             WHERE s.dfid = p_dfid AND s.is_primary
                             LIMIT 1),
        'total_records', (SELECT count(*) FROM storage_history s
                          WHERE s.dfid = p_dfid),
        'pending_uploads', defarm_storage_pending(p_dfid))
$$;

-- an item the caller may read: NULL, or the 404 to give (one answer for
-- "none" and "not yours": another user's items are not revealed)

CREATE FUNCTION defarm_item_visible(p_dfid text, p_user text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_dfid IS NULL OR NOT defarm_item_readable(p_dfid,
                                                                 p_user)
                THEN defarm_answer(404, 'Item not found') END
$$;

-- GET /api/items/:dfid/storage-history

CREATE FUNCTION defarm_item_storage_history(p_user text, p_id text,
                                            p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer := defarm_item_visible(p_arg, p_user);
    v  jsonb;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v := defarm_storage_records(p_arg);

    IF jsonb_array_length(v) = 0 THEN
        RETURN defarm_answer(404, 'No storage history found for this DFID');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'dfid', p_arg, 'records', v)::text);
END
$$;

-- GET /api/storage-history/:dfid

CREATE FUNCTION defarm_storage_history(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_item_visible(p_arg, p_user),
                    defarm_answer(200, jsonb_build_object(
                        'success', true,
                        'data', defarm_storage_data(p_arg))::text));
END
$$;

-- GET /api/storage-history/:dfid/locations (the path's DFID: the
-- original read a ?dfid= instead)

CREATE FUNCTION defarm_storage_locations(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_item_visible(p_arg, p_user),
        defarm_answer(200, jsonb_build_object(
            'success', true,
            'data', jsonb_build_object(
                'dfid', p_arg,
                'locations', coalesce((
                    SELECT jsonb_agg(jsonb_build_object(
                               'record_id', s.record_id,
                               'adapter_type', s.adapter_type,
                               'location', s.storage_location,
                               'is_primary', s.is_primary,
                               'stored_at', defarm_rfc3339(s.stored_at))
                               ORDER BY s.record_id DESC)
                    FROM storage_history s
                    WHERE s.dfid = p_arg AND s.is_active), '[]')))::text));
END
$$;

-- GET /api/storage-history/statistics: over the items the caller owns
-- (an administrator: every item)

CREATE FUNCTION defarm_storage_statistics(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_all  boolean := defarm_is_admin(p_user);
    v      jsonb;
BEGIN
    SELECT jsonb_build_object(
        'scope', CASE WHEN v_all THEN 'all' ELSE 'own' END,
        'total_records', coalesce(sum(x.n), 0),
        'items_stored', (SELECT count(DISTINCT s.dfid)
                         FROM storage_history s JOIN items i
                              ON i.dfid = s.dfid
                         WHERE v_all OR i.owner_id = p_user),
        'by_adapter', coalesce(jsonb_object_agg(x.adapter_type, x.n)
                               FILTER (WHERE x.adapter_type IS NOT NULL),
                               '{}'),
        'generated_at', defarm_rfc3339(now()))
    INTO v
    FROM (SELECT s.adapter_type, count(*) AS n
          FROM storage_history s JOIN items i ON i.dfid = s.dfid
          WHERE v_all OR i.owner_id = p_user
          GROUP BY s.adapter_type) x;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', v)::text);
END
$$;

-- the adapter a body {adapter_type} asks for, one p_user may use: the
-- type, or the refusal (400 for no known type, 403 for one not theirs)

CREATE FUNCTION defarm_adapter_requested(p_user text, p_body jsonb,
                                         OUT v_type text,
                                         OUT v_refusal defarm_answer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        v_refusal := defarm_answer(400, 'The body must be a JSON object');
        RETURN;
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, ARRAY['adapter_type']),
        defarm_field_check(p_body, 'adapter_type', 'string', false));

    IF v_err IS NOT NULL THEN
        v_refusal := defarm_answer(400, v_err);
        RETURN;
    END IF;

    v_type := defarm_adapter_type(p_body ->> 'adapter_type');

    IF v_type IS NULL OR v_type = 'none' THEN
        v_refusal := defarm_answer(400, 'adapter_type is required: one of '
                                        || defarm_adapter_types_text());
        RETURN;
    END IF;

    IF NOT v_type = ANY (coalesce(defarm_user_adapters(p_user), '{}')) THEN
        v_refusal := defarm_answer(403, 'Adapter permission denied: you do '
                                        'not have access to the ' || v_type
                                        || ' adapter');
    END IF;
END
$$;

-- POST /api/storage-history/:dfid/migrate {adapter_type}: the item's
-- owner (or an administrator) queues an upload of it through that adapter
-- (one the caller may use, and one that can store); charged as
-- storage_migration when credits are on

CREATE FUNCTION defarm_storage_migrate(p_user text, p_id text, p_body jsonb,
                                       p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    q      record := defarm_adapter_requested(p_user, p_body);
    v_why  text;
    v_job  bigint;
BEGIN
    PERFORM 1 FROM items
    WHERE dfid = p_arg AND (owner_id = p_user OR defarm_is_admin(p_user))
    FOR SHARE;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Item not found');
    END IF;

    IF q.v_refusal IS NOT NULL THEN
        RETURN q.v_refusal;
    END IF;

    v_why := defarm_adapter_unusable(q.v_type);

    IF v_why IS NOT NULL THEN
        PERFORM defarm_adapter_unavailable(q.v_type, v_why);
    END IF;

    v_job := defarm_storage_enqueue(p_arg, q.v_type, 'storage_migration',
                                    NULL, p_user);

    IF defarm_setting_on('defarm.credits') THEN
        PERFORM defarm_credit_charge(p_user, 'storage_migration',
                                     v_job::text,
                                     'Storage migration of ' || p_arg
                                     || ' to ' || q.v_type);
    END IF;

    RETURN defarm_answer(202, jsonb_build_object(
        'success', true, 'message', 'Migration queued',
        'dfid', p_arg, 'adapter_type', q.v_type, 'job_id', v_job)::text);
END
$$;

-- POST /api/storage-history/:dfid/primary {record_id}: the item's owner
-- (or an administrator) makes one of its records the primary location,
-- until the next upload

CREATE FUNCTION defarm_storage_primary(p_user text, p_id text, p_body jsonb,
                                       p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s      storage_history;
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, ARRAY['record_id']),
        defarm_field_check(p_body, 'record_id', 'number', false));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF NOT coalesce(p_body ->> 'record_id', '') ~ '^[1-9][0-9]{0,17}$' THEN
        RETURN defarm_answer(400, 'record_id is required: a storage '
                                  'record''s id');
    END IF;

    PERFORM 1 FROM items
    WHERE dfid = p_arg AND (owner_id = p_user OR defarm_is_admin(p_user))
    FOR UPDATE;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Item not found');
    END IF;

    SELECT * INTO s FROM storage_history
    WHERE dfid = p_arg AND record_id = (p_body ->> 'record_id')::bigint;

    IF s.record_id IS NULL THEN
        RETURN defarm_answer(404, 'No such storage record for this item');
    END IF;

    IF NOT s.is_active THEN
        RETURN defarm_answer(409, 'That storage record is not active');
    END IF;

    UPDATE storage_history SET is_primary = (record_id = s.record_id)
    WHERE dfid = p_arg AND (is_primary OR record_id = s.record_id);

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Primary storage location set',
        'data', defarm_storage_data(p_arg))::text);
END
$$;

-- GET /api/public/storage-history/:dfid: only an item published in a
-- circuit the public may see

CREATE FUNCTION defarm_public_storage_history(p_user text, p_id text,
                                              p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM circuit_items ci
                   JOIN circuits c ON c.circuit_id = ci.circuit_id
                   WHERE ci.dfid = p_arg AND defarm_circuit_accessible(c)
                     AND coalesce(c.public_settings -> 'published_items',
                                  '[]') ? p_arg)
    THEN
        RETURN defarm_answer(404, 'Item not found or not public');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', defarm_storage_data(p_arg) - 'pending_uploads')::text);
END
$$;

CREATE FUNCTION defarm_timeline_json(t item_cid_timeline) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'dfid', t.dfid, 'cid', t.cid, 'event_sequence', t.event_sequence,
        'blockchain_timestamp', floor(extract(epoch FROM
                                              t.blockchain_timestamp))::bigint,
        'ipcm_transaction_hash', t.ipcm_transaction_hash,
        'network', t.network,
        'created_at', defarm_rfc3339(t.created_at))
$$;

-- GET /api/items/:dfid/timeline

CREATE FUNCTION defarm_item_timeline(p_user text, p_id text, p_query jsonb,
                                     p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer := defarm_item_visible(p_arg, p_user);
    v  jsonb;
BEGIN
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_timeline_json(t)
                              ORDER BY t.event_sequence), '[]')
    INTO v
    FROM item_cid_timeline t WHERE t.dfid = p_arg;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'dfid', p_arg, 'timeline', v,
        'count', jsonb_array_length(v))::text);
END
$$;

-- GET /api/items/:dfid/timeline/:sequence (the route's ":id" is the dfid)

CREATE FUNCTION defarm_item_timeline_entry(p_user text, p_id text,
                                           p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  defarm_answer;
    t  item_cid_timeline;
BEGIN
    IF p_arg !~ '^[1-9][0-9]{0,8}$' THEN
        RETURN defarm_answer(400, 'The sequence must be a whole number '
                                  'from 1');
    END IF;

    a := defarm_item_visible(p_id, p_user);

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO t FROM item_cid_timeline
    WHERE dfid = p_id AND event_sequence = p_arg::int;

    IF t.id IS NULL THEN
        RETURN defarm_answer(404, 'No timeline entry ' || p_arg
                                  || ' for this item');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'entry', defarm_timeline_json(t))::text);
END
$$;

-- GET /api/timeline/indexing-progress/:network

CREATE FUNCTION defarm_indexing_progress(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    b  blockchain_indexing_progress;
BEGIN
    SELECT * INTO b FROM blockchain_indexing_progress WHERE network = p_arg;

    IF b.network IS NULL THEN
        RETURN defarm_answer(400, 'network must be one of: '
            || (SELECT string_agg(network, ', ' ORDER BY network)
                FROM blockchain_indexing_progress));
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'network', b.network,
        'last_indexed_ledger', b.last_indexed_ledger,
        'last_confirmed_ledger', b.last_confirmed_ledger,
        'last_indexed_at', defarm_rfc3339(b.last_indexed_at),
        'status', b.status, 'error_message', b.error_message,
        'total_events_indexed', b.total_events_indexed,
        'last_error_at', defarm_rfc3339(b.last_error_at))::text);
END
$$;


-- User-facing adapters ---------------------------------------------------

CREATE FUNCTION defarm_adapter_describe(p_type text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'adapter_type', p_type,
        'name', CASE p_type
                    WHEN 'ipfs-ipfs' THEN 'IPFS'
                    WHEN 'stellar_testnet-ipfs' THEN 'Stellar Testnet + IPFS'
                    WHEN 'stellar_mainnet-ipfs' THEN 'Stellar Mainnet + IPFS'
                    WHEN 'ethereum_goerli-ipfs' THEN 'Ethereum Goerli + IPFS'
                    WHEN 'polygon-arweave' THEN 'Polygon + Arweave'
                    ELSE p_type END,
        'configured', (defarm_adapter_config_for(p_type)).config_id
                      IS NOT NULL,
        'usable', defarm_adapter_unusable(p_type) IS NULL,
        'unavailable_reason', defarm_adapter_unusable(p_type))
$$;

-- GET /api/adapters: the adapters the caller may use

CREATE FUNCTION defarm_adapters_available(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u  users;
BEGIN
    SELECT * INTO u FROM users WHERE id = p_user;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'tier', u.tier,
        'source', CASE WHEN u.available_adapters IS NULL THEN 'tier'
                       ELSE 'custom' END,
        'available_adapters', to_jsonb(defarm_user_adapters(p_user)),
        'adapters', coalesce((SELECT jsonb_agg(defarm_adapter_describe(t)
                                               ORDER BY o)
                              FROM unnest(defarm_user_adapters(p_user))
                                   WITH ORDINALITY x(t, o)), '[]'))::text);
END
$$;

-- POST /api/adapters/select {adapter_type}: checked, not stored (a
-- circuit's adapter is what decides where its pushes go)

CREATE FUNCTION defarm_adapters_select(p_user text, p_id text, p_body jsonb,
                                       p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    q  record := defarm_adapter_requested(p_user, p_body);
BEGIN
    RETURN coalesce(q.v_refusal, defarm_answer(200, jsonb_build_object(
        'success', true,
        'message', 'Adapter ' || q.v_type || ' is available to you; set it '
                   'on a circuit (PUT /api/circuits/:id/adapter) to store '
                   'its items through it',
        'adapter', defarm_adapter_describe(q.v_type))::text));
END
$$;

-- GET /api/adapters/templates

CREATE FUNCTION defarm_adapters_templates(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql IMMUTABLE AS $$
    SELECT defarm_answer(200, jsonb_build_object(
        'success', true,
        'templates', jsonb_build_array(
            jsonb_build_object(
                'adapter_type', 'ipfs-ipfs', 'name', 'IPFS node',
                'description', 'An IPFS node''s HTTP RPC API: the item''s '
                               'JSON is added and pinned',
                'connection_details', jsonb_build_object(
                    'endpoint', 'http://127.0.0.1:5001',
                    'auth_type', 'None', 'timeout_ms', 60000,
                    'retry_attempts', 3, 'max_concurrent_requests', 10,
                    'custom_headers', '{}'::jsonb)),
            jsonb_build_object(
                'adapter_type', 'stellar_testnet-ipfs',
                'name', 'Stellar Testnet + IPFS',
                'description', 'Not reachable from this deployment',
                'connection_details', jsonb_build_object(
                    'endpoint', 'https://soroban-testnet.stellar.org',
                    'auth_type', 'None', 'timeout_ms', 60000,
                    'retry_attempts', 3, 'max_concurrent_requests', 10,
                    'custom_headers', '{}'::jsonb),
                'contract_configs', jsonb_build_object(
                    'network', 'testnet', 'mint_contract', NULL,
                    'ipcm_contract', NULL)),
            jsonb_build_object(
                'adapter_type', 'stellar_mainnet-ipfs',
                'name', 'Stellar Mainnet + IPFS',
                'description', 'Not reachable from this deployment',
                'connection_details', jsonb_build_object(
                    'endpoint', 'https://soroban-mainnet.stellar.org',
                    'auth_type', 'None', 'timeout_ms', 60000,
                    'retry_attempts', 3, 'max_concurrent_requests', 10,
                    'custom_headers', '{}'::jsonb),
                'contract_configs', jsonb_build_object(
                    'network', 'mainnet', 'mint_contract', NULL,
                    'ipcm_contract', NULL))))::text)
$$;

-- what a probe of an adapter (GET /api/adapters/:type/status|health,
-- POST /api/test/test-push) goes to: 200 with {adapter_type, config_id,
-- endpoint, timeout_ms, auth_type, headers, sealed_api_key,
-- sealed_secret_key}, or the refusal.  The module then makes the call.

CREATE FUNCTION defarm_adapter_target(p_user text, p_id text,
                                      p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_type  text := defarm_adapter_type(coalesce(p_arg,
                                                 p_query ->> 'adapter_type'));
    a       adapter_configs;
BEGIN
    IF v_type IS NULL OR v_type = 'none' THEN
        RETURN defarm_answer(400, 'adapter_type must be one of: '
                                  || defarm_adapter_types_text());
    END IF;

    IF defarm_adapter_unusable(v_type) IS NOT NULL THEN
        PERFORM defarm_adapter_unavailable(v_type,
                                           defarm_adapter_unusable(v_type));
    END IF;

    a := defarm_adapter_config_for(v_type);

    RETURN defarm_answer(200, jsonb_build_object(
        'adapter_type', v_type, 'config_id', a.config_id,
        'config_name', a.name,
        'endpoint', a.connection_details ->> 'endpoint',
        'auth_type', a.connection_details -> 'auth_type',
        'timeout_ms', a.connection_details -> 'timeout_ms',
        'headers', a.connection_details -> 'custom_headers',
        'sealed_api_key', translate(encode(a.api_key, 'base64'), E'\n', ''),
        'sealed_secret_key', translate(encode(a.secret_key, 'base64'),
                                       E'\n', ''))::text);
END
$$;
