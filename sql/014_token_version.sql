-- A user's tokens carry the token version they were issued at ("tv"); a
-- password reset moves it on, and the tokens issued before stop working
-- on their next request (the version is in the user's status record,
-- which the reset drops on every node).

ALTER TABLE users ADD COLUMN token_version integer NOT NULL DEFAULT 0;
