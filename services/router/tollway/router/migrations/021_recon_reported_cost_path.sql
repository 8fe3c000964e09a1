-- Where a channel's upstream reports what a call cost in its answer: a dot-separated JSON path
-- of object keys (validated by the admin API, tollway.events.recon.cost_path_segments). NULL or
-- empty: OpenRouter's ``usage.cost``.
ALTER TABLE router.channels ADD COLUMN reported_cost_path text
    CHECK (reported_cost_path IS NULL OR length(reported_cost_path) <= 200);
