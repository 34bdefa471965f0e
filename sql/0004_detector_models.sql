-- One trained model per (rule, hour, version) for model-based detectors such as
-- isolation_forest: trained once from the lake, then reused by every run scoring that hour,
-- so micro-batches, the hourly run and a backfill score the hour with the same model.
CREATE TABLE detector_models (
    rule           TEXT        NOT NULL,
    hour           TIMESTAMPTZ NOT NULL,
    version        TEXT        NOT NULL,
    training_rows  BIGINT      NOT NULL,
    threshold      DOUBLE PRECISION NOT NULL,
    model          BYTEA       NOT NULL,
    trained_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, hour, version)
);
