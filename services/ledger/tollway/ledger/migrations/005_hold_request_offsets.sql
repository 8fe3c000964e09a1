-- Where each hold's request sits in its gw.requests partition: a clock tick expires only holds
-- whose request the ledger had applied when the tick was made (ClockTicked.requests_before), so
-- a replay, which cannot know how live interleaved the two topics, expires the same holds.
ALTER TABLE ledger.holds ADD COLUMN request_offset bigint;
