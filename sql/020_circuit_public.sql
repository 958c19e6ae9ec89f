-- Circuits: public settings, the public page, joining a public circuit.
-- The protected mode's password is hashed by the module (bcrypt, in its
-- thread pool) and only the hash reaches the database; it is never
-- returned (public_settings shows has_password).
--
-- A 422 answer's body is the message, a newline, and the details object.

CREATE FUNCTION defarm_unprocessable(p_field text, p_issue text,
                                     p_given jsonb, p_allowed text[])
RETURNS defarm_answer
LANGUAGE sql IMMUTABLE AS $$
    SELECT defarm_answer(422,
        'Invalid public settings: ' || p_field || ' ' || p_issue || E'\n'
        || jsonb_strip_nulls(jsonb_build_object(
               'field', p_field, 'provided_value', p_given,
               'allowed_values', to_jsonb(p_allowed),
               'issue', p_issue))::text)
$$;

-- accessible to the public: visible, and no settings, or mode public or
-- protected, or scheduled with its date reached

CREATE FUNCTION defarm_circuit_accessible(c circuits) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT c.status = 'Active' AND c.allow_public_visibility
       AND (c.public_settings IS NULL
            OR c.public_settings ->> 'access_mode' IN ('public', 'protected')
            OR (c.public_settings ->> 'access_mode' = 'scheduled'
                AND (c.public_settings ->> 'scheduled_date')::timestamptz
                    <= now()))
$$;


-- PUT /api/circuits/:id/public-settings {public_settings: {...}}: the owner
-- or ManagePermissions; p_arg the new password's hash, when one was given

CREATE FUNCTION defarm_circuit_public_settings(p_user text, p_id text,
                                               p_body jsonb, p_hash text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a        defarm_answer;
    s        jsonb;
    v_mode   text;
    v_err    text;
    c        circuits;
    k        text;
    v_since  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_body -> 'public_settings') IS DISTINCT FROM 'object'
    THEN
        RETURN defarm_answer(400, 'The body must be {"public_settings": '
                                  '{...}}');
    END IF;

    s := p_body -> 'public_settings';

    FOREACH k IN ARRAY ARRAY['access_mode', 'scheduled_date',
                             'access_password', 'public_name',
                             'public_description', 'primary_color',
                             'secondary_color', 'logo_url', 'tagline',
                             'footer_text', 'export_permissions']
    LOOP
        v_err := coalesce(v_err, defarm_field_type(s, k, 'string'));
    END LOOP;

    FOREACH k IN ARRAY ARRAY['auto_approve_members',
                             'auto_publish_pushed_items',
                             'show_encrypted_events']
    LOOP
        v_err := coalesce(v_err, defarm_field_type(s, k, 'boolean'));
    END LOOP;

    v_err := coalesce(v_err,
                      defarm_field_type(s, 'published_items', 'array'),
                      defarm_field_type(s, 'required_event_types', 'array'));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_mode := lower(coalesce(s ->> 'access_mode', 'public'));

    IF v_mode NOT IN ('public', 'open', 'protected', 'scheduled') THEN
        RETURN defarm_unprocessable('access_mode', 'is not a known mode',
                                    s -> 'access_mode',
                                    ARRAY['public', 'open', 'protected',
                                          'scheduled']);
    END IF;

    IF v_mode = 'scheduled' THEN
        IF s ->> 'scheduled_date' IS NULL THEN
            RETURN defarm_unprocessable('scheduled_date',
                                        'is required in scheduled mode',
                                        NULL, NULL);
        END IF;

        BEGIN
            PERFORM (s ->> 'scheduled_date')::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN defarm_unprocessable('scheduled_date',
                                        'is not an RFC 3339 date',
                                        s -> 'scheduled_date', NULL);
        END;
    END IF;

    IF s ->> 'export_permissions' IS NOT NULL
       AND lower(s ->> 'export_permissions')
           NOT IN ('admin', 'members', 'public')
    THEN
        RETURN defarm_unprocessable('export_permissions', 'is not known',
                                    s -> 'export_permissions',
                                    ARRAY['admin', 'members', 'public']);
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions',
                            'changing public settings');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid FOR UPDATE;

    IF v_mode = 'protected' AND p_hash IS NULL
       AND c.access_password_hash IS NULL
    THEN
        RETURN defarm_unprocessable('access_password',
                                    'is required in protected mode',
                                    NULL, NULL);
    END IF;

    v_since := coalesce(c.public_settings ->> 'public_since',
                        CASE WHEN v_mode = 'public'
                             THEN to_char(now() AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        END);

    UPDATE circuits SET
        public_settings = (s - 'access_password')
            || jsonb_build_object('access_mode', v_mode,
                                  'public_since', v_since),
        access_password_hash = CASE WHEN v_mode <> 'protected' THEN NULL
                                    ELSE coalesce(p_hash,
                                                  access_password_hash)
                               END,
        allow_public_visibility = true,
        last_modified = now()
    WHERE circuit_id = c.circuit_id;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_circuit_json(c.circuit_id))::text);
END
$$;


