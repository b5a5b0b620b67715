"""Identifiers made on the hot path: unique and unguessable.

Event ids, request ids and RR name suffixes must not be predictable: an id a client can
work out ahead is an id another writer can claim first (an `audit:write` token storing an
event under the Gateway's next event id gets the Gateway's own event refused as a
conflict). A process's Mersenne Twister gives its whole state away after ~600 ids (any
response's `X-Request-ID`), so they come from the kernel's generator (`os.urandom`, one
`getrandom` call, about a microsecond), which is also safe across `fork` without reseeding.
"""

from __future__ import annotations

import os

_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))


def new_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID as text, formatted directly (what
    `str(uuid.uuid4())` gives, at less of its cost)."""
    bits = int.from_bytes(os.urandom(16))
    h = f"{(bits & _VERSION_MASK) | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_hex(length: int) -> str:
    """`length` random lowercase hex digits."""
    return os.urandom((length + 1) // 2).hex()[:length]
