-- Users: the accounts behind JWTs and API keys.
--
-- Uniqueness of username and email is the database's decision, so two
-- concurrent registrations of one name cannot both succeed.

CREATE TABLE users (
    id              text PRIMARY KEY,
    username        text NOT NULL,
    email           text NOT NULL,
    password_hash   text NOT NULL,
    tier            text NOT NULL DEFAULT 'Basic'
                    CHECK (tier IN ('Basic', 'Professional', 'Enterprise',
                                    'Admin')),
    status          text NOT NULL DEFAULT 'Active'
                    CHECK (status IN ('Active', 'Suspended', 'Banned',
                                      'PendingVerification', 'TrialExpired')),
    credits         bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    is_admin        boolean NOT NULL DEFAULT false,
    workspace_id    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_login      timestamptz,

    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);
