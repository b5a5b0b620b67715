"""The canonical form, the hash chain, event validation and query parsing."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from signalgate.datastorage.chain import (
    CANONICAL_FIELDS,
    ChainVerifier,
    canonical,
    canonical_json,
    event_hash,
    format_timestamp,
    verify,
)
from signalgate.datastorage.events import (
    AuditEvent,
    AuditEventIn,
    BatchSizeError,
    InvalidEvents,
    checked_event_data_text,
    event_data_text,
    parse_rfc3339,
    validate_batch,
    validate_event,
)
from signalgate.datastorage.query import InvalidParameter, parse_query
from signalgate.datastorage.store import ChainHead, ChainPage, verify_stored

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def body(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "version": "1.0",
        "event_type": "gateway.signal.received",
        "event_timestamp": "2024-05-10T13:30:00.5+01:00",
        "event_category": "gateway",
        "event_action": "received",
        "event_outcome": "success",
        "correlation_id": "rr-1",
        "event_data": {"z": 1, "a": {"ü": "☃", "b": [2, 1]}},
        "event_id": "6F1C2F0E-1A2B-4C3D-8E9F-001122334455",
    }
    event.update(overrides)
    return event


def test_canonical_form_matches_the_spec_recipe() -> None:
    event = validate_event(body(), NOW)
    expected = {
        "actor_id": "gateway-service",
        "actor_type": "service",
        "correlation_id": "rr-1",
        "event_action": "received",
        "event_category": "gateway",
        "event_data": {"a": {"b": [2, 1], "ü": "☃"}, "z": 1},
        "event_id": "6f1c2f0e-1a2b-4c3d-8e9f-001122334455",
        "event_outcome": "success",
        "event_timestamp": "2024-05-10T12:30:00.500000Z",
        "event_type": "gateway.signal.received",
        "resource_id": "rr-1",
        "resource_type": "gateway",
        "retention_days": 2555,
        "version": "1.0",
    }
    text = json.dumps(expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert event.canonical == text.encode()
    assert "☃" in event.canonical.decode()
    first = event_hash("", event.canonical)
    assert first == hashlib.sha256(event.canonical).hexdigest()
    assert event_hash(first, b"x") == hashlib.sha256(first.encode() + b"x").hexdigest()


def test_null_optional_fields_are_left_out_of_the_canonical_form() -> None:
    with_null = validate_event(body(severity=None, namespace=None), NOW)
    without = validate_event(body(), NOW)
    assert with_null.canonical == without.canonical


def test_verify_finds_the_first_changed_or_reordered_row() -> None:
    events = [validate_event(body(event_id=None), NOW) for _ in range(4)]
    rows, previous = [], ""
    for event in events:
        digest = event_hash(previous, event.canonical)
        rows.append({**event.fields, "previous_event_hash": previous, "event_hash": digest})
        previous = digest
    assert verify("rr-1", rows).valid
    changed = [dict(row) for row in rows]
    changed[2]["event_outcome"] = "failure"
    assert verify("rr-1", changed).first_broken_event_id == events[2].event_id
    dropped = rows[:1] + rows[2:]
    assert verify("rr-1", dropped).first_broken_event_id == events[2].event_id
    assert verify("rr-1", rows[::-1]).first_broken_event_id == events[3].event_id


def _chained(count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    previous = ""
    for _ in range(count):
        event = validate_event(body(event_id=None), NOW)
        digest = event_hash(previous, event.canonical)
        rows.append({**event.fields, "previous_event_hash": previous, "event_hash": digest})
        previous = digest
    return rows


def _variants(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    changed = [dict(row) for row in rows]
    changed[4]["event_outcome"] = "failure"
    return {
        "intact": rows,
        "changed": changed,
        "dropped": rows[:3] + rows[4:],
        "reversed": rows[::-1],
        "tail gone": rows[:-2],
        "empty": [],
    }


@pytest.mark.parametrize("page", [1, 2, 3, 7, 8, 100])
def test_the_verifier_fed_page_by_page_answers_as_verify_over_the_list(page: int) -> None:
    rows = _chained(7)
    head = (7, str(rows[-1]["event_hash"]))
    for name, variant in _variants(rows).items():
        verifier = ChainVerifier("rr-1")
        for start in range(0, len(variant), page):
            verifier.feed(variant[start : start + page])
        assert verifier.report(head) == verify("rr-1", variant, head), name
        assert verifier.report() == verify("rr-1", variant), name
        assert verifier.count == len(variant), name


def test_the_verifier_keeps_the_first_broken_row_and_the_hash_before_it() -> None:
    rows = _chained(6)
    dropped = rows[:2] + rows[3:]
    verifier = ChainVerifier("rr-1")
    verifier.feed(dropped[:3])
    verifier.feed(dropped[3:])
    broken = verifier.broken
    assert broken is not None
    assert broken.row is dropped[2] and broken.verified == 2
    assert broken.previous_hash == rows[1]["event_hash"]
    assert verifier.report().events == 5  # the rows after the break are still counted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-10T12:00:00Z", datetime(2024, 5, 10, 12, tzinfo=UTC)),
        ("2024-05-10t12:00:00.123456789z", datetime(2024, 5, 10, 12, 0, 0, 123456, UTC)),
        ("2024-05-10T12:00:00.1234567890123Z", datetime(2024, 5, 10, 12, 0, 0, 123456, UTC)),
        ("2024-05-10T12:00:00.5Z", datetime(2024, 5, 10, 12, 0, 0, 500000, UTC)),
        ("2024-05-10T14:00:00+02:00", datetime(2024, 5, 10, 12, tzinfo=UTC)),
    ],
)
def test_rfc3339_parsing(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-10",
        "2024-05-10 12:00:00Z",
        "2024-05-10T12:00:00.Z",
        "2024-02-30T00:00:00Z",
        "2024-05-10T12:00:00+25:00",
        "1715342400",
    ],
)
def test_rfc3339_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)


# timestamps in the canonical form's shape, any digits: valid or not
_STAMP_SHAPED = st.tuples(
    *(st.text("0123456789", min_size=n, max_size=n) for n in (4, 2, 2, 2, 2, 2, 6))
).map(lambda p: f"{p[0]}-{p[1]}-{p[2]}T{p[3]}:{p[4]}:{p[5]}.{p[6]}Z")


@given(_STAMP_SHAPED | st.datetimes(timezones=st.just(UTC)).map(format_timestamp))
def test_canonical_timestamps_parse_as_any_other_rfc3339_text(text: str) -> None:
    # text in the stored form takes a shorter path: the same moment, or the same refusal,
    # as the same instant written with a +00:00 offset (the general path)
    general = text[:-1] + "+00:00"
    try:
        expected = parse_rfc3339(general)
    except ValueError as exc:
        with pytest.raises(ValueError) as caught:
            parse_rfc3339(text)
        assert str(caught.value) == str(exc)
        return
    moment = parse_rfc3339(text)
    assert moment == expected
    assert moment.tzinfo is UTC
    if text[0] != "0":  # the text is then kept as the record's, unformatted
        assert format_timestamp(moment) == text


def test_the_records_fields_are_the_canonical_fields() -> None:
    # `AuditEvent.from_model` hashes its fields whole, without `chain.canonical`'s filter
    assert set(AuditEventIn.model_fields) - {"parent_event_date"} == set(CANONICAL_FIELDS)


def test_freshness_window_edges() -> None:
    ok_future = (NOW + timedelta(minutes=59)).isoformat()
    ok_past = (NOW - timedelta(days=6, hours=23)).isoformat()
    validate_event(body(event_timestamp=ok_future), NOW)
    validate_event(body(event_timestamp=ok_past), NOW)
    with pytest.raises(InvalidEvents) as caught:
        validate_event(body(event_timestamp=(NOW + timedelta(minutes=61)).isoformat()), NOW)
    assert "60 minutes" in caught.value.field_errors["event_timestamp"]


def test_strict_types_and_nul_characters() -> None:
    with pytest.raises(InvalidEvents) as caught:
        validate_event(
            body(duration_ms=True, is_sensitive="yes", correlation_id="a\x00b", actor_ip="x" * 46),
            NOW,
        )
    assert set(caught.value.field_errors) == {
        "duration_ms",
        "is_sensitive",
        "correlation_id",
        "actor_ip",
    }
    with pytest.raises(InvalidEvents):
        validate_event(body(event_data={"k": "v\x00"}), NOW)


def test_what_kubernauts_writers_send_is_taken() -> None:
    """Kubernaut's schema, not a stricter one: its Go writers send these, and an event
    refused here is lost to them."""
    parent = "6f1c2f0e-1a2b-4c3d-8e9f-001122334455"
    event = validate_event(
        body(
            parent_event_id=parent,
            parent_event_date="2024-05-09T23:30:00-02:00",  # date-time, as declared
            actor_ip="unknown",  # any text up to 45 characters
            actor_id="",
            retention_days=3650,
            error_message="\x1b[31mfailed\x1b[0m \x85",  # a terminal's colours, a C1
            field_from_a_newer_schema={"x": 1},
        ),
        NOW,
    )
    assert event.fields["actor_ip"] == "unknown" and event.fields["actor_id"] == ""
    assert event.fields["error_message"] == "\x1b[31mfailed\x1b[0m \x85"
    assert "field_from_a_newer_schema" not in event.fields  # ignored, not stored
    assert "parent_event_date" not in event.fields
    assert validate_event(body(actor_ip="::FFFF:10.0.0.1"), NOW).fields["actor_ip"] == (
        "::FFFF:10.0.0.1"  # as written: a normal form differs between Python versions
    )
    with pytest.raises(InvalidEvents) as caught:
        validate_event(body(parent_event_id=parent, parent_event_date="yesterday"), NOW)
    assert "RFC 3339" in caught.value.field_errors["parent_event_date"]


def test_replay_rebuild_keeps_id_and_skips_freshness() -> None:
    event = validate_event(body(), NOW)
    again = AuditEvent.from_fields(event.fields)  # now is long past: still accepted
    assert again.canonical == event.canonical


def test_batch_shape_errors() -> None:
    payloads: tuple[object, ...] = ({}, [], "x")
    for payload in payloads:
        with pytest.raises(BatchSizeError):
            validate_batch(payload, NOW, 500)
    with pytest.raises(BatchSizeError, match="at most 3"):
        validate_batch([body()] * 4, NOW, 3)


def test_query_parsing() -> None:
    query = parse_query(
        {
            "since": ["90m"],
            "until": ["2024-05-10"],
            "limit": ["5"],
            "detail_key": ["k"],
            "detail_value": ["v"],
        },
        NOW,
    )
    assert query.since == NOW - timedelta(minutes=90)
    assert query.until == datetime(2024, 5, 10, 23, 59, 59, 999999, UTC)
    assert (query.limit, query.offset) == (5, 0)
    assert parse_query({"since": ["7d"]}, NOW).since == NOW - timedelta(days=7)
    for bad in ({"limit": ["1", "2"]}, {"offset": ["1e3"]}, {"since": ["999999d"]}):
        with pytest.raises(InvalidParameter):
            parse_query(bad, NOW)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-9, minutes=-30)), timezone(timedelta(hours=13))]
        ),
    )
)
def test_hashed_timestamps_keep_their_text(moment: datetime) -> None:
    # chains already stored were hashed with this strftime form: it must not change
    assert format_timestamp(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4)
    ),
    max_leaves=20,
)


_OPTIONAL_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.uuids().map(str) | st.none(),
        "actor_type": st.text(max_size=5) | st.none(),
        "actor_id": st.text(max_size=5),
        "resource_id": st.text(max_size=5),
        "parent_event_id": st.uuids().map(str).map(str.upper),
        "parent_event_date": st.just("2024-05-10"),
        "severity": st.text(max_size=5) | st.none(),
        "duration_ms": st.integers(0, 2**63 - 1),
        "retention_days": st.integers(1, 2**31 - 1),
        "is_sensitive": st.booleans() | st.none(),
        "event_timestamp": st.sampled_from(
            [
                "2024-05-10T12:00:00.123456Z",
                "2024-05-10T12:00:00Z",
                "2024-05-10t12:00:00.123456z",
                "2024-05-10T13:00:00.123456+01:00",
                "2024-05-10T12:00:00.1234567Z",
            ]
        ),
        "event_data": st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=3),
    },
)


@given(_OPTIONAL_FIELDS)
def test_the_record_hashes_as_the_spec_says_whatever_fields_are_sent(
    fields: dict[str, Any],
) -> None:
    # the record's canonical bytes are `chain.canonical` of its fields (the form chains
    # are verified by), in the standard library's form, and its timestamp the stored text
    assume("\\u0000" not in json.dumps(fields))  # refused, as tested above
    event = validate_event(body(**fields), NOW)
    assert event.canonical == canonical(event.fields)
    reference = json.dumps(
        dict(event.fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert event.canonical == reference.encode()
    assert event.fields["event_timestamp"] == format_timestamp(event.timestamp)
    assert event.event_data_json == canonical_json(event.fields["event_data"]).decode()


@given(JSON_VALUES)
def test_canonical_json_keeps_the_standard_librarys_bytes(value: object) -> None:
    # every stored hash was computed over json.dumps' form; the fast path must not change it
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == reference.encode()


def test_canonical_json_takes_the_standard_form_for_floats_orjson_writes_otherwise() -> None:
    # orjson writes 1e-05 as 0.00001: a value holding a float anywhere takes the standard path
    assert canonical_json({"a": [{"b": 1e-05}]}) == b'{"a":[{"b":1e-05}]}'


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, [*value.values(), None]))
    if isinstance(value, list):
        return 1 + max(map(_depth, [*value, None]))
    return 0


@given(st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), JSON_VALUES))
def test_event_data_is_checked_stored_and_hashed_in_the_standard_form(data: object) -> None:
    # event_data is walked and serialised once during validation; what is stored and what is
    # hashed must still be json.dumps' bytes, and the walk must refuse what it did before
    reference = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "\\u0000" in json.dumps(data) or _depth(data) > 10:
        with pytest.raises(InvalidEvents) as caught:
            validate_event(body(event_data=data), NOW)
        assert set(caught.value.field_errors) == {"event_data"}
        return
    event = validate_event(body(event_data=data), NOW)
    assert event.event_data_json == reference
    whole = json.dumps(
        dict(event.fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert event.canonical == whole.encode()


# text made of NULs, backslashes and the text "\\u0000", quotes and brackets
_TRICKY_TEXT = st.lists(
    st.sampled_from(["\\", "\x00", "u0000", '"', "[", "{", "}", "]", "e", "1.", "a"]), max_size=6
).map("".join)
_DEEP_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_TRICKY_TEXT, inner, max_size=2),
    max_leaves=30,
)


def _walked(value: object, depth: int = 1) -> bool:
    """The check as it was first written, a recursive walk: the reference the one-loop check
    is held to. True when a float is inside."""
    if isinstance(value, dict):
        if depth > 10:
            raise ValueError("too deep")
        for key in value:
            if not isinstance(key, str) or "\x00" in key:
                raise ValueError("key")
        return any([_walked(item, depth + 1) for item in value.values()])
    if isinstance(value, list):
        if depth > 10:
            raise ValueError("too deep")
        return any([_walked(item, depth + 1) for item in value])
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL")
    wide = isinstance(value, int) and not -(2**63) <= value <= 2**64 - 1
    if wide and not isinstance(value, bool):
        raise ValueError("wide")
    return isinstance(value, float)


_REFUSALS = {
    "must be at most 10 levels deep",
    "keys must be strings without NUL characters",
    "strings must not contain NUL characters",
    "must hold only JSON numbers within 64 bits",
}


@given(st.dictionaries(_TRICKY_TEXT, _DEEP_VALUES, max_size=3))
def test_event_data_check_answers_as_the_walk_does(data: dict[str, object]) -> None:
    # one loop instead of a recursive walk: the same values refused (each with one of the
    # check's messages), the same text stored, whatever the nesting, NULs or numbers
    try:
        holds_float = _walked(data)
    except ValueError:
        with pytest.raises(ValueError) as caught:
            event_data_text(data)
        assert str(caught.value) in _REFUSALS
        return
    assert event_data_text(data) == canonical_json(data, holds_float=holds_float)


class _Text(str):
    """A str subclass: the checks look at exact types, orjson writes it as a string."""


class _Object(dict):  # type: ignore[type-arg]
    """A dict subclass: walked as its keys by the checks, written whole by orjson."""


# what no parsed body holds but a Python caller may pass: subclasses, non-string keys,
# floats orjson writes as null, integers beyond 64 bits, nesting past ten levels
_ODD_LEAVES = (
    _DEEP_VALUES
    | st.floats()
    | _TRICKY_TEXT.map(_Text)
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 1)
)
_ODD_VALUES = st.recursive(
    _ODD_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_TRICKY_TEXT, inner, max_size=3)
        | st.dictionaries(_TRICKY_TEXT, inner, max_size=2).map(_Object)
        | st.dictionaries(st.integers(0, 3) | _TRICKY_TEXT.map(_Text), inner, max_size=2)
        | st.tuples(st.integers(8, 12), inner).map(lambda pair: _nested(*pair))
    ),
    max_leaves=40,
)


def _nested(levels: int, value: object) -> object:
    for level in range(levels):
        value = [value] if level % 2 else {"n": value}
    return value


@given(
    st.dictionaries(_TRICKY_TEXT, _ODD_VALUES, max_size=4).flatmap(
        lambda d: st.just(d) | st.just(_Object(d))
    )
)
def test_event_data_quick_look_answers_as_the_leaf_by_leaf_check(data: dict[str, object]) -> None:
    # the quick look (orjson's text, the containers' types) takes the usual value and hands
    # every doubtful one to the leaf-by-leaf check: the same bytes, or the same refusal
    try:
        expected = checked_event_data_text(data)
    except ValueError as exc:
        with pytest.raises(ValueError) as caught:
            event_data_text(data)
        assert str(caught.value) == str(exc)
        return
    assert event_data_text(data) == expected


def test_event_data_quick_look_hands_over_what_it_cannot_tell() -> None:
    deep: object = {"x": 1}
    for _ in range(10):
        deep = {"d": deep}
    cases: list[tuple[dict[str, Any], str | bytes]] = [
        (deep, "must be at most 10 levels deep"),  # type: ignore[list-item]
        ({"k\x00": 1}, "keys must be strings without NUL characters"),
        ({1: 1}, "keys must be strings without NUL characters"),  # type: ignore[dict-item]
        ({_Text("k"): 1}, "keys must be strings without NUL characters"),
        ({"s": ["a\x00"]}, "strings must not contain NUL characters"),
        ({"n": [2**64]}, "must hold only JSON numbers within 64 bits"),
        ({"t": datetime(2024, 1, 1)}, b'{"t":"2024-01-01T00:00:00"}'),  # as orjson writes it
        ({"f": [1e-05]}, b'{"f":[1e-05]}'),  # the standard library's form
        ({"s": "\\u0000"}, b'{"s":"\\\\u0000"}'),  # a backslash and text, not a NUL
        ({"s": _Text("a\x00")}, b'{"s":"a\\u0000"}'),  # not an exact str: kept, as before
    ]
    for data, answer in cases:
        if isinstance(answer, bytes):
            assert event_data_text(data) == checked_event_data_text(data) == answer
        else:
            assert str(_raised(data)) == answer


def test_event_data_check_names_each_fault() -> None:
    deep: dict[str, object] = {"x": 1}
    for _ in range(9):
        deep = {"d": deep}
    assert event_data_text(deep) == canonical_json(deep)  # ten levels: kept
    assert "10 levels" in str(_raised({"d": deep}))
    assert "10 levels" in str(_raised({"s": "[[[[[[[[[[[[", "d": [[[[[[[[[[[]]]]]]]]]]]}))
    assert event_data_text({"s": "[[[[[[[[[[[[[[[[[[[["}) == b'{"s":"[[[[[[[[[[[[[[[[[[[["}'
    assert "NUL" in str(_raised({"s": "a\\\x00"}))
    assert "keys must be strings" in str(_raised({"k\x00": 1}))
    assert event_data_text({"s": "\\u0000"}) == b'{"s":"\\\\u0000"}'  # backslash, text


def _raised(data: dict[str, object]) -> ValueError:
    with pytest.raises(ValueError) as caught:
        event_data_text(data)
    return caught.value


def test_event_data_refuses_integers_beyond_64_bits_even_beside_a_float() -> None:
    for data in ({"n": 2**64}, {"n": -(2**63) - 1}, {"f": 0.5, "n": [2**64]}):
        with pytest.raises(InvalidEvents) as caught:
            validate_event(body(event_data=data), NOW)
        assert "64 bits" in caught.value.field_errors["event_data"]
    assert validate_event(body(event_data={"n": 2**64 - 1, "m": -(2**63)}), NOW)


def test_ids_are_kept_in_the_canonical_uuid_form() -> None:
    upper = "6F1C2F0E-1A2B-4C3D-8E9F-001122334455"
    event = validate_event(body(event_id=upper, parent_event_id="{" + upper + "}"), NOW)
    assert event.event_id == upper.lower()
    assert event.parent_event_id == upper.lower()
    with pytest.raises(InvalidEvents) as caught:
        validate_event(body(event_id="6f1c2f0e-1a2b-4c3d-8e9f-00112233445"), NOW)
    assert set(caught.value.field_errors) == {"event_id"}


def test_a_nul_is_named_with_every_other_bad_field_and_refused_on_replay() -> None:
    with pytest.raises(InvalidEvents) as caught:
        validate_event(body(namespace="a\x00", severity="b\x00", event_outcome="maybe"), NOW)
    assert caught.value.field_errors == {
        "namespace": "must not contain NUL characters",
        "severity": "must not contain NUL characters",
        "event_outcome": "must be one of success, failure, pending",
    }
    fields = dict(validate_event(body(), NOW).fields)
    with pytest.raises(ValueError, match="NUL"):
        AuditEvent.from_fields({**fields, "actor_id": "x\x00"})


class AppendingStore:
    """A chain whose writer appends one event between any two reads, as a busy Gateway's
    delivery does while someone verifies; `pause_after` reads it stops appending."""

    def __init__(self, events: int, pause_after: int) -> None:
        self.rows: list[dict[str, Any]] = []
        self.reads = 0
        self.pause_after = pause_after
        self.recorded: ChainHead | None = None  # a head kept as is, whatever is appended
        for _ in range(events):
            self._append()

    def _append(self) -> None:
        previous = str(self.rows[-1]["event_hash"]) if self.rows else ""
        row: dict[str, Any] = {
            "event_id": f"e-{len(self.rows)}",
            "correlation_id": "rr-1",
            "event_type": "gateway.signal.received",
            "previous_event_hash": previous,
        }
        row["event_hash"] = event_hash(previous, canonical(row))
        self.rows.append(row)

    def _read(self) -> None:
        self.reads += 1
        if self.reads <= self.pause_after:
            self._append()

    async def chain(self, correlation_id: str) -> list[dict[str, Any]]:
        self._read()
        return list(self.rows)

    async def chain_page(self, correlation_id: str, after_seq: int, limit: int) -> ChainPage:
        self._read()
        rows = self.rows[after_seq : after_seq + limit]  # row i has seq i + 1
        return ChainPage(rows, after_seq + len(rows))

    async def head(self, correlation_id: str) -> ChainHead:
        self._read()
        return self.recorded or ChainHead(len(self.rows), str(self.rows[-1]["event_hash"]))


@pytest.mark.parametrize("pause_after", [0, 4, 1000])
async def test_a_chain_written_while_it_is_verified_is_not_reported_broken(
    pause_after: int,
) -> None:
    store = AppendingStore(3, pause_after)
    report, broken = await verify_stored(store, "rr-1")  # type: ignore[arg-type]
    assert report.valid, report
    assert broken is None and len(store.rows) >= report.events >= 3


async def test_events_added_outside_datastorage_are_still_found() -> None:
    store = AppendingStore(3, pause_after=0)
    store.recorded = await store.head("rr-1")
    store._append()  # a valid-looking row, but no head was recorded for it
    report, _ = await verify_stored(store, "rr-1")  # type: ignore[arg-type]
    assert not report.valid and "outside DataStorage" in (report.detail or "")


def test_kubernauts_verification_of_a_chain_missing_its_tail_names_no_event() -> None:
    """Every stored row holds but the head says more were written (a deleted tail): the
    message says what is missing, not "broken at event None"."""
    from signalgate.datastorage.chain import ChainReport
    from signalgate.datastorage.verification import kubernaut_verification

    report = ChainReport("rr-x", 9, False, detail="the chain's recorded head is event 10")
    body = kubernaut_verification(report, None)
    assert body["is_valid"] is False
    assert "None" not in body["message"]
    assert "recorded head is event 10" in body["message"]


def test_kubernauts_verification_names_the_first_broken_row_from_the_verifier() -> None:
    from signalgate.datastorage.verification import kubernaut_verification

    rows = _chained(5)
    changed = [dict(row) for row in rows]
    changed[3]["event_outcome"] = "failure"
    verifier = ChainVerifier("rr-1")
    verifier.feed(changed)
    body = kubernaut_verification(verifier.report((5, rows[-1]["event_hash"])), verifier.broken)
    assert (body["is_valid"], body["total_events"], body["verified_events"]) == (False, 5, 3)
    [tampered] = body["tampered_events"]
    assert tampered["event_id"] == changed[3]["event_id"]
    assert tampered["previous_hash"] == rows[2]["event_hash"]
    assert tampered["expected_hash"] == event_hash(rows[2]["event_hash"], canonical(changed[3]))
    assert tampered["actual_hash"] == rows[3]["event_hash"] != tampered["expected_hash"]
    assert "3 of 5 event(s) verified" in body["message"]


def test_verify_all_reads_short_chains_together_up_to_a_page_and_long_ones_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from signalgate.datastorage import store as store_module

    monkeypatch.setattr(store_module, "VERIFY_PAGE", 10)
    counts = {"a": 4, "b": 6, "c": 1, "long": 11, "d": 10, "e": 3}
    heads = {name: ChainHead(count, "h") for name, count in counts.items()}
    batch = ["a", "b", "c", "long", "none", "d", "e"]
    assert list(store_module._reads(batch, heads)) == [
        ["a", "b"],
        ["c"],
        "long",
        "none",
        ["d"],
        ["e"],
    ]
