-- Anomalies found by detection: one row per (rule, entity, window start), upserted by id.
CREATE TABLE anomaly_events (
    id            TEXT PRIMARY KEY,
    timestamp     TIMESTAMPTZ NOT NULL,
    is_alert      BOOLEAN     NOT NULL DEFAULT TRUE,
    alert_type    TEXT        NOT NULL,
    alert_level   TEXT        NOT NULL
                  CHECK (alert_level IN ('info', 'warning', 'critical')),
    alert_title   TEXT        NOT NULL,
    alert_message TEXT        NOT NULL DEFAULT '',
    user_id       TEXT,
    tags          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    metrics       JSONB       NOT NULL DEFAULT '{}'::jsonb
);

-- Dashboards and the API read by time range, newest first, optionally narrowed by
-- type, level or user.
CREATE INDEX anomaly_events_timestamp_idx ON anomaly_events (timestamp DESC);
CREATE INDEX anomaly_events_type_time_idx ON anomaly_events (alert_type, timestamp DESC);
CREATE INDEX anomaly_events_level_time_idx ON anomaly_events (alert_level, timestamp DESC);
CREATE INDEX anomaly_events_user_time_idx ON anomaly_events (user_id, timestamp DESC)
    WHERE user_id IS NOT NULL;
