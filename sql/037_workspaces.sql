-- Workspaces (§1.16), stored: the original kept them in process memory
-- (lost on restart) and took the actor from the body's requester_id.
-- Here the actor is always the caller.  Members have one of the roles
-- Owner, Admin, Member, Viewer; a workspace has exactly one Owner, its
-- owner_id, who can be neither removed nor demoted.  Members read;
-- the Owner and Admins change the settings and the members; only the
-- Owner deletes.  Every write locks the workspace's row first, so the
-- caller's role and the member count it checks cannot change under it.

CREATE TABLE workspaces (
    workspace_id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                         text NOT NULL,
    description                  text NOT NULL DEFAULT '',
    owner_id                     text NOT NULL
                                 REFERENCES users (id) ON DELETE CASCADE,
    default_circuit_permissions  jsonb NOT NULL,
    default_event_visibility     text NOT NULL DEFAULT 'Private'
                                 CHECK (default_event_visibility
                                        IN ('Public', 'Private',
                                            'CircuitOnly')),
    encryption_enabled           boolean NOT NULL DEFAULT true,
    retention_policy_days        int NOT NULL DEFAULT 365
                                 CHECK (retention_policy_days
                                        BETWEEN 1 AND 36500),
    max_members                  int NOT NULL DEFAULT 100
                                 CHECK (max_members BETWEEN 1 AND 1000),
    allow_public_circuits        boolean NOT NULL DEFAULT false,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workspaces_owner ON workspaces (owner_id);

CREATE TABLE workspace_members (
    workspace_id    uuid NOT NULL
                    REFERENCES workspaces (workspace_id) ON DELETE CASCADE,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL
                    CHECK (role IN ('Owner', 'Admin', 'Member', 'Viewer')),
    added_by        text,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);

CREATE INDEX workspace_members_user ON workspace_members (user_id);

-- one Owner per workspace, whatever a function does
CREATE UNIQUE INDEX workspace_members_owner ON workspace_members
    (workspace_id) WHERE role = 'Owner';


-- the default of default_circuit_permissions: each circuit role's
-- permissions, as a new circuit member gets them (sql/016)

CREATE FUNCTION defarm_workspace_default_perms() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_object_agg(r, to_jsonb(defarm_circuit_role_perms(r)))
    FROM unnest(ARRAY['Owner', 'Admin', 'Member', 'Viewer']) r
$$;

ALTER TABLE workspaces ALTER COLUMN default_circuit_permissions
    SET DEFAULT defarm_workspace_default_perms();


CREATE FUNCTION defarm_workspace_member_json(m workspace_members)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'user_id', m.user_id,
        'username', (SELECT u.username FROM users u WHERE u.id = m.user_id),
        'role', m.role, 'added_by', m.added_by,
        'joined_at', defarm_rfc3339(m.joined_at),
        'updated_at', defarm_rfc3339(m.updated_at))
$$;

CREATE FUNCTION defarm_workspace_json(w workspaces) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', w.workspace_id, 'name', w.name,
        'description', w.description, 'owner_id', w.owner_id,
        'settings', jsonb_build_object(
            'default_circuit_permissions', w.default_circuit_permissions,
            'default_event_visibility', w.default_event_visibility,
            'encryption_enabled', w.encryption_enabled,
            'retention_policy_days', w.retention_policy_days,
            'max_members', w.max_members,
            'allow_public_circuits', w.allow_public_circuits),
        'members', coalesce((
            SELECT jsonb_agg(defarm_workspace_member_json(m)
                             ORDER BY m.joined_at, m.user_id)
            FROM workspace_members m
            WHERE m.workspace_id = w.workspace_id), '[]'),
        'created_at', defarm_rfc3339(w.created_at),
        'updated_at', defarm_rfc3339(w.updated_at))
$$;


-- "admin", "VIEWER"... as the role's name, or NULL

