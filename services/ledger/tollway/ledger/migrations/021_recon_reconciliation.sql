-- Reconciliation: what Tollway booked per upstream attempt against what the upstream reported
-- (in its answer, and in its invoice). Both tables are folded from the log (gw.usage and the
-- system:recon partition of gw.requests), so a replay rebuilds them row for row; both are
-- append only.

-- One row per attempt that has a cost price or a reported cost, keyed by the AttemptFinished's
-- event id (applied once). ``day`` is the UTC day of the event time.
CREATE TABLE ledger.recon_attempts (
    event_id text PRIMARY KEY,
    day date NOT NULL,
    channel_id text NOT NULL,
    account_id text NOT NULL,
    request_id text NOT NULL,
    attempt int NOT NULL,
    outcome text NOT NULL,
    upstream_request_id text,
    upstream_model text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    booked_micro bigint CHECK (booked_micro >= 0),
    booked_currency text,
    reported_micro bigint CHECK (reported_micro >= 0),
    reported_currency text,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX recon_attempts_channel_day ON ledger.recon_attempts (channel_id, day);
CREATE TRIGGER recon_attempts_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.recon_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- Every value an imported invoice line took: a new value is a new revision, never an update.
-- The line's current value is its highest revision. ``line_key`` is ``req:<upstream request
-- id>`` or ``day:<model>`` (a day's aggregate).
CREATE TABLE ledger.recon_invoice_lines (
    channel_id text NOT NULL,
    day date NOT NULL,
    line_key text NOT NULL,
    revision int NOT NULL CHECK (revision > 0),
    upstream_request_id text,
    model text NOT NULL,
    requests bigint NOT NULL CHECK (requests >= 0),
    input_tokens bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    cost_micro bigint NOT NULL CHECK (cost_micro >= 0),
    currency text NOT NULL,
    import_id text NOT NULL,
    line int NOT NULL,
    event_id text NOT NULL REFERENCES ledger.journal (event_id),
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (channel_id, day, line_key, revision)
);
CREATE TRIGGER recon_invoice_lines_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.recon_invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- Drift alerts already raised: one per (channel, day, basis, threshold). Not a projection of the
-- log alone (it depends on the threshold setting and on what other partitions had applied when
-- the invoice came), so the state digest leaves it out; it only keeps an alert from repeating.
CREATE TABLE ledger.recon_alerts (
    channel_id text NOT NULL,
    day date NOT NULL,
    basis text NOT NULL,
    threshold_ppm bigint NOT NULL,
    event_id text NOT NULL,
    raised_at timestamptz NOT NULL,
    PRIMARY KEY (channel_id, day, basis, threshold_ppm)
);
