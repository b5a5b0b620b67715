"""How late the event loop runs, as a histogram on `/metrics` (`event_loop_lag_seconds`).

Why: all of a service's requests share one event loop, so whatever holds it — a long
garbage-collection pass, a blocking call, a burst of CPU work — delays every request in
flight at once, and otherwise shows only as a p99 nobody can place. A timer due every
`INTERVAL` records by how much it fired late: a stall of d seconds shows as one observation
of about d in the `INTERVAL`s it overlaps. (Found this way: the services' garbage-collector
passes of 6-10 ms, several a second, before `common.server.GC_THRESHOLDS`.)

The loop's timers have a resolution of about a millisecond, so lateness under that is noise;
the buckets start there. One task and ten wake-ups a second: nothing measurable.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from signalgate.common.tasks import cancel_and_wait

INTERVAL = 0.1  # seconds between the timer's due times
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopLagMonitor:
    """Start it on the service's loop; `stop()` before the loop closes."""

    def __init__(self, registry: CollectorRegistry, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.lag = Histogram(
            "event_loop_lag_seconds",
            "How late a timer due every 100 ms fired: how long the event loop was held",
            buckets=BUCKETS,
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lag.observe(max(0.0, loop.time() - due))
