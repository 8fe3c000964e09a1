-- Accounts, projects and API keys. Keys are stored only as SHA-256 digests.
CREATE SCHEMA IF NOT EXISTS edge;

CREATE TABLE edge.accounts (
    id text PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE edge.projects (
    id text PRIMARY KEY,
    account_id text NOT NULL REFERENCES edge.accounts (id),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

CREATE TABLE edge.api_keys (
    id text PRIMARY KEY,
    key_hash bytea NOT NULL UNIQUE,
    prefix text NOT NULL,
    account_id text NOT NULL REFERENCES edge.accounts (id),
    project_id text NOT NULL REFERENCES edge.projects (id),
    name text NOT NULL DEFAULT '',
    allowed_models text[],
    route_types text[] NOT NULL DEFAULT ARRAY['direct', 'pool'],
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
