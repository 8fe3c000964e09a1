-- Dashboard sessions. The cookie holds a random session id; only its SHA-256 is stored here, with
-- who signed in: a user by the id of the API key they used (never the key), or an operator by the
-- actor name their changes are audited under. A session ends at logout or at expires_at, and a
-- user's session ends with its key (revoked or expired keys are checked on every page).
CREATE TABLE edge.ui_sessions (
    id_hash bytea PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('user', 'operator')),
    actor text NOT NULL,
    account_id text REFERENCES edge.accounts (id),
    key_id text REFERENCES edge.api_keys (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at timestamptz,
    CHECK ((kind = 'user') = (key_id IS NOT NULL))
);
CREATE INDEX ui_sessions_expiry ON edge.ui_sessions (expires_at);
