-- Reversals and adjustments, one row per applied idempotency key. A reversal's amount counts
-- against its original: the sum per original can never exceed what the original moved.
CREATE TABLE ledger.corrections (
    idempotency_key text PRIMARY KEY,
    fingerprint text NOT NULL,
    event_id text NOT NULL,
    original_event_id text,
    amount bigint NOT NULL
);
CREATE INDEX corrections_original ON ledger.corrections (original_event_id)
    WHERE original_event_id IS NOT NULL;
