-- Audit events for the embedded store: the same columns as PostgreSQL, JSON and timestamps
-- as text (timestamps in the canonical UTC form, so they sort as text), no partitions.

CREATE TABLE audit_events (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            TEXT    NOT NULL UNIQUE,
    event_date          TEXT    NOT NULL,
    event_timestamp     TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    event_type          TEXT    NOT NULL,
    event_category      TEXT    NOT NULL,
    event_action        TEXT    NOT NULL,
    event_outcome       TEXT    NOT NULL,
    correlation_id      TEXT    NOT NULL,
    event_data          TEXT    NOT NULL,
    actor_type          TEXT,
    actor_id            TEXT,
    actor_ip            TEXT,
    resource_type       TEXT,
    resource_id         TEXT,
    parent_event_id     TEXT,
    namespace           TEXT,
    cluster_id          TEXT,
    severity            TEXT,
    duration_ms         INTEGER,
    error_code          TEXT,
    error_message       TEXT,
    retention_days      INTEGER,
    is_sensitive        INTEGER,
    previous_event_hash TEXT    NOT NULL,
    event_hash          TEXT    NOT NULL,
    stored_at           TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX audit_events_correlation_idx ON audit_events (correlation_id, seq);
CREATE INDEX audit_events_timestamp_idx ON audit_events (event_timestamp DESC, seq DESC);
CREATE INDEX audit_events_type_idx ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX audit_events_category_idx ON audit_events (event_category, event_timestamp DESC);
CREATE INDEX audit_events_outcome_idx ON audit_events (event_outcome, event_timestamp DESC);
CREATE INDEX audit_events_severity_idx ON audit_events (severity, event_timestamp DESC);
CREATE INDEX audit_events_namespace_idx ON audit_events (namespace, event_timestamp DESC);

-- Nothing about a stored event may change; tampering means dropping this trigger first.
CREATE TRIGGER audit_events_immutable BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are immutable');
END;
