"""Identifiers made on the hot path: unique, not secret.

Event ids and RR name suffixes only have to be unique, never unguessable, so they come from
the process's Mersenne Twister (seeded from the OS at start and again in forked children)
instead of a `getrandom` system call each — `uuid.uuid4()` was a measurable share of a
request's CPU time.
"""

from __future__ import annotations

import random
import uuid


def new_uuid() -> str:
    """A random (version 4) UUID as text."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def random_hex(length: int) -> str:
    """`length` random lowercase hex digits."""
    return f"{random.getrandbits(4 * length):0{length}x}"
