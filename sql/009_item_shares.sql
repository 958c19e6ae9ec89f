-- Item shares, persisted (the original's were not): the owner shares an
-- item with another user, who can then list it (GET shared-to).

CREATE TABLE item_shares (
    share_id            text PRIMARY KEY,
    dfid                text NOT NULL REFERENCES items (dfid)
                        ON DELETE CASCADE,
    recipient_id        text NOT NULL REFERENCES users (id)
                        ON DELETE CASCADE,
    permissions         text[] NOT NULL DEFAULT '{read}',
    shared_at           timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT item_shares_once UNIQUE (dfid, recipient_id)
);

CREATE INDEX item_shares_recipient ON item_shares (recipient_id, shared_at);

-- Share the caller's item (outcome not_found), with an existing user
-- (no_recipient); sharing again updates the permissions and keeps the id.

CREATE FUNCTION defarm_item_share(p_owner text, p_dfid text,
                                  p_recipient text, p_permissions text[])
RETURNS TABLE (outcome text, share jsonb) LANGUAGE plpgsql AS $$
DECLARE
    v_share  item_shares;
BEGIN
    PERFORM 1 FROM items i WHERE i.dfid = p_dfid AND i.owner_id = p_owner;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;

    PERFORM 1 FROM users u WHERE u.id = p_recipient;

    IF NOT FOUND THEN
        RETURN QUERY SELECT 'no_recipient'::text, NULL::jsonb;
        RETURN;
    END IF;

    INSERT INTO item_shares (share_id, dfid, recipient_id, permissions)
    VALUES ('SHARE-' || to_char(now() AT TIME ZONE 'UTC',
                                'YYYYMMDDHH24MISS')
            || '-' || upper(substr(md5(random()::text), 1, 8)),
            p_dfid, p_recipient, p_permissions)
    ON CONFLICT ON CONSTRAINT item_shares_once
    DO UPDATE SET permissions = EXCLUDED.permissions
    RETURNING * INTO v_share;

    RETURN QUERY SELECT 'ok'::text, jsonb_build_object(
        'share_id', v_share.share_id, 'dfid', v_share.dfid,
        'recipient_user_id', v_share.recipient_id,
        'permissions', to_jsonb(v_share.permissions),
        'shared_at', floor(extract(epoch FROM v_share.shared_at))::bigint);
END
$$;
