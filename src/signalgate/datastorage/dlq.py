"""The dead-letter queue: where events wait while the database is down, and their replay.

Two backends behind one interface: Redis Streams (`audit:dlq`, dead ones in `audit:dlq:dead`)
when `dlq.redisUrl` is set — shared by every replica and surviving a DataStorage restart —
else a local append-only JSON-lines file (and `<file>.dead`). Each letter carries the event's
fields (its id included, so a replay is stored once), how many replays failed, and when the
next is due. The `ReplayWorker` retries with the configured backoff and buries a letter after
the last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signalgate.datastorage.errors import (
    Conflict,
    DeadLetterUnavailable,
    MissingParent,
    StoreUnavailable,
)
from signalgate.datastorage.events import AuditEvent
from signalgate.datastorage.metrics import DataStorageMetrics
from signalgate.datastorage.store import AuditStore

log = logging.getLogger(__name__)

STREAM = "audit:dlq"
DEAD_STREAM = "audit:dlq:dead"


@dataclass(frozen=True)
class Letter:
    """One queued event: `key` names it in its backend; `attempts` counts failed replays."""

    key: str
    fields: dict[str, Any]
    attempts: int
    due: float


class DeadLetterQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return if the queue can take events, else raise `DeadLetterUnavailable`."""
        ...

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        """Queue every event or none (raises `DeadLetterUnavailable`)."""
        ...

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        """Up to `limit` letters due by `now` in queue order (`None`: all, due or not)."""
        ...

    async def ack(self, letters: Sequence[Letter]) -> None: ...

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        """Put letters back with their new `attempts` and `due`."""
        ...

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        """Move letters to the dead queue."""
        ...

    async def depth(self) -> int: ...


# --- Redis Streams -------------------------------------------------------------------------

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


# --- local file ----------------------------------------------------------------------------


