-- Same shape as migrations/postgres/0001: times are format_time text (RFC 3339 UTC with
-- microseconds and Z, which sorts as text), booleans are 0/1, spec and labels JSON text.
CREATE TABLE remediation_requests (
    name                    TEXT    PRIMARY KEY,
    namespace               TEXT    NOT NULL,
    fingerprint             TEXT    NOT NULL,
    created_at              TEXT    NOT NULL,
    target_namespace        TEXT    NOT NULL DEFAULT '',
    phase                   TEXT    NOT NULL,
    active                  INTEGER NOT NULL,
    outcome                 TEXT,
    next_allowed_execution  TEXT,
    message                 TEXT,
    signal_resolved_at      TEXT,
    first_seen_at           TEXT    NOT NULL,
    last_seen_at            TEXT    NOT NULL,
    occurrence_count        INTEGER NOT NULL,
    labels                  TEXT    NOT NULL,
    spec                    TEXT    NOT NULL
);

CREATE UNIQUE INDEX remediation_requests_one_active
    ON remediation_requests (fingerprint) WHERE active;

CREATE INDEX remediation_requests_created
    ON remediation_requests (created_at DESC, name DESC);
CREATE INDEX remediation_requests_fingerprint_created
    ON remediation_requests (fingerprint, created_at DESC, name DESC);
CREATE INDEX remediation_requests_phase_created
    ON remediation_requests (phase, created_at DESC, name DESC);
CREATE INDEX remediation_requests_target_namespace_created
    ON remediation_requests (target_namespace, created_at DESC, name DESC);
CREATE INDEX remediation_requests_active_created
    ON remediation_requests (active, created_at DESC, name DESC);
