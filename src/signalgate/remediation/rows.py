"""What the SQL stores share: the columns, the row <-> RR mapping, the suppression query,
the status-patch assignments and the list query.

Both SQL backends keep one row per RR with the same columns; they differ only in how a time
is written (PostgreSQL `timestamptz`, SQLite `format_time` text, which sorts as text) and in
the placeholder style (`$1` / `?`). Those two differences are passed in, so each rule is
written once here and both stores give identical answers.
"""

# ruff: noqa: S608 - SQL is built from constant identifiers; every value is a bound parameter

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from signalgate.remediation.model import (
    MANUAL_REVIEW_OUTCOME,
    Deduplication,
    RemediationRequest,
    SignalResolved,
    StatusPatch,
    Unset,
    is_active,
)
from signalgate.remediation.store import ListQuery, clamp_limit, decode_cursor

TABLE = "remediation_requests"

# Column order of every SELECT / RETURNING and of the INSERT.
COLUMNS = (
    "name",
    "namespace",
    "fingerprint",
    "created_at",
    "target_namespace",
    "phase",
    "active",
    "outcome",
    "next_allowed_execution",
    "message",
    "signal_resolved",
    "signal_resolved_at",
    "first_seen_at",
    "last_seen_at",
    "occurrence_count",
    "labels",
    "spec",
)
SELECT_COLUMNS = ", ".join(COLUMNS)
TIME_COLUMNS = frozenset(
    {"created_at", "next_allowed_execution", "signal_resolved_at", "first_seen_at", "last_seen_at"}
)

# A time as the backend stores it, and back.
EncodeTime = Callable[[datetime], Any]
DecodeTime = Callable[[Any], datetime]
# The n-th (1-based) query parameter as the backend spells it.
Placeholder = Callable[[int], str]


