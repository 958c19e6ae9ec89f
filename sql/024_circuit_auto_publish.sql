-- A push completed into a circuit with auto_publish_pushed_items on puts
-- the item on the public page (appends it to published_items), in the
-- same transaction.

CREATE OR REPLACE FUNCTION defarm_operation_complete(o circuit_operations)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF o.operation_type = 'Push' THEN
        INSERT INTO circuit_items (circuit_id, dfid, added_by)
        VALUES (o.circuit_id, o.dfid, o.requester_id)
        ON CONFLICT DO NOTHING;

        UPDATE circuits
        SET public_settings = jsonb_set(
                public_settings, '{published_items}',
                coalesce(public_settings -> 'published_items', '[]')
                || to_jsonb(o.dfid))
        WHERE circuit_id = o.circuit_id
          AND coalesce((public_settings ->> 'auto_publish_pushed_items')
                       ::boolean, false)
          AND NOT coalesce(public_settings -> 'published_items', '[]')
                  ? o.dfid;
    ELSE
        DELETE FROM circuit_items
        WHERE circuit_id = o.circuit_id AND dfid = o.dfid;
    END IF;

    PERFORM defarm_circuit_activity(o.operation_type, o.circuit_id, o.dfid,
                                    o.requester_id);
END
$$;
