-- One row per stored event id, whatever its day. audit_events is partitioned by event_date,
-- so its key (event_id, event_date) cannot stop two concurrent writers of one id with
-- different timestamps from both storing it (two rows, one id). Every write inserts its
-- rows' ids here in the same transaction: a second writer of an id waits for the first,
-- then fails on this key and is retried, and then finds the id stored (409 or a no-op).
CREATE TABLE audit_event_ids (event_id uuid PRIMARY KEY);

INSERT INTO audit_event_ids SELECT DISTINCT event_id FROM audit_events ON CONFLICT DO NOTHING;
