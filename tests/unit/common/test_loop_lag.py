"""The event-loop lag monitor reports a stall of the loop as one late timer of its length."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from signalgate.common.loop_lag import LoopLagMonitor


def sample(registry: CollectorRegistry, suffix: str, **labels: str) -> float:
    value = registry.get_sample_value(f"event_loop_lag_seconds{suffix}", labels)
    return value or 0.0


async def test_a_blocked_loop_shows_as_one_late_timer_of_its_length() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval=0.02)
    monitor.start()
    try:
        await asyncio.sleep(0.1)  # a few timers, on time
        assert sample(registry, "_count") >= 2
        stalls_before = sample(registry, "_count") - sample(registry, "_bucket", le="0.05")
        time.sleep(0.08)  # what a long GC pass or a blocking call does to every request
        await asyncio.sleep(0.05)
        stalls = sample(registry, "_count") - sample(registry, "_bucket", le="0.05")
        assert stalls - stalls_before >= 1
        # reported with its length: 60 - 80 ms late (the timer fell due during the stall)
        assert sample(registry, "_bucket", le="0.1") - sample(registry, "_bucket", le="0.05") >= 1
    finally:
        await monitor.stop()
    stopped = sample(registry, "_count")
    await asyncio.sleep(0.06)
    assert sample(registry, "_count") == stopped  # nothing runs after stop()
