-- Estimates are calibrated from the newest completed runs of the same mode and models.
CREATE INDEX runs_for_calibration ON researcher.runs (mode, finished_at DESC)
    WHERE status = 'completed';
