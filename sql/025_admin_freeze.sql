-- The admin side, first routes: freezing and unfreezing a user, and the
-- admin action log (persisted; the original's was lost).  Freezing moves
-- the user's token version on, so the tokens issued before it stay
-- refused after an unfreeze; the module drops the user's cached auth and
-- API-key records on every node before it answers.

CREATE TABLE admin_actions (
    action_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    admin_id            text NOT NULL,
    action_type         text NOT NULL,
    target_user_id      text,
    details             jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX admin_actions_created ON admin_actions (created_at DESC);
CREATE INDEX admin_actions_admin ON admin_actions (admin_id, created_at DESC);

-- PUT /api/admin/users/:user_id/freeze and .../unfreeze (p_arg 'Active'
-- or 'Suspended'); the router has checked the caller is an admin

CREATE FUNCTION defarm_admin_set_status(p_admin text, p_user text,
                                        p_status text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    u  users;
BEGIN
    IF p_user = p_admin AND p_status = 'Suspended' THEN
        RETURN defarm_answer(400, 'An administrator cannot freeze '
                                  'themselves');
    END IF;

    UPDATE users SET
        status = p_status,
        token_version = token_version
                        + CASE WHEN p_status = 'Suspended' THEN 1 ELSE 0 END
    WHERE id = p_user
    RETURNING * INTO u;

    IF u.id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    INSERT INTO admin_actions (admin_id, action_type, target_user_id,
                               details)
    VALUES (p_admin, CASE WHEN p_status = 'Suspended' THEN 'FreezeUser'
                          ELSE 'UnfreezeUser' END,
            p_user, jsonb_build_object('status', p_status));

    PERFORM defarm_notify(ARRAY[p_user],
                          CASE WHEN p_status = 'Suspended'
                               THEN 'AccountFrozen' ELSE 'AccountUnfrozen'
                          END,
                          CASE WHEN p_status = 'Suspended'
                               THEN 'Account frozen' ELSE 'Account unfrozen'
                          END,
                          'An administrator set your account to '
                          || p_status,
                          jsonb_build_object('status', p_status));

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'message', CASE WHEN p_status = 'Suspended'
                        THEN 'User frozen successfully'
                        ELSE 'User unfrozen successfully' END)::text);
END
$$;

CREATE FUNCTION defarm_admin_freeze(p_admin text, p_id text, p_body jsonb,
                                    p_user text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_admin_set_status(p_admin, p_user, 'Suspended')
$$;

CREATE FUNCTION defarm_admin_unfreeze(p_admin text, p_id text, p_body jsonb,
                                      p_user text)
RETURNS defarm_answer
LANGUAGE sql AS $$
    SELECT defarm_admin_set_status(p_admin, p_user, 'Active')
$$;

-- GET /api/admin/actions?admin_id=&limit=1..500 (100), newest first

CREATE FUNCTION defarm_admin_actions(p_admin text, p_id text,
                                     p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit  int := 100;
    v        text;
BEGIN
    IF p_query ->> 'limit' IS NOT NULL THEN
        IF p_query ->> 'limit' !~ '^[0-9]{1,3}$'
           OR (p_query ->> 'limit')::int NOT BETWEEN 1 AND 500
        THEN
            RETURN defarm_answer(400, 'limit must be 1 to 500');
        END IF;
        v_limit := (p_query ->> 'limit')::int;
    END IF;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'action_id', a.action_id, 'admin_id', a.admin_id,
               'action_type', a.action_type,
               'target_user_id', a.target_user_id, 'details', a.details,
               'timestamp', floor(extract(epoch FROM a.created_at))::bigint)
           ORDER BY a.created_at DESC, a.action_id), '[]')::text
    INTO v
    FROM (SELECT * FROM admin_actions a
          WHERE p_query ->> 'admin_id' IS NULL
             OR a.admin_id = p_query ->> 'admin_id'
          ORDER BY a.created_at DESC, a.action_id
          LIMIT v_limit) a;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'actions', v::jsonb)::text);
END
$$;
