"""Integers beyond 64 bits are refused with the field holding them; everything orjson reads
exactly (and strings of digits, and floats) passes."""

from __future__ import annotations

import json

import orjson
import pytest

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
