"""The dead-letter queue on Redis Streams: shared by every replica, outlives a pod's disk."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signalgate.datastorage.dlq.base import DEAD_STREAM, STREAM, Letter
from signalgate.datastorage.errors import DeadLetterUnavailable
from signalgate.datastorage.events import AuditEvent

log = logging.getLogger(__name__)

# Each change deletes the old entry first and acts only if it was still there, so two
# replicas replaying the same entry never duplicate it in the queue.
_MOVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'event', ARGV[2], 'attempts', ARGV[3], 'due', ARGV[4],
             'reason', ARGV[5])
  return 1
end
return 0
"""


class RedisDeadLetterQueue:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._url = url
        self._timeout = timeout
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisDeadLetterQueue used before open()")
        return self._redis

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=False,
        )

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @contextlib.asynccontextmanager
    async def _translated(self, action: str) -> Any:
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            raise DeadLetterUnavailable(f"Redis dead-letter queue {action} failed: {exc}") from exc

    async def ping(self) -> None:
        async with self._translated("ping"):
            await self.redis.ping()

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        async with self._translated("put"):
            pipe = self.redis.pipeline(transaction=True)
            for event in events:
                pipe.xadd(
                    STREAM,
                    {"event": orjson.dumps(event.fields), "attempts": 0, "due": repr(due)},
                )
            await pipe.execute()

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        found: list[Letter] = []
        start = "-"
        async with self._translated("read"):
            while len(found) < limit:
                page = await self.redis.xrange(STREAM, min=start, max="+", count=1000)
                if not page:
                    break
                for key, data in page:
                    letter = _letter(key, data)
                    if letter is not None and (now is None or letter.due <= now):
                        found.append(letter)
                        if len(found) >= limit:
                            break
                start = "(" + _text(page[-1][0])
        return found

    async def ack(self, letters: Sequence[Letter]) -> None:
        if letters:
            async with self._translated("ack"):
                await self.redis.xdel(STREAM, *[letter.key for letter in letters])

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        await self._move(letters, STREAM, "")

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        await self._move(letters, DEAD_STREAM, reason)

    async def _move(self, letters: Sequence[Letter], target: str, reason: str) -> None:
        if not letters:
            return
        async with self._translated("move"):
            pipe = self.redis.pipeline(transaction=False)
            for letter in letters:
                pipe.eval(
                    _MOVE,
                    2,
                    STREAM,
                    target,
                    letter.key,
                    orjson.dumps(letter.fields),
                    letter.attempts,
                    repr(letter.due),
                    reason,
                )
            await pipe.execute()

    async def depth(self) -> int:
        async with self._translated("depth"):
            return int(await self.redis.xlen(STREAM))

    async def dead(self) -> list[Letter]:
        async with self._translated("read"):
            page = await self.redis.xrange(DEAD_STREAM)
        return [letter for key, data in page or [] if (letter := _letter(key, data))]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _letter(key: object, data: Any) -> Letter | None:
    """A stream entry → `Letter` (redis-py hands back bytes; typed loosely)."""
    try:
        return Letter(
            key=_text(key),
            fields=orjson.loads(data[b"event"]),
            attempts=int(data.get(b"attempts", b"0")),
            due=float(data.get(b"due", b"0")),
        )
    except (KeyError, ValueError, orjson.JSONDecodeError):
        log.warning("skipping an unreadable dead-letter entry", extra={"key": _text(key)})
        return None
