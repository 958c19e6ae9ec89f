-- Circuits: organisations sharing items.  This migration holds the
-- circuits, their members, custom roles and join requests, and the
-- functions behind the first routes (create, read, list, update,
-- deactivate, members, roles).
--
-- Each route is one function of (caller, circuit id, body or query as
-- jsonb, second path argument) returning the HTTP status and either the
-- answer's JSON or the error's message: the permission check and the
-- change it guards are one statement, with the caller's member row locked
-- (FOR SHARE), so a concurrent role change cannot slip between them.

CREATE TABLE circuits (
    circuit_id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                        text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    owner_id                    text NOT NULL
                                REFERENCES users (id) ON DELETE CASCADE,
    status                      text NOT NULL DEFAULT 'Active'
                                CHECK (status IN ('Active', 'Inactive',
                                                  'Archived')),
    require_approval_for_push   boolean NOT NULL DEFAULT false,
    require_approval_for_pull   boolean NOT NULL DEFAULT false,
    allow_public_visibility     boolean NOT NULL DEFAULT false,
    public_settings             jsonb,
    access_password_hash        text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    last_modified               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX circuits_public ON circuits (created_at DESC)
    WHERE allow_public_visibility;

CREATE TABLE circuit_members (
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    member_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role                text NOT NULL
                        CHECK (role IN ('Owner', 'Admin', 'Member', 'Viewer')),
    custom_role_name    text,
    permissions         text[] NOT NULL,
    joined_at           timestamptz NOT NULL DEFAULT now(),

    PRIMARY KEY (circuit_id, member_id)
);

CREATE INDEX circuit_members_member ON circuit_members (member_id);

-- description and colour are kept (the original lost them)

CREATE TABLE circuit_roles (
    role_id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq                 bigserial,                  -- creation order
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    role_name           text NOT NULL,
    permissions         text[] NOT NULL,
    description         text NOT NULL DEFAULT '',
    color               text,
    is_default          boolean NOT NULL DEFAULT false,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT circuit_roles_name UNIQUE (circuit_id, role_name)
);

-- persisted (the original kept them in memory)

CREATE TABLE circuit_join_requests (
    circuit_id          uuid NOT NULL
                        REFERENCES circuits (circuit_id) ON DELETE CASCADE,
    requester_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message             text,
    status              text NOT NULL DEFAULT 'Pending'
                        CHECK (status IN ('Pending', 'Approved', 'Rejected')),
    requested_at        timestamptz NOT NULL DEFAULT now(),
    decided_by          text,
    decided_at          timestamptz,

    PRIMARY KEY (circuit_id, requester_id)
);


-- the nine permissions, and a base role's defaults (§2.4)

CREATE FUNCTION defarm_circuit_all_perms() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['Push', 'Pull', 'Invite', 'ManageMembers',
                 'ManagePermissions', 'Delete', 'Certify', 'Audit',
                 'ManageRoles']
$$;

CREATE FUNCTION defarm_circuit_role_perms(p_role text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_role
        WHEN 'Owner' THEN defarm_circuit_all_perms()
        WHEN 'Admin' THEN ARRAY['Push', 'Pull', 'Invite', 'ManageMembers',
                                'ManageRoles', 'Certify']
        WHEN 'Member' THEN ARRAY['Push', 'Pull']
        WHEN 'Viewer' THEN ARRAY['Pull']
    END
$$;

-- "owner", "ADMIN"... as the role's name, or NULL

CREATE FUNCTION defarm_circuit_role_name(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(p)
        WHEN 'owner' THEN 'Owner' WHEN 'admin' THEN 'Admin'
        WHEN 'member' THEN 'Member' WHEN 'viewer' THEN 'Viewer'
    END
$$;

CREATE FUNCTION defarm_is_uuid(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
$$;

-- the caller's member row, locked until the change is made: NULL when the
-- caller is not a member

CREATE FUNCTION defarm_circuit_member_lock(p_circuit uuid, p_user text)
RETURNS circuit_members
LANGUAGE plpgsql AS $$
DECLARE
    m  circuit_members;
BEGIN
    SELECT * INTO m FROM circuit_members
    WHERE circuit_id = p_circuit AND member_id = p_user
    FOR SHARE;

    RETURN m;
END
$$;

-- CircuitResponse

CREATE FUNCTION defarm_circuit_json(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  jsonb;
BEGIN
    SELECT jsonb_build_object(
        'circuit_id', c.circuit_id,
        'name', c.name,
        'description', c.description,
        'owner_id', c.owner_id,
        'created_timestamp', floor(extract(epoch FROM c.created_at))::bigint,
        'last_modified', floor(extract(epoch FROM c.last_modified))::bigint,
        'members', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'member_id', m.member_id, 'role', m.role,
                       'custom_role_name', m.custom_role_name,
                       'permissions', to_jsonb(m.permissions),
                       'joined_timestamp',
                       floor(extract(epoch FROM m.joined_at))::bigint)
                   ORDER BY m.joined_at, m.member_id)
            FROM circuit_members m WHERE m.circuit_id = c.circuit_id), '[]'),
        'permissions', jsonb_build_object(
            'require_approval_for_push', c.require_approval_for_push,
            'require_approval_for_pull', c.require_approval_for_pull,
            'allow_public_visibility', c.allow_public_visibility),
        'status', c.status,
        'pending_requests', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'requester_id', j.requester_id,
                       'requested_at',
                       floor(extract(epoch FROM j.requested_at))::bigint,
                       'message', j.message, 'status', j.status)
                   ORDER BY j.requested_at, j.requester_id)
            FROM circuit_join_requests j
            WHERE j.circuit_id = c.circuit_id AND j.status = 'Pending'),
            '[]'),
        'custom_roles', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'role_id', r.role_id, 'role_name', r.role_name,
                       'permissions', to_jsonb(r.permissions),
                       'description', r.description, 'color', r.color,
                       'member_count', (SELECT count(*) FROM circuit_members m
                                        WHERE m.circuit_id = r.circuit_id
                                          AND m.custom_role_name
                                              = r.role_name),
                       'created_timestamp',
                       floor(extract(epoch FROM r.created_at))::bigint,
                       'created_by', r.created_by,
                       'is_default', r.is_default)
                   ORDER BY r.seq)
            FROM circuit_roles r WHERE r.circuit_id = c.circuit_id), '[]'),
        'public_settings', CASE WHEN c.public_settings IS NULL THEN NULL
            ELSE c.public_settings
                 || jsonb_build_object('has_password',
                                       c.access_password_hash IS NOT NULL)
            END)
    INTO v
    FROM circuits c WHERE c.circuit_id = p_id;

    RETURN v;
