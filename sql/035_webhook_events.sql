-- Webhooks for every trigger event: item_pushed and item_approved (sql/033)
-- and now item_tokenized (a push of a local item that made a new DFID)
-- and item_published (an item put on the circuit's public page, by hand
-- or by auto-publishing).  One function queues an event's deliveries,
-- whatever raised it, and one makes what they send.

-- A delivery is queued in the transaction of its event as a narrow row
-- and a small job: the webhook, the event and what it is about.  What is
-- sent (the body, the webhook's address, headers and sealed secrets) is
-- made when the job is first claimed (defarm_webhook_materialize, called
-- by defarm_job_claim, sql/036), off the request's path: building it in
-- the push's transaction made a push with a webhook cost a quarter more
-- than one without.  The body then says what the item is when the
-- delivery first leaves, milliseconds after its commit, and is kept for
-- the retries and in the deliveries log (null there until then).

ALTER TABLE webhook_deliveries ALTER COLUMN payload DROP NOT NULL;

-- what a webhook's deliveries are sent with: its address and secrets,
-- the secrets still sealed

CREATE FUNCTION defarm_webhook_target(w circuit_webhooks) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'url', w.url, 'method', w.method, 'headers', w.headers,
        'auth_type', w.auth_type,
        'sealed_credentials', translate(encode(w.auth_credentials,
                                               'base64'), E'\n', ''),
        'sealed_secret', translate(encode(w.secret, 'base64'), E'\n', ''))
$$;

CREATE OR REPLACE FUNCTION defarm_webhook_deliver(w circuit_webhooks,
                                                  p_event text,
                                                  p_payload jsonb)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_id    uuid := gen_random_uuid();
    v_job   bigint;
BEGIN
    v_job := defarm_job_enqueue('webhook', defarm_webhook_target(w)
        || jsonb_build_object('delivery_id', v_id, 'event', p_event,
                              'body', p_payload::text),
        w.max_retries + 1, w.initial_delay_ms, w.max_delay_ms);

    INSERT INTO webhook_deliveries (delivery_id, webhook_id, circuit_id,
                                    event_type, payload, job_id)
    VALUES (v_id, w.webhook_id, w.circuit_id, p_event, p_payload, v_job);

    RETURN v_id;
END
$$;

-- the deliveries of p_event about p_dfid in p_circuit, when post-actions
-- are on and the event chosen: one per enabled webhook, in the caller's
-- transaction

