-- One row per RemediationRequest. `active` is written by the Gateway from its phase rule
-- (signalgate.remediation.model.is_active); the partial unique index below is what keeps
-- "at most one active RR per fingerprint" true across any number of Gateway replicas.
-- `spec` and `labels` are JSON kept as text: written once, read whole, never queried inside
-- (text skips jsonb's parse-and-rebuild on every insert and read).
CREATE TABLE remediation_requests (
    name                    text        PRIMARY KEY,
    namespace               text        NOT NULL,
    fingerprint             text        NOT NULL,
    created_at              timestamptz NOT NULL,
    target_namespace        text        NOT NULL DEFAULT '',
    phase                   text        NOT NULL,
    active                  boolean     NOT NULL,
    outcome                 text,
    next_allowed_execution  timestamptz,
    message                 text,
    signal_resolved_at      timestamptz,
    first_seen_at           timestamptz NOT NULL,
    last_seen_at            timestamptz NOT NULL,
    occurrence_count        bigint      NOT NULL,
    labels                  text        NOT NULL,
    spec                    text        NOT NULL
) WITH (fillfactor = 80);  -- room for HOT updates of the duplicate counters

CREATE UNIQUE INDEX remediation_requests_one_active
    ON remediation_requests (fingerprint) WHERE active;

-- List pages (newest first) with and without each filter; the fingerprint one also serves
-- the suppression lookup (terminal RRs of one fingerprint).
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
