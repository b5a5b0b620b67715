-- A month whose partition did not exist when its events were written (DataStorage ran past
-- the months made ahead with no `maintain`, or under a role that may not create tables) has
-- its rows in the default partition. PostgreSQL then refuses to create that month's
-- partition ("updated partition constraint for default partition would be violated"), so
-- every later `maintain`, and every start, failed for good. The month's rows now move from
-- the default partition into the new one, in the same transaction that attaches it.
CREATE OR REPLACE FUNCTION audit_ensure_partitions(first_day date, months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', first_day)::date;
    month_end date;
    name text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month_end := (month_start + interval '1 month')::date;
        name := format('audit_events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM audit_events_default
                       WHERE event_date >= month_start AND event_date < month_end) THEN
                EXECUTE format(
                    'CREATE TABLE %I (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                    name);
                EXECUTE format(
                    'WITH moved AS (DELETE FROM audit_events_default '
                    'WHERE event_date >= %L AND event_date < %L RETURNING *) '
                    'INSERT INTO %I SELECT * FROM moved',
                    month_start, month_end, name);
                EXECUTE format(
                    'ALTER TABLE audit_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    name, month_start, month_end);
            ELSE
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                    name, month_start, month_end);
            END IF;
            created := created + 1;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END;
$$;
