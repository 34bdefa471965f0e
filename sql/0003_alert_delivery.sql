-- A row Discord refused for its content (HTTP 400) is not retried: the reason is kept here
-- and the outbox skips it.
ALTER TABLE anomaly_events ADD COLUMN notify_error TEXT;
DROP INDEX anomaly_events_outbox_idx;
CREATE INDEX anomaly_events_outbox_idx ON anomaly_events (created_at)
    WHERE notified_at IS NULL AND notify_error IS NULL;
