"""One rule for numbers a service accepts: integers within 64 bits, and floats a 64-bit float
holds as more than nothing.

orjson, the services' parser, reads an integer beyond 64 bits as a float: `2**100` would be
stored, audited and hashed as `1.2676506002282294e+30`, a different number than the one
sent, and nothing would say so. Such an integer is refused where requests are read
(`read_body`), with the field that holds it, as control characters are (`common.text`). So
is a float beyond a 64-bit float's range (`1e400`, which orjson refuses without naming the
field), and one too small for it (`1e-400`, below 2.5e-324), which orjson reads as 0.0: a
number the sender wrote as not zero would be stored, and hashed into DataStorage's chain, as
zero. A float that keeps its value approximately (`0.1`, `5e-324`) is read as any float is;
a zero written in any form (`0e-999`) is zero.

Cheap on the usual body: only one with such a number where a JSON value starts (after `:`,
`,` or `[`, or the whole body) is parsed again, by the standard library, which reads
integers exactly. Where a value starts matters: hex text (event ids, hashes, fingerprints)
holds "3e901" or long runs of digits often enough that most audit batches were parsed twice
(a fifth of DataStorage's CPU), each time to find nothing.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from signalgate.common.problems import validation_error

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what orjson reads (and writes) as integers
# every integer outside [-2**63, 2**64 - 1] has 20 digits, or 19 after a minus sign, and a
# float literal beyond a 64-bit float's range (1e400) or below it (1e-400) an exponent of
# three digits, or a run of 20 zeros (0.000…1): found by mapping every digit to 0 (and E to
# e, dropping +) and searching for those runs, literal searches being a fraction of a
# regular expression's time (this runs on every body)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_NEEDLES = (b"0" * 20, b"-" + b"0" * 19, b"0e000", b"0e-000")
# what a number's digits before such a run may be, and what precedes a JSON value; runs
# are matched by regular expressions, in C: a run of 100,000 digits inside a string, walked
# back character by character at each hit, took 15 s (quadratic) and stalled the service
_MANTISSA_RUN = re.compile(rb"[-.0]*")
_BLANK_RUN = re.compile(rb"[ \t\r\n]*")
_NUMBER_RUN = re.compile(rb"[-.0e]*")
_VALUE_START = b":,["


# how far back from a run `_may_hold_a_wide_number` looks in a copy of that stretch alone
_LOOK_BACK = 64


def _may_hold_a_wide_number(body: bytes) -> bool:
    """Whether a run found belongs to a number where a JSON value starts, not to text inside
    a string (hex ids and hashes hold "3e901" or long runs of digits). Linear: each run is
    looked at once, backwards (in the reversed text) and forwards.

    Backwards in the `_LOOK_BACK` bytes before the run first, reversed alone: the whole body
    reversed at the first run, which nearly every audit batch has ("3e901" in a hash), was
    a third of this check. Only when those bytes are all the number's or blanks is the
    whole body reversed (once), as before."""
    digits = body.translate(_DIGITS_TO_ZERO, b"+")
    reverse: bytes | None = None
    for needle in _NEEDLES:
        index = digits.find(needle)
        while index >= 0:
            start = max(0, index - _LOOK_BACK)
            # the window's first byte is digits[index - 1]
            before = _byte_before_value(digits[start:index][::-1], 0)
            if before is None and start > 0:
                # the run goes on before the window: the whole text, reversed once
                if reverse is None:
                    reverse = digits[::-1]
                before = _byte_before_value(reverse, len(digits) - index)
            if before is None or before in _VALUE_START:  # the body's start, or a value's
                return True
            index = digits.find(needle, max(index + 1, _run_end(_NUMBER_RUN, digits, index)))
    return False


def _byte_before_value(reverse: bytes, start: int) -> int | None:
    """In reversed text, from `start` (the byte before a run, as read backwards): back over
    the number's digits, then the blanks before it, to the byte that precedes the value;
    None when the text ends first."""
    back = _run_end(_BLANK_RUN, reverse, _run_end(_MANTISSA_RUN, reverse, start))
    return reverse[back] if back < len(reverse) else None


def _run_end(run: re.Pattern[bytes], text: bytes, start: int) -> int:
    """Where the run of `run`'s characters from `start` ends (`start` when there is none)."""
    found = run.match(text, start)
    return found.end() if found else start


class _Beyond:
    """A number read by `check_json_integers` that orjson cannot read as sent; `what` says
    which kind for the answer."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


def _integer(text: str) -> int | _Beyond:
    # never int() on a long run of digits: beyond 4,300 digits Python refuses to convert
    # (ValueError), and the body's field went unnamed (an outside check)
    if len(text.lstrip("-")) > 20:
        return _Beyond("an integer beyond 64 bits")
    value = int(text)
    return value if INT64_MIN <= value <= UINT64_MAX else _Beyond("an integer beyond 64 bits")


_NOT_ZERO = re.compile(r"[-0.]*[1-9]")  # a mantissa with a digit other than 0


def _float(text: str) -> float | _Beyond:
    value = float(text)
    if not math.isfinite(value):
        return _Beyond("a number beyond a 64-bit float's range")
    if value == 0.0 and _NOT_ZERO.match(text):
        return _Beyond("a number too small for a 64-bit float (it would be read as 0)")
    return value


def check_json_integers(body: bytes) -> None:
    """Refuse an integer beyond 64 bits, or a number beyond a float's range or too small for
    it (read as 0), anywhere in a JSON body (400 naming the field). A body that is not JSON
    is left to its parser."""
    if not _may_hold_a_wide_number(body):
        return
    try:
        document = json.loads(body, parse_int=_integer, parse_float=_float)
        found = _beyond(document, "")
    except ValueError:
        return
    except RecursionError:
        # nested deeper than the standard library reads (about 1,000 levels; orjson reads
        # 1,024): a 500 before, for a body nothing here can store
        raise validation_error(
            "body: nested too deeply to check its numbers (about 1,000 levels at most)",
            field_errors={"body": "nested too deeply"},
        ) from None
    if found is not None:
        where, what = found
        field = where or "body"
        raise validation_error(
            f"{field}: {what}; send it as a string (it would be read as an approximate "
            "floating-point number, or not at all)",
            field_errors={field: what},
        )


def _beyond(value: Any, where: str) -> tuple[str, str] | None:
    """The field holding the first number orjson cannot read as sent, and what it is."""
    if isinstance(value, _Beyond):
        return where, value.what
    if isinstance(value, dict):
        for key, item in value.items():
            found = _beyond(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _beyond(item, f"{where}[{index}]" if where else str(index))
            if found is not None:
                return found
    return None
