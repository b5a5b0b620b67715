"""The dead-letter queue: where events wait while the database is down, and their replay.

Two backends behind one interface: Redis Streams (`audit:dlq`, dead ones in `audit:dlq:dead`)
when `dlq.redisUrl` is set — shared by every replica and surviving a DataStorage restart —
else a local append-only JSON-lines file (and `<file>.dead`). Each letter carries the event's
fields (its id included, so a replay is stored once), how many replays failed, and when the
next is due. The `ReplayWorker` replays what is due while the database takes writes, retries
with the configured backoff a letter the database refuses, and buries a letter refused for
itself after its last attempt (never for the database being down or read-only). Both
backends also say which event ids they hold (`waiting`), so a child whose parent waits here
is queued behind it rather than refused.
"""

from signalgate.datastorage.dlq.base import DEAD_STREAM, STREAM, DeadLetterQueue, Letter, Waiting
from signalgate.datastorage.dlq.file import FileDeadLetterQueue
from signalgate.datastorage.dlq.redis_streams import RedisDeadLetterQueue
from signalgate.datastorage.dlq.replay import ReplayReport, ReplayWorker

__all__ = [
    "DEAD_STREAM",
    "STREAM",
    "DeadLetterQueue",
    "FileDeadLetterQueue",
    "Letter",
    "RedisDeadLetterQueue",
    "ReplayReport",
    "ReplayWorker",
    "Waiting",
]
