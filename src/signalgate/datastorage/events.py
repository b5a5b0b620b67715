"""The audit event as clients send it: validation, defaults, and the validated form.

A batch is validated whole before anything is written, and every bad item and field is
reported at once (`field_errors` keyed `"<index>.<field>"`), so a client fixes its batch in
one round trip. Validation is strict (no string-to-number coercion, unknown fields refused):
an audit trail should hold what the client meant, not what a parser guessed.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails

from signalgate.common.audit import MAX_EVENT_AGE, MAX_EVENT_DATA_BYTES, MAX_EVENT_DATA_DEPTH
from signalgate.common.ids import new_uuid
from signalgate.common.json_numbers import INT64_MIN, UINT64_MAX
from signalgate.datastorage.chain import canonical_json, format_timestamp

Category = Literal[
    "gateway",
    "notification",
    "analysis",
    "aiagent",
    "signalprocessing",
    "workflow",
    "workflowexecution",
    "orchestration",
    "approval",
    "effectiveness",
    "actiontype",
    "apifrontend",
    "security",
    "agentsession",
]
CATEGORIES: tuple[str, ...] = get_args(Category)
# Categories a plain `audit:write` token may not write: the Gateway's decisions are written
# only with `audit:write:gateway`, so no other writer can forge them. Their event types (the
# `gateway.` namespace) belong to the category: another category's event may not take one.
RESERVED_CATEGORIES = frozenset({"gateway"})
Outcome = Literal["success", "failure", "pending"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

MAX_FUTURE = timedelta(minutes=60)
DEFAULT_RETENTION_DAYS = 2555
MAX_BIGINT = 2**63 - 1
MAX_INT32 = 2**31 - 1  # an integer column

# ASCII digits only ([0-9], not `\d`, which takes "٢٠٢٦" that RFC 3339 does not, here and
# in the JSON Schema pattern of an OpenAPI document, which is built from this text)
RFC3339_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339_RE = re.compile(f"^{RFC3339_PATTERN}$", re.ASCII)
_EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"


# the form every stored timestamp takes (`format_timestamp`), which the Gateway sends: UTC,
# six fractional digits, upper-case T and Z
_CANONICAL_STAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", re.ASCII
)


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 date-time with an offset → aware UTC datetime (fractions cut to µs, as
    many digits as sent: RFC 3339 sets no limit, and a writer in another language may send
    more than Go's nine)."""
    quick = _canonical_stamp(value)
    return quick if quick is not None else _parse_rfc3339(value)


def _canonical_stamp(value: object) -> datetime | None:
    """The usual text, in the canonical form, which `datetime.fromisoformat` reads exactly
    as `_parse_rfc3339` does (a UTC datetime, the six digits as µs) in a tenth of the time;
    None for anything else, a bad day or hour included (the general path names it)."""
    if type(value) is str and _CANONICAL_STAMP_RE.fullmatch(value):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return None


def _parse_rfc3339(value: object) -> datetime:
    """`parse_rfc3339` for a value not in the canonical form."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset (e.g. 2024-05-01T12:00:00Z)")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string (e.g. 2024-05-01T12:00:00Z)")
    match = _RFC3339_RE.match(value)
    if not match:
        raise ValueError("must be an RFC 3339 date-time (e.g. 2024-05-01T12:00:00Z)")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        if offset in ("Z", "z"):
            zone = UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("bad offset")
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError("must be an RFC 3339 date-time (e.g. 2024-05-01T12:00:00Z)") from exc


_CANONICAL_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _parse_uuid(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a UUID string")
    if _CANONICAL_UUID_RE.fullmatch(value):  # already in the form str(UUID) writes
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError("must be a UUID (e.g. 6f1c2f0e-1a2b-4c3d-8e9f-001122334455)") from exc


# The validation context's key for `event_data`'s canonical bytes: serialised once, while
# checking its size, and reused as the stored text and inside the record's canonical form.
EVENT_DATA_JSON = "event_data_json"
# ... and for `event_timestamp`'s text when it was sent in the canonical form already
# (`format_timestamp` of the parsed value would give the same text back)
EVENT_TIMESTAMP_TEXT = "event_timestamp_text"


def _event_timestamp(value: object, info: ValidationInfo) -> datetime:
    """`parse_rfc3339`, then, when validating a new event (`now` in the context), refuse a
    moment far from now (not when re-validating a queued event for replay). Text sent in
    the canonical form is kept for the record: formatting the parsed value again cost as
    much as parsing it. One validator for both: a second (after the model's own check of
    the datetime) was a Python call more per event, for the same field's errors."""
    quick = _canonical_stamp(value)
    moment = quick if quick is not None else _parse_rfc3339(value)
    context = info.context
    if not isinstance(context, dict):
        return moment
    now = context.get("now")
    if isinstance(now, datetime):
        if moment > now + MAX_FUTURE:
            raise ValueError("must not be more than 60 minutes in the future")
        if moment < now - MAX_EVENT_AGE:
            raise ValueError("must not be more than 7 days old")
    # kept unless before year 1000, for which `format_timestamp` writes fewer digits
    if quick is not None and type(value) is str and value[0] != "0":
        context[EVENT_TIMESTAMP_TEXT] = value
    return moment


