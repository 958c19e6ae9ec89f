-- Events: what happens to items.  An event is deduplicated by its content
-- hash, SHA-256 over dfid (or the local event id), event type, source and
-- the metadata as canonical JSON (keys sorted by byte, no spaces), made
-- here so that every path hashes alike.  The source is the user who made
-- it, and its owner.

CREATE FUNCTION defarm_canonical_json(j jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE jsonb_typeof(j)
        WHEN 'object' THEN
            '{' || coalesce((
                SELECT string_agg(to_jsonb(e.key)::text || ':'
                                  || defarm_canonical_json(e.value), ','
                                  ORDER BY e.key COLLATE "C")
                FROM jsonb_each(j) e), '') || '}'
        WHEN 'array' THEN
            '[' || coalesce((
                SELECT string_agg(defarm_canonical_json(a.v), ','
                                  ORDER BY a.n)
                FROM jsonb_array_elements(j) WITH ORDINALITY AS a(v, n)),
                '') || ']'
        ELSE j::text
    END
$$;

CREATE TABLE events (
    event_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dfid                text REFERENCES items (dfid) ON DELETE CASCADE,
    local_event_id      uuid UNIQUE,
    owner_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_type          text NOT NULL,
    visibility          text NOT NULL
                        CHECK (visibility IN ('Public', 'Private',
                                              'CircuitOnly')),
    metadata            jsonb NOT NULL DEFAULT '{}',
    is_encrypted        boolean NOT NULL DEFAULT false,
    content_hash        text NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now(),

    CHECK ((dfid IS NULL) = (local_event_id IS NOT NULL))
);

CREATE INDEX events_dfid ON events (dfid, created_at);
CREATE INDEX events_owner ON events (owner_id, created_at);
CREATE INDEX events_type ON events (event_type, created_at);
CREATE INDEX events_public ON events (created_at) WHERE visibility = 'Public';

CREATE FUNCTION defarm_event_hash(p_subject text, p_type text,
                                  p_source text, p_metadata jsonb)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(p_subject || p_type || p_source
                                    || defarm_canonical_json(p_metadata),
                                    'UTF8')), 'hex')
$$;

-- EventResponse

CREATE FUNCTION defarm_event_json(e events) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'event_id', e.event_id,
        'dfid', coalesce(e.dfid, 'LOCAL-EVENT-' || e.local_event_id),
        'event_type', e.event_type,
        'timestamp', floor(extract(epoch FROM e.created_at))::bigint,
        'source', e.owner_id,
        'metadata', e.metadata,
        'is_encrypted', e.is_encrypted,
        'visibility', e.visibility,
        'content_hash', e.content_hash)
    || CASE WHEN e.local_event_id IS NULL THEN '{}'::jsonb
       ELSE jsonb_build_object('local_event_id', e.local_event_id,
                               'is_local', true) END
$$;

-- Create on an item of the caller (outcome not_found otherwise), or on no
-- item (p_dfid NULL: a local event).  An identical event (same hash) is
-- not stored again: it is returned, was_deduplicated true.

CREATE FUNCTION defarm_event_create(p_owner text, p_dfid text, p_type text,
                                    p_visibility text, p_metadata jsonb)
RETURNS TABLE (outcome text, event jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_local  uuid;
    v_hash   text;
    v_event  events;
BEGIN
    IF p_dfid IS NOT NULL THEN
        PERFORM 1 FROM items i
        WHERE i.dfid = p_dfid AND i.owner_id = p_owner;

        IF NOT FOUND THEN
            RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
            RETURN;
        END IF;

    ELSE
        v_local := gen_random_uuid();
    END IF;

    v_hash := defarm_event_hash(coalesce(p_dfid, 'LOCAL-EVENT-' || v_local),
                                p_type, p_owner, p_metadata);

    INSERT INTO events (dfid, local_event_id, owner_id, event_type,
                        visibility, metadata, is_encrypted, content_hash)
    VALUES (p_dfid, v_local, p_owner, p_type, p_visibility, p_metadata,
            p_visibility = 'Private', v_hash)
    ON CONFLICT (content_hash) DO NOTHING
    RETURNING * INTO v_event;

    IF FOUND THEN
        RETURN QUERY SELECT 'ok'::text, defarm_event_json(v_event)
            || jsonb_build_object('was_deduplicated', false,
                                  'original_event_id', NULL);
        RETURN;
    END IF;

    SELECT * INTO v_event FROM events e WHERE e.content_hash = v_hash;

    RETURN QUERY SELECT 'ok'::text, defarm_event_json(v_event)
        || jsonb_build_object('was_deduplicated', true,
                              'original_event_id', v_event.event_id);
END
$$;

-- Merge metadata into the caller's event and hash it again; outcome
-- not_found, or duplicate when the result equals another event.

CREATE FUNCTION defarm_event_metadata(p_owner text, p_event uuid,
                                      p_metadata jsonb)
RETURNS TABLE (outcome text, event jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_event  events;
BEGIN
    UPDATE events e
    SET metadata = e.metadata || p_metadata,
        content_hash = defarm_event_hash(
            coalesce(e.dfid, 'LOCAL-EVENT-' || e.local_event_id),
            e.event_type, e.owner_id, e.metadata || p_metadata)
    WHERE e.event_id = p_event AND e.owner_id = p_owner
    RETURNING * INTO v_event;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    RETURN QUERY SELECT 'ok'::text, defarm_event_json(v_event);

EXCEPTION WHEN unique_violation THEN
    RETURN QUERY SELECT 'duplicate'::text, NULL::jsonb;
END
$$;
