"""Waiting on a running service: a condition polled until it holds (from a test, `wait_for`,
or an async test, `until`), and one sample of its ops listener's `/metrics`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 200 ms until it returns True; fail naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def answered(send: Callable[[], httpx.Response], status: int, tries: int = 50) -> httpx.Response:
    """`send` again every 200 ms until it is answered `status` (a change that takes a
    moment to be seen, such as RBAC reaching the API server's authorizer); the last answer,
    whatever its status, after `tries`."""
    answer = send()
    for _ in range(tries):
        if answer.status_code == status:
            break
        time.sleep(0.2)
        answer = send()
    return answer


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll `check` every 50 ms until it returns True; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.05)


async def metric_sample(ops_url: str, name: str) -> float:
    """One sample of the ops listener's /metrics, by its name with labels (0 when absent)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{ops_url}/metrics")).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
