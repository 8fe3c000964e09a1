-- Top-ups this edge accepted, one row per (account, idempotency key), written before the event is
-- published. A retry with the same key and body re-sends the same event (the ledger applies an
-- event id once) and gets the original answer; another body under a used key is a 409 that
-- carries the original request. ``published_at`` is set once the event log confirmed it.
CREATE TABLE edge.topup_requests (
    account_id text NOT NULL,
    idempotency_key text NOT NULL,
    event_id text NOT NULL UNIQUE,
    fingerprint text NOT NULL,
    request jsonb NOT NULL,
    envelope bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    audit_id bigint,
    PRIMARY KEY (account_id, idempotency_key)
);
