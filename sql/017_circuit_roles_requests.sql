-- Circuits: custom roles, join requests, the visibility toggle.  Same
-- shape as sql/016: (caller, circuit id, body, path argument) ->
-- defarm_answer, the permission checked with the caller's member row
-- locked.

-- ["push", "MANAGEROLES"] -> ["Push", "ManageRoles"]; NULL if a name is
-- unknown or the value is not an array of strings

CREATE FUNCTION defarm_circuit_perm_names(p jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_out  text[] := '{}';
    v_one  text;
    x      jsonb;
BEGIN
    IF jsonb_typeof(p) IS DISTINCT FROM 'array' THEN
        RETURN NULL;
    END IF;

    FOR x IN SELECT * FROM jsonb_array_elements(p) LOOP
        IF jsonb_typeof(x) <> 'string' THEN
            RETURN NULL;
        END IF;

        SELECT a INTO v_one FROM unnest(defarm_circuit_all_perms()) a
        WHERE lower(a) = lower(x #>> '{}');

        IF v_one IS NULL THEN
            RETURN NULL;
        END IF;

        IF NOT v_one = ANY (v_out) THEN
            v_out := v_out || v_one;
        END IF;
    END LOOP;

    RETURN v_out;
END
$$;

CREATE FUNCTION defarm_circuit_role_json(r circuit_roles) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'role_id', r.role_id, 'role_name', r.role_name,
        'permissions', to_jsonb(r.permissions),
        'description', r.description, 'color', r.color,
        'member_count', (SELECT count(*) FROM circuit_members m
                         WHERE m.circuit_id = r.circuit_id
                           AND m.custom_role_name = r.role_name),
        'created_timestamp', floor(extract(epoch FROM r.created_at))::bigint,
        'created_by', r.created_by,
        'is_default', r.is_default)
$$;

-- checks of a role's body: NULL, or the message

CREATE FUNCTION defarm_circuit_role_check(p_body jsonb, p_new boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_err  text;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN 'The body must be a JSON object';
    END IF;

    v_err := coalesce(defarm_field_type(p_body, 'role_name', 'string'),
                      defarm_field_type(p_body, 'description', 'string'),
                      defarm_field_type(p_body, 'color', 'string'),
                      defarm_field_type(p_body, 'permissions', 'array'));

    IF v_err IS NOT NULL THEN
        RETURN v_err;
    END IF;

    IF p_new AND (btrim(p_body ->> 'role_name') = ''
                  OR p_body ->> 'role_name' IS NULL
                  OR p_body -> 'permissions' IS NULL)
    THEN
        RETURN 'role_name and permissions are required';
    END IF;

    IF length(p_body ->> 'role_name') > 64
       OR length(p_body ->> 'description') > 1000
       OR length(p_body ->> 'color') > 32
    THEN
        RETURN 'role_name is at most 64 characters, description 1000, '
               'color 32';
    END IF;

    IF p_body ? 'permissions'
       AND defarm_circuit_perm_names(p_body -> 'permissions') IS NULL
    THEN
        RETURN 'Unknown permission in ' || (p_body ->> 'permissions')
               || ' (push, pull, invite, managemembers, managepermissions, '
               || 'delete, certify, audit, manageroles)';
    END IF;

    RETURN NULL;
END
$$;


-- POST /api/circuits/:id/roles {role_name, permissions, description?,
-- color?}: ManageRoles

CREATE FUNCTION defarm_circuit_role_create(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    e  text;
    r  circuit_roles;
BEGIN
    e := defarm_circuit_role_check(p_body, true);

    IF e IS NOT NULL THEN
        RETURN defarm_answer(400, e);
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManageRoles',
                            'creating a role');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    INSERT INTO circuit_roles (circuit_id, role_name, permissions,
                               description, color, created_by)
    VALUES (p_id::uuid, btrim(p_body ->> 'role_name'),
            defarm_circuit_perm_names(p_body -> 'permissions'),
            coalesce(p_body ->> 'description', ''), p_body ->> 'color',
            p_user)
    ON CONFLICT ON CONSTRAINT circuit_roles_name DO NOTHING
    RETURNING * INTO r;

    IF r.role_id IS NULL THEN
        RETURN defarm_answer(409, 'Role ' || btrim(p_body ->> 'role_name')
                                  || ' already exists');
    END IF;

    UPDATE circuits SET last_modified = now() WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(201, defarm_circuit_role_json(r)::text);
END
$$;


-- PUT /api/circuits/:id/roles/:role_name {permissions?, description?,
-- color?}: ManageRoles; the members holding it take the new permissions

CREATE FUNCTION defarm_circuit_role_update(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    e  text;
    r  circuit_roles;
BEGIN
    e := defarm_circuit_role_check(p_body, false);

    IF e IS NOT NULL THEN
        RETURN defarm_answer(400, e);
    END IF;

    IF p_body ? 'role_name' THEN
        RETURN defarm_answer(400, 'A role cannot be renamed');
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManageRoles',
                            'changing a role');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO r FROM circuit_roles
    WHERE circuit_id = p_id::uuid AND role_name = p_arg
    FOR UPDATE;

    IF r.role_id IS NULL THEN
        RETURN defarm_answer(404, 'Role not found: ' || p_arg);
    END IF;

    IF r.is_default THEN
        RETURN defarm_answer(400, 'Default roles cannot be changed');
    END IF;

    UPDATE circuit_roles SET
        permissions = coalesce(defarm_circuit_perm_names(
                                   p_body -> 'permissions'), permissions),
        description = coalesce(p_body ->> 'description', description),
        color = CASE WHEN p_body ? 'color' THEN p_body ->> 'color'
                     ELSE color END
    WHERE role_id = r.role_id
    RETURNING * INTO r;

    UPDATE circuit_members SET permissions = r.permissions
    WHERE circuit_id = p_id::uuid AND custom_role_name = r.role_name
      AND role <> 'Owner';

    UPDATE circuits SET last_modified = now() WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(200, defarm_circuit_role_json(r)::text);
END
$$;


-- DELETE /api/circuits/:id/roles/:role_name: ManageRoles; not a default
-- role, not one in use (an assignment holds the role FOR SHARE until it
-- commits, so the count below sees it)

CREATE FUNCTION defarm_circuit_role_delete(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
    n  bigint;
    r  circuit_roles;
BEGIN
    a := defarm_circuit_may(p_id, p_user, 'ManageRoles',
                            'deleting a role');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO r FROM circuit_roles
    WHERE circuit_id = p_id::uuid AND role_name = p_arg
    FOR UPDATE;

    IF r.role_id IS NULL THEN
        RETURN defarm_answer(404, 'Role not found: ' || p_arg);
    END IF;

    IF r.is_default THEN
        RETURN defarm_answer(400, 'Default roles cannot be deleted');
    END IF;

    SELECT count(*) INTO n FROM circuit_members
    WHERE circuit_id = p_id::uuid AND custom_role_name = p_arg;

    IF n > 0 THEN
        RETURN defarm_answer(409, 'Role ' || p_arg || ' is assigned to '
                                  || n || ' member(s): give them another '
                                  || 'role first');
    END IF;

    DELETE FROM circuit_roles WHERE role_id = r.role_id;
    UPDATE circuits SET last_modified = now() WHERE circuit_id = p_id::uuid;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'message', 'Custom role ''' || p_arg || ''' deleted successfully')
        ::text);
END
$$;

-- POST /api/circuits/:id/requests {message?}: anyone may ask to join an
-- Active circuit; the answer is the request (the original answered the
-- whole circuit, to someone not in it)

CREATE FUNCTION defarm_join_request_json(j circuit_join_requests)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'circuit_id', j.circuit_id, 'requester_id', j.requester_id,
        'requested_at', floor(extract(epoch FROM j.requested_at))::bigint,
        'message', j.message, 'status', j.status)
$$;

CREATE FUNCTION defarm_circuit_is_member(p_circuit uuid, p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM circuit_members
                   WHERE circuit_id = p_circuit AND member_id = p_user)
$$;

-- a join request (here and by a public join): a refused one may be made
-- again, a pending one only once; 201 with the request, or 409

CREATE FUNCTION defarm_join_request_open(p_circuit uuid, p_user text,
                                         p_message text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    j  circuit_join_requests;
BEGIN
    INSERT INTO circuit_join_requests (circuit_id, requester_id, message)
    VALUES (p_circuit, p_user, p_message)
    ON CONFLICT (circuit_id, requester_id) DO UPDATE
        SET message = EXCLUDED.message, status = 'Pending',
            requested_at = now(), decided_by = NULL, decided_at = NULL
        WHERE circuit_join_requests.status <> 'Pending'
    RETURNING * INTO j;

    IF j.circuit_id IS NULL THEN
        RETURN defarm_answer(409, 'A join request is already pending');
    END IF;

    RETURN defarm_answer(201, defarm_join_request_json(j)::text);
END
$$;

CREATE FUNCTION defarm_circuit_request(p_user text, p_id text,
                                       p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err  text;
    c      circuits;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    IF p_body IS NOT NULL AND jsonb_typeof(p_body) <> 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := defarm_field_type(p_body, 'message', 'string');

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF length(p_body ->> 'message') > 2000 THEN
        RETURN defarm_answer(400, 'message is at most 2000 characters');
    END IF;

    SELECT * INTO c FROM circuits WHERE circuit_id = p_id::uuid FOR SHARE;

    IF c.circuit_id IS NULL OR c.status <> 'Active' THEN
        RETURN defarm_answer(404, 'Circuit not found');
    END IF;

    IF defarm_circuit_is_member(c.circuit_id, p_user) THEN
        RETURN defarm_answer(409, 'Already a member of this circuit');
    END IF;

    RETURN defarm_join_request_open(c.circuit_id, p_user,
                                    p_body ->> 'message');
END
$$;


-- GET /api/circuits/:id/requests/pending: members

CREATE FUNCTION defarm_circuit_requests(p_user text, p_id text,
                                        p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(defarm_circuit_readable(p_id, p_user),
        defarm_answer(200, (
            SELECT coalesce(jsonb_agg(defarm_join_request_json(j)
                                      - 'circuit_id'
                                      ORDER BY j.requested_at,
                                               j.requester_id), '[]')::text
            FROM circuit_join_requests j
            WHERE j.circuit_id = p_id::uuid AND j.status = 'Pending')));
END
$$;


-- POST /api/circuits/:id/requests/:requester_id/approve {role?}
-- (default member) and .../reject: ManageMembers; the actor is the
-- caller, whatever the body says

CREATE FUNCTION defarm_circuit_decide(p_user text, p_id text, p_body jsonb,
                                      p_requester text, p_approve boolean)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a       defarm_answer;
    v_err   text;
    v_role  text := 'Member';
    j       circuit_join_requests;
BEGIN
    IF p_body IS NOT NULL AND jsonb_typeof(p_body) <> 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := defarm_field_type(p_body, 'role', 'string');

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_approve AND p_body ->> 'role' IS NOT NULL THEN
        v_role := defarm_circuit_role_name(p_body ->> 'role');

        IF v_role IS NULL OR v_role = 'Owner' THEN
            RETURN defarm_answer(400, 'Invalid role: ' || (p_body ->> 'role')
                                      || ' (admin, member or viewer)');
        END IF;
    END IF;

    a := defarm_circuit_may(p_id, p_user, 'ManageMembers',
                            'deciding a join request');
    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO j FROM circuit_join_requests
    WHERE circuit_id = p_id::uuid AND requester_id = p_requester
    FOR UPDATE;

    IF j.circuit_id IS NULL THEN
        RETURN defarm_answer(404, 'Join request not found');
    END IF;

    IF j.status <> 'Pending' THEN
        RETURN defarm_answer(409, 'The join request was already '
                                  || lower(j.status));
    END IF;

    UPDATE circuit_join_requests
    SET status = CASE WHEN p_approve THEN 'Approved' ELSE 'Rejected' END,
        decided_by = p_user, decided_at = now()
    WHERE circuit_id = j.circuit_id AND requester_id = j.requester_id;

    IF NOT p_approve THEN
        RETURN defarm_answer(200, '{"success": true, '
                                  '"message": "Join request rejected"}');
    END IF;

    INSERT INTO circuit_members (circuit_id, member_id, role, permissions)
    VALUES (j.circuit_id, j.requester_id, v_role,
            defarm_circuit_role_perms(v_role))
    ON CONFLICT DO NOTHING;

    UPDATE circuits SET last_modified = now() WHERE circuit_id = j.circuit_id;

    RETURN defarm_answer(200, defarm_circuit_json(j.circuit_id)::text);
END
$$;

CREATE FUNCTION defarm_circuit_approve(p_user text, p_id text, p_body jsonb,
                                       p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_decide(p_user, p_id, p_body, p_arg, true)
$$;

CREATE FUNCTION defarm_circuit_reject(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_circuit_decide(p_user, p_id, p_body, p_arg, false)
$$;


-- PUT /api/circuits/:id/visibility/toggle: the owner or an Admin member

CREATE FUNCTION defarm_circuit_toggle(p_user text, p_id text, p_body jsonb,
                                      p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    m  circuit_members;
    c  circuits;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid circuit ID format');
    END IF;

    m := defarm_circuit_member_lock(p_id::uuid, p_user);

    IF m.member_id IS NULL THEN
        RETURN defarm_answer(404, 'Circuit not found');
    END IF;

    IF m.role NOT IN ('Owner', 'Admin') THEN
        RETURN defarm_answer(403, 'Permission denied: only the owner or '
                                  'an Admin member changes visibility');
    END IF;

    UPDATE circuits
    SET allow_public_visibility = NOT allow_public_visibility,
        last_modified = now()
    WHERE circuit_id = p_id::uuid
    RETURNING * INTO c;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'circuit_id', c.circuit_id, 'name', c.name,
        'visibility', CASE WHEN c.allow_public_visibility THEN 'public'
                           ELSE 'private' END,
        'allow_public_visibility', c.allow_public_visibility)::text);
END
$$;
