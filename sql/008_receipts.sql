-- Receipts: proof that a document with a given SHA-256 was presented,
-- with the identifiers it concerns.  The document itself is not kept.

CREATE TABLE receipts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash                text NOT NULL,
    data_size           bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX receipts_owner ON receipts (owner_id, created_at);

CREATE TABLE receipt_identifiers (
    id                  bigserial PRIMARY KEY,
    receipt_id          uuid NOT NULL REFERENCES receipts (id)
                        ON DELETE CASCADE,
    namespace           text NOT NULL,
    key                 text NOT NULL,
    value               text NOT NULL,
    id_type             text NOT NULL,
    scope               text,
    verified            boolean NOT NULL DEFAULT false,
    verification_date   timestamptz
);

CREATE INDEX receipt_identifiers_key_value
    ON receipt_identifiers (key, value);
CREATE INDEX receipt_identifiers_value ON receipt_identifiers (value);

CREATE FUNCTION defarm_receipt_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'hash', r.hash,
        'timestamp', floor(extract(epoch FROM r.created_at))::bigint,
        'data_size', r.data_size,
        'identifiers', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'namespace', ri.namespace, 'key', ri.key,
                       'value', ri.value, 'id_type', ri.id_type)
                   || CASE WHEN ri.id_type = 'Contextual'
                      THEN jsonb_build_object('scope', ri.scope)
                      ELSE jsonb_build_object(
                          'verified', ri.verified,
                          'verification_date',
                          to_char(ri.verification_date AT TIME ZONE 'UTC',
                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                      END
                   ORDER BY ri.id)
            FROM receipt_identifiers ri WHERE ri.receipt_id = r.id), '[]'))
    FROM receipts r WHERE r.id = p_id
$$;

CREATE FUNCTION defarm_receipt_issue(p_owner text, p_hash text,
                                     p_size bigint, p_ids jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_id  uuid;
BEGIN
    INSERT INTO receipts (owner_id, hash, data_size)
    VALUES (p_owner, p_hash, p_size)
    RETURNING id INTO v_id;

    INSERT INTO receipt_identifiers (receipt_id, namespace, key, value,
                                     id_type, scope, verified,
                                     verification_date)
    SELECT v_id, x->>'namespace', x->>'key', x->>'value', x->>'id_type',
           x->>'scope', coalesce((x->>'verified')::boolean, false),
           (x->>'verification_date')::timestamptz
    FROM jsonb_array_elements(p_ids) WITH ORDINALITY AS t(x, n)
    ORDER BY n;

    RETURN defarm_receipt_json(v_id);
END
$$;