CREATE FUNCTION defarm_workspace_role_name(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'string'
                THEN defarm_circuit_role_name(p #>> '{}') END
$$;

-- "private", "CIRCUITONLY"... as the visibility's name, or NULL

CREATE FUNCTION defarm_workspace_visibility(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(p)
        WHEN 'public' THEN 'Public' WHEN 'private' THEN 'Private'
        WHEN 'circuitonly' THEN 'CircuitOnly'
    END
$$;

-- a body's whole number field: NULL when absent, -1 when it is not a whole
-- number from p_min to p_max

CREATE FUNCTION defarm_workspace_int(p_body jsonb, p_key text, p_min int,
                                     p_max int)
RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT (p_body ? p_key) THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) = 'number'
             AND p_body ->> p_key ~ '^-?[0-9]{1,9}$'
             AND (p_body ->> p_key)::int BETWEEN p_min AND p_max
            THEN (p_body ->> p_key)::int
        ELSE -1
    END
$$;

-- {"admin": ["push"]} -> {"Admin": ["Push"]}; NULL when a key is not a
-- role or a value not an array of permission names.  The roles given
-- replace theirs in the map; the others keep their permissions.

CREATE FUNCTION defarm_workspace_perm_map(p jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_out    jsonb := '{}';
    v_role   text;
    v_perms  text[];
    e        record;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
        RETURN NULL;
    END IF;

    FOR e IN SELECT * FROM jsonb_each(p) LOOP
        v_role := defarm_circuit_role_name(e.key);
        v_perms := defarm_circuit_perm_names(e.value);

        IF v_role IS NULL OR v_perms IS NULL OR v_out ? v_role THEN
            RETURN NULL;
        END IF;

        v_out := v_out || jsonb_build_object(v_role, to_jsonb(v_perms));
    END LOOP;

    RETURN v_out;
END
$$;

-- the checks of a body's settings object: NULL, or the message

CREATE FUNCTION defarm_workspace_settings_check(p jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
        RETURN 'settings must be an object';
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p, '{default_circuit_permissions,'
                                'default_event_visibility,'
                                'encryption_enabled,retention_policy_days,'
                                'max_members,allow_public_circuits}'),
        defarm_field_check(p, 'default_circuit_permissions', 'object',
                           false),
        defarm_field_check(p, 'default_event_visibility', 'string', false),
        defarm_field_check(p, 'encryption_enabled', 'boolean', false),
        defarm_field_check(p, 'retention_policy_days', 'number', false),
        defarm_field_check(p, 'max_members', 'number', false),
        defarm_field_check(p, 'allow_public_circuits', 'boolean', false));

    IF v_err IS NOT NULL THEN
        RETURN 'settings: ' || v_err;
    END IF;

    IF p ? 'default_circuit_permissions'
       AND defarm_workspace_perm_map(p -> 'default_circuit_permissions')
           IS NULL
    THEN
        RETURN 'settings: default_circuit_permissions must map the roles '
               'Owner, Admin, Member, Viewer (each once) to arrays of '
               'permissions among '
               || array_to_string(defarm_circuit_all_perms(), ', ');
    END IF;

    IF p ? 'default_event_visibility'
       AND defarm_workspace_visibility(p ->> 'default_event_visibility')
           IS NULL
    THEN
        RETURN 'settings: default_event_visibility must be Public, '
               'Private or CircuitOnly';
    END IF;

    IF defarm_workspace_int(p, 'retention_policy_days', 1, 36500) = -1 THEN
        RETURN 'settings: retention_policy_days must be a whole number '
               'from 1 to 36500';
    END IF;

    IF defarm_workspace_int(p, 'max_members', 1, 1000) = -1 THEN
        RETURN 'settings: max_members must be a whole number from 1 to '
               '1000';
    END IF;

    RETURN NULL;
END
$$;

-- the checks of a create (p_new) or update body: NULL, or the message

CREATE FUNCTION defarm_workspace_check(p_body jsonb, p_new boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN 'The body must be a JSON object';
    END IF;

    -- requester_id and owner_id: the original's, ignored (the caller acts)
    v_err := coalesce(
        defarm_field_unknown(p_body, '{name,description,settings,'
                                     'requester_id,owner_id}'),
        defarm_field_check(p_body, 'name', 'string', false),
        defarm_field_check(p_body, 'description', 'string', true),
        defarm_field_check(p_body, 'settings', 'object', false));

    IF v_err IS NOT NULL THEN
        RETURN v_err;
    END IF;

    IF p_new AND NOT p_body ? 'name' THEN
        RETURN 'name is required';
    END IF;

    IF p_body ? 'name'
       AND length(btrim(p_body ->> 'name')) NOT BETWEEN 1 AND 200
    THEN
        RETURN 'name must be 1 to 200 characters';
    END IF;

    IF length(p_body ->> 'description') > 2000 THEN
        RETURN 'description must be at most 2000 characters';
    END IF;

    IF p_body ? 'settings' THEN
        RETURN defarm_workspace_settings_check(p_body -> 'settings');
    END IF;

    RETURN NULL;
END
$$;


-- The workspace and the caller's role in it, or the answer to give:
-- 400 for a malformed id, 404 for an unknown workspace or one the caller
-- is not a member of (an administrator reads every one), 403 when the
-- caller's role is not enough.  p_need: 'read', 'manage' (Owner or
-- Admin) or 'own' (Owner); a write ('manage', 'own', or 'write' for a
-- member's own change) locks the workspace's row.

CREATE FUNCTION defarm_workspace_find(p_id text, p_user text, p_need text,
                                      p_what text, OUT a defarm_answer,
                                      OUT w workspaces, OUT role text)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        a := defarm_answer(400, 'Invalid workspace ID format');
        RETURN;
    END IF;

    IF p_need = 'read' THEN
        SELECT * INTO w FROM workspaces x WHERE x.workspace_id = p_id::uuid;
    ELSE
        SELECT * INTO w FROM workspaces x WHERE x.workspace_id = p_id::uuid
        FOR UPDATE;
    END IF;

    IF w.workspace_id IS NOT NULL THEN
        SELECT m.role INTO role FROM workspace_members m
        WHERE m.workspace_id = w.workspace_id AND m.user_id = p_user;
    END IF;

    IF w.workspace_id IS NULL
       OR (role IS NULL AND NOT defarm_is_admin(p_user))
    THEN
        a := defarm_answer(404, 'Workspace not found');
        RETURN;
    END IF;

    IF (p_need = 'manage' AND role IS DISTINCT FROM 'Owner'
                          AND role IS DISTINCT FROM 'Admin')
       OR (p_need = 'own' AND role IS DISTINCT FROM 'Owner')
       OR (p_need = 'write' AND role IS NULL)
    THEN
        a := defarm_answer(403, 'Permission denied: ' || p_what
                                || CASE p_need
                                   WHEN 'manage' THEN ' needs the Owner '
                                                      'or Admin role'
                                   WHEN 'own' THEN ' is for the Owner only'
                                   ELSE ' is for members' END);
    END IF;
END
$$;


-- POST /api/workspaces {name, description?, settings?}

CREATE FUNCTION defarm_workspace_create(p_user text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err  text;
    s      jsonb;
    w      workspaces;
BEGIN
    v_err := defarm_workspace_check(p_body, true);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    s := coalesce(p_body -> 'settings', '{}');

    INSERT INTO workspaces (name, description, owner_id,
                            default_circuit_permissions,
                            default_event_visibility, encryption_enabled,
                            retention_policy_days, max_members,
                            allow_public_circuits)
    VALUES (btrim(p_body ->> 'name'),
            coalesce(p_body ->> 'description', ''), p_user,
            defarm_workspace_default_perms()
            || coalesce(defarm_workspace_perm_map(
                            s -> 'default_circuit_permissions'), '{}'),
            coalesce(defarm_workspace_visibility(
                         s ->> 'default_event_visibility'), 'Private'),
            coalesce((s ->> 'encryption_enabled')::boolean, true),
            coalesce((s ->> 'retention_policy_days')::int, 365),
            coalesce((s ->> 'max_members')::int, 100),
            coalesce((s ->> 'allow_public_circuits')::boolean, false))
    RETURNING * INTO w;

    INSERT INTO workspace_members (workspace_id, user_id, role, added_by)
    VALUES (w.workspace_id, p_user, 'Owner', p_user);

    RETURN defarm_answer(201, defarm_workspace_json(w)::text);
END
$$;

-- GET /api/workspaces?limit=1..500 (100)&offset=&all=true|false: the
-- caller's workspaces (owned or member), newest first; all=true, every
-- workspace, is for administrators

CREATE FUNCTION defarm_workspaces_list(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_all     text := lower(coalesce(p_query ->> 'all', 'false'));
    v_limit   int := defarm_limit_arg(p_query, 100);
    v_offset  bigint := 0;
    v         text;
BEGIN
    IF v_all NOT IN ('true', 'false') THEN
        RETURN defarm_answer(400, 'all must be true or false');
    END IF;

    IF v_limit IS NULL THEN
        RETURN defarm_answer(400, 'limit must be 1 to 500');
    END IF;

    IF p_query ->> 'offset' IS NOT NULL THEN
        IF p_query ->> 'offset' !~ '^[0-9]{1,9}$' THEN
            RETURN defarm_answer(400, 'offset must be a whole number '
                                      '>= 0');
        END IF;
        v_offset := (p_query ->> 'offset')::bigint;
    END IF;

    IF v_all = 'true' AND NOT defarm_is_admin(p_user) THEN
        RETURN defarm_answer(403, 'Only administrators may list every '
                                  'workspace');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_workspace_json(w)
                              ORDER BY w.created_at DESC, w.workspace_id),
                    '[]')::text
    INTO v
    FROM (SELECT * FROM workspaces w
          WHERE v_all = 'true'
             OR EXISTS (SELECT 1 FROM workspace_members m
                        WHERE m.workspace_id = w.workspace_id
                          AND m.user_id = p_user)
          ORDER BY w.created_at DESC, w.workspace_id
          LIMIT v_limit OFFSET v_offset) w;

    RETURN defarm_answer(200, v);
END
$$;

-- GET /api/workspaces/user/:user_id: that user's workspaces; the caller's
-- own, or any user's for an administrator (another's is 404 as an
-- unknown user)

CREATE FUNCTION defarm_workspaces_of_user(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  text;
BEGIN
    IF p_arg IS DISTINCT FROM p_user
       AND (NOT defarm_is_admin(p_user)
            OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p_arg))
    THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_workspace_json(w)
                              ORDER BY w.created_at DESC, w.workspace_id),
                    '[]')::text
    INTO v
    FROM workspaces w
    WHERE EXISTS (SELECT 1 FROM workspace_members m
                  WHERE m.workspace_id = w.workspace_id
                    AND m.user_id = p_arg);

    RETURN defarm_answer(200, v);
