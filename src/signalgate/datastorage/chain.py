"""The tamper-evident hash chain: one canonical form, one hash, one verifier.

Both stores and `verify-chain` use these functions, so a chain written by one store verifies
by the same rules anyone can re-implement from docs/datastorage.md ("The hash chain"):

    canonical  = UTF-8 JSON of the request fields after defaults (event_id included; event_date,
                 hash fields and bookkeeping excluded; null fields omitted), keys sorted at
                 every level, separators (",", ":"), non-ASCII kept, event_timestamp as UTC
                 YYYY-MM-DDTHH:MM:SS.ffffffZ
    event_hash = hex(SHA-256(previous_event_hash + canonical)), "" before the first event
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# The request fields, in no particular order; everything else on a row is bookkeeping.
CANONICAL_FIELDS: tuple[str, ...] = (
    "event_id",
    "version",
    "event_type",
    "event_timestamp",
    "event_category",
    "event_action",
    "event_outcome",
    "correlation_id",
    "event_data",
    "actor_type",
    "actor_id",
    "actor_ip",
    "resource_type",
    "resource_id",
    "parent_event_id",
    "namespace",
    "cluster_id",
    "severity",
    "duration_ms",
    "error_code",
    "error_message",
    "retention_days",
    "is_sensitive",
)


def format_timestamp(moment: datetime) -> str:
    """UTC with exactly six fractional digits and a `Z`: the only timestamp form we hash."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad such years; keep its form for them
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # isoformat is several times faster than strftime, and the same text from year 1000 on
    # (its "+00:00" replaced: cheaper than a copy without the zone)
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def canonical(fields: Mapping[str, Any], *, holds_float: bool | None = None) -> bytes:
    """The canonical bytes of an event given its request fields (extra keys are ignored).
    `holds_float`: as for `canonical_json`, when the caller knows."""
    kept: dict[str, Any] = {}
    for name in CANONICAL_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = format_timestamp(value)
        kept[name] = value
    return canonical_json(kept, holds_float=holds_float)


def canonical_json(value: Any, *, holds_float: bool | None = None) -> bytes:
    """Sorted keys, no whitespace, non-ASCII kept, UTF-8: also how `event_data` is stored.

    The form is the standard library's (`json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`), which every stored hash was computed with. orjson writes the same
    bytes for everything but some floats (`1e-05` is `0.00001` there), ten times faster, so
    it serialises every value that holds no float; one that does takes the standard path.
    `holds_float`: whether it does, when the caller already walked the value to know.
    """
    if _holds_float(value) if holds_float is None else holds_float:
        return dumps_canonical(value).encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dumps_canonical(value: Any) -> str:
    """`canonical_json` by the standard library, as text: the reference form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _holds_float(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is float:
            return True
    return False


def event_hash(previous_event_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(previous_event_hash.encode("ascii") + canonical_bytes).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    correlation_id: str
    events: int
    valid: bool
    first_broken_event_id: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "correlation_id": self.correlation_id,
            "events": self.events,
            "valid": self.valid,
        }
        if self.first_broken_event_id is not None:
            body["first_broken_event_id"] = self.first_broken_event_id
        if self.detail is not None:
            body["detail"] = self.detail
        return body


@dataclass(frozen=True)
class ChainBreak:
    """The first broken row of a chain, as Kubernaut's answer names it: the row itself, the
    hash it should have linked to (the previous row's, which held), and how many rows held
    before it."""

    row: Mapping[str, Any]
    previous_hash: str
    verified: int


class ChainVerifier:
    """The chain check fed rows in write order, page after page, so a chain of any length is
    verified in the memory of one page: it keeps only the previous hash, the count, and the
    first broken row. After a break the remaining rows are only counted (a report's `events`
    is every stored row).

    A row is broken when its `previous_event_hash` is not the previous row's `event_hash`, its
    `event_hash` is not the hash of its own content, or its `event_date` is not its stamp's
    day: a changed row, or a removed or reordered one, shows up at the first row after the
    change. The head (`count`, last hash, recorded with every write) catches what no later
    row can: deleted newest events, or a whole deleted chain."""

    def __init__(self, correlation_id: str) -> None:
        self.correlation_id = correlation_id
        self.count = 0
        self.broken: ChainBreak | None = None
        self._previous = ""

    def feed(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """The next rows of the chain, in write order."""
        for row in rows:
            if self.broken is None:
                if _holds(row, self._previous):
                    self._previous = row["event_hash"]
                else:
                    self.broken = ChainBreak(row, self._previous, self.count)
            self.count += 1

    def report(self, head: tuple[int, str] | None = None) -> ChainReport:
        """The verdict on the rows fed so far, held to `head` (count, last hash) when given;
        without a head only the rows are recomputed."""
        cid, count = self.correlation_id, self.count
        if self.broken is not None:
            return ChainReport(cid, count, False, str(self.broken.row["event_id"]))
        if head is not None:
            recorded, last = head
            if count != recorded or self._previous != last:
                return ChainReport(
                    cid,
                    count,
                    False,
                    detail=f"the chain's recorded head is event {recorded} with hash "
                    f"{last[:16]}…, but {count} event(s) are stored: events were deleted or "
                    "added outside DataStorage",
                )
        return ChainReport(cid, count, True)


def verify(
    correlation_id: str, rows: Iterable[Mapping[str, Any]], head: tuple[int, str] | None = None
) -> ChainReport:
    """Recompute the chain over stored rows given in write order, then hold it to its head
    (`ChainVerifier` over one list)."""
    verifier = ChainVerifier(correlation_id)
    verifier.feed(rows)
    return verifier.report(head)


def _holds(row: Mapping[str, Any], previous: str) -> bool:
    """Whether a row links to `previous`, hashes to its stored hash, and is dated as stamped."""
    return (
        row["previous_event_hash"] == previous
        and row["event_hash"] == event_hash(previous, canonical(row))
        and _dated_as_stamped(row)
    )


def _dated_as_stamped(row: Mapping[str, Any]) -> bool:
    """`event_date` is not hashed (it is derived), but it is stored, answered and filtered on:
    changed behind DataStorage's back it would hide an event from date-bounded queries while
    the hashes still held. So it must be the UTC day of the (hashed) timestamp."""
    day = row.get("event_date")
    if day is None:
        return True
    stamp = row["event_timestamp"]
    stamped = (
        stamp.astimezone(UTC).date().isoformat() if isinstance(stamp, datetime) else stamp[:10]
    )
    return str(day)[:10] == stamped
