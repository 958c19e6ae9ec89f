-- Password reset tokens.  Only the SHA-256 of a token's raw bytes is
-- stored; the token itself is shown once (e-mailed, or logged in
-- development with defarm_password_reset_log on).

CREATE TABLE password_reset_tokens (
    id              bigserial PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash      text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    ip_address      text,
    user_agent      text
);

CREATE INDEX password_reset_tokens_user_created
    ON password_reset_tokens (user_id, created_at);