END
$$;

-- GET /api/workspaces/:workspace_id

CREATE FUNCTION defarm_workspace_get(p_user text, p_id text, p_query jsonb,
                                     p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'read', 'reading');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    RETURN defarm_answer(200, defarm_workspace_json(f.w)::text);
END
$$;

-- PUT /api/workspaces/:workspace_id {name?, description?, settings?}:
-- absent fields keep their values; Owner or Admin

CREATE FUNCTION defarm_workspace_update(p_user text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f      record;
    v_err  text;
    v_max  int;
    v_n    bigint;
    s      jsonb;
    w      workspaces;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'manage',
                               'changing the workspace');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    v_err := defarm_workspace_check(p_body, false);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    s := coalesce(p_body -> 'settings', '{}');
    v_max := (s ->> 'max_members')::int;

    IF v_max IS NOT NULL THEN
        SELECT count(*) INTO v_n FROM workspace_members m
        WHERE m.workspace_id = (f.w).workspace_id;

        IF v_max < v_n THEN
            RETURN defarm_answer(409, 'max_members (' || v_max
                                      || ') is below the workspace''s '
                                      || v_n || ' members');
        END IF;
    END IF;

    UPDATE workspaces SET
        name = coalesce(btrim(p_body ->> 'name'), name),
        description = CASE WHEN p_body ? 'description'
                           THEN coalesce(p_body ->> 'description', '')
                           ELSE description END,
        default_circuit_permissions = default_circuit_permissions
            || coalesce(defarm_workspace_perm_map(
                            s -> 'default_circuit_permissions'), '{}'),
        default_event_visibility = coalesce(
            defarm_workspace_visibility(s ->> 'default_event_visibility'),
            default_event_visibility),
        encryption_enabled = coalesce((s ->> 'encryption_enabled')::boolean,
                                      encryption_enabled),
        retention_policy_days = coalesce(
            (s ->> 'retention_policy_days')::int, retention_policy_days),
        max_members = coalesce(v_max, max_members),
        allow_public_circuits = coalesce(
            (s ->> 'allow_public_circuits')::boolean, allow_public_circuits),
        updated_at = now()
    WHERE workspace_id = (f.w).workspace_id
    RETURNING * INTO w;

    RETURN defarm_answer(200, defarm_workspace_json(w)::text);