class Row(Protocol):
    """A result row by column name (asyncpg `Record`, `sqlite3.Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def rr_to_row(rr: RemediationRequest, encode_time: EncodeTime) -> tuple[Any, ...]:
    """The INSERT values for `rr`, in `COLUMNS` order."""

    def opt(value: datetime | None) -> Any:
        return None if value is None else encode_time(value)

    return (
        rr.name,
        rr.namespace,
        rr.fingerprint,
        encode_time(rr.created_at),
        rr.target_namespace,
        rr.overall_phase,
        is_active(rr.overall_phase),
        rr.outcome,
        opt(rr.next_allowed_execution),
        rr.message,
        None if rr.signal_resolved is None else rr.signal_resolved.resolved,
        None if rr.signal_resolved is None else encode_time(rr.signal_resolved.since),
        encode_time(rr.deduplication.first_seen_at),
        encode_time(rr.deduplication.last_seen_at),
        rr.deduplication.occurrence_count,
        dumps(rr.labels),
        dumps(rr.spec),
    )


def row_to_rr(row: Row, decode_time: DecodeTime) -> RemediationRequest:
    """The RR a row holds. A `SignalResolved` state without its time (a row an older release
    wrote beside this one, in a rolling upgrade or after a downgrade) takes the RR's last
    sighting: one such row must not fail every list that reads it."""

    def opt(value: Any) -> datetime | None:
        return None if value is None else decode_time(value)

    last_seen_at = decode_time(row["last_seen_at"])
    return RemediationRequest(
        name=row["name"],
        namespace=row["namespace"],
        fingerprint=row["fingerprint"],
        created_at=decode_time(row["created_at"]),
        spec=orjson.loads(row["spec"]),
        deduplication=Deduplication(
            first_seen_at=decode_time(row["first_seen_at"]),
            last_seen_at=last_seen_at,
            occurrence_count=int(row["occurrence_count"]),
        ),
        overall_phase=row["phase"],
        outcome=row["outcome"],
        next_allowed_execution=opt(row["next_allowed_execution"]),
        message=row["message"],
        signal_resolved=(
            None
            if row["signal_resolved"] is None
            else SignalResolved(
                bool(row["signal_resolved"]), opt(row["signal_resolved_at"]) or last_seen_at
            )
        ),
        labels=orjson.loads(row["labels"]),
    )


# --- the Gateway's own status changes --------------------------------------------------------


def seen_again_sets(now: str, table: str = "", count: str = "1") -> str:
    """SET clauses for `count` (a placeholder, or 1) more firing duplicates, the last at
    `now` (a placeholder): the count moves on and a `SignalResolved=True` condition turns
    False at `now`. `table` qualifies the current row's columns where the statement needs it
    (an upsert's DO UPDATE)."""
    t = f"{table}." if table else ""
    return (
        f"occurrence_count = {t}occurrence_count + {count}, last_seen_at = {now}, "
        f"signal_resolved_at = CASE WHEN {t}signal_resolved THEN {now} "
        f"ELSE {t}signal_resolved_at END, "
        f"signal_resolved = CASE WHEN {t}signal_resolved THEN false ELSE {t}signal_resolved END"
    )


def resolved_sets(now: str) -> str:
    """SET clauses for a resolved notice at `now`: `SignalResolved=True`, its time kept when
    it already was."""
    return (
        f"signal_resolved_at = CASE WHEN signal_resolved THEN signal_resolved_at ELSE {now} END, "
        "signal_resolved = true"
    )


# --- deduplication rules 2 and 3 (docs/gateway.md, "The decision") -----------------------

# Terminal RRs of one fingerprint that may suppress a new one; `choose_suppressor` then
# picks among these few rows. Fill in the placeholders for fingerprint, outcome and now.
# `SUPPRESSING` alone re-checks, by name, that a chosen one still suppresses.
SUPPRESSING = "NOT active AND (outcome = {outcome} OR next_allowed_execution > {now})"
SUPPRESSOR_WHERE = "fingerprint = {fingerprint} AND " + SUPPRESSING


def suppressor_sql(ph: Placeholder) -> str:
    """The suppressor query binding (fingerprint, MANUAL_REVIEW_OUTCOME, now) in that order."""
    where = SUPPRESSOR_WHERE.format(fingerprint=ph(1), outcome=ph(2), now=ph(3))
    return f"SELECT {SELECT_COLUMNS} FROM {TABLE} WHERE {where}"


def suppressor_params(fingerprint: str, now: datetime, encode_time: EncodeTime) -> tuple[Any, ...]:
    return (fingerprint, MANUAL_REVIEW_OUTCOME, encode_time(now))


# --- status patch ---------------------------------------------------------------------------


def patch_assignments(patch: StatusPatch, encode_time: EncodeTime) -> dict[str, Any]:
    """Column -> new value for the fields the patch sets (`None` clears)."""
    out: dict[str, Any] = {}
    if patch.overall_phase is not None:
        out["phase"] = patch.overall_phase
        out["active"] = is_active(patch.overall_phase)
    if not isinstance(patch.outcome, Unset):
        out["outcome"] = patch.outcome
    cool_down = patch.next_allowed_execution
    if not isinstance(cool_down, Unset):
        out["next_allowed_execution"] = None if cool_down is None else encode_time(cool_down)
    if not isinstance(patch.message, Unset):
        out["message"] = patch.message
    return out


# --- list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListSql:
    sql: str
    params: tuple[Any, ...]
    limit: int


def list_sql(query: ListQuery, ph: Placeholder, encode_time: EncodeTime) -> ListSql:
    """Newest first by (created_at, name), one row more than the page to know if more follow.
    Raises `InvalidCursor` for a cursor this API did not make."""
    where: list[str] = []
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return ph(len(params))

    if query.fingerprint is not None:
        where.append(f"fingerprint = {bind(query.fingerprint)}")
    if query.phase is not None:
        where.append(f"phase = {bind(query.phase)}")
    if query.namespace is not None:
        where.append(f"target_namespace = {bind(query.namespace)}")
    if query.active is not None:
        where.append(f"active = {bind(bool(query.active))}")
    if query.cursor is not None:
        created_at, name = decode_cursor(query.cursor)
        where.append(f"(created_at, name) < ({bind(encode_time(created_at))}, {bind(name)})")
    limit = clamp_limit(query.limit)
    sql = f"SELECT {SELECT_COLUMNS} FROM {TABLE}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, name DESC LIMIT {bind(limit + 1)}"
    return ListSql(sql, tuple(params), limit)


def page_of(
    items: Sequence[RemediationRequest], limit: int
) -> tuple[list[RemediationRequest], bool]:
    """The page and whether another one follows (`items` holds up to `limit + 1` rows)."""
    return list(items[:limit]), len(items) > limit
