"""The Kubernetes store's object mapping and status patches, without a server (the store
itself is tested against a real API server in tests/integration/remediation)."""

from __future__ import annotations

from datetime import UTC, datetime

from signalgate.remediation.kubernetes import from_object, merge_diff, rr_name, to_object
from signalgate.remediation.model import parse_time


def test_merge_diff_removes_changes_and_keeps_the_rest() -> None:
    old = {"a": 1, "gone": "x", "nested": {"keep": 1, "drop": 2, "change": 3}, "list": [1]}
    new = {"a": 1, "nested": {"keep": 1, "change": 4}, "list": [1, 2], "added": True}
    assert merge_diff(old, new) == {
        "gone": None,
        "nested": {"drop": None, "change": 4},
        "list": [1, 2],
        "added": True,
    }
    assert merge_diff(new, new) == {}


def test_names_are_the_fingerprint_and_its_generation() -> None:
    fp = "ab" * 32
    assert rr_name(fp, 1).startswith("rr-abababababab-")
    assert rr_name(fp, 1) != rr_name(fp, 2)
    assert rr_name(fp, 2) == rr_name(fp, 2)


def test_an_object_nobody_wrote_status_on_reads_as_pending_and_round_trips() -> None:
    obj = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": "rr-abababababab-12345678",
            "namespace": "kubernaut-system",
            "resourceVersion": "42",
            "creationTimestamp": "2026-03-01T12:00:00Z",
            "labels": {"signalgate.io/generation": "3", "team": "a"},
            "annotations": {"kubernaut.ai/created-at": "2026-03-01T12:00:00.5Z"},
        },
        "spec": {"signalFingerprint": "ab" * 32, "targetResource": {"kind": "Pod", "name": "p"}},
    }
    rr = from_object(obj)
    assert rr.overall_phase == "Pending" and rr.active
    # seen once: the signal that created it (as Kubernaut reads an RR without that status)
    assert rr.deduplication.occurrence_count == 1
    assert rr.labels == {"team": "a"}
    back = to_object(rr)
    assert back["metadata"]["labels"] == {"signalgate.io/generation": "3", "team": "a"}
    assert back["metadata"]["resourceVersion"] == "42"
    assert back["status"]["overallPhase"] == "Pending"


def test_times_other_writers_store_are_read() -> None:
    """What the API server takes as a date-time and another writer may store: RFC 3339's
    lowercase form, and instants past Python's range in UTC; a created-at annotation that
    is no time at all (free text) gives way to the server's creationTimestamp."""
    assert parse_time("2026-01-01t10:00:00z") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert parse_time("9999-12-31T23:59:59-01:00") == datetime.max.replace(tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00+01:00") == datetime.min.replace(tzinfo=UTC)
    obj = {
        "metadata": {
            "name": "rr-abababababab-12345678",
            "creationTimestamp": "2026-03-01T12:00:00Z",
            "annotations": {"kubernaut.ai/created-at": "yesterday"},
        },
        "spec": {"signalFingerprint": "ab" * 32},
        "status": {"routingStatus": {"nextAllowedExecution": "9999-12-31T23:59:59-01:00"}},
    }
    rr = from_object(obj)
    assert rr.created_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert rr.next_allowed_execution == datetime.max.replace(tzinfo=UTC)
