-- What detection records beside the original columns: which rule or detector fired, on which
-- entity, over which window, with what evidence, and the outbox state for Discord.
ALTER TABLE anomaly_events
    ADD COLUMN rule             TEXT,
    ADD COLUMN detector         TEXT NOT NULL DEFAULT 'rules',
    ADD COLUMN detector_version TEXT,
    ADD COLUMN topic            TEXT,
    ADD COLUMN entity           TEXT,
    ADD COLUMN service          TEXT,
    ADD COLUMN window_start     TIMESTAMPTZ,
    ADD COLUMN window_end       TIMESTAMPTZ,
    ADD COLUMN detected_hour    TIMESTAMPTZ,
    ADD COLUMN evidence         JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN notified_at      TIMESTAMPTZ;

-- Re-detecting an hour replaces that hour's rows of a detector.
CREATE INDEX anomaly_events_hour_idx ON anomaly_events (detector, detected_hour);
CREATE INDEX anomaly_events_rule_time_idx ON anomaly_events (rule, timestamp DESC);
CREATE INDEX anomaly_events_entity_time_idx ON anomaly_events (entity, timestamp DESC);
CREATE INDEX anomaly_events_service_time_idx ON anomaly_events (service, timestamp DESC);
-- The Discord outbox: rows not yet delivered.
CREATE INDEX anomaly_events_outbox_idx ON anomaly_events (created_at) WHERE notified_at IS NULL;