END
$$;

-- a route's answer: a status and the JSON, or a status and a message

CREATE TYPE defarm_answer AS (status int, body text);

CREATE FUNCTION defarm_answer(p_status int, p_body text)
RETURNS defarm_answer
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_status, p_body)::defarm_answer
$$;

-- a field of the body: NULL when absent; an error message when present
-- with another type

CREATE FUNCTION defarm_field_type(p_body jsonb, p_key text, p_type text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT (p_body ? p_key) OR jsonb_typeof(p_body -> p_key) = 'null'
            THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) <> p_type
            THEN p_key || ' must be a ' || p_type
    END
$$;


-- the caller, locked, if a member holding p_perm (or the owner); else the
-- answer to give: 404 for a non-member, 403 without the permission

CREATE FUNCTION defarm_circuit_may(p_circuit text, p_user text,
                                   p_perm text, p_what text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    m  circuit_members;
BEGIN
    IF NOT defarm_is_uuid(p_circuit) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    m := defarm_circuit_member_lock(p_circuit::uuid, p_user);

    IF m.member_id IS NULL THEN
        RETURN defarm_answer(404, 'Circuit not found');
    END IF;

    IF m.role <> 'Owner' AND NOT p_perm = ANY (m.permissions) THEN
        RETURN defarm_answer(403, 'Permission denied: ' || p_what
                                  || ' needs ' || p_perm);
    END IF;

    RETURN NULL;
END
$$;


-- POST /api/circuits

CREATE FUNCTION defarm_circuit_create(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err   text;
    v_name  text;
    v_id    uuid;
    k       text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'name', 'string'),
                      defarm_field_type(p_body, 'description', 'string'));

    FOREACH k IN ARRAY ARRAY['allow_public_visibility',
                             'require_approval_for_push',
                             'require_approval_for_pull']
    LOOP
        v_err := coalesce(v_err, defarm_field_type(p_body, k, 'boolean'));
    END LOOP;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_name := btrim(p_body ->> 'name');

    IF v_name IS NULL OR v_name = '' THEN
        RETURN defarm_answer(400, 'name is required');
    END IF;

    IF length(v_name) > 200 OR length(p_body ->> 'description') > 5000 THEN
        RETURN defarm_answer(400, 'name is at most 200 characters, '
                                  'description at most 5000');
    END IF;

    FOREACH k IN ARRAY ARRAY['public_settings', 'adapter_config',
                             'alias_config']
    LOOP
        IF p_body ? k AND jsonb_typeof(p_body -> k) <> 'null' THEN
            RETURN defarm_answer(400, k || ' is not supported yet');
        END IF;
    END LOOP;

    INSERT INTO circuits (name, description, owner_id,
                          require_approval_for_push,
                          require_approval_for_pull,
                          allow_public_visibility)
    VALUES (v_name, coalesce(p_body ->> 'description', ''), p_user,
            coalesce((p_body ->> 'require_approval_for_push')::boolean,
                     false),
            coalesce((p_body ->> 'require_approval_for_pull')::boolean,
                     false),
            coalesce((p_body ->> 'allow_public_visibility')::boolean, false))
    RETURNING circuit_id INTO v_id;

    INSERT INTO circuit_members (circuit_id, member_id, role, permissions)
    VALUES (v_id, p_user, 'Owner', defarm_circuit_role_perms('Owner'));

    INSERT INTO circuit_roles (circuit_id, role_name, permissions,
                               description, color, is_default, created_by)
    VALUES (v_id, 'Owner', defarm_circuit_role_perms('Owner'),
            'Every permission', '#gold', true, p_user),
           (v_id, 'Member', defarm_circuit_role_perms('Member'),
            'Push and pull items', '#gray', true, p_user);

    RETURN defarm_answer(200, defarm_circuit_json(v_id)::text);
