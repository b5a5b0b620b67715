"""Identifiers made on the hot path: unique, not secret.

Event ids and RR name suffixes only have to be unique, never unguessable, so they come from
the process's Mersenne Twister (seeded from the OS at start and again in forked children)
instead of a `getrandom` system call each — `uuid.uuid4()` was a measurable share of a
request's CPU time.
"""

from __future__ import annotations

import random

_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))


def new_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID as text, formatted directly (what
    `str(uuid.UUID(int=..., version=4))` gives, at a third of its cost)."""
    h = f"{(random.getrandbits(128) & _VERSION_MASK) | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_hex(length: int) -> str:
    """`length` random lowercase hex digits."""
    return f"{random.getrandbits(4 * length):0{length}x}"
