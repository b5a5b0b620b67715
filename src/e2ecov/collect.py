"""Which processes saved their coverage: the ledger read against what happened in the run.

A process that announced itself is, at the end of the run, one of:
- `saved`: it saved at the end (at exit, on SIGTERM, or in the live save of the flush);
- `empty`: it saved, but measured nothing under `source` — said so, not a loss;
- `partial`: it saved earlier (e.g. an autosave) but not at the end — what ran after its
  last save is lost; or it never saved, but its data file holds lines (coverage.py writes
  what it collected at each switch of per-test context), which the report counts;
- `lost`: it never saved, and its data file holds nothing.
A measured service where no process announced itself is a loss too: its interpreter could not
start the agent.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path, PurePath

import coverage
from coverage.exceptions import CoverageException

from e2ecov.gocounters import exit_counters
from e2ecov.protocol import ProcessRecord, read_ledger

FINAL_REASONS = ("exit", "sigterm", "exec")


@dataclass(frozen=True)
class ProcessOutcome:
    service: str
    pid: int
    status: str  # saved | empty | partial | lost
    message: str
    data_file: str
    last_save: float | None
    core: str
    # saved, then killed after its grace period: what it ran after that save is not counted
    cut_short: bool = False

    @property
    def is_loss(self) -> bool:
        return self.status in ("partial", "lost")


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) + f".{int(timestamp * 10) % 10}"


def judge(
    record: ProcessRecord,
    flush_started: float | None,
    death: dict[int, str],
) -> ProcessOutcome:
    """The outcome of one process; `death` maps pid → how e2ecov saw it end, when known."""
    saves = [s for s in record.saves if s.get("event") == "save"]
    final = [
        s
        for s in saves
        if s.get("reason") in FINAL_REASONS
        or (flush_started is not None and s["time"] >= flush_started)
    ]
    how = death.get(record.pid, "")
    who = f"{record.service} pid {record.pid}"
    last = saves[-1] if saves else None

    def outcome(
        status: str, message: str, cut_short: bool = False, written: float | None = None
    ) -> ProcessOutcome:
        last_time = float(last["time"]) if last else written
        return ProcessOutcome(
            record.service,
            record.pid,
            status,
            message,
            record.data_file,
            last_time,
            record.core,
            cut_short,
        )

    if final:
        if not final[-1].get("measured"):
            return outcome("empty", f"{who} measured nothing under source (not a loss)")
        if final[-1].get("reason") not in FINAL_REASONS and "SIGKILL" in how:
            # the flush's live save is its last: what it ran on SIGTERM is not counted
            return outcome(
                "saved",
                f"{who} saved at {final[-1]['reason']} ({_clock(final[-1]['time'])}), then "
                f"{how}: what it ran after that (its shutdown) is not counted",
                cut_short=True,
            )
        return outcome("saved", f"{who} saved at {final[-1]['reason']}")
    if record.core == "go" and exit_counters(Path(record.data_file), record.pid):
        return outcome("saved", f"{who} saved at exit")  # the Go runtime's own counters
    cause = how or "ended without a final save (killed by a signal, or crashed)"
    if last is not None:
        return outcome(
            "partial",
            f"{who} wrote partial coverage: last saved at {_clock(last['time'])} "
            f"({last.get('reason')}), then {cause}; what ran after that is lost",
        )
    written = None if record.core == "go" else _written(Path(record.data_file))
    if written is not None:
        return outcome(
            "partial",
            f"{who} wrote partial coverage: it never saved, but its data file holds what it "
            f"measured up to {_clock(written)} (written at a switch of per-test context), "
            f"then {cause}; what ran after that is lost",
            written=written,
        )
    if not how:
        cause = "it ended (killed by a signal, or crashed)"
    return outcome("lost", f"{who} wrote no coverage: {cause} before it saved")


def _written(data_file: Path) -> float | None:
    """When a process's data file last changed, if it holds measured lines. Besides e2ecov's
    saves, coverage.py writes what it collected to the data file at each switch of per-test
    context: a process that died before its first save may have left lines the report counts
    (called 'wrote no coverage', it was counted all the same)."""
    if not _measured_files(data_file):
        return None
    try:
        return data_file.stat().st_mtime
    except OSError:  # gone since
        return None


def outcomes(
    ledger_dir: Path, flush_started: float | None, death: dict[int, str]
) -> list[ProcessOutcome]:
    return [with_images(judge(r, flush_started, death), r) for r in read_ledger(ledger_dir)]


def with_images(found: ProcessOutcome, record: ProcessRecord) -> ProcessOutcome:
    """`found`, saying so when an earlier image of the process exec'd it without saving:
    what that image ran is lost (a Go service that re-executes itself was reported whole)."""
    if not record.unsaved_images:
        return found
    lost = (
        f"{record.service} pid {record.pid} re-executed itself "
        f"{'once' if record.unsaved_images == 1 else f'{record.unsaved_images} times'} "
        "without saving first: what ran before is lost"
    )
    status = found.status if found.status == "lost" else "partial"
    return dataclasses.replace(found, status=status, message=f"{lost}; {found.message}")


def unsaved_package_dirs(ledger_dir: Path, source_pkgs: Collection[str]) -> list[Path]:
    """Where the `source` packages were imported from by the Python processes that never
    saved. A process's package directories reach the ledger with its saves; one that died
    before its first save (a `partial` whose data file holds lines) told nothing, and the
    files of a package only it imported were reported as "not imported" and counted 0. Its
    data file's measured paths say where it found them."""
    found: set[Path] = set()
    for record in read_ledger(ledger_dir):
        if record.saves or record.core == "go":
            continue
        for measured in _measured_files(Path(record.data_file)):
            found.update(_package_homes(PurePath(measured), source_pkgs))
    return sorted(found)


