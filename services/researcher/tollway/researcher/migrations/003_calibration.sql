-- Estimates are calibrated from the account's newest completed runs of the same mode and models.
CREATE INDEX runs_for_calibration ON researcher.runs (account_id, mode, finished_at DESC)
    WHERE status = 'completed';