def _check_event_data(value: object, info: ValidationInfo) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    text = event_data_text(value)
    if len(text) > MAX_EVENT_DATA_BYTES:
        raise ValueError(f"must be at most {MAX_EVENT_DATA_BYTES} bytes serialised")
    if isinstance(info.context, dict):
        info.context[EVENT_DATA_JSON] = text
    return value


def event_data_text(value: dict[str, Any]) -> bytes:
    """`event_data`'s canonical bytes (exactly the stored text), or `ValueError` for what
    the store cannot keep: too deep, non-string keys, NUL characters, integers beyond 64 bits.

    The usual value is told fine without looking at each leaf in Python: orjson writes it
    (refusing non-string keys and integers beyond 64 bits itself), its text shows any NUL
    (written `\\u0000`), and a walk of the containers by their children's types finds the
    depth and any float. Whenever one of these has a doubt (a float, a NUL, an
    escaped backslash before `u0000`, a refusal, more than ten levels), the leaf-by-leaf
    check decides, so what is refused, with which message, and the bytes kept are the same
    (a hypothesis property holds the two to each other). The leaf-by-leaf check alone was
    a fifth of an event's validation for a Gateway event (its alert's body inlined)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # (orjson.JSONEncodeError too) the check below names why
        pass
    else:
        if b"\\u0000" not in text and _plain(value):
            return text
    return checked_event_data_text(value)


def _plain(value: dict[str, Any]) -> bool:
    """Whether `value` is at most `MAX_EVENT_DATA_DEPTH` levels deep and holds no float,
    counted as `_checked` counts them (exact dicts and lists, exact floats), one level at
    a time. Only the types are looked at: the text orjson wrote answers for keys, NULs and
    integers (`event_data_text`)."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_EVENT_DATA_DEPTH:
            return False
        below: list[Any] = []
        for container in level:
            for child in container.values() if type(container) is dict else container:
                kind = type(child)
                if kind is str:  # most leaves: one comparison
                    continue
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float:
                    return False
        level = below
        depth += 1
    return True


def checked_event_data_text(value: dict[str, Any]) -> bytes:
    """`event_data_text` by the leaf-by-leaf check: the reference, and the path taken for
    every value the quick look has a doubt about (so every refusal's message is its own)."""
    holds_float = _checked(value)
    try:
        return canonical_json(value, holds_float=holds_float)
    except TypeError:  # no JSON value (not from a parsed body): what orjson cannot write
        raise ValueError("must hold only JSON numbers within 64 bits") from None