END
$$;


-- GET /api/circuits/:id: members (and administrators) only; another
-- circuit is the same 404 as an unknown one

CREATE FUNCTION defarm_circuit_visible(p_id uuid, p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM circuit_members m
                   WHERE m.circuit_id = p_id AND m.member_id = p_user)
           OR (EXISTS (SELECT 1 FROM circuits c WHERE c.circuit_id = p_id)
               AND defarm_is_admin(p_user))
$$;

-- a circuit the caller may read: NULL, or the answer to give (400 for a
-- malformed id, 404 for a circuit they are not in)

CREATE FUNCTION defarm_circuit_readable(p_id text, p_user text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF NOT defarm_circuit_visible(p_id::uuid, p_user) THEN
        RETURN defarm_answer(404, 'Circuit not found');
    END IF;

    RETURN NULL;
END
$$;

-- (PL/pgSQL: a SQL function would be inlined, and a malformed id cast
-- while the statement is planned, before the check)

CREATE FUNCTION defarm_circuit_get(p_user text, p_id text, p_body jsonb,
                                   p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_circuit_readable(p_id, p_user),
                    defarm_answer(200,
                                  defarm_circuit_json(p_id::uuid)::text));
END
$$;


-- GET /api/circuits, /api/circuits/list ?include_public=&status=
-- the caller's circuits, and (include_public, the default) the public
-- ones, newest first; GET /api/circuits/member/:member_id (p_arg): the
-- circuits that member shares with the caller

CREATE FUNCTION defarm_circuit_list(p_user text, p_id text, p_query jsonb,
                                    p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_public  text := lower(coalesce(p_query ->> 'include_public', 'true'));
    v_status  text := lower(p_query ->> 'status');
    v         text;
BEGIN
    IF v_public NOT IN ('true', 'false') THEN
        RETURN defarm_answer(400, 'include_public must be true or false');
    END IF;

    IF v_status IS NOT NULL
       AND v_status NOT IN ('active', 'inactive', 'archived')
    THEN
        RETURN defarm_answer(400, 'status must be active, inactive or '
                                  'archived');
    END IF;

    SELECT coalesce(jsonb_agg(defarm_circuit_json(c.circuit_id)
                              ORDER BY c.created_at DESC, c.circuit_id),
                    '[]')::text
    INTO v
    FROM circuits c
    WHERE (v_status IS NULL OR lower(c.status) = v_status)
      AND CASE WHEN p_arg IS NOT NULL THEN
              EXISTS (SELECT 1 FROM circuit_members m
                      WHERE m.circuit_id = c.circuit_id
                        AND m.member_id = p_arg)
              AND (EXISTS (SELECT 1 FROM circuit_members m
                           WHERE m.circuit_id = c.circuit_id
                             AND m.member_id = p_user)
                   OR defarm_is_admin(p_user))
          ELSE
              EXISTS (SELECT 1 FROM circuit_members m
                      WHERE m.circuit_id = c.circuit_id
                        AND m.member_id = p_user)
              OR (v_public = 'true' AND c.allow_public_visibility)
          END;

    RETURN defarm_answer(200, v);
END
$$;


-- PUT|PATCH /api/circuits/:id {name?, description?, permissions?: {...}}
-- owner or ManagePermissions

CREATE FUNCTION defarm_circuit_update(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err    text;
    v_perms  jsonb;
    v_name   text;
    a        defarm_answer;
    k        text;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'name', 'string'),
                      defarm_field_type(p_body, 'description', 'string'),
                      defarm_field_type(p_body, 'permissions', 'object'));
    v_perms := coalesce(p_body -> 'permissions', '{}');

    IF jsonb_typeof(v_perms) = 'null' THEN
        v_perms := '{}';
    END IF;

    FOREACH k IN ARRAY ARRAY['allow_public_visibility',
                             'require_approval_for_push',
                             'require_approval_for_pull']
    LOOP
        v_err := coalesce(v_err,
                          'permissions.' || defarm_field_type(v_perms, k,
                                                              'boolean'));
    END LOOP;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_name := btrim(p_body ->> 'name');

    IF v_name = '' OR length(v_name) > 200
       OR length(p_body ->> 'description') > 5000
    THEN
        RETURN defarm_answer(400, 'name must be 1 to 200 characters, '
                                  'description at most 5000');
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManagePermissions', 'updating a circuit');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    UPDATE circuits c SET
        name = coalesce(v_name, c.name),
        description = coalesce(p_body ->> 'description', c.description),
        require_approval_for_push =
            coalesce((v_perms ->> 'require_approval_for_push')::boolean,
                     c.require_approval_for_push),
        require_approval_for_pull =
            coalesce((v_perms ->> 'require_approval_for_pull')::boolean,
                     c.require_approval_for_pull),
        allow_public_visibility =
            coalesce((v_perms ->> 'allow_public_visibility')::boolean,
                     c.allow_public_visibility),
        last_modified = now()
    WHERE c.circuit_id = p_id::uuid;

    RETURN defarm_answer(200, defarm_circuit_json(p_id::uuid)::text);
END
$$;


-- PUT /api/circuits/:id/deactivate: the owner, or Delete

CREATE FUNCTION defarm_circuit_deactivate(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'Delete', 'deactivating a circuit');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    UPDATE circuits SET status = 'Inactive', last_modified = now()
    WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(200, defarm_circuit_json(p_id::uuid)::text);
END
$$;


-- POST /api/circuits/:id/members {member_id, role}: Invite

CREATE FUNCTION defarm_circuit_add_member(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err   text;
    v_role  text;
    v_new   text;
    a       defarm_answer;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'member_id', 'string'),
                      defarm_field_type(p_body, 'role', 'string'));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_new := p_body ->> 'member_id';

    IF v_new IS NULL OR v_new = '' OR p_body ->> 'role' IS NULL THEN
        RETURN defarm_answer(400, 'member_id and role are required');
    END IF;

    v_role := defarm_circuit_role_name(p_body ->> 'role');

    IF v_role IS NULL THEN
        RETURN defarm_answer(400, 'Invalid role: ' || (p_body ->> 'role')
                                  || ' (admin, member or viewer)');
    END IF;

    IF v_role = 'Owner' THEN
        RETURN defarm_answer(400, 'A circuit has one owner: add the '
                                  'member as admin, member or viewer');
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'Invite', 'adding a member');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM users WHERE id = v_new) THEN
        RETURN defarm_answer(404, 'User not found: ' || v_new);
    END IF;

    INSERT INTO circuit_members (circuit_id, member_id, role, permissions)
    VALUES (p_id::uuid, v_new, v_role, defarm_circuit_role_perms(v_role))
    ON CONFLICT DO NOTHING;

    IF NOT FOUND THEN
        RETURN defarm_answer(409, 'User ' || v_new
                                  || ' is already a member');
    END IF;

    UPDATE circuits SET last_modified = now() WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(200, defarm_circuit_json(p_id::uuid)::text);
