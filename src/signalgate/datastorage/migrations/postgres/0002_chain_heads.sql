-- Chain heads: after every write, one row per correlation id written to, holding how many
-- events its chain has and the last event's hash. Rows are only ever added (the newest is
-- the head), so verify-chain can tell a chain whose newest events, or whole self, were
-- deleted: the events no longer reach the recorded head.

CREATE TABLE audit_chain_heads (
    correlation_id text        NOT NULL,
    event_count    bigint      NOT NULL,
    event_hash     text        NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (correlation_id, event_count)
);

CREATE FUNCTION audit_chain_heads_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit chain heads are immutable';
END;
$$;

CREATE TRIGGER audit_chain_heads_immutable BEFORE UPDATE OR DELETE ON audit_chain_heads
FOR EACH ROW EXECUTE FUNCTION audit_chain_heads_immutable();

-- existing chains: their current head, as the events stand when this migration runs
INSERT INTO audit_chain_heads (correlation_id, event_count, event_hash)
SELECT DISTINCT ON (correlation_id)
    correlation_id,
    count(*) OVER (PARTITION BY correlation_id),
    event_hash
FROM audit_events
ORDER BY correlation_id, seq DESC;
