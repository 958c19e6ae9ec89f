-- User activity: a user's own action log (/api/user-activity, §1.15; the
-- user_activities table of §3.1).  The original trusted the body's
-- user_id and never read the table back; here an entry is always the
-- caller's, and the routes read it.
--
-- Entries come from two places, told apart by "source":
--   client  POST /api/user-activity: what a client says the user did,
--           with the address and User-Agent the server saw;
--   server  recorded here, in the transaction of the change, for a few
--           rare actions whose actor the row itself names:
--             API key created, revoked or reactivated, deleted
--             circuit created (at commit, if it still exists)
--             circuit member added (by whoever added them)
--             join request approved or rejected (by the decider)
--             password reset (token used)
--             workspace created (when a workspaces table exists)
-- Nothing is recorded on the item, event or push paths.

CREATE FUNCTION defarm_user_activity_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{Create,Read,Update,Delete,Login,Logout,Export,Import,Share,'
           'Approve,Reject}'::text[]
$$;

CREATE FUNCTION defarm_user_activity_categories() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{Authentication,Items,Circuits,Events,Admin,ApiKeys,'
           'Workspaces}'::text[]
$$;

CREATE FUNCTION defarm_user_resource_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{Item,Circuit,Event,ApiKey,User,Workspace,Adapter}'::text[]
$$;

CREATE TABLE user_activities (
    activity_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id    text,
    activity_type   text NOT NULL
                    CHECK (activity_type = ANY (defarm_user_activity_types())),
    category        text NOT NULL
                    CHECK (category = ANY (defarm_user_activity_categories())),
    resource_type   text NOT NULL
                    CHECK (resource_type = ANY (defarm_user_resource_types())),
    resource_id     text NOT NULL,
    action          text NOT NULL,
    description     text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    success         boolean NOT NULL DEFAULT true,
    ip_address      text,
    user_agent      text,
    source          text NOT NULL DEFAULT 'client'
                    CHECK (source IN ('client', 'server')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_activities_user ON user_activities
    (user_id, created_at DESC, activity_id DESC);
CREATE INDEX user_activities_created ON user_activities
    (created_at DESC, activity_id DESC);


CREATE FUNCTION defarm_user_activity_time(p timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(p AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION defarm_user_activity_json(a user_activities) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'activity_id', a.activity_id, 'user_id', a.user_id,
        'workspace_id', a.workspace_id,
        'timestamp', defarm_user_activity_time(a.created_at),
        'activity_type', a.activity_type, 'category', a.category,
        'resource_type', a.resource_type, 'resource_id', a.resource_id,
        'action', a.action, 'description', a.description,
        'metadata', a.metadata, 'success', a.success,
        'ip_address', a.ip_address, 'user_agent', a.user_agent,
        'source', a.source)
$$;

-- a date-time of a filter or of the cleanup: RFC 3339, or a date alone
-- (midnight), a time without an offset being UTC; a "+" of an offset
-- that came unencoded in a query string arrives as a space.  NULL when
-- it is not one.

CREATE FUNCTION defarm_user_activity_parse_time(p text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v  text := p;
BEGIN
    v := regexp_replace(v, '^([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+) '
                           '([0-9]{2}(:?[0-9]{2})?)$', '\1+\2');

    IF v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        v := v || 'T00:00:00Z';

    ELSIF v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}'
              '(:[0-9]{2}(\.[0-9]{1,9})?)?$'
    THEN
        v := v || 'Z';

    ELSIF v !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}'
               '(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$'
    THEN
        RETURN NULL;
    END IF;

    RETURN v::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

-- the first of the enumerated fields given with a value not of its list:
-- its message; NULL when none

CREATE FUNCTION defarm_user_activity_enum_error(p jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT e.k || ' must be one of: ' || array_to_string(e.l, ', ')
    FROM (VALUES (1, 'activity_type', defarm_user_activity_types()),
                 (2, 'category', defarm_user_activity_categories()),
                 (3, 'resource_type', defarm_user_resource_types()))
         e (i, k, l)
    WHERE p ->> e.k IS NOT NULL AND NOT (p ->> e.k = ANY (e.l))
    ORDER BY e.i LIMIT 1
$$;

-- whose entries a caller reads or deletes: '' for everyone's (an admin
-- without a user_id), a user's id, or NULL for "User not found" (another
-- user's, for a non-admin: the same answer whether the user exists)

CREATE FUNCTION defarm_user_activity_subject(p_user text, p_filter text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN nullif(p_filter, '') IS NULL
            THEN CASE WHEN defarm_is_admin(p_user) THEN '' ELSE p_user END
        WHEN p_filter = p_user THEN p_user
        WHEN defarm_is_admin(p_user)
             AND EXISTS (SELECT 1 FROM users WHERE id = p_filter)
            THEN p_filter
    END
$$;


-- an entry the server records: the user's workspace goes with it; a user
-- who is gone (a cascade deleting their keys) records nothing

CREATE FUNCTION defarm_user_activity_add(p_user text, p_type text,
                                         p_category text,
                                         p_resource_type text,
                                         p_resource_id text, p_action text,
                                         p_description text, p_metadata jsonb,
                                         p_workspace text DEFAULT NULL)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO user_activities (user_id, workspace_id, activity_type,
                                 category, resource_type, resource_id,
                                 action, description, metadata, source)
    SELECT u.id, coalesce(p_workspace, u.workspace_id), p_type, p_category,
           p_resource_type, p_resource_id, p_action, p_description,
           coalesce(p_metadata, '{}'), 'server'
    FROM users u WHERE u.id = p_user
$$;


-- POST /api/user-activity: the caller's, whatever the body's user_id
-- says; ip_address and user_agent are the server's (p_ip, p_ua), not the
-- body's

CREATE FUNCTION defarm_user_activity_record(p_user text, p_id text,
                                            p_body jsonb, p_arg text,
                                            p_ip text, p_ua text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err   text;
    v_meta  jsonb;
    a       user_activities;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_check(p_body, 'activity_type', 'string', false),
        defarm_field_check(p_body, 'category', 'string', false),
        defarm_field_check(p_body, 'resource_type', 'string', false),
        defarm_field_check(p_body, 'resource_id', 'string', false),
        defarm_field_check(p_body, 'action', 'string', false),
        defarm_field_check(p_body, 'description', 'string', false),
        defarm_field_check(p_body, 'metadata', 'object', true),
        defarm_field_check(p_body, 'success', 'boolean', true),
        defarm_field_check(p_body, 'workspace_id', 'string', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    SELECT k || ' is required' INTO v_err
    FROM unnest(ARRAY['activity_type', 'category', 'resource_type',
                      'resource_id', 'action', 'description']) k
    WHERE NOT (p_body ? k)
       OR (k <> 'description' AND btrim(p_body ->> k) = '')
    LIMIT 1;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_err := defarm_user_activity_enum_error(p_body);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF length(p_body ->> 'resource_id') > 256 THEN
        RETURN defarm_answer(400, 'resource_id is at most 256 characters');
    END IF;

    IF length(p_body ->> 'action') > 128 THEN
        RETURN defarm_answer(400, 'action is at most 128 characters');
    END IF;

    IF length(p_body ->> 'description') > 2000 THEN
        RETURN defarm_answer(400, 'description is at most 2000 characters');
    END IF;

    IF length(p_body ->> 'workspace_id') > 128 THEN
        RETURN defarm_answer(400, 'workspace_id is at most 128 characters');
    END IF;

    v_meta := coalesce(nullif(p_body -> 'metadata', 'null'), '{}');

    IF octet_length(v_meta::text) > 16384 THEN
        RETURN defarm_answer(400, 'metadata is at most 16384 bytes of JSON');
    END IF;

    INSERT INTO user_activities (user_id, workspace_id, activity_type,
                                 category, resource_type, resource_id,
                                 action, description, metadata, success,
                                 ip_address, user_agent)
    SELECT u.id, coalesce(p_body ->> 'workspace_id', u.workspace_id),
           p_body ->> 'activity_type', p_body ->> 'category',
           p_body ->> 'resource_type', p_body ->> 'resource_id',
           p_body ->> 'action', p_body ->> 'description', v_meta,
           coalesce((p_body ->> 'success')::boolean, true), p_ip, p_ua
    FROM users u WHERE u.id = p_user
    RETURNING * INTO a;

    IF a.activity_id IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object(
            'activity_id', a.activity_id,
            'timestamp', defarm_user_activity_time(a.created_at),
            'activity', defarm_user_activity_json(a)))::text);
END
$$;


-- GET /api/user-activity?category&activity_type&resource_type&start_date
-- &end_date&search_query&user_id&page&per_page: newest first

CREATE FUNCTION defarm_user_activity_list(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err     text;
    v_who     text;
    v_start   timestamptz;
    v_end     timestamptz;
    v_search  text := nullif(p_query ->> 'search_query', '');
    v_page    int := 1;
    v_per     int := 50;
    v_where   text := 'true';
    v_total   bigint;
    v         jsonb;
BEGIN
    v_who := defarm_user_activity_subject(p_user, p_query ->> 'user_id');

    IF v_who IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    v_err := defarm_user_activity_enum_error(p_query);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF p_query ->> 'start_date' IS NOT NULL THEN
        v_start := defarm_user_activity_parse_time(p_query ->> 'start_date');

        IF v_start IS NULL THEN
            RETURN defarm_answer(400, 'start_date must be an RFC 3339 date '
                                      'and time, or a date');
        END IF;
    END IF;

    IF p_query ->> 'end_date' IS NOT NULL THEN
        v_end := defarm_user_activity_parse_time(p_query ->> 'end_date');

        IF v_end IS NULL THEN
            RETURN defarm_answer(400, 'end_date must be an RFC 3339 date '
                                      'and time, or a date');
        END IF;
    END IF;

    IF v_start > v_end THEN
        RETURN defarm_answer(400, 'start_date is after end_date');
    END IF;

    IF length(v_search) > 200 THEN
        RETURN defarm_answer(400, 'search_query is at most 200 characters');
    END IF;

    IF p_query ->> 'page' IS NOT NULL THEN
        IF p_query ->> 'page' !~ '^[0-9]{1,6}$'
           OR (p_query ->> 'page')::int < 1
        THEN
            RETURN defarm_answer(400, 'page must be 1 to 999999');
        END IF;
        v_page := (p_query ->> 'page')::int;
    END IF;

    IF p_query ->> 'per_page' IS NOT NULL THEN
        IF p_query ->> 'per_page' !~ '^[0-9]{1,3}$'
           OR (p_query ->> 'per_page')::int NOT BETWEEN 1 AND 200
        THEN
            RETURN defarm_answer(400, 'per_page must be 1 to 200');
        END IF;
        v_per := (p_query ->> 'per_page')::int;
    END IF;

    -- built from the filters given, so that each query is planned for
    -- them (the user's index for a user's log)

    IF v_who <> '' THEN
        v_where := v_where || ' AND a.user_id = $1';
    END IF;

    IF p_query ->> 'category' IS NOT NULL THEN
        v_where := v_where || ' AND a.category = $2';
    END IF;

    IF p_query ->> 'activity_type' IS NOT NULL THEN
        v_where := v_where || ' AND a.activity_type = $3';
    END IF;

    IF p_query ->> 'resource_type' IS NOT NULL THEN
        v_where := v_where || ' AND a.resource_type = $4';
    END IF;

    IF v_start IS NOT NULL THEN
        v_where := v_where || ' AND a.created_at >= $5';
    END IF;

    IF v_end IS NOT NULL THEN
        v_where := v_where || ' AND a.created_at <= $6';
    END IF;

    IF v_search IS NOT NULL THEN
        v_where := v_where
                   || ' AND (a.description ILIKE $7 ESCAPE ''\'''
                   || ' OR a.action ILIKE $7 ESCAPE ''\'''
                   || ' OR a.resource_id ILIKE $7 ESCAPE ''\'')';
    END IF;

    EXECUTE 'SELECT count(*) FROM user_activities a WHERE ' || v_where
    INTO v_total
    USING v_who, p_query ->> 'category', p_query ->> 'activity_type',
          p_query ->> 'resource_type', v_start, v_end,
          '%' || defarm_like_escape(v_search) || '%';

    EXECUTE 'SELECT coalesce(jsonb_agg(defarm_user_activity_json(a) '
            'ORDER BY a.created_at DESC, a.activity_id DESC), ''[]'') '
            'FROM (SELECT * FROM user_activities a WHERE ' || v_where
            || ' ORDER BY a.created_at DESC, a.activity_id DESC '
            'LIMIT $8 OFFSET $9) a'
    INTO v
    USING v_who, p_query ->> 'category', p_query ->> 'activity_type',
          p_query ->> 'resource_type', v_start, v_end,
          '%' || defarm_like_escape(v_search) || '%', v_per,
          (v_page - 1)::bigint * v_per;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object(
            'activities', v, 'total', v_total, 'page', v_page,
            'per_page', v_per,
            'total_pages', (v_total + v_per - 1) / v_per))::text);
END
$$;


-- GET /api/user-activity/:activity_id: the caller's own; an admin's, any

CREATE FUNCTION defarm_user_activity_get(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a  user_activities;
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        RETURN defarm_answer(400, 'Invalid activity ID format');
    END IF;

    SELECT * INTO a FROM user_activities WHERE activity_id = p_id::uuid;

    IF a.activity_id IS NULL
       OR (a.user_id <> p_user AND NOT defarm_is_admin(p_user))
    THEN
        RETURN defarm_answer(404, 'Activity not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_user_activity_json(a))::text);
END
$$;


-- GET /api/user-activity/stats?period_days=1..365 (30)&user_id=: the
-- caller's own over the last period_days; an admin's, everyone's or a
-- user's.  Days and hours are UTC; by_day has every day, zeros included.

CREATE FUNCTION defarm_user_activity_stats(p_user text, p_id text,
                                           p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_who    text;
    v_days   int := 30;
    v_end    timestamptz := now();
    v_start  timestamptz;
    v        jsonb;
BEGIN
    IF p_query ->> 'period_days' IS NOT NULL THEN
        IF p_query ->> 'period_days' !~ '^[0-9]{1,3}$'
           OR (p_query ->> 'period_days')::int NOT BETWEEN 1 AND 365
        THEN
            RETURN defarm_answer(400, 'period_days must be 1 to 365');
        END IF;
        v_days := (p_query ->> 'period_days')::int;
    END IF;

    v_who := defarm_user_activity_subject(p_user, p_query ->> 'user_id');

    IF v_who IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    v_start := v_end - make_interval(days => v_days);

    EXECUTE
       'WITH a AS MATERIALIZED ('
    || '    SELECT category, activity_type, resource_type, success,'
    || '           created_at AT TIME ZONE ''UTC'' AS t'
    || '    FROM user_activities'
    || '    WHERE created_at >= $2 AND created_at <= $3'
    || CASE WHEN v_who <> '' THEN ' AND user_id = $1' ELSE '' END
    || ') '
    || 'SELECT jsonb_build_object('
    || '  ''total_actions'', (SELECT count(*) FROM a),'
    || '  ''successful_actions'', (SELECT count(*) FROM a WHERE success),'
    || '  ''failed_actions'', (SELECT count(*) FROM a WHERE NOT success),'
    || '  ''success_rate'', (SELECT CASE WHEN count(*) = 0 THEN 100.0'
    || '        ELSE round(100.0 * count(*) FILTER (WHERE success)'
    || '                   / count(*), 2) END FROM a),'
    || '  ''by_category'', (SELECT coalesce(jsonb_object_agg(k, n), ''{}'')'
    || '        FROM (SELECT category k, count(*) n FROM a GROUP BY 1) s),'
    || '  ''by_type'', (SELECT coalesce(jsonb_object_agg(k, n), ''{}'')'
    || '        FROM (SELECT activity_type k, count(*) n FROM a'
    || '              GROUP BY 1) s),'
    || '  ''by_resource_type'', (SELECT coalesce(jsonb_object_agg(k, n),'
    || '                                      ''{}'')'
    || '        FROM (SELECT resource_type k, count(*) n FROM a'
    || '              GROUP BY 1) s),'
    || '  ''by_day'', (SELECT jsonb_agg(jsonb_build_object('
    || '                  ''date'', to_char(d, ''YYYY-MM-DD''),'
    || '                  ''count'', coalesce(c.n, 0)) ORDER BY d)'
    || '        FROM generate_series('
    || '                 ($2 AT TIME ZONE ''UTC'')::date::timestamp,'
    || '                 ($3 AT TIME ZONE ''UTC'')::date::timestamp,'
    || '                 interval ''1 day'') d'
    || '        LEFT JOIN (SELECT t::date AS day, count(*) n FROM a'
    || '                   GROUP BY 1) c ON c.day = d::date),'
    || '  ''most_active_hours'', (SELECT coalesce(jsonb_agg('
    || '                              jsonb_build_array(h, n)'
    || '                              ORDER BY n DESC, h), ''[]'')'
    || '        FROM (SELECT extract(hour FROM t)::int h, count(*) n'
    || '              FROM a GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) s))'
    INTO v
    USING v_who, v_start, v_end;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', v || jsonb_build_object(
            'period_days', v_days,
            'period_start', defarm_user_activity_time(v_start),
            'period_end', defarm_user_activity_time(v_end),
            'user_id', nullif(v_who, '')))::text);
END
$$;


-- DELETE /api/user-activity/cleanup {before_date, user_id?}: the caller's
-- entries older than before_date; an admin's, everyone's (or user_id's)

CREATE FUNCTION defarm_user_activity_cleanup(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err     text;
    v_who     text;
    v_before  timestamptz;
    v_count   bigint;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object' THEN
        RETURN defarm_answer(400, 'The body must be a JSON object');
    END IF;

    v_err := coalesce(
        defarm_field_check(p_body, 'before_date', 'string', false),
        defarm_field_check(p_body, 'user_id', 'string', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF NOT (p_body ? 'before_date') THEN
        RETURN defarm_answer(400, 'before_date is required');
    END IF;

    v_before := defarm_user_activity_parse_time(p_body ->> 'before_date');

    IF v_before IS NULL THEN
        RETURN defarm_answer(400, 'before_date must be an RFC 3339 date and '
                                  'time, or a date');
    END IF;

    v_who := defarm_user_activity_subject(p_user, p_body ->> 'user_id');

    IF v_who IS NULL THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    IF v_who = '' THEN
        DELETE FROM user_activities WHERE created_at < v_before;
    ELSE
        DELETE FROM user_activities
        WHERE user_id = v_who AND created_at < v_before;
    END IF;

    GET DIAGNOSTICS v_count = ROW_COUNT;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object(
            'deleted_count', v_count,
            'before_date', defarm_user_activity_time(v_before),
            'user_id', nullif(v_who, '')))::text);
END
$$;


-- What the server records ------------------------------------------------

-- API keys: made, revoked or reactivated (revoke, or PATCH is_active),
-- deleted.  The per-request usage never writes is_active, so the update
-- trigger does not fire for it.

CREATE FUNCTION defarm_user_activity_api_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM defarm_user_activity_add(
            NEW.user_id, 'Create', 'ApiKeys', 'ApiKey', NEW.id::text,
            'api_key_created', 'API key "' || NEW.name || '" created',
            jsonb_build_object('name', NEW.name,
                               'key_prefix', NEW.key_prefix,
                               'organization_type', NEW.organization_type,
                               'permissions', jsonb_build_object(
                                   'read', NEW.perm_read,
                                   'write', NEW.perm_write,
                                   'admin', NEW.perm_admin)));

    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM defarm_user_activity_add(
            NEW.user_id, 'Update', 'ApiKeys', 'ApiKey', NEW.id::text,
            CASE WHEN NEW.is_active THEN 'api_key_reactivated'
                 ELSE 'api_key_revoked' END,
            'API key "' || NEW.name || '" '
            || CASE WHEN NEW.is_active THEN 'reactivated' ELSE 'revoked' END,
            jsonb_build_object('name', NEW.name,
                               'key_prefix', NEW.key_prefix));

    ELSE
        PERFORM defarm_user_activity_add(
            OLD.user_id, 'Delete', 'ApiKeys', 'ApiKey', OLD.id::text,
            'api_key_deleted', 'API key "' || OLD.name || '" deleted',
            jsonb_build_object('name', OLD.name,
                               'key_prefix', OLD.key_prefix));
    END IF;

    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_user_activity_insert
    AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION defarm_user_activity_api_key();

CREATE TRIGGER api_keys_user_activity_active
    AFTER UPDATE OF is_active ON api_keys
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION defarm_user_activity_api_key();

CREATE TRIGGER api_keys_user_activity_delete
    AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION defarm_user_activity_api_key();


-- A circuit created: at commit, since a creation whose adapter is
-- refused deletes the circuit again in its transaction (sql/034)

CREATE FUNCTION defarm_user_activity_circuit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c  circuits;
BEGIN
    SELECT * INTO c FROM circuits WHERE circuit_id = NEW.circuit_id;

    IF c.circuit_id IS NOT NULL THEN
        PERFORM defarm_user_activity_add(
            c.owner_id, 'Create', 'Circuits', 'Circuit', c.circuit_id::text,
            'circuit_created', 'Circuit "' || c.name || '" created',
            jsonb_build_object('name', c.name));
    END IF;

    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER circuits_user_activity
    AFTER INSERT ON circuits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION defarm_user_activity_circuit();


-- A join request decided: the decider's

CREATE FUNCTION defarm_user_activity_join_decided() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM defarm_user_activity_add(
        NEW.decided_by,
        CASE WHEN NEW.status = 'Approved' THEN 'Approve' ELSE 'Reject' END,
        'Circuits', 'Circuit', NEW.circuit_id::text,
        'join_request_' || lower(NEW.status),
        'Join request of ' || NEW.requester_id || ' to "'
        || coalesce(defarm_circuit_name(NEW.circuit_id), '') || '" '
        || lower(NEW.status),
        jsonb_build_object('requester_id', NEW.requester_id));

    RETURN NULL;
END
$$;

CREATE TRIGGER circuit_join_requests_user_activity
    AFTER UPDATE ON circuit_join_requests
    FOR EACH ROW
    WHEN (OLD.status = 'Pending' AND NEW.status IN ('Approved', 'Rejected')
          AND NEW.decided_by IS NOT NULL)
    EXECUTE FUNCTION defarm_user_activity_join_decided();


-- A member added (POST /api/circuits/:id/members): the row does not name
-- who added them, the route does, so the route is wrapped

ALTER FUNCTION defarm_circuit_add_member(text, text, jsonb, text)
    RENAME TO defarm_circuit_add_member_unrecorded;

CREATE FUNCTION defarm_circuit_add_member(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    a  defarm_answer;
BEGIN
    a := defarm_circuit_add_member_unrecorded(p_user, p_id, p_body, p_arg);

    IF a.status = 200 THEN
        PERFORM defarm_user_activity_add(
            p_user, 'Update', 'Circuits', 'Circuit', p_id,
            'circuit_member_added',
            'Added ' || (p_body ->> 'member_id') || ' to "'
            || coalesce(defarm_circuit_name(p_id::uuid), '') || '" as '
            || defarm_circuit_role_name(p_body ->> 'role'),
            jsonb_build_object('member_id', p_body ->> 'member_id',
                               'role',
                               defarm_circuit_role_name(p_body ->> 'role')));
    END IF;

    RETURN a;
END
$$;


-- A password reset: its token used (the only write of used_at)

CREATE FUNCTION defarm_user_activity_password_reset() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM defarm_user_activity_add(
        NEW.user_id, 'Update', 'Authentication', 'User', NEW.user_id,
        'password_reset', 'Password reset with an e-mailed token', '{}');

    RETURN NULL;
END
$$;

CREATE TRIGGER password_reset_tokens_user_activity
    AFTER UPDATE OF used_at ON password_reset_tokens
    FOR EACH ROW WHEN (OLD.used_at IS NULL AND NEW.used_at IS NOT NULL)
    EXECUTE FUNCTION defarm_user_activity_password_reset();


-- A workspace created, when the workspaces migration ran before this one:
-- its row read as JSON, so that only owner_id and its id's name matter

CREATE FUNCTION defarm_user_activity_workspace() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    w     jsonb := to_jsonb(NEW);
    v_id  text := coalesce(w ->> 'workspace_id', w ->> 'id');
BEGIN
    PERFORM defarm_user_activity_add(
        coalesce(w ->> 'owner_id', w ->> 'created_by'), 'Create',
        'Workspaces', 'Workspace', coalesce(v_id, ''), 'workspace_created',
        'Workspace "' || coalesce(w ->> 'name', v_id, '') || '" created',
        jsonb_build_object('name', w ->> 'name'), v_id);

    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF to_regclass('workspaces') IS NOT NULL THEN
        CREATE TRIGGER workspaces_user_activity
            AFTER INSERT ON workspaces
            FOR EACH ROW EXECUTE FUNCTION defarm_user_activity_workspace();
    END IF;
END
$$;