END
$$;

-- DELETE /api/workspaces/:workspace_id: the Owner only

CREATE FUNCTION defarm_workspace_delete(p_user text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'own',
                               'deleting the workspace');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    DELETE FROM workspaces WHERE workspace_id = (f.w).workspace_id;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'workspace_id', (f.w).workspace_id,
        'message', 'Workspace deleted')::text);
END
$$;


-- the most members a workspace may have now: its max_members, and with
-- defarm_tier_limits its owner's tier's max_workspace_members (NULL:
-- unlimited); the tier and its limit are returned for a refusal

CREATE FUNCTION defarm_workspace_limits(w workspaces, OUT tier text,
                                        OUT tier_limit bigint,
                                        OUT tier_applies boolean)
LANGUAGE sql STABLE AS $$
    SELECT u.tier, l.max_workspace_members,
           defarm_setting_on('defarm.tier_limits')
    FROM users u JOIN tier_limits l ON l.tier = u.tier
    WHERE u.id = w.owner_id
$$;

-- the answer to a change of a workspace's members, which is a change of
-- the workspace (its updated_at)

CREATE FUNCTION defarm_workspace_touched(p_ws uuid, p_status int,
                                         p_body jsonb)
RETURNS defarm_answer
LANGUAGE sql AS $$
    UPDATE workspaces SET updated_at = now() WHERE workspace_id = p_ws;

    SELECT defarm_answer(p_status, p_body::text)
