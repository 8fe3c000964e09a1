-- Velocity windows, learned baselines, breakers, alert throttling and webhook deliveries.
-- Every row is keyed by event time; old window slots and applied ids are pruned by event time,
-- so storage stays bounded by the number of active scopes, not by traffic.
CREATE TABLE limits.consumer_offsets (
    group_id text NOT NULL, topic text NOT NULL, partition int NOT NULL,
    next_offset bigint NOT NULL, PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE limits.outbox (
    seq bigserial PRIMARY KEY, topic text NOT NULL, key bytea, value bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '[]'
);
CREATE TABLE limits.applied_events (
    event_id text PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX applied_events_time ON limits.applied_events (occurred_at);

-- Sums per fixed slot of event time; a window is the sum of its slots.
CREATE TABLE limits.window_slots (
    scope text NOT NULL,
    scope_id text NOT NULL,
    metric text NOT NULL,
    slot timestamptz NOT NULL,
    amount bigint NOT NULL,
    examples text[] NOT NULL DEFAULT '{}',  -- a few request ids to quote in breakers and alerts
    PRIMARY KEY (scope, scope_id, metric, slot)
);
CREATE INDEX window_slots_slot ON limits.window_slots (slot);

-- The learned hourly rate: an exponentially weighted mean of completed hours.
CREATE TABLE limits.baselines (
    scope text NOT NULL,
    scope_id text NOT NULL,
    metric text NOT NULL,
    hour_start timestamptz NOT NULL,
    hour_amount bigint NOT NULL,
    mean_per_hour bigint NOT NULL,
    hours_seen int NOT NULL,
    PRIMARY KEY (scope, scope_id, metric)
);

CREATE TABLE limits.velocity_limits (
    scope text NOT NULL,
    scope_id text NOT NULL,
    account_id text NOT NULL,
    tokens_per_minute bigint,
    spend_micro_per_minute jsonb NOT NULL DEFAULT '{}',
    relative_factor int,
    cooldown_seconds int,
    PRIMARY KEY (scope, scope_id)
);

CREATE TABLE limits.breakers (
    scope text NOT NULL,
    scope_id text NOT NULL,
    account_id text NOT NULL,
    name text NOT NULL,
    state text NOT NULL CHECK (state IN ('open', 'closed')),
    trip_id text NOT NULL,
    crossed_at timestamptz NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (scope, scope_id)
);
CREATE INDEX breakers_open_until ON limits.breakers (until) WHERE state = 'open';

-- One alert per (scope, metric) per window: the last time it fired, in event time.
CREATE TABLE limits.alert_marks (
    scope text NOT NULL,
    scope_id text NOT NULL,
    metric text NOT NULL,
    fired_at timestamptz NOT NULL,
    PRIMARY KEY (scope, scope_id, metric)
);

-- Webhook deliveries: created with the alert in one transaction, retried until delivered.
CREATE TABLE limits.webhook_deliveries (
    delivery_id text PRIMARY KEY,
    subscription_id text NOT NULL,
    alert_id text NOT NULL,
    body bytea NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    failed_at timestamptz,
    last_error text
);
CREATE INDEX webhook_deliveries_due ON limits.webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
