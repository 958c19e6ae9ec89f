-- Webhooks for every trigger event: item_pushed and item_approved (sql/033)
-- and now item_tokenized (a push of a local item that made a new DFID)
-- and item_published (an item put on the circuit's public page, by hand
-- or by auto-publishing).  One function builds the event's payload and
-- queues its deliveries, whatever raised it.

-- the deliveries of p_event about p_dfid in p_circuit, when post-actions
-- are on and the event chosen: one per enabled webhook, in the caller's
-- transaction

CREATE FUNCTION defarm_webhook_event(p_circuit uuid, p_dfid text,
                                     p_event text, p_by text,
                                     p_operation uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s        circuit_post_actions;
    w        circuit_webhooks;
    v_body   jsonb;
BEGIN
    SELECT * INTO s FROM circuit_post_actions WHERE circuit_id = p_circuit;

    IF NOT coalesce(s.enabled, false) OR NOT p_event = ANY (s.trigger_events)
    THEN
        RETURN;
    END IF;

    v_body := jsonb_build_object(
        'event_type', p_event, 'circuit_id', p_circuit,
        'circuit_name', defarm_circuit_name(p_circuit),
        'timestamp', defarm_rfc3339(now()),
        'item', jsonb_build_object(
            'dfid', p_dfid,
            'local_id', (SELECT i.local_id FROM items i
                         WHERE i.dfid = p_dfid),
            'identifiers', coalesce((
                SELECT jsonb_agg(jsonb_build_object('key', ii.key,
                                                    'value', ii.value)
                                 ORDER BY ii.key, ii.value)
                FROM item_identifiers ii WHERE ii.dfid = p_dfid), '[]'),
            'pushed_by', p_by)
            || CASE WHEN s.include_item_metadata
                    THEN jsonb_build_object('metadata', (
                             SELECT i.enriched_data FROM items i
                             WHERE i.dfid = p_dfid))
                    ELSE '{}' END,
        -- the upload, if any, is a job that runs after the commit: its
        -- CID is in the storage history (sql/034), not known yet here
        'storage', NULL,
        'operation_id', p_operation, 'status', 'completed');

    FOR w IN SELECT * FROM circuit_webhooks
             WHERE circuit_id = p_circuit AND enabled
             ORDER BY created_at
    LOOP
        PERFORM defarm_webhook_deliver(w, p_event, v_body);
    END LOOP;
END
$$;

-- a completed push: item_approved when it was approved, item_tokenized
-- when its item was made in this transaction (a local item's push that
-- created the DFID: now() is the transaction's start), else item_pushed

CREATE OR REPLACE FUNCTION defarm_webhook_on_push() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.operation_type <> 'Push' OR NEW.status <> 'Completed' THEN
        RETURN NULL;
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
