-- What each whole-hour detection read: a digest of the rules and of the lake files its spans
-- held. The reprocessing schedule skips an hour whose inputs are unchanged since (same
-- files, same rules: the same rows), so each hour is re-read once, not at every tick.
CREATE TABLE hour_detections (
    hour         TIMESTAMPTZ PRIMARY KEY,
    inputs       TEXT        NOT NULL,
    events       BIGINT      NOT NULL,
    anomalies    INTEGER     NOT NULL,
    detected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
