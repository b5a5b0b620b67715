"""Query parameters of `GET /api/v1/audit/events` → `AuditQuery`; bad ones name themselves."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta

from signalgate.datastorage.events import CATEGORIES, OUTCOMES, RFC3339_PATTERN, parse_rfc3339
from signalgate.datastorage.store import EXACT_FILTERS, AuditQuery

_RELATIVE = r"([0-9]{1,6})([smhd])"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_RELATIVE_RE = re.compile(f"^{_RELATIVE}$", re.ASCII)
_DATE_RE = re.compile(f"^{_DATE}$", re.ASCII)
# `since` and `until` in the OpenAPI document: the three forms `_moment` reads
MOMENT_PATTERN = f"^(?:{_RELATIVE}|{_DATE}|{RFC3339_PATTERN})$"
# a page of events: Kubernaut's DataStorage's default and bound
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_DETAIL_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,100}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_OFFSET = 2**31 - 1

# the exact filters whose value is one of a known set; every other one is free text
CHOICE_FILTERS = {"event_category": CATEGORIES, "event_outcome": OUTCOMES}
TEXT_FILTERS = tuple(name for name in EXACT_FILTERS if name not in CHOICE_FILTERS)
PARAMETERS = (
    *TEXT_FILTERS,
    *CHOICE_FILTERS,
    "since",
    "until",
    "detail_key",
    "detail_value",
    "limit",
    "offset",
)


class InvalidParameter(Exception):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"query parameter '{name}': {message}")


def parse_query(params: Mapping[str, Sequence[str]], now: datetime) -> AuditQuery:
    """`params` maps each name to every value given (so repeats can be refused)."""
    values: dict[str, str] = {}
    for name, given in params.items():
        if name not in PARAMETERS:
            raise InvalidParameter(name, f"unknown (known: {', '.join(PARAMETERS)})")
        if len(given) != 1:
            raise InvalidParameter(name, "given more than once")
        value = given[0]
        if "\x00" in value:
            raise InvalidParameter(name, "must not contain NUL characters")
        values[name] = value
    for name in TEXT_FILTERS:
        if name in values and not 1 <= len(values[name]) <= 255:
            raise InvalidParameter(name, "must be 1..255 characters")
    for name, choices in CHOICE_FILTERS.items():
        if name in values and values[name] not in choices:
            raise InvalidParameter(name, f"must be one of {', '.join(choices)}")
    detail_key, detail_value = values.get("detail_key"), values.get("detail_value")
    if (detail_key is None) != (detail_value is None):
        missing = "detail_value" if detail_value is None else "detail_key"
        raise InvalidParameter(missing, "detail_key and detail_value go together")
    if detail_key is not None and not _DETAIL_KEY_RE.match(detail_key):
        raise InvalidParameter("detail_key", "must match ^[A-Za-z0-9_]+$ (at most 100)")
    if detail_value is not None and len(detail_value) > 1000:
        raise InvalidParameter("detail_value", "must be at most 1000 characters")
    return AuditQuery(
        **{name: values.get(name) for name in EXACT_FILTERS},
        since=_moment("since", values.get("since"), now, end_of_day=False),
        until=_moment("until", values.get("until"), now, end_of_day=True),
        detail_key=detail_key,
        detail_value=detail_value,
        limit=_integer("limit", values.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_integer("offset", values.get("offset"), 0, 0, MAX_OFFSET),
    )


def _moment(name: str, value: str | None, now: datetime, *, end_of_day: bool) -> datetime | None:
    """RFC 3339, a day (`until` a day means through its end), or `90m`/`24h`/`7d` before now."""
    if value is None:
        return None
    relative = _RELATIVE_RE.match(value)
    if relative:
        try:
            return now - timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
        except OverflowError:
            raise InvalidParameter(name, f"{value!r} reaches before year 1") from None
    if _DATE_RE.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise InvalidParameter(name, f"{value!r} is not a calendar date") from None
        return datetime.combine(day, time.max if end_of_day else time.min, UTC)
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise InvalidParameter(
            name, f"{value[:64]!r} is not RFC 3339, YYYY-MM-DD, or relative (90m, 24h, 7d)"
        ) from None


def _integer(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    # [0-9], not \d: \d takes any script's digits, which no client means here
    if not re.fullmatch(r"[0-9]{1,12}", value) or not low <= int(value) <= high:
        raise InvalidParameter(name, f"must be an integer in {low}..{high}")
    return int(value)
