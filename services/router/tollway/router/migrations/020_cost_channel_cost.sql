-- A channel's upstream cost price: what the operator pays the upstream, in ``cost_currency``
-- (micro-units per 1M tokens of each class, NULL: the class falls back like the sell price's),
-- plus ``cost_per_request`` per upstream call. NULL currency: no cost price. The edge copies it
-- onto every candidate of a plan (``Candidate.cost``); the ledger books each attempt's cost.
ALTER TABLE router.channels
    ADD COLUMN cost_currency text,
    ADD COLUMN cost_input bigint CHECK (cost_input >= 0),
    ADD COLUMN cost_output bigint CHECK (cost_output >= 0),
    ADD COLUMN cost_cached_input bigint CHECK (cost_cached_input >= 0),
    ADD COLUMN cost_cache_write bigint CHECK (cost_cache_write >= 0),
    ADD COLUMN cost_cache_write_1h bigint CHECK (cost_cache_write_1h >= 0),
    ADD COLUMN cost_reasoning bigint CHECK (cost_reasoning >= 0),
    ADD COLUMN cost_per_request bigint CHECK (cost_per_request >= 0),
    ADD CONSTRAINT channel_cost_complete CHECK (
        (cost_currency IS NULL)
        = (cost_input IS NULL AND cost_output IS NULL AND cost_per_request IS NULL)
    );
