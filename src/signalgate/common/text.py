"""One rule for text a service accepts: no control characters.

NUL and the other control characters (C0, DEL, C1) are refused wherever a request carries
text — the path, query parameters and every string (and key) of a JSON body — because a
later step cannot store them (PostgreSQL refuses NUL in text; DataStorage refuses the audit
event), and a request the Gateway acknowledged must not leave anything behind that fails
later. Free text in JSON bodies (annotations, messages) may keep tab, line feed and carriage
return; paths and query parameters may not.

Checked once, where requests are read: `check_request_target` in the request envelope
(`common.http.Envelope`), `check_json_text` in `read_body`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from signalgate.common.problems import Problem, validation_error

_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TARGET_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# what a JSON body holding a control character must contain somewhere: an escape of one,
# or DEL / a C1 character written raw (raw C0 characters are invalid JSON already)
_BODY_HINT = re.compile(rb"\\u00[0189]|\\u007f|\\[bf]|\x7f|\xc2[\x80-\x9f]", re.IGNORECASE)


def _refuse(field: str, value: str) -> Problem:
    character = _TARGET_CONTROL.search(value)
    code = f"U+{ord(character.group()):04X}" if character else "a control character"
    return validation_error(
        f"{field}: contains the control character {code}; remove it (control characters "
        "are refused in every field; free text may keep tab, line feed and carriage return)",
        field_errors={field: f"contains the control character {code}"},
    )


def check_request_target(path: str, query_string: bytes) -> None:
    """Refuse a control character in the (decoded) path or in any query parameter."""
    if _TARGET_CONTROL.search(path):
        raise _refuse("path", path)
    if not query_string:
        return
    query = query_string.decode("latin-1")
    if "%" not in query and not _TARGET_CONTROL.search(query):
        return
    for key, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8"):
        if _TARGET_CONTROL.search(key):
            raise _refuse(f"query parameter {unquote(key)[:40]!r}", key)
        if _TARGET_CONTROL.search(value):
            raise _refuse(key, value)


def check_json_text(body: bytes) -> None:
    """Refuse a control character in any string or key of a JSON body (other than tab, line
    feed, carriage return). A body that is not JSON is left to its parser to refuse."""
    if not _BODY_HINT.search(body):
        return
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    _walk(document, "")


def _walk(value: Any, where: str) -> None:
    if isinstance(value, str):
        if _BODY_CONTROL.search(value):
            raise _refuse(where or "body", value)
    elif isinstance(value, dict):
        for key, item in value.items():
            field = f"{where}.{key}" if where else str(key)
            if _BODY_CONTROL.search(key):
                raise _refuse(f"{where or 'body'} key {key!r}", key)
            _walk(item, field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            # a top-level batch names its items `<index>.<field>`, as DataStorage's errors do
            _walk(item, f"{where}[{index}]" if where else str(index))
