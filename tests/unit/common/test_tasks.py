"""Stopping background tasks: cancelled and finished, without swallowing the caller's own
cancellation or a task's error."""

from __future__ import annotations

import asyncio

import pytest

from signalgate.common.tasks import cancel_and_wait, within


async def test_tasks_are_cancelled_and_finished_before_it_returns() -> None:
    cleaned: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # a clean-up that takes a loop turn or two
            cleaned.append(name)

    tasks = [asyncio.create_task(worker(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks[0], None, tasks[1])
    assert sorted(cleaned) == ["a", "b"]
    assert all(task.cancelled() for task in tasks)


async def test_a_task_that_failed_raises_its_error() -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="a bug"):
        await cancel_and_wait(task)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    """Cancelled while it waits for a slow-to-stop task, the caller stops too: a bare
    `suppress(CancelledError)` around the wait would let it carry on."""
    after_wait: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)

    async def closer(task: asyncio.Task[None]) -> None:
        await cancel_and_wait(task)
        after_wait.append("went on")

    owned = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    caller = asyncio.create_task(closer(owned))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert after_wait == []


async def test_within_keeps_a_cancellation_that_comes_as_its_awaitable_completes() -> None:
    """The awaited thing completes in the loop turn its caller is cancelled: on Python 3.11
    `asyncio.wait_for` returned the result and dropped the cancellation, so the caller went
    on (a stop, a close) as if it had not been cancelled. A caller whose cancellation was
    taken never goes on."""
    loop = asyncio.get_running_loop()
    for turns in range(3):  # the completion a few loop turns before the cancellation, or with it
        awaited: asyncio.Future[str] = loop.create_future()
        went_on: list[str] = []

        async def caller(
            awaited: asyncio.Future[str] = awaited, went_on: list[str] = went_on
        ) -> None:
            went_on.append(await within(asyncio.shield(awaited), 60))

        task = asyncio.create_task(caller())
        await asyncio.sleep(0)  # waiting
        awaited.set_result("done")
        for _ in range(turns):
            await asyncio.sleep(0)
        if task.cancel():  # not finished yet: the cancellation must win
            with pytest.raises(asyncio.CancelledError):
                await task
            assert went_on == [], f"went on after its cancellation ({turns} turns)"
        else:
            assert went_on == ["done"]


async def test_within_raises_timeout_and_cancels_what_it_waited_for() -> None:
    cancelled: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return "late"

    with pytest.raises(TimeoutError):
        await within(slow(), 0.01)
    assert cancelled == ["slow"]
    assert await within(asyncio.sleep(0, "now"), None) == "now"
