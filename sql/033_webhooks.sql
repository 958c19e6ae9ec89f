-- Post-actions: a circuit's webhooks, and their deliveries as jobs.  A
-- push completed in a circuit with post-actions enabled and the trigger
-- chosen makes one delivery per enabled webhook, each a 'webhook' job of
-- the push's own transaction (sql/031); the job's state is mirrored in
-- the delivery (Pending, InProgress, Retrying, Delivered, Failed).
--
-- Credentials and signing secrets are stored encrypted: AES-256-CBC with
-- a random IV under SHA-256 of the key of defarm_secret_key, a session
-- setting the database never stores.  A dump of the database alone does
-- not reveal them, and no answer returns them (the signing secret is shown
-- once, when it is made).  A delivery's job carries them still encrypted;
-- the worker decrypts them with its own copy of the key as it sends
-- (ngx_defarm_webhook.c), so they are never in the database in clear.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE circuit_post_actions (
    circuit_id               uuid PRIMARY KEY
                             REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    enabled                  boolean NOT NULL DEFAULT false,
    trigger_events           text[] NOT NULL DEFAULT '{item_pushed}',
    include_storage_details  boolean NOT NULL DEFAULT true,
    include_item_metadata    boolean NOT NULL DEFAULT true,
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE circuit_webhooks (
    webhook_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    name                text NOT NULL,
    url                 text NOT NULL,
    method              text NOT NULL DEFAULT 'POST'
                        CHECK (method IN ('POST', 'PUT', 'PATCH')),
    headers             jsonb NOT NULL DEFAULT '{}',
    auth_type           text NOT NULL DEFAULT 'None'
                        CHECK (auth_type IN ('None', 'BearerToken', 'ApiKey',
                                             'BasicAuth', 'CustomHeader')),
    auth_credentials    bytea,                -- encrypted
    secret              bytea NOT NULL,       -- encrypted
    enabled             boolean NOT NULL DEFAULT true,
    max_retries         int NOT NULL DEFAULT 3,
    initial_delay_ms    int NOT NULL DEFAULT 1000,
    max_delay_ms        int NOT NULL DEFAULT 30000,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX circuit_webhooks_circuit ON circuit_webhooks (circuit_id);

CREATE TABLE webhook_deliveries (
    delivery_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       uuid NOT NULL
                     REFERENCES circuit_webhooks (webhook_id) ON DELETE CASCADE,
    circuit_id       uuid NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'InProgress', 'Retrying',
                                       'Delivered', 'Failed')),
    attempts         int NOT NULL DEFAULT 0,
    response_status  int,
    last_error       text,
    job_id           bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);

CREATE INDEX webhook_deliveries_circuit
    ON webhook_deliveries (circuit_id, created_at DESC);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);


CREATE FUNCTION defarm_secret_key() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('defarm.secret_key', true), '')
$$;

-- iv || AES-256-CBC(p), PKCS#7 padding; NULL for NULL

CREATE FUNCTION defarm_seal(p text) RETURNS bytea
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_iv  bytea := gen_random_bytes(16);
BEGIN
    IF p IS NULL THEN
        RETURN NULL;
    END IF;

    RETURN v_iv || encrypt_iv(convert_to(p, 'UTF8'),
                              digest(defarm_secret_key(), 'sha256'), v_iv,
                              'aes-cbc/pad:pkcs');
END
$$;

CREATE FUNCTION defarm_webhook_json(w circuit_webhooks) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', w.webhook_id, 'name', w.name, 'url', w.url,
        'method', w.method, 'headers', w.headers,
        'auth_type', w.auth_type,
        'has_auth_credentials', w.auth_credentials IS NOT NULL,
        'enabled', w.enabled,
        'retry_config', jsonb_build_object(
            'max_retries', w.max_retries,
            'initial_delay_ms', w.initial_delay_ms,
            'max_delay_ms', w.max_delay_ms, 'backoff_multiplier', 2.0),
        'created_at', defarm_rfc3339(w.created_at),
        'updated_at', defarm_rfc3339(w.updated_at))
$$;

