-- Re-ratings of past charges (ledger.rerated): one row per charge a correction re-priced, next to
-- the original journal entry, which stays. What a request costs the tenant now is its original
-- charge plus the ``amount`` of its rows here; a reversal of the original may give back at most
-- that. Per account, a correction id is applied once (ledger.corrections, key 'rerate:<id>').
-- Folded from gw.requests in the account's partition order, so a replay rebuilds the same rows.
CREATE TABLE ledger.rerates (
    account_id text NOT NULL,
    correction_id text NOT NULL,
    request_id text NOT NULL,
    original_event_id text NOT NULL,
    event_id text NOT NULL REFERENCES ledger.journal (event_id),
    channel_id text NOT NULL,
    unit text NOT NULL,
    charged_before bigint NOT NULL,
    rerated bigint NOT NULL CHECK (rerated >= 0),
    amount bigint NOT NULL CHECK (amount <> 0),
    at timestamptz NOT NULL,
    PRIMARY KEY (account_id, correction_id, request_id)
);
CREATE INDEX rerates_original ON ledger.rerates (original_event_id);
CREATE TRIGGER rerates_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.rerates
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
