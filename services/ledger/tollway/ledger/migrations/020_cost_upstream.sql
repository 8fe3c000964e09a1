-- Upstream cost: one row per attempt whose channel has a cost price, served or failed, folded
-- from ledger.upstream_cost_booked (its postings are in the journal). The row carries what
-- margin reports group by, all copied from the attempt's event, so a replay writes the same
-- rows. ``day`` is the UTC day of the attempt's event time. Append only.
CREATE TABLE ledger.upstream_costs (
    event_id text PRIMARY KEY REFERENCES ledger.journal (event_id),
    cause_id text NOT NULL,
    request_id text NOT NULL,
    attempt int NOT NULL CHECK (attempt > 0),
    occurred_at timestamptz NOT NULL,
    day date NOT NULL,
    channel_id text NOT NULL,
    brand text NOT NULL,
    route_type text NOT NULL,
    catalog_model text,
    account_id text NOT NULL,
    key_id text,
    project_id text,
    served boolean NOT NULL,
    currency text NOT NULL,
    cost_micro bigint NOT NULL CHECK (cost_micro > 0)
);
CREATE INDEX upstream_costs_time ON ledger.upstream_costs (occurred_at);
CREATE INDEX upstream_costs_request ON ledger.upstream_costs (request_id, channel_id);
CREATE TRIGGER upstream_costs_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.upstream_costs
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();

-- A price version keeps the channel's upstream cost price too (NULL currency: no cost price;
-- a NULL class price falls back like the sell price's).
ALTER TABLE ledger.price_versions
    ADD COLUMN cost_currency text,
    ADD COLUMN cost_input bigint CHECK (cost_input >= 0),
    ADD COLUMN cost_output bigint CHECK (cost_output >= 0),
    ADD COLUMN cost_cached_input bigint CHECK (cost_cached_input >= 0),
    ADD COLUMN cost_cache_write bigint CHECK (cost_cache_write >= 0),
    ADD COLUMN cost_cache_write_1h bigint CHECK (cost_cache_write_1h >= 0),
    ADD COLUMN cost_reasoning bigint CHECK (cost_reasoning >= 0),
    ADD COLUMN cost_per_request bigint CHECK (cost_per_request >= 0);
