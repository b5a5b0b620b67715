"""Housekeeping while serving: the store's `maintain` (PostgreSQL's monthly partitions ahead)
run by DataStorage itself, every few hours.

Why not only cron: `signalgate-datastorage maintain` makes the current month and the next
three, and a DataStorage that kept running past them with the cron job missing or broken put
every later month's events into the default partition. The store now moves such rows when
the month's partition is made (migration 0005), but the partition-less months' queries and
writes are slower for as long as that lasts. Running `maintain` here keeps months ahead for
as long as any replica runs; the cron job stays the way to prepare months for a database no
replica writes to.

A failure is logged and tried again at the next round (the database down, or a role that
may not create tables); it never stops the service, which can store events without new
partitions (they land in the default one).
"""

from __future__ import annotations

import asyncio
import logging

from signalgate.common.tasks import cancel_and_wait
from signalgate.datastorage.errors import StoreUnavailable
from signalgate.datastorage.store import AuditStore

log = logging.getLogger("signalgate.datastorage")

# how often a running DataStorage makes the partitions ahead: a few times a day, so a month
# is prepared long before it starts, and the statement (a look-up of five tables under an
# advisory lock) costs the database nothing measurable
MAINTAIN_EVERY = 6 * 3600.0


class Housekeeper:
    """Runs `store.maintain()` every `interval` seconds, the first time one interval after
    `start()` (opening the store has just made the partitions)."""

    def __init__(self, store: AuditStore, interval: float = MAINTAIN_EVERY) -> None:
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds done, failed ones included (tests and logs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="datastorage-housekeeping")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.maintain_once()

    async def maintain_once(self) -> None:
        try:
            created = await self._store.maintain()
        except StoreUnavailable as exc:
            log.warning(
                "housekeeping: the monthly partitions ahead were not checked; trying again "
                "at the next round",
                extra={"error": str(exc), "next_in_seconds": self._interval},
            )
        except Exception:  # a bug must not end the loop: the next round tries again
            log.exception("housekeeping: maintain failed")
        else:
            if created:
                log.info("housekeeping: created monthly partitions", extra={"created": created})
        finally:
            self.rounds += 1