def _measured_files(data_file: Path) -> list[str]:
    """The files a process's data file holds lines of (none when it is gone, empty or not a
    data file)."""
    try:
        if not data_file.stat().st_size:  # (reading an empty file would make it a data file)
            return []
        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        return [name for name in data.measured_files() if data.lines(name)]
    except (OSError, sqlite3.Error, CoverageException):  # gone, or not a data file
        return []


def _package_homes(measured: PurePath, source_pkgs: Collection[str]) -> list[Path]:
    """The directory (or module file) of each `source` package that `measured` lies in, the
    way the agent records it: `a.b` is `.../a/b` (a package) or `.../a/b.py` (a module). Of
    several directories so named the innermost wins: a checkout is often named like the
    package it holds (`/srv/pkg/pkg/x.py`), a package seldom holds one named like itself."""
    homes: list[Path] = []
    parts = measured.parts
    for name in source_pkgs:
        words = tuple(name.split("."))
        size = len(words)
        packages = [
            end
            for end in range(size, len(parts))  # a package: the file lies below it
            if parts[end - size : end] == words
        ]
        if packages:
            homes.append(Path(*parts[: packages[-1]]))
        elif parts[-size:] == (*words[:-1], words[-1] + ".py"):  # a module: the file itself
            homes.append(Path(*parts))
    return homes


def silent_services(
    measured: list[str],
    found: list[ProcessOutcome],
    go_cover: Callable[[str], bool] = lambda name: False,
) -> list[str]:
    """Messages for measured services where no process announced itself; `go_cover` says of
    one whether its program is a Go binary built with -cover (listed without `coverage =
    "go"`, such a service was asked whether it is a Python program)."""
    seen = {o.service for o in found}
    return [
        f"{name}: no process announced itself, so nothing was measured "
        + (
            '(its program is a Go binary built with -cover: set coverage = "go" for it)'
            if go_cover(name)
            else "(is it a Python program, is coverage installed for its interpreter, does it "
            "keep PYTHONPATH?)"
        )
        for name in measured
        if name not in seen
    ]


def cut_short(found: list[ProcessOutcome]) -> list[str]:
    """Processes killed after the flush's live save: their shutdown went unmeasured."""
    return [o.message for o in found if o.cut_short]


def empty_services(found: list[ProcessOutcome]) -> list[str]:
    """Hints for services whose every process measured nothing under source."""
    services = sorted({o.service for o in found})
    return [
        f"service {name}: every process measured nothing under source — is the code it runs "
        "inside [run] source, or recorded under another root that needs a [run] paths entry?"
        for name in services
        if all(o.status == "empty" for o in found if o.service == name)
    ]
