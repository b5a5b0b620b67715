"""The dead-letter queue on Redis Streams: shared by every replica, outlives a pod's disk.

The stream `audit:dlq` holds the letters (its name and fields are contract). Two indexes beside
it make the questions the service asks cost what they return, not the stream's length:

- `audit:dlq:due`, a sorted set: score = the letter's due time, member = its stream id
  zero-padded, so that equal dues sort in queue order. A poll reads the due ones only, even
  when a long outage left hundreds of thousands waiting for later.
- `audit:dlq:events`, a hash: event id → stream id of the letter holding it (the latest, if
  a client retry queued it twice). The write path asks it whether a missing parent waits here.

A letter is only as durable as Redis makes it: a Redis that keeps its data in memory alone
(no append-only file: Debian's and the image's default) loses every letter when it restarts,
and each was answered 202 (an outside check: 560 events lost, nothing counting them). So the
queue asks Redis (`CONFIG GET appendonly`) before it takes letters and refuses to take any
from one that would not keep them, unless told to trust it (`dlq.trustRedisPersistence`, for
a managed Redis that refuses CONFIG). A restart may bring another configuration: the answer
holds for `PERSISTENCE_RECHECK` seconds, and until the next failed command.

Every change is one Lua script (package files in `lua/`) that changes the stream and both
indexes together, so replicas never see them out of step. A stream written by an earlier
version (no indexes) is indexed on `open()`, and again whenever a poll finds more letters
than index entries. An entry that cannot be read is handed out as a letter without fields,
so the replay buries it (original bytes kept) instead of meeting it at every poll.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from signalgate.datastorage.dlq.base import DEAD_PAGE, DEAD_STREAM, STREAM, Letter, Waiting
from signalgate.datastorage.errors import DeadLetterUnavailable, QueueNotDurable
from signalgate.datastorage.events import AuditEvent

log = logging.getLogger(__name__)

DUE_INDEX = "audit:dlq:due"
EVENT_INDEX = "audit:dlq:events"

_INDEX_PAGE = 1000

# how long Redis's answer that it persists what it takes holds before it is asked again
PERSISTENCE_RECHECK = 30.0

# The Lua scripts are package files (`lua/*.lua`); `ids.lua` holds helpers every one uses.
_SCRIPTS = ("put", "due", "ack", "move", "waiting", "index")


def _script(name: str) -> str:
    folder = resources.files(__package__) / "lua"
    return (folder / "ids.lua").read_text("utf-8") + (folder / f"{name}.lua").read_text("utf-8")


class RedisDeadLetterQueue:
    def __init__(self, url: str, *, timeout: float = 5.0, trust_persistence: bool = False) -> None:
        self._url = url
        self._timeout = timeout
        self._trust_persistence = trust_persistence
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._indexed = False
        self._durable_until = -1.0  # monotonic time until which Redis's answer holds

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisDeadLetterQueue used before open()")
        return self._redis

    async def open(self) -> None:
        """Connect, check that Redis persists what it takes, and index letters an earlier
        version queued.

        Redis being down is not fatal here (the database may take every write): both are
        then done on first use instead. A Redis that answers and would not keep the letters
        is (`QueueNotDurable`): the operator finds out now, not in an outage.
        """
        self._redis = aioredis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=False,
        )
        self._scripts = {name: self._redis.register_script(_script(name)) for name in _SCRIPTS}
        self._indexed = False
        self._durable_until = -1.0
        try:
            await self._ensure_durable()
            await self._ensure_indexed()
        except QueueNotDurable:
            raise
        except DeadLetterUnavailable as exc:
            log.warning("dead-letter queue not indexed yet", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @contextlib.asynccontextmanager
    async def _translated(self, action: str) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            self._durable_until = -1.0  # a restart may come back configured otherwise
            raise DeadLetterUnavailable(f"Redis dead-letter queue {action} failed: {exc}") from exc

    async def _ensure_durable(self) -> None:
        """Return if Redis keeps what it takes through its own restart (an append-only
        file), else raise `QueueNotDurable`: no letter is taken that a restart would lose."""
        if self._trust_persistence or time.monotonic() < self._durable_until:
            return
        async with self._translated("persistence check"):
            try:
                found = await self.redis.config_get("appendonly")
            except ResponseError as exc:  # CONFIG renamed or not permitted (managed Redis)
                raise QueueNotDurable(
                    f"dlq.redisUrl: Redis refuses CONFIG GET ({exc}), so whether it keeps "
                    "queued events through a restart cannot be checked; set "
                    "dlq.trustRedisPersistence: true if it does (appendonly yes)"
                ) from None
        appendonly = {_text(key): _text(value) for key, value in found.items()}.get("appendonly")
        if appendonly != "yes":
            raise QueueNotDurable(
                f"dlq.redisUrl: Redis keeps queued events in memory only (appendonly "
                f"{appendonly}): a restart would lose events answered 202; run it with "
                "appendonly yes (appendfsync always also keeps them through a crash of the "
                "machine)"
            )
        self._durable_until = time.monotonic() + PERSISTENCE_RECHECK

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[script](keys=list(keys), args=list(args))

    async def _ensure_indexed(self) -> None:
        if self._indexed:
            return
        indexed = 0
        start = "-"
        async with self._translated("index"):
            while True:
                last, added = await self._run(
                    "index", (STREAM, DUE_INDEX, EVENT_INDEX), (start, _INDEX_PAGE)
                )
                indexed += int(added)
                if not last:
                    break
                start = "(" + _text(last)
        self._indexed = True
        if indexed:
            log.info("indexed dead letters queued without an index", extra={"count": indexed})

    async def ping(self) -> None:
        async with self._translated("ping"):
            await self.redis.ping()
        await self._ensure_durable()

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        await self._ensure_durable()
        args: list[Any] = [repr(due)]
        for event in events:
            args += [event.event_id, orjson.dumps(event.fields)]
        async with self._translated("put"):
            await self._run("put", (STREAM, DUE_INDEX, EVENT_INDEX), args)

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        if now is None:
            return await self._first(limit)
        await self._ensure_indexed()
        async with self._translated("read"):
            length, indexed, entries = await self._run(
                "due", (STREAM, DUE_INDEX), (repr(now), limit)
            )
        if int(length) > int(indexed):
            self._indexed = False  # an earlier version queued letters: index them next poll
        return [_letter(key, _pairs(data)) for key, data in entries]

    async def _first(self, limit: int) -> list[Letter]:
        """The first `limit` letters in queue order, due or not (draining)."""
        found: list[Letter] = []
        start = "-"
        async with self._translated("read"):
            while len(found) < limit:
                page = await self.redis.xrange(STREAM, min=start, max="+", count=limit)
                if not page:
                    break
                found += [_letter(key, data) for key, data in page]
                start = "(" + _text(page[-1][0])
        return found[:limit]

    async def waiting(self, event_ids: Collection[str]) -> dict[str, Waiting]:
        if not event_ids:
            return {}
        await self._ensure_indexed()
        async with self._translated("read"):
            found = await self._run("waiting", (DUE_INDEX, EVENT_INDEX, STREAM), list(event_ids))
        return {
            _text(found[i]): Waiting(float(_text(found[i + 1])), _text(found[i + 2]))
            for i in range(0, len(found), 3)
        }

    async def ack(self, letters: Sequence[Letter]) -> None:
        if not letters:
            return
        args: list[Any] = []
        for letter in letters:
            args += [letter.key, letter.event_id]
        async with self._translated("ack"):
            await self._run("ack", (STREAM, DUE_INDEX, EVENT_INDEX), args)

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        await self._move(letters, STREAM, "")

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        await self._move(letters, DEAD_STREAM, reason)

    async def _move(self, letters: Sequence[Letter], target: str, reason: str) -> None:
        if not letters:
            return
        args: list[Any] = [reason]
        for letter in letters:
            args += [letter.key, letter.event_id, letter.attempts, repr(letter.due)]
        async with self._translated("move"):
            await self._run("move", (STREAM, target, DUE_INDEX, EVENT_INDEX), args)

    async def depth(self) -> int:
        async with self._translated("depth"):
            return int(await self.redis.xlen(STREAM))

    async def dead(self) -> list[Letter]:
        return [letter async for page in self.dead_pages(DEAD_PAGE) for letter in page]

    async def dead_pages(self, size: int) -> AsyncIterator[list[Letter]]:
        start = "-"
        while True:
            async with self._translated("read"):
                page = await self.redis.xrange(DEAD_STREAM, min=start, max="+", count=size)
            if not page:
                return
            # a stream id starts with the milliseconds its entry was added at: for a dead
            # entry, when it was buried
            yield [
                replace(_letter(key, data), buried=int(_text(key).split("-")[0]) / 1000)
                for key, data in page
            ]
            start = "(" + _text(page[-1][0])

    async def forget_dead(self, letters: Sequence[Letter]) -> None:
        if letters:
            async with self._translated("delete"):
                await self.redis.xdel(DEAD_STREAM, *(letter.key for letter in letters))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    """[k1, v1, k2, v2, ...] (how Lua hands back fields) → {k1: v1, ...}."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _letter(key: object, data: Any) -> Letter:
    """A stream entry → `Letter` (redis-py hands back bytes; typed loosely).

    An entry that cannot be read becomes a letter without fields, due now: the replay finds
    it invalid and buries it (the dead entry keeps the original bytes). Skipping it instead
    would leave it at the front of every poll (its due index entry is 0), never buried.
    """
    try:
        fields = orjson.loads(data[b"event"])
        if isinstance(fields, dict):
            return Letter(
                key=_text(key),
                fields=fields,
                attempts=int(data.get(b"attempts", b"0")),
                due=float(data.get(b"due", b"0")),
                reason=_reason(data),
            )
    except (KeyError, ValueError, orjson.JSONDecodeError):
        pass
    log.warning("an unreadable dead-letter entry", extra={"key": _text(key)})
    return Letter(key=_text(key), fields={}, attempts=0, due=0.0, reason=_reason(data))


def _reason(data: Any) -> str:
    try:
        return _text(data.get(b"reason", b""))
    except AttributeError:
        return ""
