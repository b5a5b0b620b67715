"""Stopping the background tasks a component owns (a watcher, a refresher, a relay).

Why one function: stopping is cancelling and then waiting until the task has finished, so
that nothing it does outlives the component's `close()`; the task's `CancelledError` is the
expected end, and swallowed — but not the caller's own cancellation, which a bare
`suppress(CancelledError)` around the wait would swallow too (the caller would go on as if
it had not been cancelled).
"""

from __future__ import annotations

import asyncio
from typing import Any


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
