"""`e2ecov down`: stop a stack that `--keep` / `--keep-on-failure` left running.

Everything needed is in the run's `run.json`: process groups, grace periods, recipe data
directories, the control directory and the run id, which marks every process the services
started (helpers in other sessions too). Coverage is saved live first, so a kept stack's
processes still leave their data behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from e2ecov import diagnostics, procs, protocol, runjson
from e2ecov.errors import UsageError
from e2ecov.services import StopTarget, stop


@dataclass(frozen=True)
class DownResult:
    stopped: list[str]
    already_gone: list[str]


def down(artifacts: Path) -> DownResult:
    record = runjson.read(artifacts)
    if record is None:
        raise UsageError(
            f"no run.json in {artifacts}: nothing to stop "
            "(was the run started with this --artifacts?)"
        )
    run_id = str(record.get("run_id", ""))
    if (owner := runjson.going_on(record)) is not None:
        raise UsageError(
            f"run {run_id} in {artifacts} is still going on (e2ecov pid {owner}): "
            "interrupt it (Ctrl-C, SIGTERM) and it stops its stack itself"
        )
    control_dir = Path(record.get("control_dir") or "/nonexistent")
    if control_dir.is_dir():
        protocol.broadcast(control_dir, "save")
    targets: list[StopTarget] = []
    stopped: list[str] = []
    gone: list[str] = []
    # recipe servers by pid and start time (Redis rewrites its environment: no mark)
    spawned = procs.same_processes(record.get("spawned"))
    for name, svc in record.get("services", {}).items():
        # a recorded group is signalled only while it holds this run's processes: its id
        # may be another program's by now
        pgid = svc.get("pgid")
        own = {pgid} & spawned  # a recipe's main server
        if pgid and run_id and not procs.group_marked(int(pgid), run_id) and not own:
            pgid = None
        target = StopTarget(
            name, pgid, float(svc.get("grace") or 10.0), run_id, pids=frozenset(own)
        )
        if target.members():
            targets.append(target)
            stopped.append(f"{name} (pid {svc.get('pgid')})")
        else:
            gone.append(name)
    spawned -= {pid for target in targets for pid in target.members()}
    if spawned:  # etcd beside its API server, or the servers of a run killed while starting
        targets.append(StopTarget("recipe servers", None, 10.0, run_id, pids=frozenset(spawned)))
        stopped += [f"{procs.describe(pid)}, a recipe server" for pid in sorted(spawned)]
    adopted = procs.same_processes(record.get("adopted"))
    if adopted:
        targets.append(StopTarget("adopted", None, 2.0, run_id, pids=frozenset(adopted)))
        stopped += [f"{procs.describe(pid)}, a helper the run adopted" for pid in sorted(adopted)]
    # the rest of the run: its test command (left running by a killed e2ecov) and what it
    # started, which carry the run's mark but no service's
    services = {pid for target in targets for pid in target.members()}
    services |= adopted
    rest = sorted(procs.marked(run_id) - services) if run_id else []
    stopped += [f"{procs.describe(pid)}, of the run but of no service" for pid in rest]
    stop([*targets, StopTarget("stray", None, 2.0, run_id, every_service=True)])
    runjson.remove_recipe_roots(record)
    shutil.rmtree(control_dir, ignore_errors=True)
    diagnostics.redact_ledgers(artifacts / "processes")  # the stack stopped: no more lines
    record["kept"] = False
    (artifacts / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return DownResult(stopped, gone)
