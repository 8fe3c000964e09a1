-- Alert webhook subscriptions, managed through the admin API and read by the limits service.
-- No secret is stored: each subscription's signing secret is derived from the deployment's
-- signing key and the subscription id.
CREATE TABLE edge.webhooks (
    id text PRIMARY KEY,
    url text NOT NULL,
    scopes text[],
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