CREATE FUNCTION defarm_post_actions_json(p_circuit uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'enabled', coalesce(s.enabled, false),
        'trigger_events', to_jsonb(coalesce(s.trigger_events,
                                            '{item_pushed}')),
        'include_storage_details', coalesce(s.include_storage_details, true),
        'include_item_metadata', coalesce(s.include_item_metadata, true),
        'webhooks', coalesce((SELECT jsonb_agg(defarm_webhook_json(w)
                                               ORDER BY w.created_at)
                              FROM circuit_webhooks w
                              WHERE w.circuit_id = p_circuit), '[]'))
    FROM (SELECT p_circuit) x
    LEFT JOIN circuit_post_actions s ON s.circuit_id = p_circuit
$$;

-- the checks of a webhook's fields, for a new one (p_new) or a change

CREATE FUNCTION defarm_webhook_check(p_body jsonb, p_new boolean)
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN 'The body must be a JSON object';
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{name,url,method,headers,auth_type,'
                                     'auth_credentials,enabled}'),
        defarm_field_check(p_body, 'name', 'string', true),
        defarm_field_check(p_body, 'url', 'string', true),
        defarm_field_check(p_body, 'method', 'string', true),
        defarm_field_check(p_body, 'headers', 'object', true),
        defarm_field_check(p_body, 'auth_type', 'string', true),
        defarm_field_check(p_body, 'auth_credentials', 'string', true),
        defarm_field_check(p_body, 'enabled', 'boolean', true));

    IF v_err IS NOT NULL THEN
        RETURN v_err;
    END IF;

    IF p_new AND (p_body ->> 'name' IS NULL OR p_body ->> 'url' IS NULL) THEN
        RETURN 'name and url are required';
    END IF;

    IF p_body ? 'name' AND length(btrim(p_body ->> 'name')) NOT BETWEEN 1
                                                                 AND 200
    THEN
        RETURN 'name must be 1 to 200 characters';
    END IF;

    -- the destination's address is checked when a delivery connects
    IF p_body ? 'url'
       AND (p_body ->> 'url' !~ '^https?://[^/?#@\s]+(/[^\s]*)?$'
            OR length(p_body ->> 'url') > 2000)
    THEN
        RETURN 'url must be an http or https URL without credentials';
    END IF;

    IF p_body ? 'method' AND p_body ->> 'method' NOT IN ('POST', 'PUT',
                                                          'PATCH')
    THEN
        RETURN 'method must be POST, PUT or PATCH';
    END IF;

    IF p_body ? 'auth_type'
       AND p_body ->> 'auth_type' NOT IN ('None', 'BearerToken', 'ApiKey',
                                           'BasicAuth', 'CustomHeader')
    THEN
        RETURN 'auth_type must be None, BearerToken, ApiKey, BasicAuth or '
               'CustomHeader';
    END IF;

    IF p_body ? 'headers' AND EXISTS (
        SELECT 1 FROM jsonb_each(p_body -> 'headers') h
        WHERE jsonb_typeof(h.value) <> 'string'
           OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,100}$'
           OR h.value #>> '{}' ~ '[\r\n]'
           OR lower(h.key) IN ('content-type', 'content-length', 'host',
                               'x-defarm-signature', 'x-defarm-delivery',
                               'x-defarm-event'))
    THEN
        RETURN 'headers must map header names to string values without '
               'line breaks, and not set Content-Type, Content-Length, Host '
               'or X-Defarm-*';
    END IF;

    IF p_body ->> 'auth_credentials' ~ '[\r\n]' THEN
        RETURN 'auth_credentials must not hold a line break';
    END IF;

    RETURN NULL;
END
$$;


-- GET /api/circuits/:id/post-actions

CREATE FUNCTION defarm_post_actions_get(p_user text, p_id text,
                                        p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'reading post-actions');

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', defarm_post_actions_json(p_id::uuid))::text);
END
$$;

-- PUT /api/circuits/:id/post-actions {enabled?, trigger_events?,
-- include_storage_details?, include_item_metadata?}

