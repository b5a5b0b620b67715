"""A request whose events went into several journal groups, one of which failed.

A webhook's alerts are decided one after another, so their audit events are staged over
several groups; the request then waited for its newest group only, and was answered 2xx
when that one was written even though an older one — holding its first alerts' events —
had failed (a disk filling, then freed: an outside check found acknowledged RRs without
their `crd.created`). The write here is refused by the kernel itself (RLIMIT_FSIZE), no
mock.
"""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import pytest

from signalgate.audit.journal import Journal, JournalUnavailable


def event(n: int) -> dict[str, object]:
    return {"event_id": f"e-{n}", "correlation_id": "rr-1", "n": n}


async def _refused_by_the_kernel(journal: Journal, n: int) -> None:
    """Stage event `n` while the process may not grow a file, and wait until its group
    failed (the segment is new: its first write grows it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ
    try:
        journal.stage(event(n))
        for _ in range(500):
            if journal.failing():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the write was not refused")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_a_commit_is_refused_when_an_earlier_group_of_its_request_failed(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=1 << 20)
    await journal.open()
    try:
        mark = journal.mark()
        await _refused_by_the_kernel(journal, 1)  # the request's first alert: lost
        journal.stage(event(2))  # its second alert, in a group that is written
        with pytest.raises(JournalUnavailable, match="File too large"):
            await journal.commit(mark)
        # the next request, marked after the failure, is answered as before
        mark = journal.mark()
        journal.stage(event(3))
        await journal.commit(mark)
        piece = await journal.read(10)
        assert [e.event()["n"] for e in piece.entries] == [2, 3]
    finally:
        await journal.close()
