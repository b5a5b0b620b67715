"""A body that is not JSON because it is not UTF-8 text is refused with a reason a sender
can act on (its encoding, or a compression it did not declare), not with the parser's
"surrogates not allowed: line 1 column 1", which points at neither."""

from __future__ import annotations

import gzip

import orjson
import pytest

from signalgate.common.problems import Problem
from signalgate.datastorage.app import _parse_json_body
from signalgate.gateway.adapters.parsing import PayloadError, parse_object

BODY = b'{"version": "4", "alerts": [{"labels": {"alertname": "Caf\xc3\xa9"}}]}'
E_ACUTE = BODY.index(b"\xc3")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (gzip.compress(BODY), "gzip-compressed"),
        (BODY.decode().encode("utf-16"), "UTF-16"),
        (BODY.replace(b"\xc3\xa9", b"\xe9"), f"byte 0xe9 at offset {E_ACUTE} is not UTF-8"),
    ],
)
def test_a_body_that_is_not_utf8_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as raised:
        parse_object(body)
    message = str(raised.value)
    assert reason in message and "surrogates" not in message
    with pytest.raises(Problem) as refused:
        _parse_json_body(body)
    assert reason in refused.value.detail and "surrogates" not in refused.value.detail


def test_other_json_errors_keep_the_parsers_words() -> None:
    with pytest.raises(PayloadError, match="not valid JSON: unexpected character"):
        parse_object(b"{not json")
    assert orjson.loads(BODY)["version"] == "4"