CREATE FUNCTION defarm_post_actions_put(p_user text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a      defarm_answer;
    v_err  text;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'changing post-actions');

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, '{enabled,trigger_events,'
                                     'include_storage_details,'
                                     'include_item_metadata}'),
        defarm_field_check(p_body, 'enabled', 'boolean', true),
        defarm_field_check(p_body, 'trigger_events', 'array', true),
        defarm_field_check(p_body, 'include_storage_details', 'boolean',
                           true),
        defarm_field_check(p_body, 'include_item_metadata', 'boolean',
                           true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_body ? 'trigger_events' AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_body -> 'trigger_events') e
        WHERE jsonb_typeof(e) <> 'string'
           OR e #>> '{}' NOT IN ('item_pushed', 'item_approved',
                                 'item_tokenized', 'item_published'))
    THEN
        RETURN defarm_answer(400, 'trigger_events must be item_pushed, '
                                  'item_approved, item_tokenized or '
                                  'item_published');
    END IF;

    INSERT INTO circuit_post_actions AS s (circuit_id, enabled,
                                           trigger_events,
                                           include_storage_details,
                                           include_item_metadata)
    VALUES (p_id::uuid, coalesce((p_body ->> 'enabled')::boolean, false),
            CASE WHEN p_body ? 'trigger_events'
                 THEN ARRAY(SELECT DISTINCT e FROM jsonb_array_elements_text(
                                p_body -> 'trigger_events') e)
                 ELSE '{item_pushed}' END,
            coalesce((p_body ->> 'include_storage_details')::boolean, true),
            coalesce((p_body ->> 'include_item_metadata')::boolean, true))
    ON CONFLICT (circuit_id) DO UPDATE SET
        enabled = coalesce((p_body ->> 'enabled')::boolean, s.enabled),
        trigger_events = CASE WHEN p_body ? 'trigger_events'
                              THEN EXCLUDED.trigger_events
                              ELSE s.trigger_events END,
        include_storage_details = coalesce(
            (p_body ->> 'include_storage_details')::boolean,
            s.include_storage_details),
        include_item_metadata = coalesce(
            (p_body ->> 'include_item_metadata')::boolean,
            s.include_item_metadata),
        updated_at = now();

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', defarm_post_actions_json(p_id::uuid))::text);
END
$$;

-- POST /api/circuits/:id/post-actions/webhooks

CREATE FUNCTION defarm_webhook_create(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a         defarm_answer;
    v_err     text;
    v_secret  text;
    w         circuit_webhooks;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'adding a webhook');

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v_err := defarm_webhook_check(p_body, true);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF defarm_secret_key() IS NULL THEN
        RETURN defarm_answer(503, 'Webhooks need defarm_secret_key on '
                                  'this node');
    END IF;

    IF (SELECT count(*) FROM circuit_webhooks
        WHERE circuit_id = p_id::uuid) >= 20
    THEN
        RETURN defarm_answer(409, 'A circuit has at most 20 webhooks');
    END IF;

    v_secret := 'whsec_' || encode(gen_random_bytes(32), 'hex');

    INSERT INTO circuit_webhooks (circuit_id, name, url, method, headers,
                                  auth_type, auth_credentials, secret,
                                  enabled, created_by)
    VALUES (p_id::uuid, btrim(p_body ->> 'name'), p_body ->> 'url',
            coalesce(p_body ->> 'method', 'POST'),
            coalesce(p_body -> 'headers', '{}'),
            coalesce(p_body ->> 'auth_type', 'None'),
            defarm_seal(p_body ->> 'auth_credentials'),
            defarm_seal(v_secret),
            coalesce((p_body ->> 'enabled')::boolean, true), p_user)
    RETURNING * INTO w;

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true, 'message', 'Webhook created successfully',
        'data', defarm_webhook_json(w) || jsonb_build_object(
                    'signing_secret', v_secret))::text);
END
$$;

CREATE FUNCTION defarm_webhook_find(p_id text, p_user text, p_webhook text,
                                    p_what text, OUT a defarm_answer,
                                    OUT w circuit_webhooks)
LANGUAGE plpgsql AS $$
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions', p_what);

    IF a IS NOT NULL THEN
        RETURN;
    END IF;

    IF NOT defarm_is_uuid(p_webhook) THEN
        a := defarm_answer(400, 'Invalid webhook ID format');
        RETURN;
    END IF;

    SELECT * INTO w FROM circuit_webhooks x
    WHERE x.webhook_id = p_webhook::uuid AND x.circuit_id = p_id::uuid
    FOR UPDATE;

    IF w.webhook_id IS NULL THEN
        a := defarm_answer(404, 'Webhook not found');
    END IF;
END
$$;

-- GET /api/circuits/:id/post-actions/webhooks/:webhook_id

CREATE FUNCTION defarm_webhook_get(p_user text, p_id text, p_query jsonb,
                                   p_webhook text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
BEGIN
    f := defarm_webhook_find(p_id, p_user, p_webhook, 'reading a webhook');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_webhook_json(f.w))::text);
