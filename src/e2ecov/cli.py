"""`e2ecov` command line: a thin parser over the typed API, one top-level error handler.

    e2ecov run [-c STACK] [--keep | --keep-on-failure] [--artifacts DIR]
    e2ecov report --artifacts DIR [-c STACK]
    e2ecov down --artifacts DIR
    e2ecov doctor [-c STACK]

Exit codes (first that applies): 2 invalid stack file or arguments, 3 stack not brought up,
1 tests failed, 4 coverage lost or below fail_under, 0 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2ecov import doctor, down, gocover, protocol, reports, runjson, runner, stackfile
from e2ecov.errors import E2ecovError, ExitCode, NoCoverageData, StackFileError, UsageError
from e2ecov.progress import Progress

DEFAULT_STACK = "e2ecov.toml"


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments, which is our INVALID code too; keep its message."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="e2ecov", description="End-to-end coverage for running services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="start the stack, run the tests, collect coverage, report")
    run.add_argument(
        "-c", "--config", default=DEFAULT_STACK, help=f"stack file (default {DEFAULT_STACK})"
    )
    run.add_argument("--artifacts", type=Path, help="override [run] artifacts")
    keep = run.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    keep.add_argument(
        "--keep-on-failure", action="store_true", help="leave it running only if the run failed"
    )
    report = sub.add_parser("report", help="rebuild the reports from the artifacts' data/")
    report.add_argument("--artifacts", type=Path, required=True)
    report.add_argument(
        "-c", "--config", help="stack file (default: the settings recorded in run.json)"
    )
    stop = sub.add_parser("down", help="stop a stack kept by --keep / --keep-on-failure")
    stop.add_argument("--artifacts", type=Path, required=True)
    check = sub.add_parser("doctor", help="check binaries, ports, directories and coverage.py")
    check.add_argument("-c", "--config", help=f"stack file (default {DEFAULT_STACK} when present)")
    return parser


def cmd_run(args: argparse.Namespace) -> ExitCode:
    doctor.require_coverage()
    stack = stackfile.load(Path(args.config), args.artifacts)
    options = runner.RunOptions(keep=args.keep, keep_on_failure=args.keep_on_failure)
    return runner.run(stack, options, Progress()).exit_code


def cmd_report(args: argparse.Namespace) -> ExitCode:
    doctor.require_coverage()
    artifacts: Path = args.artifacts.resolve()
    if not artifacts.is_dir():
        raise UsageError(
            f"{artifacts}: no such directory (give the artifacts directory of a run, "
            "[run] artifacts or --artifacts: build/e2e by default)"
        )
    record = runjson.read(artifacts) or {}
    if args.config:
        stack = stackfile.load(Path(args.config), artifacts)
        limits = {n: s.fail_under for n, s in stack.services.items() if s.fail_under is not None}
        config = reports.ReportConfig(
            root=stack.root,
            source=stack.source,
            paths=stack.paths,
            contexts=stack.contexts,
            fail_under=stack.fail_under,
            run_id=str(record.get("run_id", "")),
            service_fail_under=limits,
        )
    elif record.get("config"):
        config = reports.ReportConfig.from_json(
            record["config"], run_id=str(record.get("run_id", ""))
        )
    else:
        config = reports.ReportConfig(
            root=Path.cwd(), source=[Path.cwd()], paths={}, contexts=False
        )
    # the run's own list (Go processes without the agent are in no ledger)
    cores = record.get("cores") or sorted(
        {r.core for r in protocol.read_ledger(artifacts / "processes")}
    )
    services = record.get("services") or {}
    lost = [loss for service in services.values() for loss in service.get("lost") or []]
    # data the run had, gone since (deleted, or a partial copy of the artifacts): the report
    # went on without it, exit 0, saying nothing (an outside check)
    lost += [
        f"{name}: data file {relative} (saved by the run) is {what}"
        for name, service in services.items()
        for relative in service.get("data_files") or []
        if (what := _missing(artifacts / relative))
    ]
    go = [
        reports.GoInput.from_json(name, raw)
        for name, raw in (record.get("config") or {}).get("go", {}).items()
    ]
    lost += [
        f"Go service {item.name}: no coverage data in {gocover.GO_DIR}/{item.name}"
        for item in go
        if not any((artifacts / gocover.GO_DIR / item.name).glob("cov*"))
    ]
    config = dataclasses.replace(
        config, cores=cores, attribution=str(record.get("attribution") or ""), lost=lost
    )
    _save_kept_stack(record)
    try:
        result = reports.build(artifacts, config, go)
    except NoCoverageData:
        if record:  # no report: the run's totals are no longer this directory's figures
            record["totals"] = {}
            runjson.rewrite(artifacts, record)
        raise
    if record:  # its totals are this report's now (they were the run's, whatever followed)
        record["totals"] = result.totals(partial=bool(lost))
        runjson.rewrite(artifacts, record)
    print((artifacts / "e2e-coverage.txt").read_text(), end="")
    for path in result.files:
        print(f"wrote {path}")
    for below in result.below:
        print(f"FAILED: {below}", file=sys.stderr)
    # coverage lost is exit 4 here as in `run`, whether the run or this report found it
    return ExitCode.COVERAGE if result.below or result.unreadable or lost else ExitCode.OK


def _save_kept_stack(record: dict[str, Any]) -> None:
    """A kept stack still running saves its coverage first, so the report is of what it ran
    until now (it was silently the end of the tests'); a Go service without the agent
    writes its counters only when it stops (`down`)."""
    control_dir = Path(record.get("control_dir") or "/nonexistent")
    if record.get("kept") and control_dir.is_dir():
        answers = protocol.broadcast(control_dir, "save")
        print(f"the kept stack is running: live save acknowledged by {len(answers)} process(es)")


def _missing(path: Path) -> str:
    """Why a data file the run saved is not there to report ("" when it is): a data file
    emptied since (a full disk, a bad copy) was read as one that measured nothing."""
    try:
        return "" if path.stat().st_size else "empty"
    except FileNotFoundError:
        return "gone"


def cmd_down(args: argparse.Namespace) -> ExitCode:
    result = down.down(args.artifacts.resolve())
    for item in result.stopped:
        print(f"stopped {item}")
    if result.already_gone:
        print(f"not running any more: {', '.join(result.already_gone)}")
    if not result.stopped:
        print("nothing was running")
    else:  # what the stack ran after its tests is in the data, not yet in the reports
        print(f"to report what it ran since its tests: e2ecov report --artifacts {args.artifacts}")
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> ExitCode:
    path = Path(args.config) if args.config else Path(DEFAULT_STACK)
    stack = None
    if args.config or path.exists():
        stack = stackfile.load(path)
        for line in doctor.configuration(stack):
            print(line)
        print()
    results = doctor.checks(stack)
    for check in results:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<16} {check.detail}")
    return ExitCode.OK if all(c.ok for c in results) else ExitCode.STACK_DOWN


COMMANDS = {"run": cmd_run, "report": cmd_report, "down": cmd_down, "doctor": cmd_doctor}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except NoCoverageData as exc:
        print(f"e2ecov: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except E2ecovError as exc:
        label = "invalid stack file" if isinstance(exc, StackFileError) else "error"
        if isinstance(exc, UsageError):
            label = "error"
        print(
            f"e2ecov: {label}:\n{exc}" if "\n" in str(exc) else f"e2ecov: {label}: {exc}",
            file=sys.stderr,
        )
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("e2ecov: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
