"""The delivery client's spool: order, bound, resume after restart, torn lines, compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalgate.datastorage import spool as spool_module
from signalgate.datastorage.spool import Spool


def test_fifo_commit_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "audit.spool"
    spool = Spool(path, 10_000)
    spool.open()
    for n in range(5):
        assert spool.append({"n": n})
    events, offset = spool.peek(2)
    assert [e["n"] for e in events] == [0, 1]
    spool.commit(offset, 2)
    spool.close()
    again = Spool(path, 10_000)
    again.open()
    assert again.count == 3
    events, offset = again.peek(10)
    assert [e["n"] for e in events] == [2, 3, 4]
    again.commit(offset, 3)
    assert again.count == 0
    assert path.stat().st_size == 0
    again.close()


def test_bound_and_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.spool"
    spool = Spool(path, 40)
    spool.open()
    assert spool.append({"n": "x" * 10})
    assert not spool.append({"n": "y" * 30})
    spool.close()
    with open(path, "ab") as handle:
        handle.write(b'{"n": "tor')
    again = Spool(path, 40)
    again.open()
    assert again.count == 1
    assert again.peek(5)[0] == [{"n": "x" * 10}]
    again.close()


def test_compaction_keeps_the_undelivered_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_COMPACT_AFTER", 10)
    path = tmp_path / "audit.spool"
    spool = Spool(path, 100_000)
    spool.open()
    for n in range(10):
        spool.append({"n": n})
    _, offset = spool.peek(6)
    spool.commit(offset, 6)
    assert path.stat().st_size < offset  # rewritten without the delivered head
    spool.append({"n": 10})
    assert [e["n"] for e in spool.peek(10)[0]] == [6, 7, 8, 9, 10]
    spool.close()
