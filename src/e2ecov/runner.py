"""`e2ecov run`: the phases of section 2, in order, as a typed API the CLI calls.

prepare → start + health → test → flush → report → diagnostics and teardown.
The run id is made once in `prepare` and passed on. On any failure, diagnostics are written
before anything is stopped. Exit code: 2, 3, 1, 4, 0 — the first that applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import e2ecov
from e2ecov import collect, diagnostics, placeholders, protocol, reports
from e2ecov.errors import ExitCode, NoCoverageData, StackStartError, UsageError
from e2ecov.progress import Progress
from e2ecov.recipes import RecipeUnavailable, free_port
from e2ecov.runjson import Phase, RunRecord, iso
from e2ecov.services import (
    ServiceRun,
    Supervisor,
    describe_exit,
    group_alive,
    make_recipe,
    stop_groups,
)
from e2ecov.stackfile import ServiceSpec, Stack

STARTUP_DIR = Path(__file__).parent / "startup"
PACKAGE_HOME = Path(e2ecov.__file__).resolve().parent.parent
ARTIFACT_ENTRIES = (
    *("data", "processes", "html", "diagnostics", "logs", ".combined", "run.json"),
    *("e2e-coverage.txt", "e2e-coverage-func.txt", "summary.md"),
    *("coverage.json", "coverage.lcov", "coverage.xml"),
)


@dataclass
class RunOptions:
    keep: bool = False
    keep_on_failure: bool = False


@dataclass
class RunResult:
    exit_code: ExitCode
    artifacts: Path
    first_failure: str | None
    losses: list[str] = field(default_factory=list)


def make_run_id(name: str) -> str:
    """Made once per run; every file, tag and name of the run derives from it."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def clean_environ() -> dict[str, str]:
    """e2ecov's environment without e2ecov's own variables (a nested run must not inherit them)."""
    return {k: v for k, v in os.environ.items() if k not in protocol.ALL_ENV}


def prepare_artifacts(artifacts: Path) -> None:
    """Create the artifacts directory and remove the previous run's data and reports."""
    previous = _read_json(artifacts / "run.json")
    if (
        previous
        and previous.get("kept")
        and any(
            group_alive(s["pgid"]) for s in previous.get("services", {}).values() if s.get("pgid")
        )
    ):
        raise UsageError(
            f"{artifacts} holds a kept stack that is still running (run {previous.get('run_id')}); "
            f"stop it first with: e2ecov down --artifacts {artifacts}"
        )
    artifacts.mkdir(parents=True, exist_ok=True)
    for entry in ARTIFACT_ENTRIES:
        path = artifacts / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (artifacts / "data").mkdir()
    (artifacts / "processes").mkdir()
    (artifacts / "logs").mkdir()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mapped_sources(spec: ServiceSpec, stack: Stack) -> list[str]:
    """What the service measures: its source, plus where that source sits in mapped roots."""
    found = [str(s) for s in spec.source]
    for foreign, local in stack.paths.items():
        for source in spec.source:
            if source == local or local in source.parents:
                found.append(foreign + "/" + str(source.relative_to(local)).removeprefix("."))
    return [f.rstrip("/") for f in found]