class FileDeadLetterQueue:
    """JSON lines, appended with fsync; changes rewrite the file atomically (tmp + rename).

    An `fcntl` lock serialises this process's writer with a `replay-dlq` run on the same file;
    a torn last line (crash mid-append) is skipped with a warning.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dead_path = path.with_name(path.name + ".dead")
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        await self._call("ping", self._check)

    def _check(self) -> None:
        if not os.access(self.path.parent, os.W_OK):
            raise OSError(f"directory '{self.path.parent}' is not writable")

    async def _call(self, action: str, func: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(func, *args)
            except OSError as exc:
                raise DeadLetterUnavailable(
                    f"dead-letter file '{self.path}' {action} failed: {exc}"
                ) from exc

    async def put(self, events: Sequence[AuditEvent], due: float) -> None:
        lines = [
            {"key": str(uuid.uuid4()), "event": event.fields, "attempts": 0, "due": due}
            for event in events
        ]
        await self._call("append", self._append, self.path, lines)

    @staticmethod
    def _append(path: Path, records: Sequence[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        with _locked(path) as fd:
            os.write(fd, data)
            os.fsync(fd)

    async def due(self, now: float | None, limit: int) -> list[Letter]:
        letters: list[Letter] = await self._call("read", self._read)
        return [ltr for ltr in letters if now is None or ltr.due <= now][:limit]

    def _read(self) -> list[Letter]:
        if not self.path.exists():
            return []
        letters = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            try:
                record = orjson.loads(line)
                letters.append(
                    Letter(
                        str(record["key"]),
                        record["event"],
                        int(record["attempts"]),
                        float(record["due"]),
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning(
                    "skipping an unreadable dead-letter line",
                    extra={"path": str(self.path), "line": number},
                )
        return letters

    async def ack(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: None for ltr in letters}, [])

    async def reschedule(self, letters: Sequence[Letter]) -> None:
        await self._call("rewrite", self._rewrite, {ltr.key: ltr for ltr in letters}, [])

    async def bury(self, letters: Sequence[Letter], reason: str) -> None:
        dead = [
            {"key": ltr.key, "event": ltr.fields, "attempts": ltr.attempts, "reason": reason}
            for ltr in letters
        ]
        await self._call("bury", self._rewrite, {ltr.key: None for ltr in letters}, dead)

    def _rewrite(self, changes: dict[str, Letter | None], dead: list[dict[str, Any]]) -> None:
        if dead:
            self._append(self.dead_path, dead)
        with _locked(self.path):
            kept = []
            for letter in self._read():
                if letter.key in changes:
                    changed = changes[letter.key]
                    if changed is None:
                        continue
                    letter = changed
                kept.append(
                    {
                        "key": letter.key,
                        "event": letter.fields,
                        "attempts": letter.attempts,
                        "due": letter.due,
                    }
                )
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "wb") as handle:
                handle.write(b"".join(orjson.dumps(record) + b"\n" for record in kept))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)

    async def depth(self) -> int:
        return len(await self._call("read", self._read))

    async def dead(self) -> list[Letter]:
        def read() -> list[Letter]:
            if not self.dead_path.exists():
                return []
            found = []
            for line in self.dead_path.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError, KeyError):
                    record = orjson.loads(line)
                    found.append(Letter(record["key"], record["event"], record["attempts"], 0))
            return found

        result: list[Letter] = await self._call("read", read)
        return result


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """An append descriptor on `path` holding an exclusive `flock` on its `.lock` file."""
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.close(lock_fd)


# --- replay --------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    replayed: int = 0
    rescheduled: int = 0
    dead: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.replayed or self.rescheduled or self.dead)


class ReplayWorker:
    """Replays due letters into the store; reschedules on failure; buries after the last try.

    `backoff[n]` is the wait before replay attempt n+1, so a letter gets `len(backoff)`
    attempts. An event the store refuses for good (its id stored with other content) is
    buried at once: retrying cannot change the answer.
    """

    def __init__(
        self,
        dlq: DeadLetterQueue,
        store: AuditStore,
        backoff: Sequence[float],
        metrics: DataStorageMetrics,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self._dlq = dlq
        self._store = store
        self._backoff = list(backoff)
        self._metrics = metrics
        self._poll = poll_interval
        self._batch = batch_size
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def first_delay(self) -> float:
        return self._backoff[0]

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="dlq-replay")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await self.run_once()
                self._metrics.dlq_depth.set(await self._dlq.depth())
            except DeadLetterUnavailable as exc:
                log.warning("dead-letter queue unavailable", extra={"error": str(exc)})
                report = ReplayReport()
            except Exception:
                log.exception("dead-letter replay failed")
                report = ReplayReport()
            if report.replayed and not report.rescheduled:
                continue  # draining after an outage: go on without waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def drain(self) -> ReplayReport:
        """Replay everything queued now, due or not, until empty or the store fails."""
        total = ReplayReport()
        while True:
            report = await self.run_once(ignore_schedule=True)
            total.replayed += report.replayed
            total.rescheduled += report.rescheduled
            total.dead += report.dead
            if not report.replayed or report.rescheduled:
                return total

    async def run_once(self, *, ignore_schedule: bool = False) -> ReplayReport:
        now = time.time()
        letters = await self._dlq.due(None if ignore_schedule else now, self._batch)
        report = ReplayReport()
        if not letters:
            return report
        events: list[tuple[Letter, AuditEvent]] = []
        invalid: list[Letter] = []
        for letter in letters:
            try:
                events.append((letter, AuditEvent.from_fields(letter.fields)))
            except ValueError:  # pydantic's ValidationError is a ValueError
                invalid.append(letter)
        if invalid:
            await self._bury(invalid, "invalid", report)
        try:
            await self._store.write([event for _, event in events])
        except StoreUnavailable as exc:
            log.info("replay deferred: store unavailable", extra={"error": str(exc)})
            await self._retry_later([letter for letter, _ in events], now, report)
            return report
        except (Conflict, MissingParent):
            await self._one_by_one(events, now, report)
            return report
        await self._dlq.ack([letter for letter, _ in events])
        self._replayed(len(events), report)
        return report

    async def _one_by_one(
        self, events: Sequence[tuple[Letter, AuditEvent]], now: float, report: ReplayReport
    ) -> None:
        """A batch with a permanent failure: find which letters are at fault."""
        for letter, event in events:
            try:
                await self._store.write([event])
            except Conflict:
                await self._bury([letter], "conflict", report)
            except (MissingParent, StoreUnavailable):
                await self._retry_later([letter], now, report)
            else:
                await self._dlq.ack([letter])
                self._replayed(1, report)

    def _replayed(self, count: int, report: ReplayReport) -> None:
        report.replayed += count
        self._metrics.dlq_replayed.inc(count)

    async def _retry_later(
        self, letters: Sequence[Letter], now: float, report: ReplayReport
    ) -> None:
        again: list[Letter] = []
        exhausted: list[Letter] = []
        for letter in letters:
            attempts = letter.attempts + 1
            if attempts >= len(self._backoff):
                exhausted.append(replace(letter, attempts=attempts))
            else:
                again.append(replace(letter, attempts=attempts, due=now + self._backoff[attempts]))
        await self._dlq.reschedule(again)
        report.rescheduled += len(again)
        if exhausted:
            await self._bury(exhausted, "attempts exhausted", report)

    async def _bury(self, letters: Sequence[Letter], reason: str, report: ReplayReport) -> None:
        await self._dlq.bury(letters, reason)
        report.dead += len(letters)
        self._metrics.dlq_dead.inc(len(letters))
        log.error(
            "audit events moved to the dead-letter store",
            extra={"count": len(letters), "reason": reason},
        )
