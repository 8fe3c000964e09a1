-- Data keys that seal request bodies on the forever-retained topics (tollway.runtime.bodies).
-- A row is deleted once its epoch's requests are past delivery: the bodies it sealed are then
-- unrecoverable (crypto-shredding), while the billing facts beside them stay in clear.
CREATE SCHEMA IF NOT EXISTS bodykeys;
CREATE TABLE bodykeys.keys (
    id           text PRIMARY KEY,
    key          bytea NOT NULL CHECK (length(key) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    delete_after timestamptz NOT NULL
);
CREATE INDEX keys_by_expiry ON bodykeys.keys (delete_after);