END
$$;

-- PUT /api/circuits/:id/post-actions/webhooks/:webhook_id

CREATE FUNCTION defarm_webhook_update(p_user text, p_id text, p_body jsonb,
                                      p_webhook text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f      record;
    v_err  text;
    w      circuit_webhooks;
BEGIN
    f := defarm_webhook_find(p_id, p_user, p_webhook, 'changing a webhook');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    v_err := defarm_webhook_check(p_body, false);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_body ? 'auth_credentials' AND defarm_secret_key() IS NULL THEN
        RETURN defarm_answer(503, 'Webhooks need defarm_secret_key on '
                                  'this node');
    END IF;

    UPDATE circuit_webhooks x SET
        name = coalesce(btrim(p_body ->> 'name'), x.name),
        url = coalesce(p_body ->> 'url', x.url),
        method = coalesce(p_body ->> 'method', x.method),
        headers = coalesce(p_body -> 'headers', x.headers),
        auth_type = coalesce(p_body ->> 'auth_type', x.auth_type),
        auth_credentials = CASE WHEN p_body ? 'auth_credentials'
                                THEN defarm_seal(
                                         p_body ->> 'auth_credentials')
                                ELSE x.auth_credentials END,
        enabled = coalesce((p_body ->> 'enabled')::boolean, x.enabled),
        updated_at = now()
    WHERE x.webhook_id = (f.w).webhook_id
    RETURNING * INTO w;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Webhook updated successfully',
        'data', defarm_webhook_json(w))::text);
END
$$;

-- DELETE /api/circuits/:id/post-actions/webhooks/:webhook_id

CREATE FUNCTION defarm_webhook_delete(p_user text, p_id text, p_query jsonb,
                                      p_webhook text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
BEGIN
    f := defarm_webhook_find(p_id, p_user, p_webhook, 'deleting a webhook');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    DELETE FROM circuit_webhooks WHERE webhook_id = (f.w).webhook_id;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'message', 'Webhook deleted successfully')::text);
END
$$;

-- a delivery of p_event with p_payload to the webhook: the delivery row
-- and its job, in the caller's transaction

CREATE FUNCTION defarm_webhook_deliver(w circuit_webhooks, p_event text,
                                       p_payload jsonb)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id    uuid := gen_random_uuid();
    v_job   bigint;
BEGIN
    v_job := defarm_job_enqueue('webhook', jsonb_build_object(
        'delivery_id', v_id, 'url', w.url, 'method', w.method,
        'headers', w.headers, 'auth_type', w.auth_type,
        'sealed_credentials', translate(encode(w.auth_credentials,
                                               'base64'), E'\n', ''),
        'sealed_secret', translate(encode(w.secret, 'base64'), E'\n', ''),
        'event', p_event,
        'body', p_payload::text),
        w.max_retries + 1, w.initial_delay_ms, w.max_delay_ms);

    INSERT INTO webhook_deliveries (delivery_id, webhook_id, circuit_id,
                                    event_type, payload, job_id)
    VALUES (v_id, w.webhook_id, w.circuit_id, p_event, p_payload, v_job);

    RETURN v_id;
END
$$;

-- POST /api/circuits/:id/post-actions/webhooks/:webhook_id/test: a real
-- delivery of a test event

CREATE FUNCTION defarm_webhook_test(p_user text, p_id text, p_body jsonb,
                                    p_webhook text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f     record;
    v_id  uuid;
BEGIN
    f := defarm_webhook_find(p_id, p_user, p_webhook, 'testing a webhook');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    IF defarm_secret_key() IS NULL THEN
        RETURN defarm_answer(503, 'Webhooks need defarm_secret_key on '
                                  'this node');
    END IF;

    v_id := defarm_webhook_deliver(f.w, 'test', jsonb_build_object(
        'event_type', 'test', 'circuit_id', p_id,
        'circuit_name', (SELECT name FROM circuits
                         WHERE circuit_id = p_id::uuid),
        'timestamp', defarm_rfc3339(now()),
        'message', 'A test delivery from DeFarm'));

    RETURN defarm_answer(202, jsonb_build_object(
        'success', true, 'message', 'Test delivery queued',
        'delivery_id', v_id)::text);
END
$$;

-- GET /api/circuits/:id/post-actions/deliveries?limit=1..500 (50)

CREATE FUNCTION defarm_webhook_deliveries(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    v_limit  int;
    v        jsonb;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'reading deliveries');

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    v_limit := defarm_limit_arg(p_query, 50);

    IF v_limit IS NULL THEN
        RETURN defarm_answer(400, 'limit must be 1 to 500');
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'delivery_id', d.delivery_id, 'webhook_id', d.webhook_id,
               'event_type', d.event_type, 'status', d.status,
               'attempts', d.attempts, 'response_status', d.response_status,
               'last_error', d.last_error, 'payload', d.payload,
               'created_at', defarm_rfc3339(d.created_at),
               'delivered_at', defarm_rfc3339(d.delivered_at))
           ORDER BY d.created_at DESC), '[]')
    INTO v
    FROM (SELECT * FROM webhook_deliveries x
          WHERE x.circuit_id = p_id::uuid
          ORDER BY x.created_at DESC LIMIT v_limit) d;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', v,
        'count', jsonb_array_length(v))::text);
