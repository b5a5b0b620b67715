"""Integers beyond 64 bits, and floats beyond a 64-bit float's range or too small for it
(read as 0), are refused with the field holding them; everything orjson reads as sent (and
strings of digits, and floats it keeps approximately) passes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalgate.common import json_numbers
from signalgate.common.json_numbers import check_json_integers
from signalgate.common.problems import Problem


@pytest.mark.parametrize(
    "document",
    [
        {"n": 2**64 - 1, "m": -(2**63)},
        {"id": "1" * 40},  # digits in a string are text
        {"x": 123456789012345678901234.5, "y": 1e300},  # floats stay floats
        [{"n": 0}],
    ],
)
def test_what_orjson_reads_exactly_passes(document: object) -> None:
    body = json.dumps(document).encode()
    check_json_integers(body)
    assert orjson.loads(body) == json.loads(body)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"n": 2**64}, "n"),
        ({"a": {"b": [0, -(2**63) - 1]}}, "a.b[1]"),
        ([{"event_data": {}}, {"event_data": {"n": 10**30}}], "1.event_data.n"),
        (10**25, "body"),
    ],
)
def test_a_wider_integer_is_refused_naming_its_field(document: object, field: str) -> None:
    with pytest.raises(Problem) as refused:
        check_json_integers(json.dumps(document).encode())
    assert refused.value.status == 400
    assert refused.value.detail.startswith(f"{field}: an integer beyond 64 bits")


def test_a_body_that_is_not_json_is_left_to_its_parser() -> None:
    check_json_integers(b'{"n": 123456789012345678901234567890')


@pytest.mark.parametrize(
    ("body", "field", "what"),
    [
        # beyond Python's 4,300-digit conversion limit the field went unnamed
        (b'{"a": {"n": ' + b"9" * 5000 + b"}}", "a.n", "an integer beyond 64 bits"),
        (b'{"a": [1, -' + b"9" * 4301 + b"]}", "a[1]", "an integer beyond 64 bits"),
        # orjson refuses these outright ("number is infinity"), without the field
        (b'{"x": [1, 1e400]}', "x[1]", "a number beyond a 64-bit float's range"),
        (b'{"x": {"y": -2.5E+999}}', "x.y", "a number beyond a 64-bit float's range"),
    ],
)
def test_numbers_orjson_cannot_read_are_refused_naming_their_field(
    body: bytes, field: str, what: str
) -> None:
    with pytest.raises(Problem) as refused:
        check_json_integers(body)
    assert refused.value.status == 400
    assert refused.value.extra["field_errors"] == {field: what}


def test_large_floats_within_range_tiny_ones_and_zeros_pass() -> None:
    for body in (
        b'{"x": 1e308}',
        b'{"x": -1.7976931348623157E+308}',
        b'{"x": 5e-324}',  # the smallest a 64-bit float holds
        b'{"x": 3e-324}',  # rounded to it, as any float is rounded
        b'{"x": 1e-300}',
        b'{"x": [0e-400, -0.0E-999, 0.' + b"0" * 400 + b"]}",  # zero, however written
    ):
        check_json_integers(body)
        assert orjson.loads(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # orjson reads each as 0.0: stored, and hashed into DataStorage's chain, as zero
        (b'{"event_data": {"x": 1e-400}}', "event_data.x"),
        (b'{"x": [1, -2.5E-999]}', "x[1]"),
        (b'{"x": 2e-324}', "x"),
        (b'{"x": 1e-0400}', "x"),
        (b'{"x": 0.' + b"0" * 400 + b"1}", "x"),
        (b"1e-400", "body"),
    ],
)
def test_a_number_too_small_for_a_float_is_refused_naming_its_field(
    body: bytes, field: str
) -> None:
    assert orjson.loads(body) in (0.0, {"x": 0.0}, {"event_data": {"x": 0.0}}, {"x": [1, -0.0]})
    with pytest.raises(Problem) as refused:
        check_json_integers(body)
    assert refused.value.status == 400
    assert refused.value.extra["field_errors"] == {
        field: "a number too small for a 64-bit float (it would be read as 0)"
    }


def _wide(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value <= 2**64 - 1
    if isinstance(value, dict):
        return any(_wide(item) for item in value.values())
    if isinstance(value, list):
        return any(_wide(item) for item in value)
    return False


_hex_text = st.text(alphabet="0123456789abcdefE-+.:,[ ", max_size=80)
_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _hex_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_hex_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(document=_documents, indent=st.sampled_from([None, 0, 2]))
def test_refused_exactly_when_an_integer_is_beyond_64_bits(
    document: object, indent: int | None
) -> None:
    body = json.dumps(document, indent=indent).encode()
    if _wide(document):
        with pytest.raises(Problem):
            check_json_integers(body)
    else:
        check_json_integers(body)


def _whole_reverse_look(body: bytes) -> bool:
    """`_may_hold_a_wide_number` as first written, reversing the whole body at the first
    run: the reference the windowed look back is held to."""
    digits = body.translate(json_numbers._DIGITS_TO_ZERO, b"+")
    reverse: bytes | None = None
    for needle in json_numbers._NEEDLES:
        index = digits.find(needle)
        while index >= 0:
            if reverse is None:
                reverse = digits[::-1]
            back = json_numbers._run_end(json_numbers._MANTISSA_RUN, reverse, len(digits) - index)
            back = json_numbers._run_end(json_numbers._BLANK_RUN, reverse, back)
            if back == len(digits) or reverse[back] in json_numbers._VALUE_START:
                return True
            end = json_numbers._run_end(json_numbers._NUMBER_RUN, digits, index)
            index = digits.find(needle, max(index + 1, end))
    return False


# runs of digits, signs, points and blanks long enough to pass the window's 64 bytes
_RUNS = st.lists(
    st.sampled_from(["1", "0", "9" * 20, "-", ".", " " * 30, "\n", "e", "E", "+", "e000"])
    | st.sampled_from([":", ",", "[", '"', "a", "3e901", "0" * 70, "-" + "1" * 19]),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_RUNS)
def test_the_look_back_answers_as_the_whole_reversed_text_did(text: str) -> None:
    body = text.encode()
    assert json_numbers._may_hold_a_wide_number(body) == _whole_reverse_look(body)


def test_hex_text_is_not_parsed_a_second_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """An audit batch's ids and hashes hold '3e901' and long digit runs inside strings: each
    such batch was parsed again by the standard library (a fifth of DataStorage's CPU)."""
    parsed: list[bytes] = []
    real = json.loads

    def counted(body: bytes, **kwargs: Any) -> object:
        parsed.append(body)
        return real(body, **kwargs)

    monkeypatch.setattr(json, "loads", counted)  # the module json_numbers parses again with
    batch = [
        {"event_id": "5f3e9012-0000-4000-8000-3e9014567890", "hash": "ab3e901" + "1" * 25}
        for _ in range(20)
    ]
    check_json_integers(json.dumps(batch).encode())
    assert parsed == []
    with pytest.raises(Problem):  # where a value starts, the same text is a number
        check_json_integers(b'[{"n": 1}, {"n": 3e901}]')
    assert len(parsed) == 1


def test_a_long_run_of_digits_inside_a_string_is_looked_at_once() -> None:
    """A string of a million digits: each hit of the run was walked back over the whole run
    and searched again 20 bytes on, quadratic — 100,000 digits took 15 s, during which the
    service answered nothing, its health checks included (an outside check). Run in a child
    with a bound a thousand times what it takes, so a regression fails instead of hanging."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from signalgate.common.json_numbers import check_json_integers
        for body in (b'{"id": "x' + b"7" * 1_000_000 + b'"}',
                     b'{"id": "x' + b"3e901" * 200_000 + b'"}',
                     b'["' + b"-1234567890123456789" * 50_000 + b'"]'):
            check_json_integers(body)
        print("checked")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    assert done.stdout.strip() == "checked", done.stderr


def test_a_wide_number_nested_deeper_than_the_standard_library_reads_is_a_400() -> None:
    """1,000 arrays around 2**64: the standard library's re-parse raised RecursionError, a 500
    on both services (an outside check)."""
    body = b"[" * 1000 + b"18446744073709551616" + b"]" * 1000
    with pytest.raises(Problem) as refused:
        check_json_integers(body)
    assert refused.value.status == 400
    assert refused.value.extra["field_errors"] == {"body": "nested too deeply"}
