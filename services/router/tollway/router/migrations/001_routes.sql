-- The route tree: channel type -> brand -> channel -> routed models -> primary/backup order.
CREATE SCHEMA IF NOT EXISTS router;

CREATE TABLE router.channels (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    route_type text NOT NULL CHECK (route_type IN ('direct', 'pool')),
    brand text NOT NULL,
    bucket text NOT NULL,
    base_url text NOT NULL,
    adapter text NOT NULL DEFAULT 'openai' CHECK (adapter IN ('openai', 'anthropic')),
    secret text NOT NULL,
    price_input bigint NOT NULL CHECK (price_input >= 0),
    price_output bigint NOT NULL CHECK (price_output >= 0),
    price_cached_input bigint CHECK (price_cached_input >= 0),
    timeout_ms int NOT NULL DEFAULT 60000 CHECK (timeout_ms > 0),
    max_concurrency int NOT NULL DEFAULT 256 CHECK (max_concurrency > 0),
    enabled boolean NOT NULL DEFAULT true
);

CREATE TABLE router.catalog_models (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    default_max_output_tokens int NOT NULL DEFAULT 1024 CHECK (default_max_output_tokens > 0),
    max_output_tokens int NOT NULL DEFAULT 16384 CHECK (max_output_tokens > 0),
    enabled boolean NOT NULL DEFAULT true
);

CREATE TABLE router.routes (
    catalog_model text NOT NULL REFERENCES router.catalog_models (name),
    channel_id text NOT NULL REFERENCES router.channels (id),
    upstream_model text NOT NULL,
    tier int NOT NULL DEFAULT 0 CHECK (tier >= 0),
    weight int NOT NULL DEFAULT 1 CHECK (weight > 0),
    PRIMARY KEY (catalog_model, channel_id)
);