END
$$;


-- a completed push (at once, or approved later) is delivered to the
-- circuit's enabled webhooks when its trigger is chosen

CREATE FUNCTION defarm_webhook_on_push() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s        circuit_post_actions;
    w        circuit_webhooks;
    v_event  text;
    v_body   jsonb;
BEGIN
    IF NEW.operation_type <> 'Push' OR NEW.status <> 'Completed' THEN
        RETURN NULL;
    END IF;

    v_event := CASE WHEN TG_OP = 'UPDATE' THEN 'item_approved'
                    ELSE 'item_pushed' END;

    SELECT * INTO s FROM circuit_post_actions
    WHERE circuit_id = NEW.circuit_id;

    IF NOT coalesce(s.enabled, false) OR NOT v_event = ANY (s.trigger_events)
    THEN
        RETURN NULL;
    END IF;

    v_body := jsonb_build_object(
        'event_type', v_event, 'circuit_id', NEW.circuit_id,
        'circuit_name', (SELECT name FROM circuits
                         WHERE circuit_id = NEW.circuit_id),
        'timestamp', defarm_rfc3339(now()),
        'item', jsonb_build_object(
            'dfid', NEW.dfid,
            'local_id', (SELECT i.local_id FROM items i
                         WHERE i.dfid = NEW.dfid),
            'identifiers', coalesce((
                SELECT jsonb_agg(jsonb_build_object('key', ii.key,
                                                    'value', ii.value)
                                 ORDER BY ii.key, ii.value)
                FROM item_identifiers ii WHERE ii.dfid = NEW.dfid), '[]'),
            'pushed_by', NEW.requester_id)
            || CASE WHEN s.include_item_metadata
                    THEN jsonb_build_object('metadata', (
                             SELECT i.enriched_data FROM items i
                             WHERE i.dfid = NEW.dfid))
                    ELSE '{}' END,
        'storage', NULL,
        'operation_id', NEW.operation_id, 'status', 'completed');

    FOR w IN SELECT * FROM circuit_webhooks
             WHERE circuit_id = NEW.circuit_id AND enabled
             ORDER BY created_at
    LOOP
        PERFORM defarm_webhook_deliver(w, v_event, v_body);
    END LOOP;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_operations_webhook_insert
    AFTER INSERT ON circuit_operations
    FOR EACH ROW WHEN (NEW.status = 'Completed')
    EXECUTE FUNCTION defarm_webhook_on_push();

CREATE TRIGGER circuit_operations_webhook_approved
    AFTER UPDATE OF status ON circuit_operations
    FOR EACH ROW WHEN (OLD.status = 'Pending' AND NEW.status = 'Completed')
    EXECUTE FUNCTION defarm_webhook_on_push();

-- a delivery follows its job

CREATE FUNCTION defarm_webhook_job_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE webhook_deliveries d SET
        status = CASE NEW.state
                     WHEN 'Running' THEN 'InProgress'
                     WHEN 'Pending' THEN 'Retrying'
                     WHEN 'Done' THEN 'Delivered'
                     ELSE 'Failed' END,
        attempts = NEW.attempts,
        response_status = coalesce((NEW.result ->> 'status')::int,
                                   d.response_status),
        last_error = NEW.last_error,
        delivered_at = CASE WHEN NEW.state = 'Done' THEN now() END
    WHERE d.job_id = NEW.job_id;

    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_webhook_state AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.kind = 'webhook')
    EXECUTE FUNCTION defarm_webhook_job_state();