END
$$;


-- PATCH /api/circuits/:id/members/:user_id {role, custom_role_name?}:
-- ManageMembers; the member takes the custom role's permissions

CREATE FUNCTION defarm_circuit_assign_role(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err   text;
    v_name  text;
    v_perm  text[];
    a       defarm_answer;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'role', 'string'),
                      defarm_field_type(p_body, 'custom_role_name',
                                        'string'));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_name := coalesce(nullif(p_body ->> 'custom_role_name', ''),
                       p_body ->> 'role');

    IF v_name IS NULL OR v_name = '' THEN
        RETURN defarm_answer(400, 'role is required');
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManageMembers', 'assigning a role');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT r.permissions INTO v_perm FROM circuit_roles r
    WHERE r.circuit_id = p_id::uuid AND r.role_name = v_name
    FOR SHARE;

    IF v_perm IS NULL THEN
        RETURN defarm_answer(404, 'Role not found: ' || v_name);
    END IF;

    UPDATE circuit_members SET permissions = v_perm,
                               custom_role_name = v_name
    WHERE circuit_id = p_id::uuid AND member_id = p_arg AND role <> 'Owner';

    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM circuit_members
                   WHERE circuit_id = p_id::uuid AND member_id = p_arg)
        THEN
            RETURN defarm_answer(400, 'The owner keeps every permission');
        END IF;

        RETURN defarm_answer(404, 'Member not found: ' || p_arg);
    END IF;

    UPDATE circuits SET last_modified = now() WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(200, defarm_circuit_json(p_id::uuid)::text);
END
$$;


-- GET /api/circuits/:id/roles: members only

CREATE FUNCTION defarm_circuit_roles(p_user text, p_id text, p_body jsonb,
                                     p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_circuit_readable(p_id, p_user),
                    defarm_answer(200, (defarm_circuit_json(p_id::uuid)
                                        -> 'custom_roles')::text));
END
$$;
