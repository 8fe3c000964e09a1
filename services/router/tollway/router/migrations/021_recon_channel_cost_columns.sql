-- The channel cost price columns the edge copies onto each candidate (Candidate.cost), created
-- here only if absent: the route admin's cost field owns them (its migration adds the same
-- columns with their checks and runs first); reconciliation needs them to exist.
ALTER TABLE router.channels
    ADD COLUMN IF NOT EXISTS cost_currency text,
    ADD COLUMN IF NOT EXISTS cost_input bigint,
    ADD COLUMN IF NOT EXISTS cost_output bigint,
    ADD COLUMN IF NOT EXISTS cost_cached_input bigint,
    ADD COLUMN IF NOT EXISTS cost_cache_write bigint,
    ADD COLUMN IF NOT EXISTS cost_cache_write_1h bigint,
    ADD COLUMN IF NOT EXISTS cost_reasoning bigint,
    ADD COLUMN IF NOT EXISTS cost_per_request bigint;
