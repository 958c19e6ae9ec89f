-- API keys and their daily usage.
--
-- A key is shown once; only the SHA-256 (hex) of the whole key is stored,
-- with its first 8 characters to tell keys apart in listings.  The owner
-- is the real user: requests by key act as that user.

CREATE TABLE api_keys (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash            text NOT NULL UNIQUE,
    key_prefix          text NOT NULL,
    name                text NOT NULL,
    organization_type   text NOT NULL
                        CHECK (organization_type IN ('Admin', 'Producer',
                               'Association', 'Enterprise', 'Government',
                               'External')),
    organization_id     uuid,
    perm_read           boolean NOT NULL DEFAULT true,
    perm_write          boolean NOT NULL DEFAULT false,
    perm_admin          boolean NOT NULL DEFAULT false,
    perm_custom         jsonb NOT NULL DEFAULT '{}',
    allowed_endpoints   text[] NOT NULL DEFAULT '{}',
    allowed_ips         text[] NOT NULL DEFAULT '{}',
    rate_limit_per_hour integer NOT NULL DEFAULT 100
                        CHECK (rate_limit_per_hour BETWEEN 1 AND 1000000),
    notes               text,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz,
    last_used_at        timestamptz,
    usage_count         bigint NOT NULL DEFAULT 0
);

CREATE INDEX api_keys_user_created ON api_keys (user_id, created_at);

-- Written in batches by each worker (ngx_defarm_usage.c): one row per key
-- and UTC day, added to.

CREATE TABLE api_key_usage_daily (
    key_id              uuid NOT NULL REFERENCES api_keys (id)
                        ON DELETE CASCADE,
    day                 date NOT NULL,
    requests            bigint NOT NULL DEFAULT 0,
    errors              bigint NOT NULL DEFAULT 0,
    total_ms            bigint NOT NULL DEFAULT 0,

    PRIMARY KEY (key_id, day)
);
