-- Audit events, partitioned by month on event_date, with a per-correlation hash chain.
-- `seq` is the write order the chain follows; the core columns are immutable (trigger below).

CREATE SEQUENCE audit_events_seq AS bigint;

CREATE TABLE audit_events (
    seq                 bigint      NOT NULL DEFAULT nextval('audit_events_seq'),
    event_id            uuid        NOT NULL,
    event_date          date        NOT NULL,
    event_timestamp     timestamptz NOT NULL,
    version             text        NOT NULL,
    event_type          text        NOT NULL,
    event_category      text        NOT NULL,
    event_action        text        NOT NULL,
    event_outcome       text        NOT NULL,
    correlation_id      text        NOT NULL,
    -- `json`, not `jsonb`: the text is kept exactly as hashed, so anyone can recompute it
    event_data          json        NOT NULL,
    actor_type          text,
    actor_id            text,
    actor_ip            text,
    resource_type       text,
    resource_id         text,
    parent_event_id     uuid,
    namespace           text,
    cluster_id          text,
    severity            text,
    duration_ms         bigint,
    error_code          text,
    error_message       text,
    retention_days      integer,
    is_sensitive        boolean,
    previous_event_hash text        NOT NULL,
    event_hash          text        NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_date)
) PARTITION BY RANGE (event_date);

-- Rows outside every monthly partition (a replay long after an outage) land here rather
-- than fail; `maintain` only ever creates months ahead, which this never holds.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

CREATE INDEX audit_events_event_id_idx ON audit_events (event_id);
CREATE INDEX audit_events_correlation_idx ON audit_events (correlation_id, seq);
CREATE INDEX audit_events_timestamp_idx ON audit_events (event_timestamp DESC, seq DESC);
CREATE INDEX audit_events_type_idx ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX audit_events_category_idx ON audit_events (event_category, event_timestamp DESC);
CREATE INDEX audit_events_outcome_idx ON audit_events (event_outcome, event_timestamp DESC);
CREATE INDEX audit_events_severity_idx ON audit_events (severity, event_timestamp DESC);
CREATE INDEX audit_events_namespace_idx ON audit_events (namespace, event_timestamp DESC);

CREATE FUNCTION audit_events_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.event_id, OLD.event_date, OLD.event_timestamp, OLD.version, OLD.event_type,
        OLD.event_category, OLD.event_action, OLD.event_outcome, OLD.correlation_id,
        OLD.event_data::text, OLD.actor_type, OLD.actor_id, OLD.actor_ip, OLD.resource_type,
        OLD.resource_id, OLD.parent_event_id, OLD.namespace, OLD.cluster_id, OLD.severity,
        OLD.duration_ms, OLD.error_code, OLD.error_message, OLD.retention_days,
        OLD.is_sensitive, OLD.previous_event_hash, OLD.event_hash, OLD.seq)
       IS DISTINCT FROM
       (NEW.event_id, NEW.event_date, NEW.event_timestamp, NEW.version, NEW.event_type,
        NEW.event_category, NEW.event_action, NEW.event_outcome, NEW.correlation_id,
        NEW.event_data::text, NEW.actor_type, NEW.actor_id, NEW.actor_ip, NEW.resource_type,
        NEW.resource_id, NEW.parent_event_id, NEW.namespace, NEW.cluster_id, NEW.severity,
        NEW.duration_ms, NEW.error_code, NEW.error_message, NEW.retention_days,
        NEW.is_sensitive, NEW.previous_event_hash, NEW.event_hash, NEW.seq)
    THEN
        RAISE EXCEPTION 'audit event % is immutable', OLD.event_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_events_immutable
    BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_immutable();

-- Monthly partitions from the month of `first_day` for `months` months; returns how many
-- were created. Called at start-up and by `signalgate-datastorage maintain`.
CREATE FUNCTION audit_ensure_partitions(first_day date, months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', first_day)::date;
    name text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        name := format('audit_events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                name, month_start, (month_start + interval '1 month')::date);
            created := created + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN created;
END;
$$;
