"""What a Go service's GOCOVERDIR holds, read from its file names alone: which processes
wrote counters, which at their exit, and which binaries wrote none (`go tool covdata` reads
the contents; this module never needs `go`)."""

from __future__ import annotations

import re
from pathlib import Path

COUNTERS = re.compile(r"^covcounters\.([0-9a-f]+)\.(\d+)\.\d+$")
META = re.compile(r"^covmeta\.([0-9a-f]+)$")
# beside a counter file the Go agent wrote in a live save (go/agent.go's LiveSuffix)
LIVE_SUFFIX = ".e2ecov-live"


def counter_pids(covdir: Path) -> set[int]:
    """Pids that wrote counters into a GOCOVERDIR."""
    found = set()
    if covdir.is_dir():
        for path in covdir.iterdir():
            match = COUNTERS.match(path.name)
            if match:
                found.add(int(match.group(2)))
    return found


def exit_counters(covdir: Path, pid: int) -> bool:
    """Whether process `pid` wrote counters at its exit (the runtime's, not a live save's):
    the Go agent writes no exit record in the ledger, these files are its record."""
    if not covdir.is_dir():
        return False
    return any(
        not _live(path)
        for path in covdir.glob(f"covcounters.*.{pid}.*")
        if COUNTERS.match(path.name)
    )


def merged_inputs(covdir: Path) -> list[Path]:
    """The files `go tool covdata merge` is to read: the meta-data, and every process's
    counters but a live save's once that process also wrote its exit counters. Both hold
    running totals from the process's start, so merging both counted each block twice
    (hit counts doubled in LCOV, XML and the Go HTML page; the percentages were right)."""
    counters = [
        (path, int(m.group(2))) for path in covdir.iterdir() if (m := COUNTERS.match(path.name))
    ]
    live = {path for path, _ in counters if _live(path)}
    exited = {pid for path, pid in counters if path not in live}
    metas = [path for path in covdir.iterdir() if META.match(path.name)]
    return metas + [path for path, pid in counters if path not in live or pid not in exited]


def _live(path: Path) -> bool:
    """A counter file the Go agent wrote in a live save (it marks each beside it)."""
    return path.with_name(path.name + LIVE_SUFFIX).exists()


def silent_binaries(covdir: Path) -> list[str]:
    """Meta-data hashes of Go binaries that ran (each writes its meta-data file at start)
    but left no counters at all: every process of that binary ended without writing them."""
    metas, counted = set(), set()
    if covdir.is_dir():
        for path in covdir.iterdir():
            if meta := META.match(path.name):
                metas.add(meta.group(1))
            elif counters := COUNTERS.match(path.name):
                counted.add(counters.group(1))
    return sorted(metas - counted)
