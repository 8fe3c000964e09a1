-- The price table's history as the ledger journaled it: one row per channel version, folded
-- from PriceTableChangeRequested in the order of its one partition (key system:prices), so a
-- replay numbers the same versions. (channel_id, version) is the concurrency check. Append only.
CREATE TABLE ledger.price_versions (
    channel_id text NOT NULL,
    version int NOT NULL CHECK (version > 0),
    price_input bigint NOT NULL CHECK (price_input >= 0),
    price_output bigint NOT NULL CHECK (price_output >= 0),
    price_cached_input bigint CHECK (price_cached_input >= 0),
    event_id text NOT NULL REFERENCES ledger.journal (event_id),
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (channel_id, version)
);
CREATE TRIGGER price_versions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.price_versions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
