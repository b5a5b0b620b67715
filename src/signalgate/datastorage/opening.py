"""Opening the audit store at start: an outage of its database is waited out while serving,
a configuration that can never work stops start-up.

Why: the dead-letter queue exists so that a database outage costs writers nothing (202, and
the replay stores the events once the database is back). A DataStorage that would not start
while its database was down (an outside check: `connect failed: Connection refused`, exit 1)
could not come back from a crash, an upgrade or a rescheduled pod during an outage, and every
writer got refused connections until the database returned.

The rule (docs/datastorage.md, "When the database is down at start"):
- stops start-up at once: the database refuses us for a setting (`StoreRefused`:
  authentication, a database that does not exist), its schema is newer than this version or
  behind it without `store.autoMigrate` (`SchemaMismatch`), any other error of `open()` (a
  bug), and, with the database down, a dead-letter queue that does not answer (then nothing
  could take a write);
- waited out: the database cannot be reached or is starting up or shutting down
  (`StoreOutage`). The service serves at once: writes are queued (202), queries answer 503,
  the ops `/readyz` stays ready while the queue answers; the store is opened again in the
  background on a bounded backoff, with the schema checked (or migrated) as at start, and
  the replay worker, which only pings a database that is down, drains the queue once it
  answers. Meeting one of the refusals above at that point stops the service as it would
  have stopped start-up (`Lifecycle.fail`): exit 1 with the same message, the queue kept.

One line when the wait begins and one when it ends; none per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time

from signalgate.common.server import Lifecycle
from signalgate.common.tasks import cancel_and_wait
from signalgate.datastorage.dlq import DeadLetterQueue
from signalgate.datastorage.errors import DeadLetterUnavailable, StoreOutage
from signalgate.datastorage.store import AuditStore

log = logging.getLogger("signalgate.datastorage")

# the waits between attempts to open the store: doubling from the first to the last, which
# then repeats. A refused connection costs the database nothing; 5 s bounds how long the
# queue keeps growing once the database is back
RETRY_FIRST = 0.5
RETRY_MAX = 5.0


class StoreOpener:
    """Opens `store` at start, or keeps opening it in the background after an outage."""

    def __init__(self, store: AuditStore, dlq: DeadLetterQueue, lifecycle: Lifecycle) -> None:
        self._store = store
        self._dlq = dlq
        self._lifecycle = lifecycle
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the store; on an outage, check the queue can take writes meanwhile and return
        with the store being opened in the background. Anything else is raised."""
        try:
            await self._store.open()
        except StoreOutage as outage:
            try:
                await self._dlq.ping()
            except DeadLetterUnavailable as exc:
                raise DeadLetterUnavailable(
                    f"the audit database is unreachable ({outage}) and the dead-letter queue "
                    f"that would take writes meanwhile is unusable too ({exc}): nothing "
                    "could store an event"
                ) from exc
            log.warning(
                "the audit database is unreachable: serving, writes are queued and it is "
                "connected once it answers",
                extra={"error": str(outage)},
            )
            self._task = asyncio.create_task(self._keep_opening(), name="audit-store-open")

    async def close(self) -> None:
        """Stop opening (a shutdown during the wait); the store itself is closed after."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _keep_opening(self) -> None:
        started = time.monotonic()
        attempts = 1
        wait = RETRY_FIRST
        while True:
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX)
            attempts += 1
            try:
                await self._store.open()
            except StoreOutage:
                continue
            except Exception as exc:
                # what would have stopped start-up: stop as it would have, the queue kept
                # (the runner logs the stop and the command the error: said here too, it
                # was said three times)
                self._lifecycle.fail(exc)
                return
            log.info(
                "connected to the audit database",
                extra={
                    "waited_seconds": round(time.monotonic() - started, 1),
                    "attempts": attempts,
                },
            )
            return
