"""The shared SQL-store rules in `signalgate.remediation.rows`, without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from signalgate.common.sql.migrations import sqlite_statements as _statements
from signalgate.remediation import rows
from signalgate.remediation.model import (
    MANUAL_REVIEW_OUTCOME,
    Deduplication,
    RemediationRequest,
    StatusPatch,
    choose_suppressor,
    format_time,
    parse_time,
)
from signalgate.remediation.store import InvalidCursor, ListQuery, clamp_limit, encode_cursor

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def rr(
    name: str, phase: str = "Completed", minutes: int = 0, **status: object
) -> RemediationRequest:
    at = NOW + timedelta(minutes=minutes)
    base = RemediationRequest(
        name=name,
        namespace="kubernaut-system",
        fingerprint="f" * 64,
        created_at=at,
        spec={"targetResource": {"kind": "Pod", "name": "p", "namespace": "prod"}},
        deduplication=Deduplication(at, at, 1),
        overall_phase=phase,
    )
    return replace(base, **status)  # type: ignore[arg-type]


def test_manual_review_beats_cool_down_and_the_newest_wins() -> None:
    later_cool = rr("cool", next_allowed_execution=NOW + timedelta(hours=5), minutes=9)
    old_review = rr("rev-old", outcome=MANUAL_REVIEW_OUTCOME, minutes=1)
    new_review = rr("rev-new", outcome=MANUAL_REVIEW_OUTCOME, minutes=2)
    chosen = choose_suppressor([old_review, later_cool, new_review], NOW)
    assert chosen is new_review


def test_the_latest_cool_down_wins_and_past_ones_do_not_count() -> None:
    a = rr("a", next_allowed_execution=NOW + timedelta(hours=2), minutes=1)
    b = rr("b", next_allowed_execution=NOW + timedelta(hours=1), minutes=5)
    past = rr("past", next_allowed_execution=NOW - timedelta(seconds=1), minutes=9)
    exact = rr("exact", next_allowed_execution=NOW, minutes=9)
    assert choose_suppressor([b, past, a, exact], NOW) is a
    assert choose_suppressor([past, exact], NOW) is None
    assert choose_suppressor([], NOW) is None


def test_active_rrs_never_suppress() -> None:
    active = rr("x", phase="Executing", outcome=MANUAL_REVIEW_OUTCOME)
    assert choose_suppressor([active], NOW) is None


def test_row_round_trip_through_text_times() -> None:
    original = rr("a", outcome="Remediated", message="ok", next_allowed_execution=NOW)
    values = dict(zip(rows.COLUMNS, rows.rr_to_row(original, format_time), strict=True))
    assert values["active"] is False and values["target_namespace"] == "prod"
    assert rows.row_to_rr(values, parse_time) == original


def test_a_resolved_state_without_its_time_reads_as_of_the_last_sighting() -> None:
    """Rows an older release wrote during a rolling upgrade (or after a downgrade): the state
    without its time. Each failed the whole list with a 500."""
    original = rr("a", minutes=5)
    values = dict(zip(rows.COLUMNS, rows.rr_to_row(original, format_time), strict=True))
    for state in (0, 1):
        read = rows.row_to_rr({**values, "signal_resolved": state}, parse_time)
        assert read.signal_resolved is not None
        assert read.signal_resolved.resolved is bool(state)
        assert read.signal_resolved.since == original.deduplication.last_seen_at
        assert read.to_json()  # the API's rendering of it


def test_patch_assignments_set_active_from_the_phase_and_clear_with_none() -> None:
    patch = StatusPatch(overall_phase="Failed", outcome=None, next_allowed_execution=NOW)
    assert rows.patch_assignments(patch, format_time) == {
        "phase": "Failed",
        "active": False,
        "outcome": None,
        "next_allowed_execution": format_time(NOW),
    }
    assert rows.patch_assignments(StatusPatch(), format_time) == {}
    assert rows.patch_assignments(StatusPatch(overall_phase="Whatever"), str)["active"] is True


@pytest.mark.parametrize(("limit", "clamped"), [(-1, 1), (0, 1), (1, 1), (500, 500), (501, 500)])
def test_clamp_limit(limit: int, clamped: int) -> None:
    assert clamp_limit(limit) == clamped


def test_list_sql_binds_every_value() -> None:
    cursor = encode_cursor(NOW, "rr-x")
    hostile = "P'; DROP TABLE x; --"
    plan = rows.list_sql(
        ListQuery(
            fingerprint="f", phase=hostile, namespace="n", active=True, limit=7, cursor=cursor
        ),
        lambda i: f"${i}",
        format_time,
    )
    assert "DROP" not in plan.sql
    assert plan.params == ("f", hostile, "n", True, format_time(NOW), "rr-x", 8)
    assert plan.limit == 7
    for refused in ("garbage", encode_cursor(NOW, "rr-x'; DROP TABLE x; --")):
        with pytest.raises(InvalidCursor):  # a cursor's name is an object name, or refused
            rows.list_sql(ListQuery(cursor=refused), lambda i: "?", format_time)


def test_statements_split_on_complete_sql_only() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');\n\n"
        "CREATE INDEX i ON t (a);\n-- tail\n"
    )
    assert _statements(script) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');",
        "CREATE INDEX i ON t (a);",
    ]
    with pytest.raises(RuntimeError, match="ends inside"):
        _statements("CREATE TABLE t (a TEXT)")
