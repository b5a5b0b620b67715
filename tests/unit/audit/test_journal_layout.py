"""Which journal directory each worker writes, and which ones a smaller run delivers."""

from __future__ import annotations

from pathlib import Path

from signalgate.audit.journal import stranded_journals, worker_journal


def test_worker_zero_keeps_the_configured_journal_and_the_others_get_their_own(
    tmp_path: Path,
) -> None:
    base = tmp_path / "audit-journal"
    assert worker_journal(base, 0) == base
    assert worker_journal(base, 3) == tmp_path / "audit-journal-worker-3"


def test_journals_of_workers_beyond_the_count_are_stranded(tmp_path: Path) -> None:
    base = tmp_path / "audit-journal"
    for index in range(4):
        worker_journal(base, index).mkdir()
    (tmp_path / "audit-journal-worker-9").write_text("a file, not a journal")
    (tmp_path / "audit-journal-worker-x").mkdir()
    (tmp_path / "other-worker-5").mkdir()
    assert stranded_journals(base, 1) == [worker_journal(base, i) for i in (1, 2, 3)]
    assert stranded_journals(base, 3) == [worker_journal(base, 3)]
    assert stranded_journals(base, 4) == []
    # a worker's own journal has no siblings of its own
    assert stranded_journals(worker_journal(base, 1), 1) == []
    assert stranded_journals(tmp_path / "missing" / "audit-journal", 1) == []
