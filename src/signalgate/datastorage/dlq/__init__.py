"""The dead-letter queue: where events wait while the database is down, and their replay.

Two backends behind one interface: Redis Streams (`audit:dlq`, dead ones in `audit:dlq:dead`)
when `dlq.redisUrl` is set — shared by every replica and surviving a DataStorage restart —
else a local append-only JSON-lines file (and `<file>.dead`). Each letter carries the event's
fields (its id included, so a replay is stored once), how many replays failed, and when the
next is due. The `ReplayWorker` retries with the configured backoff and buries a letter after
the last attempt. Both backends also say which event ids they hold (`waiting`), so a child
whose parent waits here is queued behind it rather than refused.
"""

from signalgate.datastorage.dlq.base import DEAD_STREAM, STREAM, DeadLetterQueue, Letter
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
]