def _checked(value: dict[str, Any]) -> bool:
    """Refuse what the store cannot keep (see `event_data_text`); True when a float is
    inside (the canonical form needs to know).

    One loop over the containers, each checking its leaves in place: a recursive call per
    leaf made the check a third of an event's validation for a Gateway event, which carries
    its alert's body."""
    holds_float = False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_EVENT_DATA_DEPTH:
            raise ValueError(f"must be at most {MAX_EVENT_DATA_DEPTH} levels deep")
        if type(container) is dict:
            for key in container:
                if type(key) is not str or "\x00" in key:
                    raise ValueError("keys must be strings without NUL characters")
            children = container.values()
        else:
            children = container
        for child in children:
            kind = type(child)
            if kind is str:
                if "\x00" in child:
                    raise ValueError("strings must not contain NUL characters")
            elif kind is dict or kind is list:
                pending.append((child, depth + 1))
            elif kind is int:
                if not INT64_MIN <= child <= UINT64_MAX:
                    raise ValueError("must hold only JSON numbers within 64 bits")
            elif kind is float:
                holds_float = True
    return holds_float


def _nul_errors(payload: Mapping[str, object], prefix: str) -> dict[str, str]:
    """The top-level text fields holding a NUL character (PostgreSQL cannot store one).

    One pass over the item here instead of a validator per field: a Python call for each
    of a dozen fields was a quarter of an event's validation."""
    return {
        f"{prefix}{key}": "must not contain NUL characters"
        for key, value in payload.items()
        if type(value) is str and "\x00" in value
    }


Uuid = Annotated[str, BeforeValidator(_parse_uuid), Field(json_schema_extra={"format": "uuid"})]


def _parse_day(value: object) -> str:
    """A calendar day: `YYYY-MM-DD`, or the day (UTC) of an RFC 3339 timestamp — Kubernaut's
    schema declares `parent_event_date` a date-time, and its clients send the parent's
    timestamp."""
    problem = "must be a date (YYYY-MM-DD) or an RFC 3339 date-time"
    if not isinstance(value, str):
        raise ValueError(problem)
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        return parse_rfc3339(value).astimezone(UTC).date().isoformat()
    except ValueError:
        raise ValueError(problem) from None


Timestamp = Annotated[datetime, BeforeValidator(_event_timestamp)]


class AuditEventIn(BaseModel):
    """One audit event as written by a service (docs/datastorage.md, "An event")."""

    # a field this version does not know is ignored (not stored), as Kubernaut's DataStorage
    # ignores one: a writer built on a newer schema must not lose its events
    model_config = ConfigDict(extra="ignore", strict=True, title="AuditEventRequest")

    version: Annotated[str, Field(min_length=1, max_length=20, examples=["1.0"])]
    event_type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            pattern=_EVENT_TYPE_PATTERN,
            examples=["gateway.signal.received"],
            json_schema_extra={"pattern": _EVENT_TYPE_PATTERN},
        ),
    ]
    event_timestamp: Timestamp
    event_category: Category
    event_action: Annotated[str, Field(min_length=1, max_length=50)]
    event_outcome: Outcome
    correlation_id: Annotated[str, Field(min_length=1, max_length=255)]
    event_data: Annotated[
        dict[str, Any],
        BeforeValidator(_check_event_data),
        Field(description="JSON object, at most 256 KiB serialised and 10 levels deep"),
    ]
    event_id: Uuid | None = None
    actor_type: Annotated[str, Field(max_length=50)] | None = None
    actor_id: Annotated[str, Field(max_length=255)] | None = None
    # any text, as written: Kubernaut's DataStorage takes a proxy's `unknown` or a host name
    # too, and a normal form of an address differs between Python versions
    actor_ip: Annotated[str, Field(max_length=45)] | None = None
    resource_type: Annotated[str, Field(max_length=100)] | None = None
    resource_id: Annotated[str, Field(max_length=255)] | None = None
    parent_event_id: Uuid | None = None
    # Kubernaut's services send the parent's day with its id (the partition to look in);
    # accepted and checked, not stored: the parent is found by its id alone
    parent_event_date: Annotated[str, BeforeValidator(_parse_day)] | None = None
    namespace: Annotated[str, Field(max_length=253)] | None = None
    cluster_id: Annotated[str, Field(max_length=255)] | None = None
    severity: Annotated[str, Field(max_length=50)] | None = None
    duration_ms: Annotated[int, Field(ge=0, le=MAX_BIGINT)] | None = None
    error_code: Annotated[str, Field(max_length=100)] | None = None
    error_message: Annotated[str, Field(max_length=65536)] | None = None
    retention_days: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    is_sensitive: bool | None = None