$$;

-- the role a member body {<p_fields>, role} sets, or the 400 answer:
-- p_fields (role among them) are required strings; requester_id, the
-- original's, is ignored; the role is Admin, Member or Viewer (any case)

CREATE FUNCTION defarm_workspace_role_body(p_body jsonb, p_fields text[],
                                           OUT a defarm_answer,
                                           OUT role text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        a := defarm_answer(400, 'The body must be a JSON object');
        RETURN;
    END IF;

    v_err := coalesce(
        defarm_field_unknown(p_body, p_fields || '{requester_id}'::text[]),
        (SELECT defarm_field_check(p_body, k.k, 'string', false)
         FROM unnest(p_fields) WITH ORDINALITY k (k, n)
         WHERE defarm_field_check(p_body, k.k, 'string', false) IS NOT NULL
         ORDER BY k.n LIMIT 1));

    IF v_err IS NOT NULL THEN
        a := defarm_answer(400, v_err);
        RETURN;
    END IF;

    IF NOT p_body ?& p_fields THEN
        a := defarm_answer(400, array_to_string(p_fields, ' and ')
                                || CASE cardinality(p_fields)
                                   WHEN 1 THEN ' is' ELSE ' are' END
                                || ' required');
        RETURN;
    END IF;

    role := defarm_workspace_role_name(p_body -> 'role');

    IF role IS NULL OR role = 'Owner' THEN
        a := defarm_answer(400, 'role must be Admin, Member or Viewer');
    END IF;
END
$$;

-- POST /api/workspaces/:workspace_id/members {user_id, role}: Owner or
-- Admin; role Admin, Member or Viewer (any case)

CREATE FUNCTION defarm_workspace_add_member(p_user text, p_id text,
                                            p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f       record;
    l       record;
    r       record;
    v_n     bigint;
    m       workspace_members;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'manage', 'adding a member');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    r := defarm_workspace_role_body(p_body, '{user_id,role}');

    IF r.a IS NOT NULL THEN
        RETURN r.a;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p_body ->> 'user_id')
    THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    IF EXISTS (SELECT 1 FROM workspace_members x
               WHERE x.workspace_id = (f.w).workspace_id
                 AND x.user_id = p_body ->> 'user_id')
    THEN
        RETURN defarm_answer(409, 'User is already a member of the '
                                  'workspace');
    END IF;

    SELECT count(*) INTO v_n FROM workspace_members x
    WHERE x.workspace_id = (f.w).workspace_id;

    IF v_n >= (f.w).max_members THEN
        RAISE EXCEPTION USING ERRCODE = 'DF409', HINT = 'conflict',
            MESSAGE = 'The workspace is full: its max_members is '
                      || (f.w).max_members,
            DETAIL = jsonb_build_object('limit', (f.w).max_members,
                                        'limit_source', 'max_members')
                     ::text;
    END IF;

    l := defarm_workspace_limits(f.w);

    IF l.tier_applies AND l.tier_limit IS NOT NULL
       AND v_n >= l.tier_limit
    THEN
        RAISE EXCEPTION USING ERRCODE = 'DF409', HINT = 'conflict',
            MESSAGE = 'The owner''s ' || l.tier || ' tier allows '
                      || l.tier_limit || ' workspace members',
            DETAIL = jsonb_build_object('limit', l.tier_limit,
                                        'tier', l.tier,
                                        'limit_source', 'tier')::text;
    END IF;

    INSERT INTO workspace_members (workspace_id, user_id, role, added_by)
    VALUES ((f.w).workspace_id, p_body ->> 'user_id', r.role, p_user)
    RETURNING * INTO m;

    RETURN defarm_workspace_touched((f.w).workspace_id, 201,
                                    defarm_workspace_member_json(m));