CREATE FUNCTION defarm_webhook_event(p_circuit uuid, p_dfid text,
                                     p_event text, p_by text,
                                     p_operation uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s      circuit_post_actions;
    w      circuit_webhooks;
    v_id   uuid;
    v_job  bigint;
BEGIN
    SELECT * INTO s FROM circuit_post_actions WHERE circuit_id = p_circuit;

    IF NOT coalesce(s.enabled, false) OR NOT p_event = ANY (s.trigger_events)
    THEN
        RETURN;
    END IF;

    FOR w IN SELECT * FROM circuit_webhooks
             WHERE circuit_id = p_circuit AND enabled
             ORDER BY created_at
    LOOP
        v_id := gen_random_uuid();

        v_job := defarm_job_enqueue('webhook', jsonb_build_object(
            'delivery_id', v_id, 'webhook_id', w.webhook_id,
            'circuit_id', p_circuit, 'event', p_event, 'dfid', p_dfid,
            'pushed_by', p_by, 'operation_id', p_operation,
            'queued_at', now()),
            w.max_retries + 1, w.initial_delay_ms, w.max_delay_ms);

        INSERT INTO webhook_deliveries (delivery_id, webhook_id, circuit_id,
                                        event_type, job_id)
        VALUES (v_id, w.webhook_id, p_circuit, p_event, v_job);
    END LOOP;
END
$$;

-- an event's job made whole, at its first claim: the body as of now, with
-- the webhook's current address and secrets; the body is kept in the
-- delivery too.  A webhook deleted meanwhile leaves the job without an
-- address, and its runner ends it.

CREATE FUNCTION defarm_webhook_materialize(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    w       circuit_webhooks;
    s       circuit_post_actions;
    v_dfid  text := p ->> 'dfid';
    v_body  jsonb;
BEGIN
    SELECT * INTO w FROM circuit_webhooks
    WHERE webhook_id = (p ->> 'webhook_id')::uuid;

    IF w.webhook_id IS NULL THEN
        RETURN p || '{"body": null}';
    END IF;

    SELECT * INTO s FROM circuit_post_actions
    WHERE circuit_id = w.circuit_id;

    v_body := jsonb_build_object(
        'event_type', p ->> 'event', 'circuit_id', w.circuit_id,
        'circuit_name', defarm_circuit_name(w.circuit_id),
        'timestamp', defarm_rfc3339((p ->> 'queued_at')::timestamptz),
        'item', jsonb_build_object(
            'dfid', v_dfid,
            'local_id', (SELECT i.local_id FROM items i
                         WHERE i.dfid = v_dfid),
            'identifiers', coalesce((
                SELECT jsonb_agg(jsonb_build_object('key', ii.key,
                                                    'value', ii.value)
                                 ORDER BY ii.key, ii.value)
                FROM item_identifiers ii WHERE ii.dfid = v_dfid), '[]'),
            'pushed_by', p -> 'pushed_by')
            || CASE WHEN coalesce(s.include_item_metadata, true)
                    THEN jsonb_build_object('metadata', (
                             SELECT i.enriched_data FROM items i
                             WHERE i.dfid = v_dfid))
                    ELSE '{}' END,
        -- the upload, if any, is another job: its CID is in the storage
        -- history (sql/034)
        'storage', NULL,
        'operation_id', p -> 'operation_id', 'status', 'completed');

    UPDATE webhook_deliveries SET payload = v_body
    WHERE delivery_id = (p ->> 'delivery_id')::uuid;

    RETURN p || defarm_webhook_target(w)
             || jsonb_build_object('body', v_body::text);
END
$$;

-- a completed push: item_approved when it was approved, item_tokenized
-- when its item was made in this transaction (a local item's push that
-- created the DFID: now() is the transaction's start), else item_pushed

CREATE OR REPLACE FUNCTION defarm_webhook_on_push() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.operation_type <> 'Push' OR NEW.status <> 'Completed'
       OR NOT EXISTS (SELECT 1 FROM circuit_post_actions s
                      WHERE s.circuit_id = NEW.circuit_id AND s.enabled)
    THEN
        RETURN NULL;                    -- a push without post-actions
    END IF;

    PERFORM defarm_webhook_event(
        NEW.circuit_id, NEW.dfid,
        CASE WHEN TG_OP = 'UPDATE' THEN 'item_approved'
             WHEN EXISTS (SELECT 1 FROM items i
                          WHERE i.dfid = NEW.dfid AND i.created_at = now())
                 THEN 'item_tokenized'
             ELSE 'item_pushed' END,
        NEW.requester_id, NEW.operation_id);

    RETURN NULL;
END
$$;

-- items newly in a circuit's published_items, each once

CREATE FUNCTION defarm_webhook_on_publish() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_dfid  text;
    v_by    text;
BEGIN
    FOR v_dfid IN
        SELECT DISTINCT e
        FROM jsonb_array_elements_text(
                 coalesce(NEW.public_settings -> 'published_items', '[]')) e
        WHERE NOT coalesce(OLD.public_settings -> 'published_items', '[]')
                  ? e
    LOOP
        SELECT added_by INTO v_by FROM circuit_items
        WHERE circuit_id = NEW.circuit_id AND dfid = v_dfid;

        IF FOUND THEN
            PERFORM defarm_webhook_event(NEW.circuit_id, v_dfid,
                                         'item_published', v_by, NULL);
        END IF;
    END LOOP;

    RETURN NULL;
END
$$;

CREATE TRIGGER circuits_webhook_publish
    AFTER UPDATE OF public_settings ON circuits
    FOR EACH ROW
    WHEN (jsonb_typeof(NEW.public_settings -> 'published_items') = 'array'
          AND NEW.public_settings -> 'published_items'
              IS DISTINCT FROM OLD.public_settings -> 'published_items')
    EXECUTE FUNCTION defarm_webhook_on_publish();

-- a delivery follows its job, found by the delivery id the job carries:
-- the index on webhook_deliveries.job_id, one more write for every
-- delivery queued, goes

CREATE OR REPLACE FUNCTION defarm_webhook_job_state() RETURNS trigger
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
    WHERE d.delivery_id = (NEW.payload ->> 'delivery_id')::uuid;

    RETURN NULL;
END
$$;

DROP INDEX webhook_deliveries_job;
