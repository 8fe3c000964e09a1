-- Idempotency keys of top-ups and corrections belong to their account: two tenants may use the
-- same key, and no decision for one account reads another account's rows (a replay applies
-- partitions in another order than the live ledger did, so such a decision could differ).
ALTER TABLE ledger.topups ADD COLUMN account_id text;
UPDATE ledger.topups t SET account_id = j.account_id
FROM ledger.journal j WHERE j.event_id = t.event_id;
ALTER TABLE ledger.topups ALTER COLUMN account_id SET NOT NULL;
ALTER TABLE ledger.topups DROP CONSTRAINT topups_pkey;
ALTER TABLE ledger.topups ADD PRIMARY KEY (account_id, idempotency_key);

ALTER TABLE ledger.corrections ADD COLUMN account_id text;
UPDATE ledger.corrections c SET account_id = j.account_id
FROM ledger.journal j WHERE j.event_id = c.event_id;
ALTER TABLE ledger.corrections ALTER COLUMN account_id SET NOT NULL;
ALTER TABLE ledger.corrections DROP CONSTRAINT corrections_pkey;
ALTER TABLE ledger.corrections ADD PRIMARY KEY (account_id, idempotency_key);
