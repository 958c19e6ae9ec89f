-- Attestations (/api/proofs): statements about data the server holds,
-- signed by the server's Ed25519 key (defarm_attestation_key).
--
-- They replace the original's mock "zero-knowledge proofs" and are not
-- zero-knowledge proofs: an attestation says "this server, holding this
-- key, saw this at this time", and anyone with the published public key
-- (GET /api/proofs/key) can check that the server said it, offline.
--
-- A statement is made and checked here, against the tables, and rendered
-- as canonical JSON (defarm_canonical_json: keys sorted by byte, no
-- spaces): that text is the payload the module signs, and it is stored
-- as it was signed.  Issuing is two statements: defarm_proof_statement
-- (check, render), then, once the module signed it, defarm_proof_store.
--
-- Statement types ("circuit_type", the original's field name):
--   item_exists        an item exists with these identifiers
--   receipt_presented  a receipt's SHA-256 was presented at this time

CREATE TABLE attestations (
    proof_id            uuid PRIMARY KEY,
    prover_id           text NOT NULL REFERENCES users (id)
                        ON DELETE CASCADE,
    circuit_type        text NOT NULL,
    payload             text NOT NULL,        -- exactly what was signed
    signature           text NOT NULL,        -- base64, 64 bytes
    key_id              text NOT NULL,
    status              text NOT NULL DEFAULT 'Issued'
                        CHECK (status IN ('Issued', 'Verified')),
    created_at          timestamptz NOT NULL,
    verified_at         timestamptz,
    verification_count  int NOT NULL DEFAULT 0
);

CREATE INDEX attestations_prover
    ON attestations (prover_id, created_at DESC, proof_id);

-- the statement types, their inputs and what they state (GET .../templates)

CREATE FUNCTION defarm_proof_types() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(
        jsonb_build_object(
            'circuit_type', 'item_exists',
            'description', 'An item you may read exists and carries the '
                           'given identifiers (all of its identifiers '
                           'when none are given)',
            'inputs', jsonb_build_object(
                'dfid', 'string, required: the item',
                'identifiers', 'array of {namespace (default "generic"), '
                               'key, value}, optional'),
            'facts', jsonb_build_array('dfid', 'status', 'created_at',
                                       'identifiers')),
        jsonb_build_object(
            'circuit_type', 'receipt_presented',
            'description', 'A document with this SHA-256 was presented to '
                           'the server (a receipt of yours) at this time',
            'inputs', jsonb_build_object(
                'receipt_id', 'string (UUID), required: the receipt',
                'hash', 'string, optional: the SHA-256 (hex) you expect; '
                        'refused when it is not the receipt''s'),
            'facts', jsonb_build_array('receipt_id', 'hash',
                                       'hash_algorithm', 'data_size',
                                       'presented_at')))
$$;

CREATE FUNCTION defarm_proof_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- item_exists: p_in {dfid, identifiers?}

CREATE FUNCTION defarm_proof_item_exists(p_user text, p_in jsonb,
                                         OUT a defarm_answer,
                                         OUT facts jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    i      items;
    x      jsonb;
    ids    jsonb := '[]';
    m      jsonb;
    err    text;
BEGIN
    err := coalesce(defarm_field_unknown(p_in, ARRAY['dfid', 'identifiers']),
                    defarm_field_check(p_in, 'dfid', 'string', false),
                    defarm_field_check(p_in, 'identifiers', 'array', false));
    IF err IS NOT NULL THEN
        a := defarm_answer(400, 'circuit_input: ' || err);
        RETURN;
    END IF;

    IF p_in ->> 'dfid' IS NULL THEN
        a := defarm_answer(400, 'circuit_input: dfid is required');
        RETURN;
    END IF;

    a := defarm_item_visible(p_in ->> 'dfid', p_user);
    IF a IS NOT NULL THEN
        RETURN;
    END IF;

    SELECT * INTO i FROM items WHERE dfid = p_in ->> 'dfid';

    IF p_in ? 'identifiers' THEN
        IF jsonb_array_length(p_in -> 'identifiers') = 0 THEN
            a := defarm_answer(400, 'circuit_input: identifiers must not '
                                    'be empty');
            RETURN;
        END IF;

        FOR x IN SELECT e FROM jsonb_array_elements(p_in -> 'identifiers') e
        LOOP
            IF jsonb_typeof(x) <> 'object'
               OR defarm_field_unknown(x, ARRAY['namespace', 'key', 'value'])
                  IS NOT NULL
               OR jsonb_typeof(x -> 'key') IS DISTINCT FROM 'string'
               OR jsonb_typeof(x -> 'value') IS DISTINCT FROM 'string'
               OR defarm_field_check(x, 'namespace', 'string', false)
                  IS NOT NULL
            THEN
                a := defarm_answer(400, 'circuit_input: each identifier is '
                                        'an object {namespace, key, '
                                        'value} of strings (key and value '
                                        'required)');
                RETURN;
            END IF;

            SELECT jsonb_build_object('namespace', ii.namespace,
                                      'key', ii.key, 'value', ii.value,
                                      'id_type', ii.id_type)
            INTO m
            FROM item_identifiers ii
            WHERE ii.dfid = i.dfid
              AND ii.namespace = coalesce(x ->> 'namespace', 'generic')
              AND ii.key = x ->> 'key' AND ii.value = x ->> 'value';

            IF m IS NULL THEN
                a := defarm_answer(404, 'Identifier '
                                   || coalesce(x ->> 'namespace', 'generic')
                                   || ':' || (x ->> 'key') || '='
                                   || (x ->> 'value')
                                   || ' not found on item ' || i.dfid);
                RETURN;
            END IF;

            ids := ids || jsonb_build_array(m);
        END LOOP;

    ELSE
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'namespace', ii.namespace, 'key', ii.key,
                   'value', ii.value, 'id_type', ii.id_type)
                   ORDER BY ii.namespace, ii.key, ii.value), '[]')
        INTO ids
        FROM item_identifiers ii WHERE ii.dfid = i.dfid;
    END IF;

    facts := jsonb_build_object(
        'dfid', i.dfid, 'status', i.status,
        'created_at', floor(extract(epoch FROM i.created_at))::bigint,
        'identifiers', ids);