END
$$;

-- GET /api/workspaces/:workspace_id/members

CREATE FUNCTION defarm_workspace_members(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
    v  text;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'read', 'reading');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_workspace_member_json(m)
                              ORDER BY m.joined_at, m.user_id), '[]')::text
    INTO v
    FROM workspace_members m WHERE m.workspace_id = (f.w).workspace_id;

    RETURN defarm_answer(200, v);
END
$$;

-- the member :user_id of a workspace locked by defarm_workspace_find,
-- or the answer: 404 for a non-member, 403 for the Owner

CREATE FUNCTION defarm_workspace_target(p_ws uuid, p_member text,
                                        p_what text,
                                        OUT a defarm_answer,
                                        OUT m workspace_members)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO m FROM workspace_members x
    WHERE x.workspace_id = p_ws AND x.user_id = p_member;

    IF m.user_id IS NULL THEN
        a := defarm_answer(404, 'Member not found');

    ELSIF m.role = 'Owner' THEN
        a := defarm_answer(403, 'The workspace owner cannot be ' || p_what);
    END IF;
END
$$;

-- PUT /api/workspaces/:workspace_id/members/:user_id {role}: Owner or
-- Admin; the Owner's role does not change

CREATE FUNCTION defarm_workspace_member_role(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f       record;
    t       record;
    r       record;
    m       workspace_members;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'manage',
                               'changing a member''s role');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    r := defarm_workspace_role_body(p_body, '{role}');

    IF r.a IS NOT NULL THEN
        RETURN r.a;
    END IF;

    t := defarm_workspace_target((f.w).workspace_id, p_arg, 'demoted');

    IF t.a IS NOT NULL THEN
        RETURN t.a;
    END IF;

    UPDATE workspace_members SET role = r.role,
        updated_at = CASE WHEN role = r.role THEN updated_at
                          ELSE now() END
    WHERE workspace_id = (f.w).workspace_id AND user_id = p_arg
    RETURNING * INTO m;

    RETURN defarm_workspace_touched((f.w).workspace_id, 200,
                                    defarm_workspace_member_json(m));
