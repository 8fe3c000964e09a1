-- Prices per 1M tokens of the token classes beyond plain input and output: prompt-cache writes
-- (5-minute and 1-hour, priced apart) and reasoning tokens. NULL: the class costs what plain
-- input (writes) or output (reasoning) costs; a 1-hour write falls back to the 5-minute price.
ALTER TABLE router.channels
    ADD COLUMN price_cache_write bigint CHECK (price_cache_write >= 0),
    ADD COLUMN price_cache_write_1h bigint CHECK (price_cache_write_1h >= 0),
    ADD COLUMN price_reasoning bigint CHECK (price_reasoning >= 0);