class Run:
    """One `e2ecov run`; `execute()` returns the exit code and writes run.json."""

    def __init__(self, stack: Stack, options: RunOptions, progress: Progress) -> None:
        self.stack = stack
        self.options = options
        self.progress = progress
        self.artifacts = stack.artifacts
        self.run_id = make_run_id(stack.name)
        self.record = RunRecord(self.run_id, str(stack.path), self.artifacts)
        self.control_dir = Path(tempfile.mkdtemp(prefix="e2ecov-", dir="/tmp"))
        self.services: dict[str, ServiceRun] = {}
        self.test_env: dict[str, str] = {}
        self.failures: list[tuple[ExitCode, str]] = []
        self.losses: list[str] = []
        self.diagnosed = False
        self.outcomes: list[collect.ProcessOutcome] = []
        self.tests: list[str] = []

    # ---- phases ----------------------------------------------------------------------------

    def execute(self) -> RunResult:
        kept = False
        try:
            try:
                self._prepare()
            except StackStartError as exc:
                # a recipe's binaries are missing: say so at once, start nothing
                self._fail(ExitCode.STACK_DOWN, str(exc))
                self.progress.info(f"FAILED: {exc}")
                self._end_phase("FAILED")
                return self._finish(kept=False)
            if self._start():
                self._test()
            self._flush_and_report(stop=not self._keeping())
            kept = self._keeping()
        finally:
            self._teardown(kept)
        return self._finish(kept)

    def _phase(self, name: str, detail: str = "") -> None:
        self.record.begin(name)
        self.progress.phase(name, detail)

    def _end_phase(self, outcome: str = "ok") -> None:
        self.record.end(outcome)
        self.progress.done(outcome if outcome != "ok" else "done")

    def _fail(self, code: ExitCode, message: str) -> None:
        self.failures.append((code, message))

    def _first_failure(self) -> tuple[ExitCode, str] | None:
        order = [ExitCode.INVALID, ExitCode.STACK_DOWN, ExitCode.TESTS_FAILED, ExitCode.COVERAGE]
        for code in order:
            for got, message in self.failures:
                if got == code:
                    return got, message
        return None

    def _keeping(self) -> bool:
        return self.options.keep or (self.options.keep_on_failure and bool(self.failures))

    def _prepare(self) -> None:
        self._phase("prepare", f"run {self.run_id}")
        prepare_artifacts(self.artifacts)
        self.record.control_dir = str(self.control_dir)
        stack = self.stack
        taken: set[int] = set()

        def port() -> int:
            while True:
                candidate = free_port()
                if candidate not in taken:
                    taken.add(candidate)
                    return candidate

        urls: dict[str, str] = {}
        service_ports: dict[tuple[str, str], int] = {}
        own: dict[str, dict[str, int]] = {}
        recipes = {}
        for name, spec in stack.services.items():
            if spec.recipe:
                try:
                    recipe = make_recipe(spec)
                except RecipeUnavailable as exc:
                    raise StackStartError(f"service '{name}': {exc}") from exc
                recipes[name] = recipe
                urls[name] = recipe.url
                service_ports[(name, "")] = recipe.port
                own[name] = {}
            else:
                own[name] = {"": port(), **{p: port() for p in sorted(spec.port_names)}}
                urls[name] = f"http://127.0.0.1:{own[name]['']}"
                service_ports.update({(name, p): n for p, n in own[name].items()})
        base = clean_environ()
        for name, spec in stack.services.items():
            values = placeholders.Values(
                own[name], urls, service_ports, str(self.artifacts), self.run_id
            )
            env_added = {k: placeholders.render(v, values) for k, v in spec.env.items()}
            env = {
                **base,
                **env_added,
                protocol.ENV_RUN_ID: self.run_id,
                protocol.ENV_ARTIFACTS: str(self.artifacts),
            }
            if spec.coverage:
                env.update(self._agent_env(spec))
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(STARTUP_DIR), env.get("PYTHONPATH", "")) if p
                )
            svc = ServiceRun(
                spec=spec,
                ports=own[name],
                command=[placeholders.render(a, values) for a in spec.command or []],
                env_added=env_added,
                env=env,
                log_dir=self.artifacts / "logs",
                url=urls[name],
                health_url=placeholders.render(spec.health.url, values) if spec.health else None,
                recipe=recipes.get(name),
            )
            self.services[name] = svc
        test_values = placeholders.Values({}, urls, service_ports, str(self.artifacts), self.run_id)
        self.test_env = {
            **base,
            **{k: placeholders.render(v, test_values) for k, v in stack.test_env.items()},
        }
        for svc in self.services.values():
            prefix = svc.spec.env_prefix
            self.test_env[f"{prefix}_URL"] = svc.url
            for port_name, number in svc.ports.items():
                if port_name:
                    self.test_env[f"{prefix}_{port_name.upper().replace('-', '_')}_URL"] = (
                        f"http://127.0.0.1:{number}"
                    )
        self.test_env.update({
            protocol.ENV_RUN_ID: self.run_id,
            protocol.ENV_ARTIFACTS: str(self.artifacts),
            protocol.ENV_CONTROL_DIR: str(self.control_dir),
            protocol.ENV_CONTEXTS: "1" if stack.contexts else "0",
        })  # fmt: skip
        self.tests = [placeholders.render(a, test_values) for a in stack.tests]
        self.report_config = reports.ReportConfig(
            root=stack.root,
            source=sorted(
                {s for spec in stack.services.values() if spec.coverage for s in spec.source}
                or set(stack.source)
            ),
            paths=stack.paths,
            contexts=stack.contexts,
            fail_under=stack.fail_under,
            service_fail_under={
                n: s.fail_under for n, s in stack.services.items() if s.fail_under is not None
            },
            run_id=self.run_id,
            branch=stack.branch,
        )
        self.record.config = {
            **self.report_config.to_json(),
            "tests": self.tests,
            "autosave": stack.autosave,
        }
        self._record_services()
        self.record.write()
        self._end_phase()

    def _agent_env(self, spec: ServiceSpec) -> dict[str, str]:
        return {
            protocol.ENV_SERVICE: spec.name,
            protocol.ENV_CONTROL_DIR: str(self.control_dir),
            protocol.ENV_DATA_DIR: str(self.artifacts / "data"),
            protocol.ENV_LEDGER_DIR: str(self.artifacts / "processes"),
            protocol.ENV_SOURCE: json.dumps(_mapped_sources(spec, self.stack)),
            protocol.ENV_CONTEXTS: "1" if self.stack.contexts else "0",
            protocol.ENV_CONTEXT: protocol.STARTUP_CONTEXT,
            protocol.ENV_AUTOSAVE: str(self.stack.autosave),
            protocol.ENV_BRANCH: "1" if self.stack.branch else "0",
            protocol.ENV_HOME: str(PACKAGE_HOME),
        }

    def _start(self) -> bool:
        order = self.stack.start_order()
        self._phase(
            "start + health", f"{len(order)} service(s) in dependency order: {', '.join(order)}"
        )
        supervisor = Supervisor(self.services, order)
        ok = supervisor.start_all(self.progress.spin)
        for svc in self.services.values():
            if svc.ready is not None and svc.started is not None:
                took = svc.ready - svc.started
                self.progress.info(
                    f"{svc.name:<14} ready in {took:5.2f}s  pid {svc.pid}  {svc.url}"
                )
        self._record_services()
        last_start = max((s.started for s in self.services.values() if s.started), default=None)
        phase = self.record.phases[-1]
        self.record.end("ok" if ok else "failed")
        self.progress.done("done" if ok else "FAILED")
        if last_start is not None:
            self.record.phases.insert(
                -1, Phase("start", phase.started, round(last_start - phase.started, 3), "ok")
            )
        self.record.phases[-1].name = "health"
        if not ok:
            self._fail(ExitCode.STACK_DOWN, supervisor.first_failure or "the stack did not come up")
            self.progress.info("FAILED: " + (supervisor.first_failure or ""))
            self._diagnose()
        self.record.write()
        return ok

    def _test(self) -> None:
        self._phase("test", " ".join(self.tests))
        log_path = self.artifacts / "logs" / "tests.log"
        try:
            proc = subprocess.Popen(
                self.tests, cwd=self.stack.root, env=self.test_env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
        except OSError as exc:
            self._fail(
                ExitCode.TESTS_FAILED,
                f"the test command could not start: {self.tests[0]!r}: {exc.strerror}",
            )
            self._end_phase("failed")
            return
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            with open(log_path, "wb") as log:
                for raw in iter(stdout.readline, b""):
                    log.write(raw)
                    self.progress.emit(raw.decode(errors="replace"))

        reader = threading.Thread(target=pump, name="e2ecov-tests", daemon=True)
        reader.start()
        while proc.poll() is None:
            self.progress.spin("running tests")
            time.sleep(0.1)
        reader.join()
        stdout.close()
        code = proc.returncode
        if code != 0:
            self._fail(
                ExitCode.TESTS_FAILED,
                f"the tests failed: {' '.join(self.tests)} {describe_exit(code)}",
            )
            self._end_phase(f"FAILED ({describe_exit(code)})")
        else:
            self._end_phase()

    def _flush_and_report(self, stop: bool) -> None:
        measured = [n for n, s in self.services.items() if s.spec.coverage]
        self._phase(
            "flush",
            "live save, then SIGTERM, SIGKILL after the grace period" if stop else "live save",
        )
        flush_started = time.time()
        answers = protocol.broadcast(self.control_dir, "save")
        self.progress.info(f"live save acknowledged by {len(answers)} process(es)")
        if self.failures:
            self._diagnose()
        death: dict[int, str] = {}
        if stop:
            death = self._stop_services()
        found = collect.outcomes(self.artifacts / "processes", flush_started, death)
        started = [n for n in measured if self.services[n].started is not None]
        self.losses = [o.message for o in found if o.is_loss] + collect.silent_services(
            started, found
        )
        for message in self.losses:
            self.progress.info("LOST: " + message)
        for hint in collect.empty_services(found):
            self.progress.info("warning: " + hint)
        self.outcomes = found
        self.record.cores = sorted({o.core for o in found})
        self.record.processes = [
            {"service": o.service, "pid": o.pid, "status": o.status, "message": o.message,
             "data_file": o.data_file, "last_save": iso(o.last_save), "core": o.core}
            for o in found
        ]  # fmt: skip
        self._record_services()
        self._end_phase("ok" if not self.losses else f"{len(self.losses)} loss(es)")
        if self.losses:
            self._fail(ExitCode.COVERAGE, "coverage lost: " + self.losses[0])
        if not measured:
            return
        self._phase("report")
        config = dataclasses.replace(
            self.report_config,
            cores=self.record.cores,
            approximate=(self.control_dir / protocol.PARALLEL_MARKER).exists(),
        )
        try:
            result = reports.build(self.artifacts, config)
        except NoCoverageData as exc:
            self._fail(ExitCode.COVERAGE, str(exc).splitlines()[0])
            self.progress.info(str(exc))
            self._end_phase("no data")
            return
        self.record.totals = {
            "combined": result.combined.to_json(),
            "services": {k: v.to_json() for k, v in result.services.items()},
        }
        for name, totals in sorted(result.services.items()):
            counts = f"{totals.statements} statements, {totals.missed} missed"
            self.progress.info(f"{name:<14} {totals.percent:5.1f}%  ({counts})")
        self.progress.info(
            f"{'total':<14} {result.combined.percent:5.1f}%   reports in {self.artifacts}"
        )
        for warning in result.warnings:
            self.progress.info("warning: " + warning)
        for below in result.below:
            self._fail(ExitCode.COVERAGE, below)
            self.progress.info("FAILED: " + below)
        self._end_phase()

    def _stop_services(self) -> dict[int, str]:
        """SIGTERM, then SIGKILL after grace; returns how each main process ended, by pid."""
        groups = {
            svc.proc.pid: svc.spec.grace for svc in self.services.values() if svc.proc is not None
        }

        def reap() -> None:
            for svc in self.services.values():
                svc.poll()

        killed = stop_groups(groups, reap)
        death: dict[int, str] = {}
        for svc in self.services.values():
            if svc.proc is None:
                continue
            if svc.proc.pid in killed:
                for record in protocol.read_ledger(self.artifacts / "processes"):
                    if record.service == svc.name:
                        death[record.pid] = (
                            f"was killed by SIGKILL after the {svc.spec.grace:g}s grace period"
                        )
            code = svc.poll()
            if code is not None and svc.proc.pid not in death:
                death[svc.proc.pid] = describe_exit(code)
        for svc in self.services.values():
            if svc.recipe is not None:
                svc.recipe.stop()
        return death

    def _diagnose(self) -> None:
        if self.diagnosed:
            return
        self.diagnosed = True
        first = self._first_failure()
        message = first[1] if first else "unknown failure"
        more = [m for _, m in self.failures if m != message] + self.losses
        path = diagnostics.write(
            self.artifacts, self.services, message, more, self.artifacts / "logs" / "tests.log"
        )
        self.progress.info(f"diagnostics written to {path.parent}")

    def _teardown(self, kept: bool) -> None:
        if kept:
            self.progress.info(
                "stack kept running (stop it with: e2ecov down --artifacts "
                + str(self.artifacts)
                + ")"
            )
            for svc in self.services.values():
                self.progress.info(f"  {svc.name:<14} {svc.url}  pid {svc.pid}")
            return
        leftovers = {
            svc.proc.pid: 2.0
            for svc in self.services.values()
            if svc.proc is not None and group_alive(svc.proc.pid)
        }
        if leftovers:
            stop_groups(leftovers)
        for svc in self.services.values():
            if svc.recipe is not None:
                with contextlib.suppress(Exception):
                    svc.recipe.cleanup()
            if svc.proc is not None:
                svc.poll()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def _finish(self, kept: bool) -> RunResult:
        if self.failures and not self.diagnosed:
            self._diagnose()
        first = self._first_failure()
        code = first[0] if first else ExitCode.OK
        self.record.exit_code = int(code)
        self.record.first_failure = first[1] if first else None
        self.record.kept = kept
        self._record_services()
        self.record.write()
        summary = self.artifacts / "diagnostics" / "summary.txt"
        if first and summary.is_file():
            for line in summary.read_text().splitlines()[:40]:
                self.progress.emit(line)
        if first:
            self.progress.info(f"exit {int(code)}: {first[1].splitlines()[0]}")
        return RunResult(code, self.artifacts, first[1] if first else None, self.losses)

    def _record_services(self) -> None:
        outcomes = self.outcomes
        for name, svc in self.services.items():
            mine = [o for o in outcomes if o.service == name]
            self.record.services[name] = {
                "url": svc.url,
                "recipe": svc.spec.recipe,
                "coverage": svc.spec.coverage,
                "pid": svc.pid,
                "pgid": svc.pid if svc.proc is not None or svc.recipe is not None else None,
                "pids": sorted({p for p in [svc.pid, *(o.pid for o in mine)] if p}),
                "started": iso(svc.started),
                "ready": iso(svc.ready),
                "exit_code": svc.exit_code,
                "grace": svc.spec.grace,
                "recipe_root": str(svc.recipe.root)
                if svc.recipe is not None and svc.recipe.root
                else None,
                "data_files": sorted(o.data_file for o in mine if Path(o.data_file).exists()),
                "lost": [o.message for o in mine if o.is_loss],
                "failure": svc.failure,
            }


def run(stack: Stack, options: RunOptions, progress: Progress | None = None) -> RunResult:
    """Run the stack's end-to-end tests with coverage; see the module docstring."""
    return Run(stack, options, progress or Progress()).execute()
