-- Re-ratings this edge accepted, one row per correction id, written before its commands are
-- published (one RerateRequested per affected account, fixed when the row is written). The same
-- id and body re-sends the very same commands (the ledger applies an event id, and a correction id
-- per account, once) and gets the original answer; another body under a used id is a 409 that
-- carries the original request. ``published_at`` is set once the event log confirmed them all.
CREATE TABLE edge.rerate_requests (
    correction_id text PRIMARY KEY,
    fingerprint text NOT NULL,
    request jsonb NOT NULL,
    preview jsonb NOT NULL,
    envelopes text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    audit_id bigint
);
