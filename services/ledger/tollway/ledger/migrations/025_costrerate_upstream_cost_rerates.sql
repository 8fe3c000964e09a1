-- Re-ratings of booked upstream costs (ledger.upstream_cost_rerated): one row per booked attempt
-- cost a correction re-priced, next to the original ledger.upstream_cost_booked, which stays.
-- What an attempt costs the operator now is its booking's cost_micro plus the ``amount`` of its
-- rows here (margins, the operator receipt and the reconciliation's drift read it that way).
-- ``attempt_event_id`` is the attempt that caused the booking (ledger.recon_attempts.event_id).
-- Per account, a correction id is applied once (ledger.corrections, key 'cost_rerate:<id>').
-- Folded from gw.requests in the tenant's partition order, so a replay rebuilds the same rows.
CREATE TABLE ledger.upstream_cost_rerates (
    account_id text NOT NULL,
    correction_id text NOT NULL,
    cost_event_id text NOT NULL REFERENCES ledger.upstream_costs (event_id),
    attempt_event_id text NOT NULL,
    event_id text NOT NULL REFERENCES ledger.journal (event_id),
    request_id text NOT NULL,
    attempt int NOT NULL CHECK (attempt > 0),
    channel_id text NOT NULL,
    currency text NOT NULL,
    booked_before bigint NOT NULL,
    rerated bigint NOT NULL CHECK (rerated >= 0),
    amount bigint NOT NULL CHECK (amount <> 0),
    at timestamptz NOT NULL,
    PRIMARY KEY (account_id, correction_id, cost_event_id)
);
CREATE INDEX upstream_cost_rerates_cost ON ledger.upstream_cost_rerates (cost_event_id);
CREATE INDEX upstream_cost_rerates_attempt ON ledger.upstream_cost_rerates (attempt_event_id);
CREATE INDEX upstream_cost_rerates_request ON ledger.upstream_cost_rerates (request_id);
CREATE TRIGGER upstream_cost_rerates_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.upstream_cost_rerates
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- A cost re-rating finds a channel's bookings of a period (the accounts, then each account's).
CREATE INDEX upstream_costs_channel_time ON ledger.upstream_costs (channel_id, occurred_at);
