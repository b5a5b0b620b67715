"""`run.json`: the machine-readable record of a run (phases, services, pids, data, totals).

Written at the start of the run (so a crash still leaves a record) and rewritten at the end.
`SCHEMA` is bumped whenever a field changes meaning.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2ecov import procs

SCHEMA = 1


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass
class Phase:
    name: str
    started: float
    duration_s: float | None = None
    outcome: str = "running"


@dataclass
class RunRecord:
    """Accumulates what happens during a run; `write` puts it in `run.json`."""

    run_id: str
    stack_file: str
    artifacts: Path
    exit_code: int | None = None
    first_failure: str | None = None
    phases: list[Phase] = field(default_factory=list)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    cores: list[str] = field(default_factory=list)
    kept: bool = False
    # [pid, start time] of the helpers a kept run's subreaper had adopted: nothing else
    # names them for `down` once e2ecov has exited (they may carry no mark)
    adopted: list[list[int | None]] = field(default_factory=list)
    # [pid, start time, service] of each recipe server as soon as it was started: Redis
    # rewrites its environment, so the run's mark cannot find it, and a run killed before
    # its stack was up still names them
    spawned: list[list[int | str | None]] = field(default_factory=list)
    # each recipe's private directory (data and log) as soon as it is made: `down` removes
    # them once their servers are stopped, also those of a run killed while they started
    recipe_roots: list[str] = field(default_factory=list)
    # the services in the order `down` stops them: dependents first, each level together
    stop_levels: list[list[str]] = field(default_factory=list)
    control_dir: str = ""
    attribution: str = ""
    # this e2ecov process (pid and start time): the next run in the same directory tells a
    # run still going on from one whose e2ecov was killed
    owner: dict[str, int | None] = field(
        default_factory=lambda: {"pid": os.getpid(), "started": procs.start_time(os.getpid())}
    )

    def begin(self, name: str) -> Phase:
        self.end()
        phase = Phase(name, time.time())
        self.phases.append(phase)
        return phase

    def end(self, outcome: str = "ok") -> None:
        if self.phases and self.phases[-1].duration_s is None:
            phase = self.phases[-1]
            phase.duration_s = round(time.time() - phase.started, 3)
            phase.outcome = outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "stack_file": self.stack_file,
            "exit_code": self.exit_code,
            "first_failure": self.first_failure,
            "phases": [
                {
                    "name": p.name,
                    "started": iso(p.started),
                    "duration_s": p.duration_s,
                    "outcome": p.outcome,
                }
                for p in self.phases
            ],
            "services": self.services,
            "totals": self.totals,
            "processes": self.processes,
            "cores": sorted(set(self.cores)),
            "config": self.config,
            "kept": self.kept,
            "adopted": self.adopted,
            "spawned": self.spawned,
            "recipe_roots": self.recipe_roots,
            "stop_levels": self.stop_levels,
            "attribution": self.attribution,
            "control_dir": self.control_dir,
            "e2ecov": self.owner,
        }

    def write(self) -> Path:
        return rewrite(self.artifacts, self.to_json())


def going_on(record: dict[str, Any]) -> int | None:
    """The pid of the e2ecov process of a run that has not ended yet and is still there (its
    start time matches: a reused pid is someone else); None otherwise."""
    owner = record.get("e2ecov") or {}
    if record.get("exit_code") is None and procs.still_running(owner):
        return int(owner["pid"])
    return None


def rewrite(artifacts: Path, record: dict[str, Any]) -> Path:
    """`record` as `artifacts/run.json`, replaced whole (never half written)."""
    path = artifacts / "run.json"
    tmp = path.with_suffix(".json.tmp")
    with _WRITING:  # recipes starting side by side record their servers from their threads
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    return path


_WRITING = threading.Lock()


def read(artifacts: Path) -> dict[str, Any] | None:
    """The run record in `artifacts`, or None when there is none (or it is not one)."""
    try:
        data = json.loads((artifacts / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_recipe_roots(record: dict[str, Any]) -> None:
    """Remove the recipes' private directories (data and log) a run recorded, once nothing
    runs in them: each service's, and those recorded as made (a run killed while its
    recipes started never recorded its services). Only a directory a recipe names so
    (`e2ecov-…`) is removed, whatever a hand-edited run.json says."""
    recorded = [svc.get("recipe_root") for svc in record.get("services", {}).values()]
    for root in {*filter(None, recorded), *(record.get("recipe_roots") or [])}:
        if Path(str(root)).name.startswith("e2ecov-"):
            shutil.rmtree(str(root), ignore_errors=True)
