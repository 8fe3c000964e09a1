-- The ledger schema: an append-only journal and postings, projections derived from them,
-- the consumer's offsets and the outbox (written in the same transaction as the effects).
CREATE SCHEMA IF NOT EXISTS ledger;

-- Input events already applied: the idempotency check, in the effect's transaction.
CREATE TABLE ledger.applied_events (
    event_id text PRIMARY KEY,
    type text NOT NULL
);

-- Every event the ledger emitted, in order. Append only.
CREATE TABLE ledger.journal (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    type text NOT NULL,
    account_id text NOT NULL,
    cause_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    body jsonb NOT NULL
);

-- Double entry: each journal event's postings sum to zero per unit. Append only.
CREATE TABLE ledger.postings (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL REFERENCES ledger.journal (event_id),
    account text NOT NULL,
    unit text NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX postings_account ON ledger.postings (account, unit);

CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: correct with a reversing entry', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.journal
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- Projection: balance of each ledger account = sum of its postings.
CREATE TABLE ledger.balances (
    account text NOT NULL,
    unit text NOT NULL,
    amount bigint NOT NULL,
    PRIMARY KEY (account, unit)
);

-- A tenant's buckets and their units (fixed by the first top-up).
CREATE TABLE ledger.buckets (
    account_id text NOT NULL,
    bucket text NOT NULL,
    unit text NOT NULL,
    PRIMARY KEY (account_id, bucket)
);

CREATE TABLE ledger.topups (
    idempotency_key text PRIMARY KEY,
    fingerprint text NOT NULL,
    event_id text NOT NULL
);

CREATE TABLE ledger.holds (
    hold_id text PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    account_id text NOT NULL,
    bucket text NOT NULL,
    unit text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    status text NOT NULL CHECK (status IN ('open', 'settled', 'released', 'expired')),
    deadline_at timestamptz NOT NULL,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz
);
CREATE INDEX holds_open ON ledger.holds (account_id, deadline_at) WHERE status = 'open';

-- Projection: one receipt per request, the whole story as JSON.
CREATE TABLE ledger.receipts (
    request_id text PRIMARY KEY,
    account_id text NOT NULL,
    key_id text NOT NULL,
    project_id text NOT NULL,
    task_id text,
    catalog_model text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX receipts_account ON ledger.receipts (account_id, created_at);

CREATE TABLE ledger.consumer_offsets (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE ledger.outbox (
    seq bigserial PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    value bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '[]'
);