_VALIDATOR = AuditEventIn.__pydantic_validator__


@dataclass(frozen=True)
class AuditEvent:
    """A validated event with defaults applied: what the stores write and the DLQ keeps.

    `fields` is JSON-ready (the timestamp formatted, ids as strings, nulls removed) and is
    exactly what `canonical` hashes; `timestamp` and `event_data_json` (the stored text of
    `event_data`) are computed once here because every write needs them.
    """

    fields: Mapping[str, Any]
    canonical: bytes
    timestamp: datetime
    event_data_json: str

    @property
    def event_id(self) -> str:
        return str(self.fields["event_id"])

    @property
    def correlation_id(self) -> str:
        return str(self.fields["correlation_id"])

    @property
    def parent_event_id(self) -> str | None:
        parent = self.fields.get("parent_event_id")
        return None if parent is None else str(parent)

    @property
    def event_date(self) -> date:
        return self.timestamp.date()

    @classmethod
    def from_model(
        cls,
        model: AuditEventIn,
        event_data_json: bytes | None = None,
        event_timestamp: str | None = None,
    ) -> AuditEvent:
        """`event_data_json`: `event_data`'s canonical bytes when validation made them;
        `event_timestamp`: the timestamp's canonical text when it was sent in that form."""
        # the validated values as they are (model_dump would copy event_data, deeply)
        data = {key: value for key, value in model.__dict__.items() if value is not None}
        data.pop("parent_event_date", None)  # not an event field: see AuditEventIn
        category = data["event_category"]
        data["event_timestamp"] = event_timestamp or format_timestamp(model.event_timestamp)
        if "event_id" not in data:  # not setdefault: that would make an id for every event
            data["event_id"] = new_uuid()
        data.setdefault("actor_type", "service")
        data.setdefault("actor_id", f"{category}-service")
        data.setdefault("resource_type", category)
        data.setdefault("resource_id", data["correlation_id"])
        data.setdefault("retention_days", DEFAULT_RETENTION_DAYS)
        event_data = data["event_data"]
        if event_data_json is None:
            event_data_json = canonical_json(event_data)
        # The record's canonical form is `chain.canonical(data)`: every key of `data` is a
        # canonical field (the model's fields but parent_event_date; a test holds them to
        # each other), none is null, and none but event_data holds more than a string, an
        # integer or a boolean (never a float or a datetime: the timestamp is text). So it
        # is orjson's sorted form of `data` itself, with event_data's canonical bytes
        # embedded as they are (a Fragment), put in place for the call rather than in a copy.
        data["event_data"] = orjson.Fragment(event_data_json)
        try:
            record = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        finally:
            data["event_data"] = event_data
        return cls(
            fields=data,
            canonical=record,
            timestamp=model.event_timestamp,
            event_data_json=event_data_json.decode(),
        )

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> AuditEvent:
        """Rebuild a queued event for replay: same checks except freshness, id kept.

        Raises `ValueError` naming the bad fields."""
        try:
            return _validated(dict(fields), {}, "")
        except InvalidEvents as exc:
            raise ValueError(str(exc)) from None


class InvalidEvents(Exception):
    """Validation failed: `field_errors` maps `"<index>.<field>"` (or `"<field>"`) to why."""

    def __init__(self, field_errors: Mapping[str, str]) -> None:
        self.field_errors = dict(field_errors)
        key, message = next(iter(self.field_errors.items()))
        super().__init__(f"{key}: {message}")


def validate_event(payload: object, now: datetime, prefix: str = "") -> AuditEvent:
    """One request item → `AuditEvent`, or `InvalidEvents` listing every bad field."""
    where = prefix.rstrip(".") or "body"
    if not isinstance(payload, dict):
        raise InvalidEvents({where: "must be a JSON object (an audit event)"})
    return _validated(payload, {"now": now}, prefix)