END
$$;

-- receipt_presented: p_in {receipt_id, hash?}; a receipt of the caller's
-- (or any, for an administrator, as GET /api/receipts/:id shows them)

CREATE FUNCTION defarm_proof_receipt(p_user text, p_in jsonb,
                                     OUT a defarm_answer, OUT facts jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rc   receipts;
    err  text;
BEGIN
    err := coalesce(defarm_field_unknown(p_in, ARRAY['receipt_id', 'hash']),
                    defarm_field_check(p_in, 'receipt_id', 'string', false),
                    defarm_field_check(p_in, 'hash', 'string', false));
    IF err IS NOT NULL THEN
        a := defarm_answer(400, 'circuit_input: ' || err);
        RETURN;
    END IF;

    IF p_in ->> 'receipt_id' IS NULL THEN
        a := defarm_answer(400, 'circuit_input: receipt_id is required');
        RETURN;
    END IF;

    IF NOT defarm_is_uuid(p_in ->> 'receipt_id') THEN
        a := defarm_answer(400, 'Invalid receipt ID format');
        RETURN;
    END IF;

    IF p_in ? 'hash' AND (p_in ->> 'hash') !~ '^[0-9a-fA-F]{64}$' THEN
        a := defarm_answer(400, 'circuit_input: hash must be 64 hex '
                                'digits (SHA-256)');
        RETURN;
    END IF;

    SELECT * INTO rc FROM receipts r
    WHERE r.id = (p_in ->> 'receipt_id')::uuid
      AND (r.owner_id = p_user OR defarm_is_admin(p_user));

    IF rc.id IS NULL THEN
        a := defarm_answer(404, 'Receipt not found');
        RETURN;
    END IF;

    IF p_in ? 'hash' AND lower(p_in ->> 'hash') <> rc.hash THEN
        a := defarm_answer(400, 'hash is not the hash of receipt '
                                || rc.id);
        RETURN;
    END IF;

    facts := jsonb_build_object(
        'receipt_id', rc.id, 'hash', rc.hash, 'hash_algorithm', 'SHA-256',
        'data_size', rc.data_size,
        'presented_at', defarm_proof_time(rc.created_at));
END
$$;

-- the facts of a statement of p_type about p_in, as p_user may see them;
-- or the answer refusing it

CREATE FUNCTION defarm_proof_facts(p_user text, p_type text, p_in jsonb,
                                   OUT a defarm_answer, OUT facts jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r  record;
BEGIN
    CASE p_type
    WHEN 'item_exists' THEN
        r := defarm_proof_item_exists(p_user, p_in);
    WHEN 'receipt_presented' THEN
        r := defarm_proof_receipt(p_user, p_in);
    ELSE
        a := defarm_answer(400, 'Unknown circuit_type: ' || p_type
                                || ' (expected: '
                                || (SELECT string_agg(t ->> 'circuit_type',
                                                      ', ')
                                    FROM jsonb_array_elements(
                                        defarm_proof_types()) t)
                                || ')');
        RETURN;
    END CASE;

    a := r.a;
    facts := r.facts;
END
$$;

-- POST /api/proofs/submit {circuit_type, circuit_input, metadata?}, step
-- one: the payload to sign (p_arg: the key's id); 200 with it as text

CREATE FUNCTION defarm_proof_statement(p_user text, p_id text,
                                       p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    r    record;
    err  text;
BEGIN
    IF jsonb_typeof(p_body) <> 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    IF p_body ? 'private_inputs' THEN
        RETURN defarm_answer(400, 'private_inputs are not taken: '
                                  'attestations are signatures by the '
                                  'server, not zero-knowledge proofs');
    END IF;

    err := coalesce(
        defarm_field_unknown(p_body, ARRAY['circuit_type', 'circuit_input',
                                           'metadata']),
        defarm_field_check(p_body, 'circuit_type', 'string', false),
        defarm_field_check(p_body, 'circuit_input', 'object', false),
        defarm_field_check(p_body, 'metadata', 'object', true));
    IF err IS NOT NULL THEN
        RETURN defarm_answer(400, err);
    END IF;

    IF p_body ->> 'circuit_type' IS NULL THEN
        RETURN defarm_answer(400, 'circuit_type is required');
    END IF;

    IF p_body -> 'circuit_input' IS NULL THEN
        RETURN defarm_answer(400, 'circuit_input is required');
    END IF;

    IF length(coalesce(p_body ->> 'metadata', '')) > 16384 THEN
        RETURN defarm_answer(400, 'metadata must be at most 16384 bytes');
    END IF;

    r := defarm_proof_facts(p_user, p_body ->> 'circuit_type',
                            p_body -> 'circuit_input');
    IF r.a IS NOT NULL THEN
        RETURN r.a;
    END IF;

    RETURN defarm_answer(200, defarm_canonical_json(jsonb_build_object(
        'version', 1,
        'proof_id', gen_random_uuid(),
        'circuit_type', p_body ->> 'circuit_type',
        'prover_id', p_user,
        'issued_at', defarm_proof_time(now()),
        'algorithm', 'Ed25519',
        'key_id', p_arg,
        'inputs', p_body -> 'circuit_input',
        'facts', r.facts,
        'metadata', coalesce(nullif(p_body -> 'metadata', 'null'), '{}'))));
END
$$;

-- an attestation as the API shows it

CREATE FUNCTION defarm_proof_json(t attestations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'proof_id', t.proof_id, 'circuit_type', t.circuit_type,
        'prover_id', t.prover_id, 'status', t.status,
        'algorithm', 'Ed25519', 'key_id', t.key_id,
        'payload', t.payload, 'signature', t.signature,
        'statement', t.payload::jsonb,
        'created_at', floor(extract(epoch FROM t.created_at))::bigint,
        'verified_at', floor(extract(epoch FROM t.verified_at))::bigint,
        'verification_count', t.verification_count)
$$;

-- step two: the signed payload stored; 201 with the attestation.  Only
-- the module calls it, with a payload defarm_proof_statement made.

CREATE FUNCTION defarm_proof_store(p_user text, p_payload text,
                                   p_signature text, p_key_id text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s  jsonb := p_payload::jsonb;
    t  attestations;
BEGIN
    INSERT INTO attestations (proof_id, prover_id, circuit_type, payload,
                              signature, key_id, created_at)
    VALUES ((s ->> 'proof_id')::uuid, p_user, s ->> 'circuit_type',
            p_payload, p_signature, p_key_id,
            (s ->> 'issued_at')::timestamptz)
    RETURNING * INTO t;

    RETURN defarm_answer(201, defarm_proof_json(t)::text);
END
$$;

-- POST /api/proofs/verify, step one: {proof_id} (one of the caller's) or
-- {payload, signature} (an attestation anyone was given): what the
-- module is to check the signature of

CREATE FUNCTION defarm_proof_signed(p_user text, p_body jsonb,
                                    OUT status int, OUT body text,
                                    OUT payload text, OUT signature text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t    attestations;
    err  text;
BEGIN
    status := 200;
    body := '';

    IF jsonb_typeof(p_body) <> 'object' THEN
        status := 400;
        body := 'The body must be a JSON object';
        RETURN;
    END IF;

    err := coalesce(
        defarm_field_unknown(p_body, ARRAY['proof_id', 'payload',
                                           'signature']),
        defarm_field_check(p_body, 'proof_id', 'string', false),
        defarm_field_check(p_body, 'payload', 'string', false),
        defarm_field_check(p_body, 'signature', 'string', false),
        CASE WHEN (p_body ? 'proof_id')
                  = (p_body ? 'payload' OR p_body ? 'signature')
             THEN 'Give proof_id, or payload and signature'
        END,
        CASE WHEN NOT (p_body ? 'proof_id')
                  AND NOT (p_body ? 'payload' AND p_body ? 'signature')
             THEN 'payload and signature go together'
        END);
    IF err IS NOT NULL THEN
        status := 400;
        body := err;
        RETURN;
    END IF;

    IF NOT p_body ? 'proof_id' THEN
        payload := p_body ->> 'payload';
        signature := p_body ->> 'signature';
        RETURN;
    END IF;

    IF NOT defarm_is_uuid(p_body ->> 'proof_id') THEN
        status := 400;
        body := 'Invalid proof ID format';
        RETURN;
    END IF;

    SELECT * INTO t FROM attestations a
    WHERE a.proof_id = (p_body ->> 'proof_id')::uuid
      AND a.prover_id = p_user;

    IF t.proof_id IS NULL THEN
        status := 404;
        body := 'Proof not found';
        RETURN;
    END IF;

    payload := t.payload;
    signature := t.signature;
END
$$;

-- step two: p_valid is the module's check of the signature with the
-- key p_key_id; the record and the facts of now are checked here

CREATE FUNCTION defarm_proof_verify(p_user text, p_payload text,
                                    p_signature text, p_valid boolean,
                                    p_key_id text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s        jsonb;
    t        attestations;
    r        record;
    holds    boolean;
BEGIN
    BEGIN
        s := p_payload::jsonb;
    EXCEPTION WHEN others THEN
        s := NULL;
    END;

    IF jsonb_typeof(s) = 'object' AND defarm_is_uuid(s ->> 'proof_id') THEN
        SELECT * INTO t FROM attestations x
        WHERE x.proof_id = (s ->> 'proof_id')::uuid
          AND x.payload = p_payload AND x.signature = p_signature;
    END IF;

    -- does it still hold: the same facts now, as its prover sees them

    IF t.proof_id IS NOT NULL THEN
        r := defarm_proof_facts(t.prover_id, s ->> 'circuit_type',
                                s -> 'inputs');
        holds := r.a IS NULL AND r.facts = s -> 'facts';

        IF p_valid THEN
            UPDATE attestations
            SET status = 'Verified', verified_at = now(),
                verification_count = verification_count + 1
            WHERE proof_id = t.proof_id
            RETURNING * INTO t;
        END IF;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'proof_id', coalesce(t.proof_id::text, s ->> 'proof_id'),
        'valid', p_valid AND t.proof_id IS NOT NULL,
        'signature_valid', p_valid,
        'on_record', t.proof_id IS NOT NULL,
        'statement_holds', holds,
        'algorithm', 'Ed25519',
        'key_id', p_key_id,
        'statement', s,
        'verified_at', floor(extract(epoch FROM t.verified_at))::bigint)
        ::text);
END
$$;

-- a date of the list's filters: Unix seconds, or an ISO 8601 date/time

CREATE FUNCTION defarm_proof_date(p text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p ~ '^[0-9]{1,12}$' THEN
        RETURN to_timestamp(p::bigint);
    END IF;
    IF p ~ '^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}(:?\d{2})?)?)?$' THEN
        RETURN p::timestamptz;
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

-- GET /api/proofs?user_id=&circuit_type=&status=&start_date=&end_date=
-- &limit=1..100 (100)&offset=: the caller's own (another's user_id: an
-- administrator only)

CREATE FUNCTION defarm_proofs_list(p_user text, p_id text,
                                   p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pg       record;
    v_who    text := coalesce(p_query ->> 'user_id', p_user);
    v_type   text := p_query ->> 'circuit_type';
    v_stat   text := p_query ->> 'status';
    v_from   timestamptz;
    v_to     timestamptz;
    v_total  bigint;
    v        jsonb;
    err      text;
BEGIN
    IF p_query ->> 'start_date' IS NOT NULL THEN
        v_from := defarm_proof_date(p_query ->> 'start_date');
        IF v_from IS NULL THEN
            err := 'start_date must be a Unix time or an ISO 8601 date';
        END IF;
    END IF;

    IF p_query ->> 'end_date' IS NOT NULL AND err IS NULL THEN
        v_to := defarm_proof_date(p_query ->> 'end_date');
        IF v_to IS NULL THEN
            err := 'end_date must be a Unix time or an ISO 8601 date';
        END IF;
    END IF;

    IF v_stat IS NOT NULL AND err IS NULL
       AND v_stat NOT IN ('Issued', 'Verified')
    THEN
        err := 'status must be Issued or Verified';
    END IF;

    IF v_type IS NOT NULL AND err IS NULL
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(defarm_proof_types())
                       t WHERE t ->> 'circuit_type' = v_type)
    THEN
        err := 'Unknown circuit_type: ' || v_type;
    END IF;

    pg := defarm_audit_paging(p_query, 100, err);
    IF (pg.a).status IS NOT NULL THEN
        RETURN pg.a;
    END IF;

    IF v_who <> p_user AND NOT defarm_is_admin(p_user) THEN
        RETURN defarm_answer(403, 'Only an administrator may list another '
                                  'user''s proofs');
    END IF;

    SELECT count(*) INTO v_total
    FROM attestations t
    WHERE t.prover_id = v_who
      AND (v_type IS NULL OR t.circuit_type = v_type)
      AND (v_stat IS NULL OR t.status = v_stat)
      AND (v_from IS NULL OR t.created_at >= v_from)
      AND (v_to IS NULL OR t.created_at <= v_to);

    SELECT coalesce(jsonb_agg(defarm_proof_json(t)
                              ORDER BY t.created_at DESC, t.proof_id), '[]')
    INTO v
    FROM (SELECT * FROM attestations t
          WHERE t.prover_id = v_who
            AND (v_type IS NULL OR t.circuit_type = v_type)
            AND (v_stat IS NULL OR t.status = v_stat)
            AND (v_from IS NULL OR t.created_at >= v_from)
            AND (v_to IS NULL OR t.created_at <= v_to)
          ORDER BY t.created_at DESC, t.proof_id
          LIMIT pg.lim OFFSET pg.off) t;

    RETURN defarm_answer(200, jsonb_build_object(
        'proofs', v, 'total', v_total, 'limit', pg.lim,
        'offset', pg.off)::text);
END
$$;

-- GET /api/proofs/statistics: the caller's

CREATE FUNCTION defarm_proofs_statistics(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_answer(200, jsonb_build_object(
        'total_proofs', count(*),
        'verified_proofs', count(*) FILTER (WHERE t.status = 'Verified'),
        'verifications', coalesce(sum(t.verification_count), 0),
        'by_circuit_type', coalesce((
            SELECT jsonb_object_agg(x.circuit_type, x.n)
            FROM (SELECT circuit_type, count(*) AS n FROM attestations
                  WHERE prover_id = p_user GROUP BY circuit_type) x), '{}'),
        'by_status', jsonb_build_object(
            'Issued', count(*) FILTER (WHERE t.status = 'Issued'),
            'Verified', count(*) FILTER (WHERE t.status = 'Verified')),
        'first_issued_at', floor(extract(epoch FROM min(t.created_at)))
                           ::bigint,
        'last_issued_at', floor(extract(epoch FROM max(t.created_at)))
                          ::bigint)::text)
    FROM attestations t WHERE t.prover_id = p_user
$$;

-- GET /api/proofs/templates

CREATE FUNCTION defarm_proofs_templates(p_user text, p_id text,
                                        p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_answer(200, jsonb_build_object(
        'templates', defarm_proof_types(),
        'algorithm', 'Ed25519',
        'note', 'Attestations are signatures by the server over a '
                'statement it checked against its data, verifiable with '
                'the key of GET /api/proofs/key; they are not '
                'zero-knowledge proofs')::text)
$$;

-- GET /api/proofs/:id

CREATE FUNCTION defarm_proof_get(p_user text, p_id text,
                                 p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t  attestations;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid proof ID format');
    END IF;

    SELECT * INTO t FROM attestations a
    WHERE a.proof_id = p_id::uuid AND a.prover_id = p_user;

    IF t.proof_id IS NULL THEN
        RETURN defarm_answer(404, 'Proof not found');
    END IF;

    RETURN defarm_answer(200, defarm_proof_json(t)::text);
END
$$;

-- DELETE /api/proofs/:id: the prover's own

CREATE FUNCTION defarm_proof_delete(p_user text, p_id text,
                                    p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid proof ID format');
    END IF;

    DELETE FROM attestations
    WHERE proof_id = p_id::uuid AND prover_id = p_user;

    IF NOT FOUND THEN
        RETURN defarm_answer(404, 'Proof not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'proof_id', p_id)::text);
END
$$;
