-- Chain heads: after every write, one row per correlation id written to, holding how many
-- events its chain has and the last event's hash. Rows are only ever added (the newest is
-- the head), so verify-chain can tell a chain whose newest events, or whole self, were
-- deleted: the events no longer reach the recorded head.

CREATE TABLE audit_chain_heads (
    correlation_id TEXT    NOT NULL,
    event_count    INTEGER NOT NULL,
    event_hash     TEXT    NOT NULL,
    written_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (correlation_id, event_count)
);

CREATE TRIGGER audit_chain_heads_no_update BEFORE UPDATE ON audit_chain_heads
BEGIN
    SELECT RAISE(ABORT, 'audit chain heads are immutable');
END;

CREATE TRIGGER audit_chain_heads_no_delete BEFORE DELETE ON audit_chain_heads
BEGIN
    SELECT RAISE(ABORT, 'audit chain heads are immutable');
END;

-- existing chains: their current head, as the events stand when this migration runs
INSERT INTO audit_chain_heads (correlation_id, event_count, event_hash)
SELECT e.correlation_id, counted.n, e.event_hash
FROM audit_events e
JOIN (
    SELECT correlation_id, count(*) AS n, max(seq) AS last_seq
    FROM audit_events GROUP BY correlation_id
) counted ON counted.correlation_id = e.correlation_id AND counted.last_seq = e.seq;