-- GET /api/circuits/:id/public: anyone, for an accessible circuit; only
-- the published items still in the circuit, and their Public events

CREATE FUNCTION defarm_circuit_public(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c  circuits;
    s  jsonb;
    p  text[];
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid;

    IF c.circuit_id IS NULL OR NOT defarm_circuit_accessible(c) THEN
        RETURN defarm_answer(404, 'Circuit not found or not public');
    END IF;

    s := coalesce(c.public_settings, '{}');

    SELECT coalesce(array_agg(ci.dfid ORDER BY ci.added_at, ci.dfid), '{}')
    INTO p
    FROM circuit_items ci
    WHERE ci.circuit_id = c.circuit_id
      AND s -> 'published_items' ? ci.dfid;

    RETURN defarm_answer(200, jsonb_build_object('success', true, 'data',
        jsonb_build_object(
            'circuit_id', c.circuit_id,
            'public_name', coalesce(s ->> 'public_name', c.name),
            'public_description', coalesce(s ->> 'public_description',
                                           c.description),
            'primary_color', s -> 'primary_color',
            'secondary_color', s -> 'secondary_color',
            'logo_url', s -> 'logo_url',
            'tagline', s -> 'tagline',
            'footer_text', s -> 'footer_text',
            'member_count', (SELECT count(*) FROM circuit_members m
                             WHERE m.circuit_id = c.circuit_id),
            'items_count', (SELECT count(*) FROM circuit_items ci
                            WHERE ci.circuit_id = c.circuit_id),
            'events_count', (SELECT count(*) FROM events e
                             WHERE e.dfid = ANY (p)
                               AND e.visibility = 'Public'),
            'access_mode', coalesce(s ->> 'access_mode', 'public'),
            'requires_password', c.access_password_hash IS NOT NULL,
            'is_currently_accessible', true,
            'published_items', to_jsonb(p),
            'published_items_with_events', coalesce((
                SELECT jsonb_agg(jsonb_build_object(
                           'dfid', d, 'events', coalesce((
                               SELECT jsonb_agg(jsonb_build_object(
                                          'event_id', e.event_id,
                                          'dfid', e.dfid,
                                          'event_type', e.event_type,
                                          'source', e.owner_id,
                                          'visibility', e.visibility,
                                          'timestamp',
                                          to_char(e.created_at
                                                  AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                          'metadata', e.metadata)
                                      ORDER BY e.created_at, e.event_id)
                               FROM events e
                               WHERE e.dfid = d
                                 AND e.visibility = 'Public'), '[]'))
                       ORDER BY n)
                FROM unnest(p) WITH ORDINALITY AS u(d, n)), '[]'),
            'auto_publish_pushed_items',
            coalesce((s ->> 'auto_publish_pushed_items')::boolean, false),
            'public_since', s -> 'public_since',
            'created_at', floor(extract(epoch FROM c.created_at))::bigint,
            'recent_activity', '[]'::jsonb))::text);
END
$$;


-- POST /api/circuits/:id/public/join {access_password?, message?}:
-- p_arg is the hash the module verified the password against ('-' when
-- no password was given or none is needed), so a password changed in
-- between is not taken for the new one

CREATE FUNCTION defarm_circuit_join_hash(p_user text, p_id text,
                                         p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c  circuits;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid;

    IF c.circuit_id IS NULL OR NOT defarm_circuit_accessible(c) THEN
        RETURN defarm_answer(404, 'Circuit not found or not public');
    END IF;

    RETURN defarm_answer(200, coalesce(c.access_password_hash, '-'));
END
$$;

CREATE FUNCTION defarm_circuit_public_join(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    c  circuits;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF length(p_body ->> 'message') > 2000 THEN
        RETURN defarm_answer(400, 'message is at most 2000 characters');
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid FOR SHARE;

    IF c.circuit_id IS NULL OR NOT defarm_circuit_accessible(c) THEN
        RETURN defarm_answer(404, 'Circuit not found or not public');
    END IF;

    IF coalesce(c.access_password_hash, '-') <> p_arg THEN
        RETURN defarm_answer(403, 'Invalid access password');
    END IF;

    IF defarm_circuit_is_member(c.circuit_id, p_user) THEN
        RETURN defarm_answer(409, 'Already a member of this circuit');
    END IF;

    IF coalesce((c.public_settings ->> 'auto_approve_members')::boolean,
                false)
    THEN
        INSERT INTO circuit_members (circuit_id, member_id, role,
                                     permissions)
        VALUES (c.circuit_id, p_user, 'Member',
                defarm_circuit_role_perms('Member'))
        ON CONFLICT DO NOTHING;

        RETURN defarm_answer(200, '{"success": true, "message": '
                                  '"Automatically approved", '
                                  '"requires_approval": false}');
    END IF;

    a := defarm_join_request_open(c.circuit_id, p_user, p_body ->> 'message');

    IF a.status <> 201 THEN
        RETURN a;
    END IF;

    RETURN defarm_answer(200, '{"success": true, "message": '
                              '"Join request submitted", '
                              '"requires_approval": true}');
END
$$;
