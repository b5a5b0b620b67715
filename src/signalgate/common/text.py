"""One rule for text a service accepts: no control characters.

NUL and the other control characters (C0, DEL, C1) are refused wherever a request carries
text — the path, query parameters and every string (and key) of a JSON body: what the
Gateway acknowledges becomes RR fields, Kubernetes labels and log lines, and must not leave
anything behind that fails later. Free text in JSON bodies (annotations, messages) may keep
tab, line feed and carriage return; paths and query parameters may not.

DataStorage's bodies are the exception (`AUDIT_TEXT`): an audit event keeps the text it was
given, as Kubernaut's DataStorage does (an error message with a terminal's colour codes, a
model's output), and only NUL is refused there, which PostgreSQL cannot store.

A query parameter's value follows its service's rule (DataStorage's filters look for what
it stored); a path and a parameter's name never hold one. Checked once, where requests are
read: `check_request_target` in the request envelope
(`common.http.Envelope`), `check_json_text` in `read_body`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, unquote_to_bytes

import orjson

from signalgate.common.problems import Problem, validation_error

_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NUL = re.compile(r"\x00")
_TARGET_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# what a JSON body holding a control character must contain somewhere: an escape of one,
# or DEL / a C1 character written raw (raw C0 characters are invalid JSON already)
_BODY_HINT = re.compile(rb"\\u00[0189]|\\u007f|\\[bf]|\x7f|\xc2[\x80-\x9f]", re.IGNORECASE)
_NUL_HINT = re.compile(rb"\\u0000")


@dataclass(frozen=True)
class TextRule:
    """Which characters a JSON body's strings may not hold, and how to find one quickly."""

    refused: re.Pattern[str]
    hint: re.Pattern[bytes]
    what: str


SERVICE_TEXT = TextRule(
    _BODY_CONTROL,
    _BODY_HINT,
    "control characters are refused in every field; free text may keep tab, line feed and "
    "carriage return",
)
AUDIT_TEXT = TextRule(_NUL, _NUL_HINT, "NUL cannot be stored; other characters can")


def _refuse(field: str, value: str, rule: TextRule = SERVICE_TEXT) -> Problem:
    # the character the rule refuses (a path's tab is not a body's, which may keep it)
    character = rule.refused.search(value) or _TARGET_CONTROL.search(value)
    code = f"U+{ord(character.group()):04X}" if character else "a control character"
    return validation_error(
        f"{field}: contains the control character {code}; remove it ({rule.what})",
        field_errors={field: f"contains the control character {code}"},
    )


def check_request_target(
    path: str, query_string: bytes, rule: TextRule = SERVICE_TEXT, raw_path: bytes = b""
) -> None:
    """Refuse a control character in the (decoded) path, in a query parameter's name, or in
    its value as `rule` says: a value is what a filter looks for, so a service that stores
    text as written (`AUDIT_TEXT`) must let a query look for it (an outside check: a
    correlation id stored with an escape sequence could not be listed or verified)."""
    if _TARGET_CONTROL.search(path):
        raise _refuse("path", path)
    if "\ufffd" in path and raw_path:  # the server decoded invalid escapes as U+FFFD
        try:
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_utf8("path") from None
    if not query_string:
        return
    query = query_string.decode("latin-1")
    if "%" not in query and not _TARGET_CONTROL.search(query):
        return
    _check_utf8(query)
    values = _TARGET_CONTROL if rule is SERVICE_TEXT else rule.refused
    for key, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8"):
        if _TARGET_CONTROL.search(key):
            raise _refuse(f"query parameter {unquote(key)[:40]!r}", key)
        if values.search(value):
            raise _refuse(key, value, rule)


def _check_utf8(query: str) -> None:
    """Refuse a query parameter whose %-escapes are not UTF-8: decoded with replacement
    characters, `correlation_id=%ff%fe` looked for (and verified) a chain named '\ufffd\ufffd'."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        for text in (key, value):
            try:
                unquote_plus(text, errors="strict")
            except UnicodeDecodeError:
                raise _not_utf8(unquote_plus(key)[:40] or "query") from None


def _not_utf8(field: str) -> Problem:
    return validation_error(
        f"{field}: its %-escapes are not UTF-8 text",
        field_errors={field: "its %-escapes are not UTF-8 text"},
    )


def check_json_text(body: bytes, rule: TextRule = SERVICE_TEXT) -> None:
    """Refuse a character `rule` refuses in any string or key of a JSON body. A body that is
    not JSON is left to its parser to refuse."""
    if not rule.hint.search(body):
        return
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    _walk(document, "", rule)


def _walk(value: Any, where: str, rule: TextRule) -> None:
    if isinstance(value, str):
        if rule.refused.search(value):
            raise _refuse(where or "body", value, rule)
    elif isinstance(value, dict):
        for key, item in value.items():
            field = f"{where}.{key}" if where else str(key)
            if rule.refused.search(key):
                raise _refuse(f"{where or 'body'} key {key!r}", key, rule)
            _walk(item, field, rule)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            # a top-level batch names its items `<index>.<field>`, as DataStorage's errors do
            _walk(item, f"{where}[{index}]" if where else str(index), rule)


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def json_error(body: bytes, exc: ValueError) -> str:
    """Why `body` is not JSON, in words its sender can act on. A body that is not UTF-8
    text (JSON is UTF-8, RFC 8259) is named for what it is, where the parser would only say
    "surrogates not allowed: line 1 column 1"; any other error keeps the parser's words."""
    if body[:2] == b"\x1f\x8b":
        return (
            "it looks gzip-compressed; send it uncompressed (a compressed body is refused "
            "with Content-Encoding, and not guessed without it)"
        )
    if body[:2] in _UTF16_BOMS:
        return "it is UTF-16 text; JSON must be UTF-8"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"byte 0x{body[bad.start]:02x} at offset {bad.start} is not UTF-8; "
            "JSON must be UTF-8 text"
        )
    return str(exc)
