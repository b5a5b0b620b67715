"""`e2ecov down`: stop a stack that `--keep` / `--keep-on-failure` left running.

Everything needed is in the run's `run.json`: process groups, grace periods, recipe data
directories, the control directory and the run id, which marks every process the services
started (helpers in other sessions too). Coverage is saved live first, so a kept stack's
processes still leave their data behind.
"""

from __future__ import annotations

import functools
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
    stopped: list[str] = []
    gone: list[str] = []
    # recipe servers by pid and start time (Redis rewrites its environment: no mark), each
    # with the service it serves
    spawned = procs.same_processes(record.get("spawned"))
    owners = procs.recorded_owners(record.get("spawned"))
    targets: dict[str, StopTarget] = {}
    members: dict[str, set[int]] = {}  # each target's processes, looked up once
    for name, svc in record.get("services", {}).items():
        # a recorded group is signalled only while it holds this run's processes: its id
        # may be another program's by now
        pgid = svc.get("pgid")
        own = ({pgid} & spawned) | {pid for pid, owner in owners.items() if owner == name}
        if pgid and run_id and not procs.group_marked(int(pgid), run_id) and not own:
            pgid = None
        target = StopTarget(
            name, pgid, float(svc.get("grace") or 10.0), run_id, pids=frozenset(own)
        )
        if found := target.members():
            targets[name], members[name] = target, found
        else:
            gone.append(name)
    # dependents first, level by level, as the run itself stops its stack: stopped all at
    # once, a worker's shutdown met its Redis already gone (an outside check); a run.json
    # written before the levels were recorded has them all in one
    levels = [*(record.get("stop_levels") or []), list(targets)]
    order = list(dict.fromkeys(name for level in levels for name in level if name in targets))
    stopped += [
        f"{name} ({', '.join(f'pid {p}' for p in sorted(members[name]))})" for name in order
    ]
    held = set().union(*members.values())
    spawned -= held
    others: list[StopTarget] = []
    if spawned:  # the servers of a run killed while starting, recorded by an older e2ecov
        others.append(StopTarget("recipe servers", None, 10.0, run_id, pids=frozenset(spawned)))
        stopped += [f"{procs.describe(pid)}, a recipe server" for pid in sorted(spawned)]
    adopted = procs.same_processes(record.get("adopted"))
    if adopted:
        others.append(StopTarget("adopted", None, 2.0, run_id, pids=frozenset(adopted)))
        stopped += [f"{procs.describe(pid)}, a helper the run adopted" for pid in sorted(adopted)]
    # the rest of the run: its test command (left running by a killed e2ecov) and what it
    # started, which carry the run's mark but no service's
    rest = sorted(procs.marked(run_id) - held - adopted) if run_id else []
    stopped += [f"{procs.describe(pid)}, of the run but of no service" for pid in rest]
    announced = functools.partial(protocol.announced_pids, artifacts / "processes")
    for level in levels:
        stop([targets.pop(name) for name in level if name in targets], announced=announced)
    stop([*others, StopTarget("stray", None, 2.0, run_id, every_service=True)])
    runjson.remove_recipe_roots(record)
    shutil.rmtree(control_dir, ignore_errors=True)
    diagnostics.redact_ledgers(artifacts / "processes")  # the stack stopped: no more lines
    record["kept"] = False
    (artifacts / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return DownResult(stopped, gone)