def _validated(payload: dict[str, Any], context: dict[str, Any], prefix: str) -> AuditEvent:
    errors = _nul_errors(payload, prefix)
    try:
        # the model's validator called directly: `model_validate` adds only a Python frame
        model: AuditEventIn = _VALIDATOR.validate_python(payload, context=context)
    except ValidationError as exc:
        for key, message in _field_errors(exc, prefix).items():
            errors.setdefault(key, message)
    if not errors:
        # case-folded: `Gateway.crd.created` passes for the Gateway's to a reader as well
        namespace = model.event_type.partition(".")[0].casefold()
        if namespace in RESERVED_CATEGORIES and model.event_category != namespace:
            errors[f"{prefix}event_type"] = (
                f"{namespace}.* event types are the {namespace} category's: an event of "
                f"category {model.event_category!r} may not take one (a {namespace} event "
                f"is written with event_category {namespace!r} and the scope "
                f"'audit:write:{namespace}')"
            )
    if errors:
        raise InvalidEvents(errors)
    return AuditEvent.from_model(
        model, context.get(EVENT_DATA_JSON), context.get(EVENT_TIMESTAMP_TEXT)
    )


def validate_batch(payload: object, now: datetime, max_size: int) -> list[AuditEvent]:
    """A batch body → events in input order; every problem of every item reported at once.

    Raises `BatchSizeError` for a non-array, empty or oversized batch, else `InvalidEvents`.
    """
    if not isinstance(payload, list):
        raise BatchSizeError("the batch body must be a JSON array of audit events")
    if not payload:
        raise BatchSizeError(f"the batch is empty: send 1 to {max_size} events")
    if len(payload) > max_size:
        raise BatchSizeError(
            f"the batch has {len(payload)} events; at most {max_size} are allowed per request"
        )
    events: list[AuditEvent] = []
    errors: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, item in enumerate(payload):
        try:
            event = validate_event(item, now, prefix=f"{index}.")
        except InvalidEvents as exc:
            errors.update(exc.field_errors)
            continue
        explicit = isinstance(item, dict) and item.get("event_id") is not None
        if explicit and event.event_id in seen:
            errors[f"{index}.event_id"] = (
                f"duplicates the event_id of item {seen[event.event_id]} in this batch"
            )
        seen.setdefault(event.event_id, index)
        events.append(event)
    if errors:
        raise InvalidEvents(errors)
    return events


class BatchSizeError(Exception):
    """The batch is not an array of 1..max_size events (`batch-size-exceeded`)."""


_MESSAGES: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a field of an audit event",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "dict_type": "must be a JSON object",
    "string_pattern_mismatch": "must be dotted words (e.g. gateway.signal.received)",
}


def _field_errors(exc: ValidationError, prefix: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        field, message = _describe(error, loc)
        key = f"{prefix}{field}" if field else prefix.rstrip(".") or "body"
        errors.setdefault(key, message)
    return errors


def _describe(error: ErrorDetails, loc: list[str]) -> tuple[str, str]:
    kind = error["type"]
    field = loc[0] if loc else ""
    if kind == "value_error":
        return field, str(error.get("ctx", {}).get("error", error["msg"]))
    if error.get("input", ...) is None and kind != "missing":
        return field, "must not be null"
    if kind == "literal_error":
        allowed = ", ".join(OUTCOMES if field == "event_outcome" else CATEGORIES)
        return field, f"must be one of {allowed}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        low, high = _limits(field, "minLength", "maxLength")
        if kind.endswith("too_short") and low == 1:
            return field, "must not be empty"
        return field, f"must be {low}..{high} characters"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _limits(field, "minimum", "maximum")
        return field, f"must be between {low} and {high}"
    return field, _MESSAGES.get(kind, str(error["msg"]))


@functools.cache
def _schema_properties() -> dict[str, Any]:
    return dict(AuditEventIn.model_json_schema()["properties"])


def _limits(field: str, low_key: str, high_key: str) -> tuple[object, object]:
    """The bounds of a field as its JSON schema states them, so messages and schema agree."""
    schema = _schema_properties().get(field, {})
    for candidate in [schema, *schema.get("anyOf", [])]:
        if low_key in candidate or high_key in candidate:
            return candidate.get(low_key, 0), candidate.get(high_key, "")
    return 0, ""