END
$$;

-- DELETE /api/workspaces/:workspace_id/members/:user_id: Owner or Admin,
-- or a member leaving; never the Owner

CREATE FUNCTION defarm_workspace_remove_member(p_user text, p_id text,
                                               p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
    t  record;
BEGIN
    f := defarm_workspace_find(p_id, p_user,
                               CASE WHEN p_arg = p_user THEN 'write'
                                    ELSE 'manage' END,
                               'removing a member');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    t := defarm_workspace_target((f.w).workspace_id, p_arg, 'removed');

    IF t.a IS NOT NULL THEN
        RETURN t.a;
    END IF;

    DELETE FROM workspace_members
    WHERE workspace_id = (f.w).workspace_id AND user_id = p_arg;

    RETURN defarm_workspace_touched((f.w).workspace_id, 200,
        jsonb_build_object('success', true,
                           'workspace_id', (f.w).workspace_id,
                           'user_id', p_arg,
                           'message', 'Member removed'));
END
$$;

-- GET /api/workspaces/:workspace_id/stats: what the workspace holds (its
-- members) and the limits they meet

CREATE FUNCTION defarm_workspace_stats(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f        record;
    l        record;
    v_n      bigint;
    v_limit  bigint;
    v_roles  jsonb;
    v_last   timestamptz;
BEGIN
    f := defarm_workspace_find(p_id, p_user, 'read', 'reading');

    IF f.a IS NOT NULL THEN
        RETURN f.a;
    END IF;

    SELECT count(*), max(m.joined_at),
           jsonb_build_object(
               'Owner', count(*) FILTER (WHERE m.role = 'Owner'),
               'Admin', count(*) FILTER (WHERE m.role = 'Admin'),
               'Member', count(*) FILTER (WHERE m.role = 'Member'),
               'Viewer', count(*) FILTER (WHERE m.role = 'Viewer'))
    INTO v_n, v_last, v_roles
    FROM workspace_members m WHERE m.workspace_id = (f.w).workspace_id;

    l := defarm_workspace_limits(f.w);
    v_limit := (f.w).max_members;

    IF l.tier_applies AND l.tier_limit < v_limit THEN
        v_limit := l.tier_limit;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'workspace_id', (f.w).workspace_id,
        'total_members', v_n,
        'members_by_role', v_roles,
        'max_members', (f.w).max_members,
        'owner_tier', l.tier,
        'tier_max_workspace_members', l.tier_limit,
        'tier_limit_enforced', l.tier_applies,
        'member_limit', v_limit,
        'available_slots', greatest(v_limit - v_n, 0),
        'last_member_joined_at', defarm_rfc3339(v_last),
        'created_at', defarm_rfc3339((f.w).created_at),
        'updated_at', defarm_rfc3339((f.w).updated_at),
        'age_days', floor(extract(epoch FROM now() - (f.w).created_at)
                          / 86400)::bigint)::text);
END
$$;
