"""The tamper-evident hash chain: one canonical form, one hash, one verifier.

Both stores and `verify-chain` use these functions, so a chain written by one store verifies
by the same rules anyone can re-implement from the spec (datastorage.md section 3):

    canonical  = UTF-8 JSON of the request fields after defaults (event_id included; event_date,
                 hash fields and bookkeeping excluded; null fields omitted), keys sorted at
                 every level, separators (",", ":"), non-ASCII kept, event_timestamp as UTC
                 YYYY-MM-DDTHH:MM:SS.ffffffZ
    event_hash = hex(SHA-256(previous_event_hash + canonical)), "" before the first event
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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


def verify(
    correlation_id: str, rows: Sequence[Mapping[str, Any]], head: tuple[int, str] | None = None
) -> ChainReport:
    """Recompute the chain over stored rows given in write order, then hold it to its head.

    A row is broken when its `previous_event_hash` is not the previous row's `event_hash`, or
    its `event_hash` is not the hash of its own content: either a changed row or a removed or
    reordered one shows up at the first row after the change. The head (`count`, last hash,
    recorded with every write) catches what no later row can: deleted newest events, or a
    whole deleted chain. Without a head (None) only the rows are recomputed.
    """
    previous = ""
    for row in rows:
        expected = event_hash(previous, canonical(row))
        if (
            row["previous_event_hash"] != previous
            or row["event_hash"] != expected
            or not _dated_as_stamped(row)
        ):
            return ChainReport(correlation_id, len(rows), False, str(row["event_id"]))
        previous = row["event_hash"]
    if head is not None:
        count, last = head
        if len(rows) != count or previous != last:
            return ChainReport(
                correlation_id,
                len(rows),
                False,
                detail=f"the chain's recorded head is event {count} with hash {last[:16]}…, "
                f"but {len(rows)} event(s) are stored: events were deleted or added outside "
                "DataStorage",
            )
    return ChainReport(correlation_id, len(rows), True)


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
