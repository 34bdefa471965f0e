-- An ingest run's detection state for each anomaly it writes: the fold of the anomaly's
-- firings before the run's batch start (vigil/detect/carry.py). A later run whose batch
-- starts no earlier resumes an anomaly still open from it instead of recomputing its
-- whole re-alert bucket. NULL (a whole-hour detection wrote the row): recompute.
ALTER TABLE anomaly_events ADD COLUMN carry JSONB;
