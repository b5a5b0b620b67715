"""The dead-letter queue on Redis Streams: shared by every replica, outlives a pod's disk.

The stream `audit:dlq` holds the letters (its name and fields are contract). Two indexes beside
it make the questions the service asks cost what they return, not the stream's length:

- `audit:dlq:due`, a sorted set: score = the letter's due time, member = its stream id
  zero-padded, so that equal dues sort in queue order. A poll reads the due ones only, even
  when a long outage left hundreds of thousands waiting for later.
- `audit:dlq:events`, a hash: event id → stream id of the letter holding it (the latest, if
  a client retry queued it twice). The write path asks it whether a missing parent waits here.

Every change is one Lua script that changes the stream and both indexes together, so replicas
never see them out of step. A stream written by an earlier version (no indexes) is indexed on
`open()`, and again whenever a poll finds more letters than index entries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from signalgate.datastorage.dlq.base import DEAD_STREAM, STREAM, Letter
from signalgate.datastorage.errors import DeadLetterUnavailable
from signalgate.datastorage.events import AuditEvent

log = logging.getLogger(__name__)

DUE_INDEX = "audit:dlq:due"
EVENT_INDEX = "audit:dlq:events"

_INDEX_PAGE = 1000

# Stream id <-> sorted-set member. Padding makes the members' byte order (the order of equal
# scores) the ids' numeric order: "1-10" sorts before "1-9", the padded forms do not.
_IDS = """
local function member(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function stream_id(m)
  local ms, seq = string.match(m, '^0*(%d+)%-0*(%d+)$')
  return ms .. '-' .. seq
end
"""

# KEYS stream, due, events; ARGV due, then (event id, event JSON) per event.
_PUT = (
    _IDS
    + """
for i = 2, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 1], 'attempts', '0',
                        'due', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], member(id))
  redis.call('HSET', KEYS[3], ARGV[i], id)
end
return 1
"""
)

# KEYS stream, due; ARGV now, limit. Returns {stream length, index size, entries}. An index
# member whose entry is gone (deleted by a version that kept no index) is dropped.
_DUE = (
    _IDS
    + """
local found = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local id = stream_id(m)
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if #entry == 0 then
    redis.call('ZREM', KEYS[2], m)
  else
    found[#found + 1] = entry[1]
  end
end
return {redis.call('XLEN', KEYS[1]), redis.call('ZCARD', KEYS[2]), found}
"""
)

# Each change deletes the old entry first and acts only if it was still there, so two
# replicas acting on the same letter never duplicate it (nor lose it) in the queue; the
# indexes change in the same script, so they follow the stream exactly.
#
# KEYS stream, due, events; ARGV (stream id, event id) per letter.
_ACK = (
    _IDS
    + """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], member(ARGV[i]))
    if redis.call('HGET', KEYS[3], ARGV[i + 1]) == ARGV[i] then
      redis.call('HDEL', KEYS[3], ARGV[i + 1])
    end
    removed = removed + 1
  end
end
return removed
"""
)

# KEYS stream, target (the stream again, or the dead stream), due, events;
# ARGV reason, then (stream id, event id, event JSON, attempts, due) per letter.
_MOVE = (
    _IDS
    + """
local moved = 0
for i = 2, #ARGV, 5 do
  local id, event_id = ARGV[i], ARGV[i + 1]
  if redis.call('XDEL', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[3], member(id))
    local new = redis.call('XADD', KEYS[2], '*', 'event', ARGV[i + 2], 'attempts', ARGV[i + 3],
                           'due', ARGV[i + 4], 'reason', ARGV[1])
    local held = redis.call('HGET', KEYS[4], event_id) == id
    if KEYS[2] == KEYS[1] then
      redis.call('ZADD', KEYS[3], ARGV[i + 4], member(new))
      if held then redis.call('HSET', KEYS[4], event_id, new) end
    elseif held then
      redis.call('HDEL', KEYS[4], event_id)
    end
    moved = moved + 1
  end
end
return moved
"""
)

# KEYS due, events; ARGV event ids. Returns (event id, due) of those held by a live letter.
_WAITING = (
    _IDS
    + """
