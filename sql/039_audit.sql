-- Audit (issue 15): audit events, security incidents and compliance
-- reports, all persisted (the original kept incidents and reports in
-- stubs).  Served at /audit/audit/* (the original's doubled prefix) and
-- at /api/audit/*.  Every route needs a principal; an administrator reads
-- and writes everything, a user their own: the events recorded about
-- them, the incidents they reported or are assigned, the reports they
-- asked for.  A user reads their events back max_audit_retention_days of
-- their tier (tier_limits) at most, whether defarm_tier_limits is on or
-- not (it is what they may read, not a quota); a GDPR export is
-- everything, whatever the tier.
--
-- The values are the original's, lower-case, as its answers wrote them:
-- event_type security|data|access|compliance|system|user, outcome
-- success|failure|warning|blocked, severity low|medium|high|critical
-- (accepted in any case).  An administrator's action (admin_actions) is
-- also an audit event: a trigger on admin_actions, which no hot path
-- writes, records it (system, high, action = the action's type).

CREATE TABLE audit_events (
    event_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         text NOT NULL,
    recorded_by     text,
    event_type      text NOT NULL
                    CHECK (event_type IN ('security', 'data', 'access',
                                          'compliance', 'system', 'user')),
    action          text NOT NULL,
    resource        text NOT NULL,
    resource_id     text,
    outcome         text NOT NULL
                    CHECK (outcome IN ('success', 'failure', 'warning',
                                       'blocked')),
    severity        text NOT NULL
                    CHECK (severity IN ('low', 'medium', 'high',
                                        'critical')),
    timestamp       timestamptz NOT NULL DEFAULT now(),
    details         jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    signature       text,
    compliance      jsonb NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

-- no foreign key to users: the trail of a deleted user is history, kept,
-- and "system" records are no user's
CREATE INDEX audit_events_user ON audit_events (user_id, timestamp DESC);
CREATE INDEX audit_events_time ON audit_events (timestamp DESC);

CREATE TABLE security_incidents (
    incident_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title               text NOT NULL,
    description         text NOT NULL,
    severity            text NOT NULL
                        CHECK (severity IN ('low', 'medium', 'high',
                                            'critical')),
    category            text NOT NULL
                        CHECK (category IN ('unauthorized-access',
                                            'data-breach',
                                            'system-compromise',
                                            'policy-violation',
                                            'denial-of-service')),
    status              text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'inprogress', 'resolved',
                                          'closed')),
    affected_users      text[] NOT NULL DEFAULT '{}',
    affected_resources  text[] NOT NULL DEFAULT '{}',
    related_event_ids   uuid[] NOT NULL DEFAULT '{}',
    confidential        boolean NOT NULL DEFAULT false,
    reported_by         text NOT NULL,
    assigned_to         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz
);

CREATE INDEX security_incidents_reporter
    ON security_incidents (reported_by, created_at DESC);
CREATE INDEX security_incidents_assignee
    ON security_incidents (assigned_to, created_at DESC);
CREATE INDEX security_incidents_created ON security_incidents (created_at);

CREATE TABLE compliance_reports (
    report_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    report_type         text NOT NULL
                        CHECK (report_type IN ('gdpr-data-subject',
                                               'ccpa-consumer',
                                               'sox-financial',
                                               'audit-trail',
                                               'security-incident',
                                               'gdpr', 'food-safety')),
    requested_by        text NOT NULL,
    subject_user_id     text,                 -- NULL: every user's
    dfid                text,                 -- food-safety's item
    period_start        timestamptz,
    period_end          timestamptz,
    scope               jsonb NOT NULL DEFAULT '{}',
    export_format       text NOT NULL DEFAULT 'json',
    include_evidence    boolean NOT NULL DEFAULT false,
    status              text NOT NULL DEFAULT 'completed',
    summary             text NOT NULL,
    total_events        bigint NOT NULL,
    compliance_status   text NOT NULL,
    content             jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX compliance_reports_requester
    ON compliance_reports (requested_by, created_at DESC);
CREATE INDEX compliance_reports_created
    ON compliance_reports (created_at DESC);


-- the original's values

CREATE FUNCTION defarm_audit_event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{security,data,access,compliance,system,user}'::text[]
$$;

CREATE FUNCTION defarm_audit_outcomes() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{success,failure,warning,blocked}'::text[]
$$;

CREATE FUNCTION defarm_audit_severities() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{low,medium,high,critical}'::text[]
$$;

CREATE FUNCTION defarm_audit_categories() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT '{unauthorized-access,data-breach,system-compromise,'
           'policy-violation,denial-of-service}'::text[]
$$;

CREATE FUNCTION defarm_audit_severity_rank(p text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(defarm_audit_severities(), p)
$$;

CREATE FUNCTION defarm_audit_unix(p timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(extract(epoch FROM p))::bigint
$$;


-- checks of a body's fields: a message, or NULL when the field is right
-- (or absent, where that is allowed)

-- a string, of p_allowed whatever its case
CREATE FUNCTION defarm_audit_enum_error(p_body jsonb, p_key text,
                                        p_allowed text[], p_required boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN
            CASE WHEN p_required THEN p_key || ' is required' END
        WHEN jsonb_typeof(p_body -> p_key) <> 'string'
             OR NOT lower(p_body ->> p_key) = ANY (p_allowed)
        THEN p_key || ' must be one of: '
             || array_to_string(p_allowed, ', ')
    END
$$;

-- an array of such strings
CREATE FUNCTION defarm_audit_enums_error(p_body jsonb, p_key text,
                                         p_allowed text[])
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) <> 'array'
             OR EXISTS (SELECT 1
                        FROM jsonb_array_elements(p_body -> p_key) x
                        WHERE jsonb_typeof(x) <> 'string'
                           OR NOT lower(x #>> '{}') = ANY (p_allowed))
        THEN p_key || ' must be an array of: '
             || array_to_string(p_allowed, ', ')
    END
$$;

-- a non-empty string of at most p_max characters
CREATE FUNCTION defarm_audit_text_error(p_body jsonb, p_key text,
                                        p_required boolean, p_max int)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN
            CASE WHEN p_required THEN p_key || ' is required' END
        WHEN jsonb_typeof(p_body -> p_key) <> 'string'
            THEN p_key || ' must be a string'
        WHEN btrim(p_body ->> p_key) = ''
            THEN p_key || ' must not be empty'
        WHEN length(p_body ->> p_key) > p_max
            THEN p_key || ' must be at most ' || p_max || ' characters'
    END
$$;

-- an array of non-empty strings
CREATE FUNCTION defarm_audit_texts_error(p_body jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) <> 'array'
             OR EXISTS (SELECT 1
                        FROM jsonb_array_elements(p_body -> p_key) x
                        WHERE jsonb_typeof(x) <> 'string'
                           OR btrim(x #>> '{}') = ''
                           OR length(x #>> '{}') > 255)
        THEN p_key || ' must be an array of non-empty strings'
    END
$$;

-- a Unix time in seconds (a whole number, year 9999 at most)
CREATE FUNCTION defarm_audit_time_error(p_body jsonb, p_key text,
                                        p_required boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN
            CASE WHEN p_required THEN p_key || ' is required' END
        WHEN jsonb_typeof(p_body -> p_key) <> 'number'
             OR (p_body ->> p_key) !~ '^[0-9]{1,12}$'
             OR (p_body ->> p_key)::bigint > 253402300799
        THEN p_key || ' must be a Unix time in seconds'
    END
$$;

CREATE FUNCTION defarm_audit_time(p_body jsonb, p_key text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp((p_body ->> p_key)::bigint)
$$;

-- metadata {user_agent?, ip_address?, location?, device_id?,
-- session_duration?}
CREATE FUNCTION defarm_audit_metadata_error(p_body jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) <> 'object'
            THEN p_key || ' must be an object'
        ELSE coalesce(
            (SELECT p_key || '.' || k || ' must be a string'
             FROM unnest('{user_agent,ip_address,location,device_id}'
                         ::text[]) k
             WHERE jsonb_typeof(p_body -> p_key -> k)
                   NOT IN ('string', 'null')
             ORDER BY k LIMIT 1),
            CASE WHEN jsonb_typeof(p_body -> p_key -> 'session_duration')
                      NOT IN ('number', 'null')
                      OR (p_body -> p_key ->> 'session_duration')
                         !~ '^[0-9]{1,15}$'
                 THEN p_key || '.session_duration must be a whole number '
                      'of seconds' END)
    END
$$;

-- the five fields the original's metadata has, null when not given
CREATE FUNCTION defarm_audit_metadata(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'user_agent', p -> 'user_agent', 'ip_address', p -> 'ip_address',
        'location', p -> 'location', 'device_id', p -> 'device_id',
        'session_duration', p -> 'session_duration')
$$;

-- compliance {gdpr?, ccpa?, hipaa?, sox?}: booleans
CREATE FUNCTION defarm_audit_compliance_error(p_body jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NULL OR p_body -> p_key = 'null' THEN NULL
        WHEN jsonb_typeof(p_body -> p_key) <> 'object'
            THEN p_key || ' must be an object'
        ELSE (SELECT p_key || '.' || k || ' must be true or false'
              FROM unnest('{gdpr,ccpa,hipaa,sox}'::text[]) k
              WHERE jsonb_typeof(p_body -> p_key -> k)
                    NOT IN ('boolean', 'null')
              ORDER BY k LIMIT 1)
    END
$$;

CREATE FUNCTION defarm_audit_compliance(p jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('gdpr', p -> 'gdpr', 'ccpa', p -> 'ccpa',
                              'hipaa', p -> 'hipaa', 'sox', p -> 'sox')
$$;

CREATE FUNCTION defarm_audit_object_error(p_body jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_body -> p_key IS NOT NULL AND p_body -> p_key <> 'null'
             AND jsonb_typeof(p_body -> p_key) <> 'object'
        THEN p_key || ' must be an object'
    END
$$;

-- an array's strings, lower-case
CREATE FUNCTION defarm_audit_lower(p jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'array'
                THEN ARRAY(SELECT lower(x) FROM jsonb_array_elements_text(p) x)
           END
$$;

CREATE FUNCTION defarm_audit_texts(p jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'array'
                THEN ARRAY(SELECT DISTINCT x
                           FROM jsonb_array_elements_text(p) x)
           END
$$;


-- who may see what

-- the oldest event time a user may read back: NULL for no bound (an
-- administrator)
CREATE FUNCTION defarm_audit_horizon(p_user text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT defarm_is_admin(p_user)
                THEN now() - make_interval(
                                 days => coalesce(
                                     (SELECT l.max_audit_retention_days
                                      FROM users u
                                      JOIN tier_limits l ON l.tier = u.tier
                                      WHERE u.id = p_user), 0))
           END
$$;

CREATE FUNCTION defarm_audit_incident_visible(i security_incidents,
                                              p_user text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(i.reported_by = p_user OR i.assigned_to = p_user, false)
           OR defarm_is_admin(p_user)
$$;


-- answers

CREATE FUNCTION defarm_audit_event_json(e audit_events) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'event_id', e.event_id, 'user_id', e.user_id,
        'event_type', e.event_type, 'action', e.action,
        'resource', e.resource, 'resource_id', e.resource_id,
        'outcome', e.outcome, 'severity', e.severity,
        'timestamp', defarm_audit_unix(e.timestamp),
        'details', e.details,
        'metadata', defarm_audit_metadata(e.metadata),
        'signature', e.signature,
        'compliance', defarm_audit_compliance(e.compliance),
        'recorded_by', e.recorded_by)
$$;

CREATE FUNCTION defarm_audit_incident_json(i security_incidents)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'incident_id', i.incident_id, 'title', i.title,
        'description', i.description, 'severity', i.severity,
        'category', i.category, 'status', i.status,
        'affected_users', to_jsonb(i.affected_users),
        'affected_resources', to_jsonb(i.affected_resources),
        'related_event_ids', to_jsonb(i.related_event_ids),
        'confidential', i.confidential,
        'created_at', defarm_audit_unix(i.created_at),
        'updated_at', defarm_audit_unix(i.updated_at),
        'assigned_to', i.assigned_to, 'reported_by', i.reported_by,
        'resolved_at', defarm_audit_unix(i.resolved_at))
$$;

CREATE FUNCTION defarm_audit_report_json(r compliance_reports)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'report_id', r.report_id, 'report_type', r.report_type,
        'start_date', defarm_audit_unix(r.period_start),
        'end_date', defarm_audit_unix(r.period_end),
        'scope', r.scope, 'format', r.export_format,
        'include_evidence', r.include_evidence, 'status', r.status,
        'created_at', defarm_audit_unix(r.created_at),
        'summary', r.summary, 'total_events', r.total_events,
        'compliance_status', r.compliance_status,
        'requested_by', r.requested_by,
        'subject_user_id', r.subject_user_id, 'dfid', r.dfid,
        'content', r.content)
$$;

CREATE FUNCTION defarm_audit_body_error(p_body jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p_body) IS DISTINCT FROM 'object'
                THEN 'The body must be a JSON object' END
$$;


-- writing an event

CREATE FUNCTION defarm_audit_insert(p_by text, p_user text, p_type text,
                                    p_action text, p_resource text,
                                    p_resource_id text, p_outcome text,
                                    p_severity text, p_details jsonb,
                                    p_metadata jsonb, p_compliance jsonb)
RETURNS audit_events
LANGUAGE sql AS $$
    INSERT INTO audit_events (user_id, recorded_by, event_type, action,
                              resource, resource_id, outcome, severity,
                              details, metadata, compliance)
    VALUES (p_user, p_by, p_type, p_action, p_resource, p_resource_id,
            p_outcome, p_severity, coalesce(p_details, '{}'),
            coalesce(p_metadata, '{}'),
            coalesce(p_compliance, '{}'))
    RETURNING *
$$;

-- whom an event is about: the caller, or (an administrator) body.user_id;
-- NULL with the refusal in v_refusal: first a 400 for p_err, the body's
-- other checks' message when there is one
CREATE FUNCTION defarm_audit_subject(p_user text, p_body jsonb, p_err text,
                                     OUT v_subject text,
                                     OUT v_refusal defarm_answer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text := coalesce(p_err,
                            defarm_audit_text_error(p_body, 'user_id',
                                                    false, 255));
BEGIN
    IF v_err IS NOT NULL THEN
        v_refusal := defarm_answer(400, v_err);
        RETURN;
    END IF;

    v_subject := coalesce(p_body ->> 'user_id', p_user);

    IF v_subject <> p_user AND NOT defarm_is_admin(p_user) THEN
        v_subject := NULL;
        v_refusal := defarm_answer(403, 'Only an administrator may record '
                                        'an event for another user');
    END IF;
END
$$;

-- the common fields of an event body (action, resource, resource_id,
-- details, metadata, compliance), and the enumerations p_enums requires
CREATE FUNCTION defarm_audit_event_error(p_body jsonb, p_enums text[])
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(
        defarm_audit_body_error(p_body),
        defarm_audit_text_error(p_body, 'action', true, 255),
        defarm_audit_text_error(p_body, 'resource', true, 255),
        defarm_audit_text_error(p_body, 'resource_id', false, 255),
        CASE WHEN 'event_type' = ANY (p_enums) THEN
            defarm_audit_enum_error(p_body, 'event_type',
                                    defarm_audit_event_types(), true) END,
        CASE WHEN 'outcome' = ANY (p_enums) THEN
            defarm_audit_enum_error(p_body, 'outcome',
                                    defarm_audit_outcomes(), true) END,
        CASE WHEN 'severity' = ANY (p_enums) THEN
            defarm_audit_enum_error(p_body, 'severity',
                                    defarm_audit_severities(), true) END,
        defarm_audit_object_error(p_body, 'details'),
        defarm_audit_metadata_error(p_body, 'metadata'),
        defarm_audit_compliance_error(p_body, 'compliance'),
        defarm_audit_text_error(p_body, 'signature', false, 1024))
$$;

-- POST .../events {user_id?, event_type, action, resource, resource_id?,
-- outcome, severity, details?, metadata?, compliance?}

CREATE FUNCTION defarm_audit_log(p_user text, p_id text, p_body jsonb,
                                 p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s      record;
    e      audit_events;
BEGIN
    s := defarm_audit_subject(p_user, p_body,
                              defarm_audit_event_error(
                                  p_body, '{event_type,outcome,severity}'));

    IF s.v_refusal IS NOT NULL THEN
        RETURN s.v_refusal;
    END IF;

    e := defarm_audit_insert(p_user, s.v_subject,
                             lower(p_body ->> 'event_type'),
                             p_body ->> 'action', p_body ->> 'resource',
                             p_body ->> 'resource_id',
                             lower(p_body ->> 'outcome'),
                             lower(p_body ->> 'severity'),
                             p_body -> 'details',
                             defarm_audit_metadata(p_body -> 'metadata'),
                             p_body -> 'compliance');

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object('event_id', e.event_id,
                                   'event', defarm_audit_event_json(e)))
        ::text);
END
$$;

-- an automatic incident's category, from the words of the action (the
-- original's rule)
CREATE FUNCTION defarm_audit_category_of(p_action text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN a ~ '(breach|leak|exposure)' THEN 'data-breach'
        WHEN a ~ '(unauthorized|intrusion)' THEN 'unauthorized-access'
        WHEN a ~ '(malware|compromise)' THEN 'system-compromise'
        WHEN a ~ '(policy|violation)' THEN 'policy-violation'
        WHEN a ~ '(dos|denial)' THEN 'denial-of-service'
        ELSE 'unauthorized-access'
    END
    FROM lower(p_action) a
$$;

-- POST .../events/security {user_id?, action, resource, outcome,
-- severity, details?, metadata?}: a critical event, or a failed or
-- blocked one, opens an incident (reported by the caller)

CREATE FUNCTION defarm_audit_log_security(p_user text, p_id text,
                                          p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s      record;
    e      audit_events;
    i      security_incidents;
BEGIN
    s := defarm_audit_subject(p_user, p_body,
                              defarm_audit_event_error(p_body,
                                                       '{outcome,severity}'));

    IF s.v_refusal IS NOT NULL THEN
        RETURN s.v_refusal;
    END IF;

    e := defarm_audit_insert(p_user, s.v_subject, 'security',
                             p_body ->> 'action', p_body ->> 'resource',
                             p_body ->> 'resource_id',
                             lower(p_body ->> 'outcome'),
                             lower(p_body ->> 'severity'),
                             p_body -> 'details',
                             defarm_audit_metadata(p_body -> 'metadata'),
                             NULL);

    IF e.severity = 'critical' OR e.outcome IN ('failure', 'blocked') THEN
        INSERT INTO security_incidents (title, description, severity,
                                        category, affected_users,
                                        affected_resources,
                                        related_event_ids, reported_by)
        VALUES ('Security Event: ' || e.action || ' on ' || e.resource,
                'Automatic incident created for ' || e.severity
                || ' security event. User: ' || e.user_id || ', Resource: '
                || e.resource || ', Outcome: ' || e.outcome,
                e.severity, defarm_audit_category_of(e.action),
                ARRAY[e.user_id], ARRAY[e.resource], ARRAY[e.event_id],
                p_user)
        RETURNING * INTO i;
    END IF;

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object('event_id', e.event_id,
                                   'incident_id', i.incident_id))::text);
END
$$;

-- POST .../events/data-access {user_id?, action, resource, resource_id?,
-- outcome, data_classification?, compliance_flags?, metadata?}: event
-- type data, severity from the classification (the original's rule)

CREATE FUNCTION defarm_audit_log_data_access(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    s         record;
    e         audit_events;
    v_class   text;
    v_detail  jsonb := '{}';
BEGIN
    s := defarm_audit_subject(p_user, p_body, coalesce(
        defarm_audit_event_error(p_body, '{outcome}'),
        defarm_audit_enum_error(p_body, 'data_classification',
                                '{public,internal,confidential,restricted}',
                                false),
        defarm_audit_compliance_error(p_body, 'compliance_flags')));

    IF s.v_refusal IS NOT NULL THEN
        RETURN s.v_refusal;
    END IF;

    v_class := lower(p_body ->> 'data_classification');

    IF v_class IS NOT NULL THEN
        v_detail := v_detail || jsonb_build_object('data_classification',
                                                   v_class);
    END IF;

    IF p_body ->> 'resource_id' IS NOT NULL THEN
        v_detail := v_detail || jsonb_build_object('resource_id',
                                                   p_body ->> 'resource_id');
    END IF;

    e := defarm_audit_insert(p_user, s.v_subject, 'data',
                             p_body ->> 'action', p_body ->> 'resource',
                             p_body ->> 'resource_id',
                             lower(p_body ->> 'outcome'),
                             CASE WHEN v_class IN ('confidential',
                                                   'restricted') THEN 'high'
                                  WHEN v_class = 'internal' THEN 'medium'
                                  ELSE 'low' END,
                             v_detail,
                             defarm_audit_metadata(p_body -> 'metadata'),
                             p_body -> 'compliance_flags');

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object('event_id', e.event_id,
                                   'severity', e.severity))::text);
END
$$;


-- reading events: a filter {user_id?, event_types?, actions?,
-- resources?, outcomes?, severities?, start_date?, end_date?,
-- compliance?, limit?, offset?, sort_by?, sort_order?}

CREATE FUNCTION defarm_audit_filter_error(p_f jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(
        defarm_audit_body_error(p_f),
        defarm_audit_text_error(p_f, 'user_id', false, 255),
        defarm_audit_enums_error(p_f, 'event_types',
                                 defarm_audit_event_types()),
        defarm_audit_texts_error(p_f, 'actions'),
        defarm_audit_texts_error(p_f, 'resources'),
        defarm_audit_enums_error(p_f, 'outcomes', defarm_audit_outcomes()),
        defarm_audit_enums_error(p_f, 'severities',
                                 defarm_audit_severities()),
        defarm_audit_time_error(p_f, 'start_date', false),
        defarm_audit_time_error(p_f, 'end_date', false),
        CASE WHEN (p_f ->> 'start_date')::bigint
                  > (p_f ->> 'end_date')::bigint
             THEN 'start_date must not be after end_date' END,
        defarm_audit_compliance_error(p_f, 'compliance'),
        CASE WHEN p_f -> 'limit' IS NOT NULL AND p_f -> 'limit' <> 'null'
                  AND (jsonb_typeof(p_f -> 'limit') <> 'number'
                       OR (p_f ->> 'limit') !~ '^[0-9]{1,4}$'
                       OR (p_f ->> 'limit')::int NOT BETWEEN 1 AND 1000)
             THEN 'limit must be 1 to 1000' END,
        CASE WHEN p_f -> 'offset' IS NOT NULL AND p_f -> 'offset' <> 'null'
                  AND (jsonb_typeof(p_f -> 'offset') <> 'number'
                       OR (p_f ->> 'offset') !~ '^[0-9]{1,9}$')
             THEN 'offset must be a whole number, 0 or more' END,
        defarm_audit_enum_error(p_f, 'sort_by',
                                '{timestamp,severity,event_type}', false),
        defarm_audit_enum_error(p_f, 'sort_order', '{asc,desc}', false))
$$;

-- the events of a valid filter, past p_horizon (NULL: all); p_all false:
-- a page (limit, offset), true: every match
CREATE FUNCTION defarm_audit_find(p_f jsonb, p_horizon timestamptz,
                                  p_all boolean)
RETURNS SETOF audit_events
LANGUAGE sql STABLE AS $$
    SELECT e.* FROM audit_events e,
        (SELECT defarm_audit_lower(p_f -> 'event_types') AS types,
                defarm_audit_texts(p_f -> 'actions') AS actions,
                defarm_audit_texts(p_f -> 'resources') AS resources,
                defarm_audit_lower(p_f -> 'outcomes') AS outcomes,
                defarm_audit_lower(p_f -> 'severities') AS severities,
                lower(coalesce(p_f ->> 'sort_by', 'timestamp')) AS by,
                lower(coalesce(p_f ->> 'sort_order', 'desc')) AS ord) f
    WHERE (p_f ->> 'user_id' IS NULL OR e.user_id = p_f ->> 'user_id')
      AND (f.types IS NULL OR e.event_type = ANY (f.types))
      AND (f.actions IS NULL OR e.action = ANY (f.actions))
      AND (f.resources IS NULL OR e.resource = ANY (f.resources))
      AND (f.outcomes IS NULL OR e.outcome = ANY (f.outcomes))
      AND (f.severities IS NULL OR e.severity = ANY (f.severities))
      AND (p_f ->> 'start_date' IS NULL
           OR e.timestamp >= defarm_audit_time(p_f, 'start_date'))
      AND (p_f ->> 'end_date' IS NULL
           OR e.timestamp <= defarm_audit_time(p_f, 'end_date'))
      AND (p_horizon IS NULL OR e.timestamp >= p_horizon)
      -- a flag given true: events that carry it; false: events that do not
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_each(coalesce(p_f -> 'compliance', '{}')) c
          WHERE c.value <> 'null'
            AND (c.value = 'true')
                <> coalesce(e.compliance -> c.key = 'true', false))
    ORDER BY
        CASE WHEN f.by = 'severity' AND f.ord = 'desc'
             THEN defarm_audit_severity_rank(e.severity) END DESC,
        CASE WHEN f.by = 'severity' AND f.ord = 'asc'
             THEN defarm_audit_severity_rank(e.severity) END,
        CASE WHEN f.by = 'event_type' AND f.ord = 'desc'
             THEN e.event_type END DESC,
        CASE WHEN f.by = 'event_type' AND f.ord = 'asc'
             THEN e.event_type END,
        CASE WHEN f.ord = 'desc' THEN e.timestamp END DESC,
        CASE WHEN f.ord = 'asc' THEN e.timestamp END,
        e.event_id
    LIMIT CASE WHEN p_all THEN NULL
               ELSE coalesce((p_f ->> 'limit')::int, 100) END
    OFFSET CASE WHEN p_all THEN 0
                ELSE coalesce((p_f ->> 'offset')::int, 0) END
$$;

-- a filter as a caller may use it: their own events unless an
-- administrator (another user's: 404, as an unknown one); NULL and the
-- refusal when not
CREATE FUNCTION defarm_audit_own_filter(p_user text, p_f jsonb,
                                        OUT v_filter jsonb,
                                        OUT v_refusal defarm_answer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text := defarm_audit_filter_error(p_f);
BEGIN
    IF v_err IS NOT NULL THEN
        v_refusal := defarm_answer(400, v_err);
        RETURN;
    END IF;

    IF defarm_is_admin(p_user) THEN
        v_filter := p_f;
    ELSIF coalesce(p_f ->> 'user_id', p_user) = p_user THEN
        v_filter := p_f || jsonb_build_object('user_id', p_user);
    ELSE
        v_refusal := defarm_answer(404, 'User not found');
    END IF;
END
$$;

-- the events of a filter as JSON, in the filter's order
CREATE FUNCTION defarm_audit_events_json(p_f jsonb, p_horizon timestamptz,
                                         p_all boolean)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(j ORDER BY n), '[]')
    FROM (SELECT defarm_audit_event_json(e) j, row_number() OVER () n
          FROM defarm_audit_find(p_f, p_horizon, p_all) e) x
$$;

CREATE FUNCTION defarm_audit_page(p_user text, p_f jsonb)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    q  record := defarm_audit_own_filter(p_user, p_f);
    v  jsonb;
BEGIN
    IF q.v_refusal IS NOT NULL THEN
        RETURN q.v_refusal;
    END IF;

    v := defarm_audit_events_json(q.v_filter, defarm_audit_horizon(p_user),
                                  false);

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', v,
        'count', jsonb_array_length(v))::text);
END
$$;

-- POST .../events/query {filter}

CREATE FUNCTION defarm_audit_query(p_user text, p_id text, p_body jsonb,
                                   p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_audit_page(p_user, p_body)
$$;

-- query arguments (strings) that are numbers: as JSON numbers, so that
-- the filter's checks apply; anything else stays a string, refused
CREATE FUNCTION defarm_audit_arg_number(p_query jsonb, p_key text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_query ->> p_key ~ '^[0-9]{1,12}$'
                THEN to_jsonb((p_query ->> p_key)::bigint)
                ELSE p_query -> p_key END
$$;

-- GET .../events/user/:user_id?event_type=&severity=&start_date=
-- &end_date=&limit=&offset=

CREATE FUNCTION defarm_audit_user_events(p_user text, p_id text,
                                         p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE sql STABLE AS $$
    SELECT defarm_audit_page(p_user, jsonb_strip_nulls(jsonb_build_object(
        'user_id', p_arg,
        'event_types', CASE WHEN p_query ? 'event_type'
                            THEN jsonb_build_array(p_query -> 'event_type')
                       END,
        'severities', CASE WHEN p_query ? 'severity'
                           THEN jsonb_build_array(p_query -> 'severity')
                      END,
        'start_date', defarm_audit_arg_number(p_query, 'start_date'),
        'end_date', defarm_audit_arg_number(p_query, 'end_date'),
        'limit', defarm_audit_arg_number(p_query, 'limit'),
        'offset', defarm_audit_arg_number(p_query, 'offset'))))
$$;

-- GET .../events/:event_id

CREATE FUNCTION defarm_audit_event_get(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    e  audit_events;
BEGIN
    IF NOT defarm_is_uuid(p_arg) THEN
        RETURN defarm_answer(400, 'Invalid event ID format');
    END IF;

    SELECT * INTO e FROM audit_events a
    WHERE a.event_id = p_arg::uuid
      AND (a.user_id = p_user OR defarm_is_admin(p_user))
      AND (a.timestamp >= defarm_audit_horizon(p_user)
           OR defarm_audit_horizon(p_user) IS NULL);

    IF e.event_id IS NULL THEN
        RETURN defarm_answer(404, 'Audit event not found');
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_audit_event_json(e))::text);
END
$$;

-- POST .../events/sync {events: [{event_id, timestamp, user_id?,
-- event_type, action, resource, resource_id?, outcome, severity,
-- details?, metadata?, signature?, compliance?}]}: events recorded
-- elsewhere (a client offline, another node), stored once each by their
-- event_id; a user syncs their own events only

CREATE FUNCTION defarm_audit_sync(p_user text, p_id text, p_body jsonb,
                                  p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_admin  boolean := defarm_is_admin(p_user);
    v_err    text;
    v_n      int;
    v_new    int;
BEGIN
    v_err := coalesce(defarm_audit_body_error(p_body),
                      CASE WHEN jsonb_typeof(p_body -> 'events')
                                IS DISTINCT FROM 'array'
                           THEN 'events must be an array' END);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_n := jsonb_array_length(p_body -> 'events');

    IF v_n = 0 OR v_n > 1000 THEN
        RETURN defarm_answer(400, 'events must hold 1 to 1000 events');
    END IF;

    SELECT 'events[' || (n - 1) || ']: ' || m INTO v_err
    FROM jsonb_array_elements(p_body -> 'events') WITH ORDINALITY AS t(x, n),
         LATERAL (SELECT coalesce(
             defarm_audit_event_error(x, '{event_type,outcome,severity}'),
             CASE WHEN jsonb_typeof(x -> 'event_id') IS DISTINCT FROM 'string'
                       OR NOT defarm_is_uuid(x ->> 'event_id')
                  THEN 'event_id must be a UUID' END,
             defarm_audit_time_error(x, 'timestamp', true),
             CASE WHEN (x ->> 'timestamp')::bigint
                       > defarm_audit_unix(now()) + 86400
                  THEN 'timestamp must not be in the future' END,
             defarm_audit_text_error(x, 'user_id', false, 255)) AS m) c
    WHERE m IS NOT NULL
    ORDER BY n LIMIT 1;

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    IF NOT v_admin AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_body -> 'events') x
        WHERE coalesce(x ->> 'user_id', p_user) <> p_user)
    THEN
        RETURN defarm_answer(403, 'Only an administrator may sync events '
                                  'of another user');
    END IF;

    INSERT INTO audit_events (event_id, user_id, recorded_by, event_type,
                              action, resource, resource_id, outcome,
                              severity, timestamp, details, metadata,
                              signature, compliance)
    SELECT (x ->> 'event_id')::uuid, coalesce(x ->> 'user_id', p_user),
           p_user, lower(x ->> 'event_type'), x ->> 'action',
           x ->> 'resource', x ->> 'resource_id', lower(x ->> 'outcome'),
           lower(x ->> 'severity'), defarm_audit_time(x, 'timestamp'),
           coalesce(nullif(x -> 'details', 'null'), '{}'),
           defarm_audit_metadata(x -> 'metadata'), x ->> 'signature',
           coalesce(nullif(x -> 'compliance', 'null'), '{}')
    FROM jsonb_array_elements(p_body -> 'events') x
    ON CONFLICT (event_id) DO NOTHING;

    GET DIAGNOSTICS v_new = ROW_COUNT;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object('received', v_n, 'new', v_new,
                                   'duplicates', v_n - v_new))::text);
END
$$;


-- incidents

-- POST .../incidents {title, description, severity, category,
-- affected_users?, affected_resources?, related_event_ids?,
-- confidential?}: any user reports one (related events: their own)

CREATE FUNCTION defarm_audit_incident_create(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    i        security_incidents;
    v_err    text;
    v_bad    text;
BEGIN
    v_err := coalesce(
        defarm_audit_body_error(p_body),
        defarm_audit_text_error(p_body, 'title', true, 255),
        defarm_audit_text_error(p_body, 'description', true, 10000),
        defarm_audit_enum_error(p_body, 'severity',
                                defarm_audit_severities(), true),
        defarm_audit_enum_error(p_body, 'category',
                                defarm_audit_categories(), true),
        defarm_audit_texts_error(p_body, 'affected_users'),
        defarm_audit_texts_error(p_body, 'affected_resources'),
        defarm_audit_texts_error(p_body, 'related_event_ids'),
        defarm_field_check(p_body, 'confidential', 'boolean', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    SELECT x INTO v_bad
    FROM jsonb_array_elements_text(coalesce(
             nullif(p_body -> 'related_event_ids', 'null'), '[]')) x
    WHERE NOT defarm_is_uuid(x)
       OR NOT EXISTS (SELECT 1 FROM audit_events e
                      WHERE e.event_id = x::uuid
                        AND (e.user_id = p_user
                             OR defarm_is_admin(p_user)))
    LIMIT 1;

    IF v_bad IS NOT NULL THEN
        RETURN defarm_answer(400, 'related_event_ids: no audit event '
                                  || v_bad);
    END IF;

    INSERT INTO security_incidents (title, description, severity, category,
                                    affected_users, affected_resources,
                                    related_event_ids, confidential,
                                    reported_by)
    VALUES (p_body ->> 'title', p_body ->> 'description',
            lower(p_body ->> 'severity'), lower(p_body ->> 'category'),
            coalesce(defarm_audit_texts(p_body -> 'affected_users'), '{}'),
            coalesce(defarm_audit_texts(p_body -> 'affected_resources'),
                     '{}'),
            coalesce(defarm_audit_texts(p_body -> 'related_event_ids'),
                     '{}')::uuid[],
            coalesce((p_body ->> 'confidential')::boolean, false), p_user)
    RETURNING * INTO i;

    PERFORM defarm_audit_insert(p_user, p_user, 'security',
                                'incident_reported', 'security_incident',
                                i.incident_id::text, 'success', i.severity,
                                jsonb_build_object('category', i.category,
                                                   'title', i.title),
                                NULL, NULL);

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true,
        'data', jsonb_build_object(
            'incident_id', i.incident_id,
            'incident', defarm_audit_incident_json(i)))::text);
END
$$;

-- a list's ?limit=1..p_max (100) and ?offset= (0), or the 400 answer:
-- first p_err, the message of the query's other checks when there is one

CREATE FUNCTION defarm_audit_paging(p_query jsonb, p_max int, p_err text,
                                    OUT a defarm_answer, OUT lim int,
                                    OUT off int)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    lim := 100;
    off := 0;

    IF p_err IS NOT NULL THEN
        a := defarm_answer(400, p_err);
        RETURN;
    END IF;

    IF p_query ->> 'limit' IS NOT NULL THEN
        IF p_query ->> 'limit' !~ ('^[0-9]{1,' || length(p_max::text) || '}$')
           OR (p_query ->> 'limit')::int NOT BETWEEN 1 AND p_max
        THEN
            a := defarm_answer(400, 'limit must be 1 to ' || p_max);
            RETURN;
        END IF;
        lim := (p_query ->> 'limit')::int;
    END IF;

    IF p_query ->> 'offset' IS NOT NULL THEN
        IF p_query ->> 'offset' !~ '^[0-9]{1,9}$' THEN
            a := defarm_answer(400, 'offset must be a whole number, 0 '
                                    'or more');
            RETURN;
        END IF;
        off := (p_query ->> 'offset')::int;
    END IF;
END
$$;

-- GET .../incidents?severity=&status=&assignee=&limit=&offset=

CREATE FUNCTION defarm_audit_incidents(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pg        record;
    v         jsonb;
BEGIN
    pg := defarm_audit_paging(p_query, 1000, coalesce(
        defarm_audit_enum_error(p_query, 'severity',
                                defarm_audit_severities(), false),
        defarm_audit_enum_error(p_query, 'status',
                                '{open,inprogress,resolved,closed}', false)));

    IF pg.a IS NOT NULL THEN
        RETURN pg.a;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_audit_incident_json(i)
                              ORDER BY i.created_at DESC, i.incident_id),
                    '[]')
    INTO v
    FROM (SELECT * FROM security_incidents i
          WHERE defarm_audit_incident_visible(i, p_user)
            AND (p_query ->> 'severity' IS NULL
                 OR i.severity = lower(p_query ->> 'severity'))
            AND (p_query ->> 'status' IS NULL
                 OR i.status = lower(p_query ->> 'status'))
            AND (p_query ->> 'assignee' IS NULL
                 OR i.assigned_to = p_query ->> 'assignee')
          ORDER BY i.created_at DESC, i.incident_id
          LIMIT pg.lim OFFSET pg.off) i;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', v,
        'count', jsonb_array_length(v))::text);
END
$$;

-- an incident the caller may see, locked when p_lock: NULL and the
-- refusal (400 malformed, 404 unknown or not theirs) when not
CREATE FUNCTION defarm_audit_incident_find(p_user text, p_id text,
                                           p_lock boolean,
                                           OUT v_incident security_incidents,
                                           OUT v_refusal defarm_answer)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT defarm_is_uuid(p_id) THEN
        v_refusal := defarm_answer(400, 'Invalid incident ID format');
        RETURN;
    END IF;

    IF p_lock THEN
        SELECT * INTO v_incident FROM security_incidents i
        WHERE i.incident_id = p_id::uuid FOR UPDATE;
    ELSE
        SELECT * INTO v_incident FROM security_incidents i
        WHERE i.incident_id = p_id::uuid;
    END IF;

    IF v_incident.incident_id IS NULL
       OR NOT defarm_audit_incident_visible(v_incident, p_user)
    THEN
        v_incident := NULL;
        v_refusal := defarm_answer(404, 'Security incident not found');
    END IF;
END
$$;

-- GET .../incidents/:incident_id

CREATE FUNCTION defarm_audit_incident_get(p_user text, p_id text,
                                          p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record := defarm_audit_incident_find(p_user, p_arg, false);
BEGIN
    IF f.v_refusal IS NOT NULL THEN
        RETURN f.v_refusal;
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true,
        'data', defarm_audit_incident_json(f.v_incident))::text);
END
$$;

-- PUT .../incidents/:incident_id/assign {assignee}: an administrator
-- gives it to a user (it is then in progress); a resolved or closed one
-- is not reopened this way (409)

CREATE FUNCTION defarm_audit_incident_assign(p_user text, p_id text,
                                             p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f      record;
    i      security_incidents;
    v_err  text;
BEGIN
    IF NOT defarm_is_admin(p_user) THEN
        RETURN defarm_answer(403, 'Admin privileges required');
    END IF;

    v_err := coalesce(defarm_audit_body_error(p_body),
                      defarm_audit_text_error(p_body, 'assignee', true,
                                              255));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    f := defarm_audit_incident_find(p_user, p_arg, true);

    IF f.v_refusal IS NOT NULL THEN
        RETURN f.v_refusal;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_body ->> 'assignee') THEN
        RETURN defarm_answer(400, 'assignee is not a user');
    END IF;

    IF (f.v_incident).status IN ('resolved', 'closed') THEN
        RETURN defarm_answer(409, 'The incident is already '
                                  || (f.v_incident).status);
    END IF;

    UPDATE security_incidents
    SET assigned_to = p_body ->> 'assignee', status = 'inprogress',
        updated_at = now()
    WHERE incident_id = (f.v_incident).incident_id
    RETURNING * INTO i;

    PERFORM defarm_audit_insert(p_user, p_user, 'security',
                                'incident_assigned', 'security_incident',
                                i.incident_id::text, 'success', i.severity,
                                jsonb_build_object('assignee',
                                                   i.assigned_to),
                                NULL, NULL);

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_audit_incident_json(i))::text);
END
$$;

-- PUT .../incidents/:incident_id/resolve: an administrator; resolving a
-- resolved incident changes nothing

CREATE FUNCTION defarm_audit_incident_resolve(p_user text, p_id text,
                                              p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    f  record;
    i  security_incidents;
BEGIN
    IF NOT defarm_is_admin(p_user) THEN
        RETURN defarm_answer(403, 'Admin privileges required');
    END IF;

    f := defarm_audit_incident_find(p_user, p_arg, true);

    IF f.v_refusal IS NOT NULL THEN
        RETURN f.v_refusal;
    END IF;

    i := f.v_incident;

    IF i.status NOT IN ('resolved', 'closed') THEN
        UPDATE security_incidents
        SET status = 'resolved', resolved_at = now(), updated_at = now()
        WHERE incident_id = i.incident_id
        RETURNING * INTO i;

        PERFORM defarm_audit_insert(p_user, p_user, 'security',
                                    'incident_resolved',
                                    'security_incident',
                                    i.incident_id::text, 'success',
                                    i.severity, '{}', NULL, NULL);
    END IF;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', defarm_audit_incident_json(i))::text);
END
$$;


-- compliance

-- a period {start_date, end_date} (both required): a message or NULL
CREATE FUNCTION defarm_audit_period_error(p_body jsonb, p_start text,
                                          p_end text, p_required boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(
        defarm_audit_body_error(p_body),
        defarm_audit_time_error(p_body, p_start, p_required),
        defarm_audit_time_error(p_body, p_end, p_required),
        CASE WHEN (p_body ->> p_start)::bigint > (p_body ->> p_end)::bigint
             THEN p_start || ' must not be after ' || p_end END)
$$;

CREATE FUNCTION defarm_audit_compliant(e audit_events) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT e.event_type = 'compliance'
           OR EXISTS (SELECT 1 FROM jsonb_each(e.compliance) c
                      WHERE c.key IN ('gdpr', 'ccpa', 'hipaa', 'sox')
                        AND c.value <> 'null')
$$;

-- POST .../compliance/events {start_date, end_date}: the events of the
-- period that concern compliance (type compliance, or a regulation flag
-- set), the caller's own unless an administrator; a bare array, as the
-- original answered

CREATE FUNCTION defarm_audit_compliance_events(p_user text, p_id text,
                                               p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err      text := defarm_audit_period_error(p_body, 'start_date',
                                                 'end_date', true);
    v_admin    boolean := defarm_is_admin(p_user);
    v_horizon  timestamptz := defarm_audit_horizon(p_user);
    v          jsonb;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    SELECT coalesce(jsonb_agg(defarm_audit_event_json(e)
                              ORDER BY e.timestamp, e.event_id), '[]')
    INTO v
    FROM audit_events e
    WHERE (v_admin OR e.user_id = p_user)
      AND e.timestamp BETWEEN defarm_audit_time(p_body, 'start_date')
                          AND defarm_audit_time(p_body, 'end_date')
      AND (v_horizon IS NULL OR e.timestamp >= v_horizon)
      AND defarm_audit_compliant(e);

    RETURN defarm_answer(200, v::text);
END
$$;

-- POST .../compliance/incidents {start_date, end_date}: the incidents
-- opened in the period that the caller may see; a bare array

CREATE FUNCTION defarm_audit_compliance_incidents(p_user text, p_id text,
                                                  p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_err  text := defarm_audit_period_error(p_body, 'start_date',
                                             'end_date', true);
    v      jsonb;
BEGIN
    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    SELECT coalesce(jsonb_agg(defarm_audit_incident_json(i)
                              ORDER BY i.created_at, i.incident_id), '[]')
    INTO v
    FROM security_incidents i
    WHERE i.created_at BETWEEN defarm_audit_time(p_body, 'start_date')
                           AND defarm_audit_time(p_body, 'end_date')
      AND defarm_audit_incident_visible(i, p_user);

    RETURN defarm_answer(200, v::text);
END
$$;

-- POST .../compliance/reports {report_type, period_start, period_end,
-- scope: {user_id?, resource_types?, event_types?, regulations?},
-- export_format?, include_evidence?}: the report is made now from the
-- audit trail and stored.  Its content: the events of the period and
-- scope counted by type, outcome and severity, the incidents opened in
-- it, and findings (events that failed or were blocked, high and
-- critical events, incidents not resolved), with the events' ids as
-- evidence when include_evidence.  A user reports on their own events;
-- an administrator on one user's, or everyone's (no scope.user_id).
-- JSON is the one format produced: csv, pdf and xml are refused.

CREATE FUNCTION defarm_audit_report_create(p_user text, p_id text,
                                           p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_admin     boolean := defarm_is_admin(p_user);
    v_scope     jsonb;
    v_subject   text;
    v_start     timestamptz;
    v_end       timestamptz;
    v_types     text[];
    v_res       text[];
    v_regs      text[];
    v_evidence  boolean;
    v_err       text;
    v_events    jsonb;
    v_incid     jsonb;
    v_find      jsonb;
    v_total     bigint;
    v_ids       uuid[];
    r           compliance_reports;
BEGIN
    v_err := coalesce(
        defarm_audit_body_error(p_body),
        defarm_audit_enum_error(p_body, 'report_type',
                                '{gdpr-data-subject,ccpa-consumer,'
                                'sox-financial,audit-trail,'
                                'security-incident}', true),
        defarm_audit_period_error(p_body, 'period_start', 'period_end',
                                  true),
        CASE WHEN jsonb_typeof(p_body -> 'scope') IS DISTINCT FROM 'object'
             THEN 'scope must be an object' END,
        'scope.' || coalesce(
            defarm_audit_text_error(p_body -> 'scope', 'user_id', false,
                                    255),
            defarm_audit_texts_error(p_body -> 'scope', 'resource_types'),
            defarm_audit_enums_error(p_body -> 'scope', 'event_types',
                                     defarm_audit_event_types()),
            defarm_audit_texts_error(p_body -> 'scope', 'regulations')),
        defarm_audit_enum_error(p_body, 'export_format',
                                '{json,csv,pdf,xml}', false),
        CASE WHEN lower(p_body ->> 'export_format') <> 'json'
             THEN 'export_format ' || lower(p_body ->> 'export_format')
                  || ' is not produced: json is' END,
        defarm_field_check(p_body, 'include_evidence', 'boolean', true));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_subject := p_body -> 'scope' ->> 'user_id';

    IF NOT v_admin THEN
        IF coalesce(v_subject, p_user) <> p_user THEN
            RETURN defarm_answer(404, 'User not found');
        END IF;
        v_subject := p_user;
    END IF;

    v_start := defarm_audit_time(p_body, 'period_start');
    v_end := defarm_audit_time(p_body, 'period_end');
    v_types := defarm_audit_lower(p_body -> 'scope' -> 'event_types');
    v_res := defarm_audit_texts(p_body -> 'scope' -> 'resource_types');
    v_regs := ARRAY(SELECT lower(x) FROM unnest(defarm_audit_texts(
                        p_body -> 'scope' -> 'regulations')) x);
    v_evidence := coalesce((p_body ->> 'include_evidence')::boolean, false);

    -- "all" in resource_types or no list: every resource
    IF v_res IS NOT NULL AND ('all' = ANY (v_res) OR v_res = '{}') THEN
        v_res := NULL;
    END IF;

    IF v_types = '{}' THEN
        v_types := NULL;
    END IF;

    v_ids := ARRAY(
        SELECT e.event_id FROM audit_events e
        WHERE e.timestamp BETWEEN v_start AND v_end
          AND (v_subject IS NULL OR e.user_id = v_subject)
          AND (v_types IS NULL OR e.event_type = ANY (v_types))
          AND (v_res IS NULL OR e.resource = ANY (v_res))
          -- regulations named: the events flagged with one of them (or
          -- compliance events)
          AND (cardinality(v_regs) = 0
               OR e.event_type = 'compliance'
               OR EXISTS (SELECT 1 FROM unnest(v_regs) g
                          WHERE e.compliance -> g = 'true'))
        ORDER BY e.timestamp, e.event_id);

    v_total := cardinality(v_ids);

    SELECT jsonb_build_object(
        'total', v_total,
        'by_type', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                    FROM (SELECT event_type t, count(*) n
                          FROM audit_events
                          WHERE event_id = ANY (v_ids) GROUP BY 1) x),
        'by_outcome', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                       FROM (SELECT outcome t, count(*) n
                             FROM audit_events
                          WHERE event_id = ANY (v_ids) GROUP BY 1) x),
        'by_severity', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                        FROM (SELECT severity t, count(*) n
                              FROM audit_events
                          WHERE event_id = ANY (v_ids) GROUP BY 1) x),
        'users', (SELECT count(DISTINCT user_id) FROM audit_events
                  WHERE event_id = ANY (v_ids)))
    INTO v_events;

    SELECT coalesce(jsonb_agg(defarm_audit_incident_json(i)
                              ORDER BY i.created_at, i.incident_id), '[]')
    INTO v_incid
    FROM security_incidents i
    WHERE i.created_at BETWEEN v_start AND v_end
      AND (v_subject IS NULL OR v_subject = ANY (i.affected_users)
           OR i.reported_by = v_subject)
      AND defarm_audit_incident_visible(i, p_user);

    SELECT coalesce(jsonb_agg(f ORDER BY f ->> 'finding_type'), '[]')
    INTO v_find
    FROM (
        SELECT jsonb_build_object(
                   'finding_id', gen_random_uuid(),
                   'finding_type', 'failed_or_blocked_events',
                   'description', count(*) || ' events failed or were '
                                  'blocked',
                   'severity', CASE WHEN count(*) FILTER (
                                             WHERE outcome = 'blocked') > 0
                                    THEN 'high' ELSE 'medium' END,
                   'evidence', CASE WHEN v_evidence
                                    THEN jsonb_agg(event_id ORDER BY
                                                   timestamp)
                                    ELSE '[]' END,
                   'recommendation', 'Review the failed and blocked '
                                     'operations') f
        FROM audit_events
        WHERE event_id = ANY (v_ids) AND outcome IN ('failure', 'blocked')
        HAVING count(*) > 0
        UNION ALL
        SELECT jsonb_build_object(
                   'finding_id', gen_random_uuid(),
                   'finding_type', 'high_severity_events',
                   'description', count(*) || ' events of high or '
                                  'critical severity',
                   'severity', CASE WHEN count(*) FILTER (
                                             WHERE severity = 'critical') > 0
                                    THEN 'critical' ELSE 'high' END,
                   'evidence', CASE WHEN v_evidence
                                    THEN jsonb_agg(event_id ORDER BY
                                                   timestamp)
                                    ELSE '[]' END,
                   'recommendation', 'Confirm each was expected')
        FROM audit_events
        WHERE event_id = ANY (v_ids) AND severity IN ('high', 'critical')
        HAVING count(*) > 0
        UNION ALL
        SELECT jsonb_build_object(
                   'finding_id', gen_random_uuid(),
                   'finding_type', 'unresolved_incidents',
                   'description', count(*) || ' security incidents are '
                                  'not resolved',
                   'severity', 'high',
                   'evidence', jsonb_agg(x -> 'incident_id'),
                   'recommendation', 'Assign and resolve them')
        FROM jsonb_array_elements(v_incid) x
        WHERE x ->> 'status' IN ('open', 'inprogress')
        HAVING count(*) > 0) f;

    v_scope := jsonb_build_object(
        'user_id', v_subject, 'resource_types', to_jsonb(coalesce(v_res,
                                                        '{all}')),
        'event_types', to_jsonb(coalesce(v_types, defarm_audit_event_types())),
        'regulations', to_jsonb(v_regs));

    INSERT INTO compliance_reports (report_type, requested_by,
                                    subject_user_id, period_start,
                                    period_end, scope, export_format,
                                    include_evidence, summary,
                                    total_events, compliance_status,
                                    content)
    VALUES (lower(p_body ->> 'report_type'), p_user, v_subject, v_start,
            v_end, v_scope, 'json', v_evidence,
            'Compliance report for ' || v_total || ' events, '
            || jsonb_array_length(v_incid) || ' incidents, '
            || jsonb_array_length(v_find) || ' findings',
            v_total,
            CASE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_find) f
                              WHERE f ->> 'severity' IN ('high',
                                                         'critical'))
                     THEN 'non_compliant'
                 WHEN jsonb_array_length(v_find) > 0
                     THEN 'review_required'
                 ELSE 'compliant' END,
            jsonb_build_object('events', v_events, 'incidents', v_incid,
                               'findings', v_find))
    RETURNING * INTO r;

    RETURN defarm_answer(201, jsonb_build_object(
        'success', true, 'data', defarm_audit_report_json(r))::text);
END
$$;

-- GET .../compliance/reports?report_type=&limit=&offset=: the caller's
-- (an administrator: all), newest first

CREATE FUNCTION defarm_audit_reports(p_user text, p_id text,
                                     p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_admin   boolean := defarm_is_admin(p_user);
    pg        record;
    v         jsonb;
BEGIN
    pg := defarm_audit_paging(p_query, 500,
                              defarm_audit_enum_error(
                                  p_query, 'report_type',
                                  '{gdpr-data-subject,ccpa-consumer,'
                                  'sox-financial,audit-trail,'
                                  'security-incident,gdpr,food-safety}',
                                  false));

    IF pg.a IS NOT NULL THEN
        RETURN pg.a;
    END IF;

    SELECT coalesce(jsonb_agg(defarm_audit_report_json(r)
                              ORDER BY r.created_at DESC, r.report_id),
                    '[]')
    INTO v
    FROM (SELECT * FROM compliance_reports r
          WHERE (v_admin OR r.requested_by = p_user)
            AND (p_query ->> 'report_type' IS NULL
                 OR r.report_type = lower(p_query ->> 'report_type'))
          ORDER BY r.created_at DESC, r.report_id
          LIMIT pg.lim OFFSET pg.off) r;

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'data', v,
        'count', jsonb_array_length(v))::text);
END
$$;

-- the rows of a table made elsewhere (workspaces, workspace_members,
-- user_activities: other areas, which may not be installed) that name a
-- user in one of their user columns: NULL when the table is absent.  The
-- columns are looked up, so the export follows whatever shape they have;
-- a column that holds a secret is left out.
CREATE FUNCTION defarm_audit_rows_of(p_table text, p_user text)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_rel    regclass := to_regclass(p_table);
    v_where  text;
    v        jsonb;
BEGIN
    IF v_rel IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT string_agg(format('t.%I::text = $1', a.attname), ' OR ')
    INTO v_where
    FROM pg_attribute a
    WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN ('user_id', 'owner_id', 'member_id', 'created_by',
                        'requester_id', 'performed_by');

    IF v_where IS NULL THEN
        RETURN '[]';
    END IF;

    EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t) - %L - %L - %L'
                   ' - %L - %L), ''[]'') FROM %s t WHERE %s',
                   'password_hash', 'key_hash', 'token_hash', 'secret',
                   'auth_credentials', v_rel, v_where)
    INTO v USING p_user;

    RETURN v;
END
$$;

-- everything stored about a user, for a GDPR data subject export
CREATE FUNCTION defarm_audit_gdpr_data(p_subject text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'user', (SELECT to_jsonb(u) - 'password_hash' - 'token_version'
                        || jsonb_build_object(
                               'credits', defarm_credit_balance(u.id),
                               'limits', defarm_tier_limits_json(u.tier))
                 FROM users u WHERE u.id = p_subject),
        'api_keys', (SELECT coalesce(jsonb_agg(to_jsonb(k) - 'key_hash'
                                               ORDER BY k.created_at), '[]')
                     FROM api_keys k WHERE k.user_id = p_subject),
        'password_resets', (
            SELECT coalesce(jsonb_agg(to_jsonb(t) - 'token_hash'
                                      ORDER BY t.id), '[]')
            FROM password_reset_tokens t WHERE t.user_id = p_subject),
        'items', (SELECT coalesce(jsonb_agg(i.doc::jsonb
                                            ORDER BY i.created_at, i.dfid),
                                  '[]')
                  FROM items i WHERE i.owner_id = p_subject),
        'events', (SELECT coalesce(jsonb_agg(defarm_event_json(e)
                                             ORDER BY e.created_at,
                                                      e.event_id), '[]')
                   FROM events e WHERE e.owner_id = p_subject),
        'receipts', (SELECT coalesce(jsonb_agg(to_jsonb(r)
                                               ORDER BY r.created_at), '[]')
                     FROM receipts r WHERE r.owner_id = p_subject),
        'pending_items', (SELECT coalesce(jsonb_agg(to_jsonb(p)
                                                    ORDER BY p.created_at),
                                          '[]')
                          FROM pending_items p
                          WHERE p.owner_id = p_subject),
        'local_item_mappings', (
            SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.tokenized_at),
                            '[]')
            FROM lid_dfid_mappings m WHERE m.owner_id = p_subject),
        'item_shares_received', (
            SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.shared_at),
                            '[]')
            FROM item_shares s WHERE s.recipient_id = p_subject),
        'circuits_owned', (
            SELECT coalesce(jsonb_agg(to_jsonb(c) - 'access_password_hash'
                                      ORDER BY c.created_at), '[]')
            FROM circuits c WHERE c.owner_id = p_subject),
        'circuit_memberships', (
            SELECT coalesce(jsonb_agg(to_jsonb(m)
                                      || jsonb_build_object('circuit_name',
                                                            c.name)
                                      ORDER BY m.joined_at), '[]')
            FROM circuit_members m JOIN circuits c USING (circuit_id)
            WHERE m.member_id = p_subject),
        'circuit_join_requests', (
            SELECT coalesce(jsonb_agg(to_jsonb(j) ORDER BY j.requested_at),
                            '[]')
            FROM circuit_join_requests j WHERE j.requester_id = p_subject),
        'circuit_operations', (
            SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.created_at),
                            '[]')
            FROM circuit_operations o WHERE o.requester_id = p_subject),
        'circuit_activities', (
            SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.created_at),
                            '[]')
            FROM circuit_activities a WHERE a.user_id = p_subject),
        'notifications', (
            SELECT coalesce(jsonb_agg(defarm_notification_json(n)
                                      ORDER BY n.seq), '[]')
            FROM notifications n WHERE n.user_id = p_subject),
        'credit_transactions', (
            SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.seq), '[]')
            FROM credit_transactions t WHERE t.user_id = p_subject),
        'usage_months', (
            SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.month), '[]')
            FROM usage_months m WHERE m.user_id = p_subject),
        'admin_actions_about', (
            SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.created_at),
                            '[]')
            FROM admin_actions a WHERE a.target_user_id = p_subject),
        'audit_events', (
            SELECT coalesce(jsonb_agg(defarm_audit_event_json(e)
                                      ORDER BY e.timestamp, e.event_id),
                            '[]')
            FROM audit_events e WHERE e.user_id = p_subject),
        'security_incidents', (
            SELECT coalesce(jsonb_agg(defarm_audit_incident_json(i)
                                      ORDER BY i.created_at), '[]')
            FROM security_incidents i
            WHERE i.reported_by = p_subject OR i.assigned_to = p_subject
               OR p_subject = ANY (i.affected_users)),
        'workspaces', defarm_audit_rows_of('workspaces', p_subject),
        'workspace_members', defarm_audit_rows_of('workspace_members',
                                                  p_subject),
        'user_activities', defarm_audit_rows_of('user_activities',
                                                p_subject))
$$;

-- POST .../compliance/reports/gdpr {user_id?}: a user's own export, or
-- (an administrator) any user's; stored as a report, answered as the
-- original's ComplianceReportResponse with the export in "content"

CREATE FUNCTION defarm_audit_report_gdpr(p_user text, p_id text,
                                         p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err      text;
    v_subject  text;
    v_data     jsonb;
    r          compliance_reports;
BEGIN
    v_err := coalesce(defarm_audit_body_error(p_body),
                      defarm_audit_text_error(p_body, 'user_id', false,
                                              255));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_subject := coalesce(p_body ->> 'user_id', p_user);

    IF (v_subject <> p_user AND NOT defarm_is_admin(p_user))
       OR NOT EXISTS (SELECT 1 FROM users WHERE id = v_subject)
    THEN
        RETURN defarm_answer(404, 'User not found');
    END IF;

    v_data := defarm_audit_gdpr_data(v_subject);

    INSERT INTO compliance_reports (report_type, requested_by,
                                    subject_user_id, period_start,
                                    period_end, scope, summary,
                                    total_events, compliance_status,
                                    content)
    SELECT 'gdpr', p_user, v_subject, u.created_at, now(),
           jsonb_build_object('user_id', v_subject,
                              'resource_types', '["all"]'::jsonb,
                              'regulations', '["GDPR"]'::jsonb),
           'GDPR data export of ' || v_subject || ': '
           || jsonb_array_length(v_data -> 'items') || ' items, '
           || jsonb_array_length(v_data -> 'events') || ' events, '
           || jsonb_array_length(v_data -> 'audit_events')
           || ' audit events',
           jsonb_array_length(v_data -> 'audit_events'), 'exported', v_data
    FROM users u WHERE u.id = v_subject
    RETURNING * INTO r;

    PERFORM defarm_audit_insert(p_user, v_subject, 'compliance',
                                'gdpr_export', 'user', v_subject,
                                'success', 'medium',
                                jsonb_build_object('report_id',
                                                   r.report_id,
                                                   'requested_by', p_user),
                                NULL, '{"gdpr": true}');

    RETURN defarm_answer(201, defarm_audit_report_json(r)::text);
END
$$;

-- POST .../compliance/reports/food-safety {dfid, start_date?,
-- end_date?}: an item the caller may read, its trail: the events the
-- caller may see (of the period) by type and as a timeline, the circuits
-- it went through, the pushes and pulls, its storage records; findings
-- for an item no longer Active, operations rejected or waiting, no event

CREATE FUNCTION defarm_audit_report_food_safety(p_user text, p_id text,
                                                p_body jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    v_err     text;
    v_dfid    text;
    v_start   timestamptz;
    v_end     timestamptz;
    v_admin   boolean := defarm_is_admin(p_user);
    v_item    items;
    v_events  jsonb;
    v_circ    jsonb;
    v_ops     jsonb;
    v_store   jsonb;
    v_find    jsonb := '[]';
    a         defarm_answer;
    r         compliance_reports;
BEGIN
    v_err := coalesce(defarm_audit_body_error(p_body),
                      defarm_audit_text_error(p_body, 'dfid', true, 255),
                      defarm_audit_period_error(p_body, 'start_date',
                                                'end_date', false));

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_dfid := p_body ->> 'dfid';
    a := defarm_item_visible(v_dfid, p_user);

    IF a IS NOT NULL THEN
        RETURN a;
    END IF;

    SELECT * INTO v_item FROM items WHERE dfid = v_dfid;

    IF v_item.dfid IS NULL THEN
        RETURN defarm_answer(404, 'Item not found');
    END IF;

    v_start := defarm_audit_time(p_body, 'start_date');
    v_end := defarm_audit_time(p_body, 'end_date');

    SELECT coalesce(jsonb_agg(defarm_event_json(e)
                              ORDER BY e.created_at, e.event_id), '[]')
    INTO v_events
    FROM events e
    WHERE e.dfid = v_dfid
      AND (v_start IS NULL OR e.created_at >= v_start)
      AND (v_end IS NULL OR e.created_at <= v_end)
      AND (e.owner_id = p_user OR e.visibility = 'Public' OR v_admin
           OR (e.visibility = 'CircuitOnly'
               AND defarm_circuit_shares(e.dfid, p_user)));

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'circuit_id', c.circuit_id, 'name', c.name,
               'added_by', ci.added_by,
               'added_at', defarm_audit_unix(ci.added_at))
               ORDER BY ci.added_at), '[]')
    INTO v_circ
    FROM circuit_items ci JOIN circuits c USING (circuit_id)
    WHERE ci.dfid = v_dfid
      AND (v_item.owner_id = p_user
           OR defarm_circuit_visible(c.circuit_id, p_user));

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'operation_id', o.operation_id, 'circuit_id', o.circuit_id,
               'operation_type', o.operation_type, 'status', o.status,
               'requester_id', o.requester_id,
               'created_at', defarm_audit_unix(o.created_at),
               'decided_at', defarm_audit_unix(o.decided_at))
               ORDER BY o.created_at), '[]')
    INTO v_ops
    FROM circuit_operations o
    WHERE o.dfid = v_dfid
      AND (v_start IS NULL OR o.created_at >= v_start)
      AND (v_end IS NULL OR o.created_at <= v_end)
      AND (v_item.owner_id = p_user
           OR defarm_circuit_visible(o.circuit_id, p_user));

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'adapter_type', s.adapter_type,
               'storage_location', s.storage_location,
               'stored_at', defarm_audit_unix(s.stored_at),
               'is_primary', s.is_primary) ORDER BY s.record_id), '[]')
    INTO v_store
    FROM storage_history s WHERE s.dfid = v_dfid;

    IF v_item.status <> 'Active' THEN
        v_find := v_find || jsonb_build_object(
            'finding_type', 'item_not_active', 'severity', 'medium',
            'description', 'The item is ' || v_item.status);
    END IF;

    IF jsonb_array_length(v_events) = 0 THEN
        v_find := v_find || jsonb_build_object(
            'finding_type', 'no_events', 'severity', 'medium',
            'description', 'No event recorded for the item in the period');
    END IF;

    v_find := v_find || coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                   'finding_type', 'operations_' || lower(st),
                   'severity', CASE st WHEN 'Rejected' THEN 'medium'
                                       ELSE 'low' END,
                   'description', n || ' circuit operations '
                                  || lower(st)) ORDER BY st)
        FROM (SELECT x ->> 'status' st, count(*) n
              FROM jsonb_array_elements(v_ops) x
              WHERE x ->> 'status' IN ('Rejected', 'Pending')
              GROUP BY 1) y), '[]');

    INSERT INTO compliance_reports (report_type, requested_by, dfid,
                                    period_start, period_end, scope,
                                    summary, total_events,
                                    compliance_status, content)
    VALUES ('food-safety', p_user, v_dfid, v_start, v_end,
            jsonb_build_object('dfid', v_dfid,
                               'resource_types',
                               '["supply_chain","food_items"]'::jsonb,
                               'regulations',
                               '["FDA_FSMA","EU_Food_Law"]'::jsonb),
            'Food safety report for ' || v_dfid || ': '
            || jsonb_array_length(v_events) || ' events, '
            || jsonb_array_length(v_circ) || ' circuits, '
            || jsonb_array_length(v_find) || ' findings',
            jsonb_array_length(v_events),
            CASE WHEN jsonb_array_length(v_find) = 0 THEN 'compliant'
                 ELSE 'review_required' END,
            jsonb_build_object(
                'item', v_item.doc::jsonb,
                'events_by_type', (
                    SELECT coalesce(jsonb_object_agg(t, n), '{}')
                    FROM (SELECT x ->> 'event_type' t, count(*) n
                          FROM jsonb_array_elements(v_events) x
                          GROUP BY 1) y),
                'timeline', v_events,
                'first_event_at', v_events -> 0 -> 'timestamp',
                'last_event_at', v_events -> -1 -> 'timestamp',
                'circuits', v_circ,
                'circuit_operations', v_ops,
                'storage_records', v_store,
                'findings', v_find))
    RETURNING * INTO r;

    RETURN defarm_answer(201, defarm_audit_report_json(r)::text);
END
$$;


-- GET .../dashboard/metrics?start_date=&end_date=: counts from the
-- tables, the caller's own (an administrator: everyone's).  The period
-- (default: all time) bounds the events counted by type, outcome and
-- severity, the top users and total_events; events_last_24h and _7d are
-- what they say.  A user's risk_score (0 to 100): half the share of their
-- events that failed or were blocked, half the share of high or critical
-- ones.  Anomalies: a user with 5 or more failed or blocked events in the
-- last 24 hours (high from 20).

CREATE FUNCTION defarm_audit_dashboard(p_user text, p_id text,
                                       p_query jsonb, p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_admin    boolean := defarm_is_admin(p_user);
    v_horizon  timestamptz := defarm_audit_horizon(p_user);
    v_f        jsonb;
    v_err      text;
    v_start    timestamptz;
    v_end      timestamptz;
    v          jsonb;
BEGIN
    v_f := jsonb_strip_nulls(jsonb_build_object(
        'start_date', defarm_audit_arg_number(p_query, 'start_date'),
        'end_date', defarm_audit_arg_number(p_query, 'end_date')));
    v_err := defarm_audit_period_error(v_f, 'start_date', 'end_date',
                                       false);

    IF v_err IS NOT NULL THEN
        RETURN defarm_answer(400, v_err);
    END IF;

    v_start := greatest(defarm_audit_time(v_f, 'start_date'), v_horizon);
    v_end := defarm_audit_time(v_f, 'end_date');

    WITH mine AS (
        SELECT * FROM audit_events e
        WHERE (v_admin OR e.user_id = p_user)
          AND (v_horizon IS NULL OR e.timestamp >= v_horizon)
    ), period AS (
        SELECT * FROM mine e
        WHERE (v_start IS NULL OR e.timestamp >= v_start)
          AND (v_end IS NULL OR e.timestamp <= v_end)
    ), incid AS (
        SELECT * FROM security_incidents i
        WHERE defarm_audit_incident_visible(i, p_user)
    )
    SELECT jsonb_build_object(
        'total_events', (SELECT count(*) FROM period),
        'events_last_24h', (SELECT count(*) FROM mine
                            WHERE timestamp >= now() - interval '24 hours'),
        'events_last_7d', (SELECT count(*) FROM mine
                           WHERE timestamp >= now() - interval '7 days'),
        'events_by_type', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                           FROM (SELECT event_type t, count(*) n
                                 FROM period GROUP BY 1) x),
        'events_by_outcome', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                              FROM (SELECT outcome t, count(*) n
                                    FROM period GROUP BY 1) x),
        'events_by_severity', (SELECT coalesce(jsonb_object_agg(t, n), '{}')
                               FROM (SELECT severity t, count(*) n
                                     FROM period GROUP BY 1) x),
        'security_incidents', (
            SELECT jsonb_build_object(
                'open', count(*) FILTER (WHERE status IN ('open',
                                                          'inprogress')),
                'critical', count(*) FILTER (WHERE severity = 'critical'
                                               AND status IN ('open',
                                                              'inprogress')),
                'resolved', count(*) FILTER (WHERE status IN ('resolved',
                                                              'closed')),
                'total', count(*))
            FROM incid),
        'compliance_status', (
            SELECT jsonb_build_object(
                'gdpr_events', count(*) FILTER (
                                   WHERE compliance -> 'gdpr' = 'true'),
                'ccpa_events', count(*) FILTER (
                                   WHERE compliance -> 'ccpa' = 'true'),
                'hipaa_events', count(*) FILTER (
                                    WHERE compliance -> 'hipaa' = 'true'),
                'sox_events', count(*) FILTER (
                                  WHERE compliance -> 'sox' = 'true'))
            FROM period),
        'compliance_reports', (SELECT count(*) FROM compliance_reports r
                               WHERE v_admin OR r.requested_by = p_user),
        'top_users', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'user_id', user_id, 'event_count', n,
                       'risk_score', risk) ORDER BY n DESC, user_id), '[]')
            FROM (SELECT user_id, count(*) n,
                         round((50.0 * count(*) FILTER (
                                    WHERE outcome IN ('failure', 'blocked'))
                                + 50.0 * count(*) FILTER (
                                    WHERE severity IN ('high', 'critical')))
                               / count(*), 2)::float8 AS risk
                  FROM period GROUP BY user_id
                  ORDER BY n DESC, user_id LIMIT 10) x),
        'anomalies', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'anomaly_type', 'repeated_failures',
                       'description', user_id || ': ' || n
                                      || ' failed or blocked events in 24 '
                                      'hours',
                       'severity', CASE WHEN n >= 20 THEN 'high'
                                        ELSE 'medium' END,
                       'user_id', user_id,
                       'detected_at', defarm_audit_unix(last))
                       ORDER BY n DESC, user_id), '[]')
            FROM (SELECT user_id, count(*) n, max(timestamp) last
                  FROM mine
                  WHERE timestamp >= now() - interval '24 hours'
                    AND outcome IN ('failure', 'blocked')
                  GROUP BY user_id HAVING count(*) >= 5) x),
        'start_date', defarm_audit_unix(v_start),
        'end_date', defarm_audit_unix(v_end),
        'generated_at', defarm_audit_unix(now()))
    INTO v;

    RETURN defarm_answer(200, jsonb_build_object('success', true,
                                                 'data', v)::text);
END
$$;

-- POST .../export/json {filter}: every event of the filter (the caller's
-- own; an administrator: any), charged audit_export when credits are on;
-- the export is itself an audit event

CREATE FUNCTION defarm_audit_export(p_user text, p_id text, p_body jsonb,
                                    p_arg text)
RETURNS defarm_answer
LANGUAGE plpgsql AS $$
DECLARE
    q  record := defarm_audit_own_filter(p_user, p_body);
    v  jsonb;
    n  int;
BEGIN
    IF q.v_refusal IS NOT NULL THEN
        RETURN q.v_refusal;
    END IF;

    v := defarm_audit_events_json(q.v_filter, defarm_audit_horizon(p_user),
                                  q.v_filter -> 'limit' IS NULL);

    n := jsonb_array_length(v);

    IF defarm_setting_on('defarm.credits') THEN
        PERFORM defarm_credit_charge(p_user, 'audit_export', NULL,
                                     'Audit export of ' || n || ' events');
    END IF;

    PERFORM defarm_audit_insert(p_user, p_user, 'data', 'audit_export',
                                'audit_events', NULL, 'success', 'low',
                                jsonb_build_object('events', n,
                                                   'filter', q.v_filter),
                                NULL, NULL);

    RETURN defarm_answer(200, jsonb_build_object(
        'success', true, 'format', 'json', 'count', n,
        'exported_at', defarm_audit_unix(now()), 'data', v)::text);
END
$$;


-- an administrator's action is an audit event too (the original's rule:
-- system, high, action the action's type), with the same id

CREATE FUNCTION defarm_audit_admin_action() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_events (event_id, user_id, recorded_by, event_type,
                              action, resource, resource_id, outcome,
                              severity, timestamp, details)
    VALUES (NEW.action_id, NEW.admin_id, NEW.admin_id, 'system',
            NEW.action_type, 'user', NEW.target_user_id, 'success', 'high',
            NEW.created_at, NEW.details);

    RETURN NULL;
END
$$;

CREATE TRIGGER admin_actions_audit AFTER INSERT ON admin_actions
    FOR EACH ROW EXECUTE FUNCTION defarm_audit_admin_action();

INSERT INTO audit_events (event_id, user_id, recorded_by, event_type,
                          action, resource, resource_id, outcome, severity,
                          timestamp, details)
SELECT a.action_id, a.admin_id, a.admin_id, 'system', a.action_type, 'user',
       a.target_user_id, 'success', 'high', a.created_at, a.details
FROM admin_actions a;
