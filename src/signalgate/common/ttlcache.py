"""A bounded map whose entries expire: the caches of answers the Gateway gets from the
Kubernetes API server (token reviews, access reviews, object metadata).

Bounded so no caller can grow it without limit (the oldest entry goes first when full), and
every entry has its own time to live, so a refusal can be kept shorter than an approval.
`get` tells a cached `None` (e.g. "that object does not exist") from a miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        """(True, value) while `key` is cached and fresh, else (False, None)."""
        found = self._items.get(key)
        if found is None:
            return False, None
        expires, value = found
        if expires < time.monotonic():
            del self._items[key]
            return False, None
        return True, value

    def put(self, key: Hashable, value: V, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: Hashable) -> V | None:
        """The value while `key` is cached and fresh, removed from the cache; else None."""
        hit, value = self.get(key)
        self._items.pop(key, None)
        return value if hit else None

    def __len__(self) -> int:
        return len(self._items)