local found = {}
for _, event_id in ipairs(ARGV) do
  local id = redis.call('HGET', KEYS[2], event_id)
  if id then
    local due = redis.call('ZSCORE', KEYS[1], member(id))
    if due then
      found[#found + 1] = event_id
      found[#found + 1] = due
    end
  end
end
return found
"""
)

# KEYS stream, due, events; ARGV start, count. Indexes one page of entries that have no index
# entry yet (written by an earlier version); atomic per page, so a replica acting on the same
# entries meanwhile cannot leave an index entry behind for a deleted letter.
# Returns {last id read ('' at the end), how many were indexed}.
_INDEX = (
    _IDS
    + """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local added = 0
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local m = member(id)
  if not redis.call('ZSCORE', KEYS[2], m) then
    local due, event = '0', nil
    for f = 1, #fields, 2 do
      if fields[f] == 'due' then due = fields[f + 1] end
      if fields[f] == 'event' then event = fields[f + 1] end
    end
    local number = tonumber(due)
    if not number or number ~= number then due = '0' end
    redis.call('ZADD', KEYS[2], due, m)
    if event then
      local ok, decoded = pcall(cjson.decode, event)
      if ok and type(decoded) == 'table' and type(decoded['event_id']) == 'string' then
        redis.call('HSETNX', KEYS[3], decoded['event_id'], id)
      end
    end
    added = added + 1
  end
end
if #entries == 0 then return {'', added} end
return {entries[#entries][1], added}
"""
)


class RedisDeadLetterQueue:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._url = url
        self._timeout = timeout
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._indexed = False

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisDeadLetterQueue used before open()")
        return self._redis

    async def open(self) -> None:
        """Connect and index letters an earlier version queued.

        Redis being down is not fatal here (the database may take every write): the index is
        then built on first use instead.
        """
        self._redis = aioredis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=False,
        )
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("put", _PUT),
                ("due", _DUE),
                ("ack", _ACK),
                ("move", _MOVE),
                ("waiting", _WAITING),
                ("index", _INDEX),
            )
        }
        self._indexed = False
        try:
            await self._ensure_indexed()
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
            raise DeadLetterUnavailable(f"Redis dead-letter queue {action} failed: {exc}") from exc

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

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
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
        return [letter for key, data in entries if (letter := _letter(key, _pairs(data)))]

    async def _first(self, limit: int) -> list[Letter]:
        """The first `limit` letters in queue order, due or not (draining)."""
        found: list[Letter] = []
        start = "-"
        async with self._translated("read"):
            while len(found) < limit:
                page = await self.redis.xrange(STREAM, min=start, max="+", count=limit)
                if not page:
                    break
                found += [letter for key, data in page if (letter := _letter(key, data))]
                start = "(" + _text(page[-1][0])
        return found[:limit]

    async def waiting(self, event_ids: Collection[str]) -> dict[str, float]:
        if not event_ids:
            return {}
        await self._ensure_indexed()
        async with self._translated("read"):
            found = await self._run("waiting", (DUE_INDEX, EVENT_INDEX), list(event_ids))
        return {_text(key): float(_text(due)) for key, due in _pairs(found).items()}

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
            args += [
                letter.key,
                letter.event_id,
                orjson.dumps(letter.fields),
                letter.attempts,
                repr(letter.due),
            ]
        async with self._translated("move"):
            await self._run("move", (STREAM, target, DUE_INDEX, EVENT_INDEX), args)

    async def depth(self) -> int:
        async with self._translated("depth"):
            return int(await self.redis.xlen(STREAM))

    async def dead(self) -> list[Letter]:
        async with self._translated("read"):
            page = await self.redis.xrange(DEAD_STREAM)
        return [letter for key, data in page or [] if (letter := _letter(key, data))]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    """[k1, v1, k2, v2, ...] (how Lua hands back fields) → {k1: v1, ...}."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _letter(key: object, data: Any) -> Letter | None:
    """A stream entry → `Letter` (redis-py hands back bytes; typed loosely)."""
    try:
        fields = orjson.loads(data[b"event"])
        if isinstance(fields, dict):
            return Letter(
                key=_text(key),
                fields=fields,
                attempts=int(data.get(b"attempts", b"0")),
                due=float(data.get(b"due", b"0")),
            )
    except (KeyError, ValueError, orjson.JSONDecodeError):
        pass
    log.warning("skipping an unreadable dead-letter entry", extra={"key": _text(key)})
    return None
