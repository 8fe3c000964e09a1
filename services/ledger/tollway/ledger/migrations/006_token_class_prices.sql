-- The price table's history keeps every token class's price (NULL: the class's default).
ALTER TABLE ledger.price_versions
    ADD COLUMN price_cache_write bigint CHECK (price_cache_write >= 0),
    ADD COLUMN price_cache_write_1h bigint CHECK (price_cache_write_1h >= 0),
    ADD COLUMN price_reasoning bigint CHECK (price_reasoning >= 0);
