"""One rule for numbers a service accepts: integers within 64 bits.

orjson, the services' parser, reads an integer beyond 64 bits as a float: `2**100` would be
stored, audited and hashed as `1.2676506002282294e+30`, a different number than the one
sent, and nothing would say so. Such an integer is refused where requests are read
(`read_body`), with the field that holds it, as control characters are (`common.text`).

Cheap on the usual body: only one with 20 digits in a row, or 19 after a minus sign (what any
integer beyond 64 bits has), is parsed again, by the standard library, which reads integers
exactly.
"""

from __future__ import annotations

import json
from typing import Any

from signalgate.common.problems import validation_error

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what orjson reads (and writes) as integers
# every integer outside [-2**63, 2**64 - 1] has 20 digits, or 19 after a minus sign; found
# by mapping every digit to 0 and searching for runs of zeros (a fifth of a regular
# expression's time: this runs on every body)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY, _MINUS_NINETEEN = b"0" * 20, b"-" + b"0" * 19


def check_json_integers(body: bytes) -> None:
    """Refuse an integer beyond 64 bits anywhere in a JSON body (400 naming the field). A
    body that is not JSON is left to its parser to refuse."""
    digits = body.translate(_DIGITS_TO_ZERO)
    if _TWENTY not in digits and _MINUS_NINETEEN not in digits:
        return
    try:
        document = json.loads(body)
    except ValueError:
        return
    where = _wide_integer(document, "")
    if where is not None:
        field = where or "body"
        raise validation_error(
            f"{field}: an integer beyond 64 bits; send it as a string (it would be read as an "
            "approximate floating-point number)",
            field_errors={field: "an integer beyond 64 bits"},
        )


def _wide_integer(value: Any, where: str) -> str | None:
    """The field holding the first integer beyond 64 bits, or None."""
    if type(value) is int:
        return None if INT64_MIN <= value <= UINT64_MAX else where
    if isinstance(value, dict):
        for key, item in value.items():
            found = _wide_integer(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _wide_integer(item, f"{where}[{index}]" if where else str(index))
            if found is not None:
                return found
    return None
