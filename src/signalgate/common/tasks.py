"""Stopping the background tasks a component owns (a watcher, a refresher, a relay), the
wait such a task sleeps in, and a deadline on one awaited thing (`within`).

Why one function: stopping is cancelling and then waiting until the task has finished, so
that nothing it does outlives the component's `close()`; the task's `CancelledError` is the
expected end, and swallowed — but not the caller's own cancellation, which a bare
`suppress(CancelledError)` around the wait would swallow too (the caller would go on as if
it had not been cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
    """Wait until `event` is set or `timeout` seconds passed; True when set.

    Not `asyncio.wait_for`: on Python 3.11 a cancellation arriving in the loop turn the event
    is set is dropped (it returns the wake-up), and a task looping on it ran on after it was
    cancelled — a SIGHUP during a stop hung the stopped service in asyncio's final cancel.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """`awaitable`'s result, or `TimeoutError` once `timeout` seconds have passed (None: no
    deadline), the awaitable cancelled then (wrap it in `asyncio.shield` to keep it going).

    Not `asyncio.wait_for`: on Python 3.11 a cancellation arriving in the loop turn the
    awaitable completes is dropped (it returns the result), and the cancelled caller goes on
    as if it had not been — what hung a stopped service (see `wait_event`).
    """
    async with asyncio.timeout(timeout):
        return await awaitable


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task given (None is skipped), then wait for each to finish. An error a
    task ended with is raised; its cancellation is not, unless the caller is cancelled."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
