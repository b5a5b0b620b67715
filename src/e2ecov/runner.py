"""`e2ecov run`: the phases of section 2, in order, as a typed API the CLI calls.

prepare (plan, preflight) → start + health → test → flush → report → diagnostics and
teardown. What is decided before anything starts (ports, commands, environments, the
checks that need nothing running) is `planning`'s; this module runs the stack and keeps
the record of what happened, so everything here acts on processes.

- The run id is made once and passed on.
- Everything that needs nothing running is checked before anything starts: the stack file
  (by `stackfile.load`), each service's program and working directory and the test command
  (exit 2, `planning.preflight`), recipes' binaries and ports already taken (exit 3, naming
  the process).
- SIGHUP, SIGINT and SIGTERM stop the run in order: the tests, then a live save, then the
  services, dependents first; diagnostics and whatever reports the data allows are written;
  the exit code is 128 + the signal.
- A service that exits during the tests fails the run (exit 3) with its exit code and last
  output.
- On any failure, diagnostics are written before anything is stopped.
- The previous run's files are set aside first, and dropped or put back at the end
  (`artifacts.publish`).
Exit code: `ExitCode.first` over every failure recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import urlsplit

from e2ecov import (
    artifacts,
    collect,
    diagnostics,
    doctor,
    gocover,
    procs,
    protocol,
    reports,
    unmeasured,
)
from e2ecov.errors import ExitCode, Interrupted, NoCoverageData, StackStartError, UsageError
from e2ecov.planning import (
    Plan,
    find_program,
    go_binary,
    link_agent,
    make_run_id,
    plan,
    preflight,
)
from e2ecov.progress import Progress
from e2ecov.runjson import Phase, RunRecord, iso
from e2ecov.services import (
    ServiceRun,
    StopTarget,
    Supervisor,
    describe_exit,
    detached,
    probe,
    stop,
    tail,
    taken_port_problems,
)
from e2ecov.stackfile import Stack

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
TESTS_GRACE = 5.0  # seconds the interrupted test command gets between SIGTERM and SIGKILL
PUMP_GRACE = 5.0  # seconds to wait for the test output to close after the test command ended
LOSS_FAILURE = "coverage lost: "  # a loss as the failure it makes
ADOPTED_INTERVAL = 2.0  # seconds between looks for adopted helpers during the tests


@dataclass
class RunOptions:
    """What the command line may change about a run: whether the stack outlives it."""

    keep: bool = False
    keep_on_failure: bool = False


@dataclass
class RunResult:
    """What a run returns to its caller (the CLI exits with `exit_code`); run.json has more."""

    exit_code: ExitCode
    artifacts: Path
    first_failure: str | None
    losses: list[str] = field(default_factory=list)


def _seconds(value: float | None) -> str:
    """A duration as the stack file would write it: '45s', '1.5s', '30m'."""
    seconds = value or 0.0
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# ---- watching the services while the tests run -------------------------------------------


def replacement(svc: ServiceRun, ledger_dir: Path | None = None) -> int | None:
    """A process of the service (owner mark) that answers its health URL now, if any, and
    not one the dead main process had started (seen below it, or, for a measured Python
    process, announced with it as parent in the ledger)."""
    if not svc.health_url or not probe(svc.health_url, 2.0).startswith("HTTP 2"):
        return None
    port = urlsplit(svc.health_url).port
    holders = procs.port_holders(port) if port else None
    mine = (holders or set()) & svc.stop_target().members()
    # a worker of the dead main process, orphaned, still answers: it is no restart (an
    # outside check: uvicorn's master SIGKILLed passed for restarted by its own worker)
    mine = {pid for pid in mine if svc.family.get(pid, -1) != procs.start_time(pid)}
    if mine and ledger_dir is not None and svc.pid is not None:
        mine -= {r.pid for r in protocol.read_ledger(ledger_dir) if r.ppid == svc.pid}
    return min(mine) if mine else None


def note_families(services: Iterable[ServiceRun]) -> None:
    """Remember the processes below each running service's main process (`ServiceRun.family`),
    at every poll of the tests: looked at once a second, a worker forked just before its
    master was killed passed for the service restarted (an outside check)."""
    for svc in services:
        if svc.proc is not None and svc.poll() is None:
            svc.family.update(procs.below(svc.proc.pid))


# ---- the run ------------------------------------------------------------------------------


class Run:
    """One `e2ecov run`; `execute()` returns the exit code and writes run.json."""

    def __init__(self, stack: Stack, options: RunOptions, progress: Progress) -> None:
        self.stack = stack
        self.options = options
        self.progress = progress
        self.artifacts = stack.artifacts
        self.run_id = make_run_id(stack.name)
        self.out = self.artifacts  # where this run writes (see `artifacts`)
        self.staged = False
        self.record = RunRecord(self.run_id, str(stack.path), self.out)
        self.control_dir = Path(tempfile.mkdtemp(prefix="e2ecov-", dir="/tmp"))
        link_agent(self.control_dir)
        self.services: dict[str, ServiceRun] = {}
        self.plan: Plan | None = None
        self.failures: list[tuple[ExitCode, str]] = []
        self.losses: list[str] = []
        self.diagnosed = False
        self.outcomes: list[collect.ProcessOutcome] = []
        self.supervisor: Supervisor | None = None
        self.tests_proc: subprocess.Popen[bytes] | None = None
        self.signalled: int | None = None
        self._raise_on_signal = False
        self.tests_ran = False  # the test command ran to its end (whatever its verdict)
        self.go_executables: dict[str, str] = {}
        self.unmeasured = unmeasured.Watch(
            self.out / "processes", frozenset(n for n, s in stack.services.items() if s.go)
        )

    # ---- the whole run ---------------------------------------------------------------------

    def execute(self) -> RunResult:
        """Every phase; the stack is always stopped (unless kept) and run.json written."""
        artifacts.refuse_running_stack(self.artifacts)
        procs.become_subreaper()  # orphans of the stack are re-parented here, not to init
        kept = False
        # the handlers are in place before the prepare phase: a signal during a long
        # `go build` stops the build and ends the run like any other interrupted run
        with self._signals():
            try:
                planned = self._plan()  # raises UsageError (exit 2) before anything is written
                if planned is not None:
                    if self._start():
                        self._interruptible(self._test)
                        self._check_still_running()
                    kept = self._keeping()
                    self._flush_and_report(stop=not kept)
            except Interrupted as exc:
                self._after_interrupt(exc.signum)
            finally:
                self._teardown(kept)
            result = self._finish(kept)
        return result

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGHUP/SIGINT/SIGTERM: recorded always; raised as Interrupted while waiting."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            first = self.signalled is None
            if first:
                self.signalled = signum
                self.progress.info(
                    f"{signal.Signals(signum).name} received: stopping the stack in order"
                )
            if first and self._raise_on_signal:
                self._raise_on_signal = False
                raise Interrupted(signum)

        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _interruptible(self, phase: Callable[[], T]) -> T:
        if self.signalled is not None:
            raise Interrupted(self.signalled)
        self._raise_on_signal = True
        try:
            return phase()
        finally:
            self._raise_on_signal = False

    def _after_interrupt(self, signum: int) -> None:
        """Stop the waits and the tests, then flush and report as far as the data allows."""
        self.record.end("interrupted")
        self.progress.done("INTERRUPTED")
        # a failure before the flush: its diagnostics are written before the stack is stopped
        # (they were written after it, showing every service as stopped by e2ecov)
        self._fail_for_signal()
        if self.supervisor is not None:
            self.supervisor.abort.set()
            self.supervisor.join(10.0)
        self._stop_tests()
        self._record_services()
        self._flush_and_report(stop=True)

    def _fail(self, code: ExitCode, message: str) -> None:
        self.failures.append((code, message))

    def _fail_for_signal(self) -> None:
        """The run failed for the signal that stopped it (once, whenever it came)."""
        if self.signalled is None:
            return
        code = ExitCode.for_signal(self.signalled)
        if all(failed != code for failed, _ in self.failures):
            name = signal.Signals(self.signalled).name
            self._fail(code, f"e2ecov was stopped by {name}")

    def _first_failure(self) -> tuple[ExitCode, str] | None:
        if not self.failures:
            return None
        code = ExitCode.first(c for c, _ in self.failures)
        return next(f for f in self.failures if f[0] == code)

    def _keeping(self) -> bool:
        if self.signalled is not None:
            return False
        return self.options.keep or (self.options.keep_on_failure and bool(self.failures))

    # ---- phases ----------------------------------------------------------------------------

    def _phase(self, name: str, detail: str = "") -> None:
        self.record.begin(name)
        self.progress.phase(name, detail)

    def _end_phase(self, outcome: str = "ok") -> None:
        self.record.end(outcome)
        self.progress.done(outcome if outcome != "ok" else "done")

    def _plan(self) -> Plan | None:
        """Prepare: plan the run and check it; None when the stack cannot come up (exit 3)."""
        try:
            planned = plan(self.stack, self.run_id, self.control_dir, self.out)
        except StackStartError as exc:
            self._stage()
            self._phase("prepare", f"run {self.run_id}")
            self._fail(ExitCode.STACK_DOWN, str(exc))
            self.progress.info(f"FAILED: {exc}")
            self._end_phase("FAILED")
            return None
        for svc in planned.services.values():
            if svc.recipe is not None:
                svc.recipe.spawned = functools.partial(self._note_server, svc.name)
                svc.recipe.rooted = self._note_root
        problems = preflight(self.stack, planned)
        if problems:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            raise UsageError("nothing was started:\n  " + "\n  ".join(problems))
        self._stage()
        self._phase("prepare", f"run {self.run_id}")
        self.plan = planned
        self.services = planned.services
        self.record.control_dir = str(self.control_dir)
        self.record.stop_levels = self.stack.stop_levels()
        self.record.config = {
            **planned.report_config.to_json(),
            "tests": planned.tests,
            "autosave": self.stack.autosave,
            "go": {g.name: g.to_json() for g in self.go_inputs()},
        }
        # run.json is there from the start (before a build that may take minutes)
        self._record_services()
        self.record.write()
        taken = [p for svc in self.services.values() for p in taken_port_problems(svc)]
        taken += self._interruptible(self._build_go)
        for problem in taken:
            self._fail(ExitCode.STACK_DOWN, problem)
            self.progress.info(f"FAILED: {problem}")
        self._record_services()
        self.record.write()
        self._end_phase("FAILED" if taken else "ok")
        return None if taken else planned

    def _stage(self) -> None:
        artifacts.stage(self.artifacts)
        self.staged = True

    def _build_go(self) -> list[str]:
        """GOCOVERDIRs, and `go build -cover` for services with go_build: before any start.
        A go_build service with coverage = false is built too, without -cover (a -cover
        binary run without GOCOVERDIR warns at its exit that it wrote nothing)."""
        problems = []
        for name, svc in self.services.items():
            if svc.spec.go:
                (self.out / gocover.GO_DIR / name).mkdir(parents=True, exist_ok=True)
            if svc.spec.go_build:
                build = "go build -cover" if svc.spec.go else "go build (unmeasured)"
                self.progress.info(f"{name}: {build} {svc.spec.go_build}")
                output = Path(go_binary(self.out, name))
                # in the service's environment, with the run's mark: a build left running by
                # a killed e2ecov is found (the next run refuses, `e2ecov down` stops it)
                error = gocover.build(
                    name, svc.spec.go_build, svc.spec.cwd, output, svc.env, cover=svc.spec.go
                )
                if error:
                    problems.append(error)
        return problems

    def go_inputs(self) -> list[reports.GoInput]:
        found = []
        for name, svc in self.services.items():
            if not svc.spec.go:
                continue
            binary = go_binary(self.out, name) if svc.spec.go_build else None
            binary = binary or self.go_executables.get(name)
            if binary is None and svc.command:
                binary = find_program(svc.command, svc.spec.cwd, svc.env)
            # the modules its files may come from: its working directory's, and those of the
            # `source` directories (a prebuilt binary started from elsewhere was shown by
            # import path, with no HTML page, though its module was listed there)
            modules = dict(
                module
                for where in (svc.spec.cwd, *self.stack.source)
                if (module := gocover.module_of(where)) is not None
            )
            found.append(reports.GoInput(name, binary, modules))
        return found

    def _start(self) -> bool:
        order = self.stack.start_order()
        self._phase("start + health", f"{len(order)} service(s): {self.stack.start_order_text()}")
        self.supervisor = Supervisor(self.services, order)
        ok = False
        failure = None
        try:
            self._interruptible(lambda: self._bring_up())
            failure = self.supervisor.first_failure or self._ended_before_tests()
            ok = failure is None
        finally:
            self._split_start_phase(ok)
        if not ok:
            failure = failure or "the stack did not come up"
            self._fail(ExitCode.STACK_DOWN, failure)
            self.progress.info("FAILED: " + failure)
            self._diagnose()
        self.record.write()
        return ok

    def _bring_up(self) -> None:
        assert self.supervisor is not None
        self.supervisor.start_all(self.progress.spin)
        for svc in self.services.values():
            if svc.ready is not None and svc.started is not None:
                took = svc.ready - svc.started
                self.progress.info(
                    f"{svc.name:<14} ready in {took:5.2f}s  pid {svc.pid}  {svc.url}"
                )

    def _ended_before_tests(self) -> str | None:
        """A service that came up (or has no health check) and has already ended: the stack
        is not up, and the tests are not run against it. Found only once they ended, such a
        service was counted up, the whole suite ran, and its exit was timed as during the
        tests (an outside check)."""
        for svc in self.services.values():
            code = svc.poll() if svc.ready is not None else None
            if code is None:
                continue
            lines = "\n    ".join(svc.last_output()) or "(no output)"
            return (
                f"service '{svc.name}' (pid {svc.pid}) {describe_exit(code)} "
                f"before the tests started{detached(svc)}; last output:\n    {lines}"
            )
        return None

    def _split_start_phase(self, ok: bool) -> None:
        """run.json shows start and health apart: start ends when the last service started."""
        self._record_services()
        last_start = max((s.started for s in self.services.values() if s.started), default=None)
        phase = self.record.phases[-1]
        if phase.duration_s is None:
            outcome = "ok" if ok else ("interrupted" if self.signalled else "failed")
            self.record.end(outcome)
            self.progress.done("done" if ok else outcome.upper())
        if last_start is not None:
            self.record.phases.insert(
                -1, Phase("start", phase.started, round(last_start - phase.started, 3), "ok")
            )
        self.record.phases[-1].name = "health"

    def _test(self) -> None:
        assert self.plan is not None
        tests = self.plan.tests
        self._phase("test", " ".join(tests))
        try:
            proc = subprocess.Popen(
                tests, cwd=self.stack.root, env=self.plan.test_env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped as a group when e2ecov is interrupted
            )  # fmt: skip
        except OSError as exc:
            self._fail(
                ExitCode.TESTS_FAILED,
                f"the test command could not start: {tests[0]!r}: {exc.strerror}",
            )
            self._end_phase("failed")
            return
        self.tests_proc = proc
        reader = threading.Thread(target=self._pump, args=(proc,), name="e2ecov-tests", daemon=True)
        reader.start()
        told: set[int] = set()
        adoptions_seen = 0.0
        limit = self.stack.test_timeout
        deadline = None if limit is None else time.monotonic() + limit
        timed_out = False
        while proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                # a hung test must not hold the stack (and CI) until the job is cancelled:
                # stopped as an interrupt would stop it, and the run goes on to collect
                # and report what the tests did reach
                self.progress.info(
                    f"the tests ran past [run] timeout ({_seconds(limit)}); stopping them"
                )
                self._stop_tests()
                timed_out = True
                break
            self.progress.spin("running tests")
            self.unmeasured.look_now_and_then(self._measured_roots)
            note_families(self.services.values())
            if time.monotonic() - adoptions_seen >= ADOPTED_INTERVAL:
                self._note_adopted()
                adoptions_seen = time.monotonic()
            self._tell_exits(told)
            time.sleep(0.1)
        reader.join(PUMP_GRACE)
        if reader.is_alive():  # a process the tests started still holds their output
            self.progress.info(
                "the test command ended, but a process it started still holds its output; "
                "not waiting for it"
            )
        self.tests_ran = True
        code = proc.returncode
        if timed_out:
            self._fail(
                ExitCode.TESTS_FAILED,
                f"the tests timed out: {' '.join(tests)} ran past [run] timeout "
                f"({_seconds(limit)}) and was stopped ({describe_exit(code)})",
            )
            self._end_phase(f"FAILED (timed out after {_seconds(limit)})")
        elif code != 0:
            self._fail(
                ExitCode.TESTS_FAILED, f"the tests failed: {' '.join(tests)} {describe_exit(code)}"
            )
            self._end_phase(f"FAILED ({describe_exit(code)})")
        else:
            self._end_phase()

    def _tell_exits(self, told: set[int]) -> None:
        """Say at once that a service ended while the tests run: the failures that follow in
        the tests' output (connections refused) are read with their cause beside them, not
        only in the summary. Whether it fails the run is decided when the tests end
        (`_check_still_running`): the tests may have stopped or restarted it on purpose."""
        for svc in self.services.values():
            code = svc.poll() if svc.ready is not None and svc.pid not in told else None
            if code is None or svc.pid is None:
                continue
            told.add(svc.pid)
            what = f"{svc.name}: pid {svc.pid} {describe_exit(code)} while the tests run"
            reason = protocol.expected_exit(self.control_dir, svc.pid)
            if reason is not None:
                self.progress.info(f"{what}, stopped by them on purpose ({reason})")
                continue
            last = svc.last_output()
            self.progress.info(
                f"{what} (judged when they end: a failure unless they restarted it); "
                f"its last line: {last[-1] if last else '(no output)'}"
            )

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(self.out / "logs" / "tests.log", "wb") as log:
            for raw in iter(proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                self.progress.emit(raw.decode(errors="replace"))
        proc.stdout.close()

    def _stop_tests(self) -> None:
        proc = self.tests_proc
        if proc is None or proc.poll() is not None:
            return

        def reap() -> None:
            proc.poll()

        stop([StopTarget("tests", proc.pid, TESTS_GRACE, self.run_id)], reap)

    def _check_still_running(self) -> None:
        """A service that ended while the tests ran fails the run, whatever the tests said —
        unless the tests said they stop it (`protocol.expect_exit`), or restarted it: a process
        of the service (it carries the owner mark: started with the same environment) answers
        its health URL."""
        for svc in self.services.values():
            if svc.ready is None or svc.poll() is None:
                continue
            assert svc.exit_code is not None
            reason = protocol.expected_exit(self.control_dir, svc.pid or 0)
            if reason is not None:
                self.progress.info(
                    f"{svc.name}: pid {svc.pid} {describe_exit(svc.exit_code)} during the tests, "
                    f"stopped by them on purpose ({reason})"
                )
                continue
            successor = replacement(svc, self.out / "processes")
            if successor is not None:
                self.progress.info(
                    f"{svc.name}: pid {svc.pid} {describe_exit(svc.exit_code)} during the tests; "
                    f"pid {successor}, started with its environment, answers its health URL"
                )
                continue
            lines = "\n    ".join(svc.last_output()) or "(no output)"
            message = (
                f"service '{svc.name}' (pid {svc.pid}) {describe_exit(svc.exit_code)} during the "
                f"tests; last output:\n    {lines}"
            )
            svc.failure = message
            self._fail(ExitCode.STACK_DOWN, message)
            self.progress.info("FAILED: " + message)

    def _flush_and_report(self, stop: bool) -> None:
        self._phase(
            "flush",
            "live save, then SIGTERM, SIGKILL after the grace period" if stop else "live save",
        )
        self.outcomes = self._flush(stop)
        self.losses = self._losses(self.outcomes)
        self._record_outcomes()
        self._end_phase("ok" if not self.losses else f"{len(self.losses)} loss(es)")
        if self.losses:
            self._fail(ExitCode.COVERAGE, LOSS_FAILURE + self.losses[0])
        if any(s.spec.coverage for s in self.services.values()):
            self._report()

    def _measured_roots(self) -> dict[str, int]:
        """The main process of each measured service (Python or Go) still running."""
        return {
            name: svc.pid
            for name, svc in self.services.items()
            if (svc.spec.coverage or svc.spec.go) and svc.pid and svc.poll() is None
        }

    def _flush(self, stop: bool) -> list[collect.ProcessOutcome]:
        """Live save, diagnostics if failing, stop; returns how each process ended."""
        self.unmeasured.look(self._measured_roots())
        flush_started = time.time()
        answers = protocol.broadcast(self.control_dir, "save")
        self.progress.info(f"live save acknowledged by {len(answers)} process(es)")
        for pid, answer in sorted(answers.items()):
            if answer.get("ok") is False:  # said why (a Go binary not built -covermode=atomic)
                self.progress.info(f"warning: pid {pid} could not save: {answer.get('error')}")
        self.go_executables.update(self._go_executables())
        if self.failures:
            self._diagnose()
        death = self._stop_services() if stop else {}
        found = collect.outcomes(self.out / "processes", flush_started, death)
        self._warn_old_coverage()
        announced = {o.pid for o in found}
        for name, svc in self.services.items():
            if svc.spec.go and svc.started is not None:
                covdir = self.out / gocover.GO_DIR / name
                found += gocover.outcomes(
                    name, covdir, svc.pid, death, announced, self.go_executables.get(name),
                    svc.stderr_path,
                )  # fmt: skip
                children = self.unmeasured.go_children.get(name, {})
                found += gocover.child_outcomes(name, covdir, children, announced)
        return found

    def _warn_old_coverage(self) -> None:
        """A service's interpreter with a coverage.py older than e2ecov needs: `doctor`
        said FAIL, and the run measured it without a word (an outside check)."""
        need = ".".join(map(str, doctor.MIN_COVERAGE))
        seen = {
            (record.service, record.coverage)
            for record in protocol.read_ledger(self.out / "processes")
            if record.coverage and doctor.version_of(record.coverage) < doctor.MIN_COVERAGE
        }
        for service, version in sorted(seen):
            self.progress.info(
                f"warning: service {service} measured with coverage {version}; e2ecov needs "
                f"{need} or newer (its function figures may be wrong): "
                f"pip install 'coverage>={need}' in its interpreter"
            )

    def _go_executables(self) -> dict[str, str]:
        """What each running Go service executes (past any exec of a wrapper script)."""
        found = {}
        for name, svc in self.services.items():
            if svc.spec.go and svc.pid is not None and svc.poll() is None:
                with contextlib.suppress(OSError):
                    found[name] = os.readlink(f"/proc/{svc.pid}/exe")
        return found

    def _record_outcomes(self) -> None:
        self.record.cores = sorted({o.core for o in self.outcomes})
        self.record.processes = [
            {"service": o.service, "pid": o.pid, "status": o.status, "message": o.message,
             "data_file": self._relative(o.data_file), "last_save": iso(o.last_save),
             "core": o.core}
            for o in self.outcomes
        ]  # fmt: skip
        self._record_services()

    def _losses(self, found: list[collect.ProcessOutcome]) -> list[str]:
        measured = [
            n for n, s in self.services.items() if s.spec.coverage and not s.spec.go and s.started
        ]
        losses = [o.message for o in found if o.is_loss]
        losses += [
            self._with_agent_error(message)
            for message in collect.silent_services(measured, found, self._go_cover_program)
        ]
        for message in losses:
            self.progress.info("LOST: " + message)
        # a service that never got healthy may never have loaded its code (an app that did
        # not import): its failure says why, and "is the code inside [run] source?" beside
        # it sent the user after a wrong cause
        came_up = [
            o for o in found if o.service not in self.services or self.services[o.service].ready
        ]
        hints = [*collect.cut_short(found), *collect.empty_services(came_up)]
        for hint in hints + [u.message() for u in self.unmeasured.found.values()]:
            self.progress.info("warning: " + hint)
        return losses

    def _with_agent_error(self, message: str) -> str:
        """A silent service's loss with the agent's own reason when the service's log has it
        (`coverage agent not started in pid N: ModuleNotFoundError(...)`): the run asked
        whether coverage.py was installed while the answer sat in logs/<service>.stderr.log."""
        name = message.split(":", 1)[0]
        svc = self.services.get(name)
        if svc is None or svc.recipe is not None:
            return message
        for line in tail(svc.stderr_path, 200):
            if "coverage agent not started" in line:
                return f"{message}; its log says: {line.strip()[:300]}"
        return message

    def _go_cover_program(self, name: str) -> bool:
        """Whether the service's program is a Go binary built with -cover."""
        svc = self.services[name]
        program = find_program(svc.command, svc.spec.cwd, svc.env) if svc.command else None
        return program is not None and bool(gocover.built_with_cover(Path(program)))

    def _attribution(self) -> str:
        """Per-test attribution as it happened, not as configured."""
        if not self.stack.contexts:
            return "off (contexts = false)"
        # first: a Go agent acknowledges a test's switch too (Go has no per-test contexts)
        if not any(s.spec.coverage and not s.spec.go for s in self.services.values()):
            return "off: per-test attribution is for Python services, and none is measured"
        if (self.control_dir / protocol.PARALLEL_MARKER).exists():
            return "approximate (tests ran in parallel)"
        if (self.control_dir / protocol.ATTRIBUTION_MARKER).exists():
            return "on (tests ran one at a time)"
        if self.tests_proc is None:
            return "off: the tests did not run"
        return (
            "off: no test switched the services' context (the test command is not pytest, or "
            "its interpreter lacks e2ecov's pytest plugin: see `e2ecov doctor`)"
        )

    def _report(self) -> None:
        assert self.plan is not None
        self._phase("report")
        self.record.attribution = self._attribution()
        config = self.plan.report_config
        # a process that died before its first save never told the ledger where it found the
        # `source` packages: its data file says
        unsaved = collect.unsaved_package_dirs(self.out / "processes", config.source_pkgs)
        config = dataclasses.replace(
            config,
            cores=self.record.cores,
            attribution=self.record.attribution,
            package_dirs=sorted({*config.package_dirs, *unsaved}),
            lost=list(self.losses),
        )
        go = self.go_inputs()  # now that each Go service's executable is known
        self.record.config["go"] = {g.name: g.to_json() for g in go}
        try:
            result = reports.build(self.out, config, go)
        except NoCoverageData as exc:
            self._fail(ExitCode.COVERAGE, str(exc).splitlines()[0])
            self.progress.info(str(exc))
            self._end_phase("no data")
            return
        self.record.totals = result.totals(partial=bool(self.losses))
        for name, totals in sorted(result.services.items()):
            self.progress.info(f"{name:<14} {totals.percent:5.1f}%  ({totals.counts()})")
        # a run that did not finish its tests may be moved aside when it ends (`_finish`)
        home = artifacts.destination(self.artifacts, complete=self.tests_ran or self._keeping())
        combined = result.combined
        self.progress.info(f"{'total':<14} {combined.percent:5.1f}%  ({combined.counts()})")
        self.progress.info(f"reports in {home}")
        self.progress.info("per-test attribution: " + self.record.attribution)
        for warning in result.warnings:
            self.progress.info("warning: " + warning)
        for lost in result.unreadable:
            self._fail(ExitCode.COVERAGE, LOSS_FAILURE + lost)
            self.progress.info("LOST: " + lost)
        if self.losses or result.unreadable:  # the totals above are not the whole run's
            self.progress.info(reports.PARTIAL)
        for below in result.below:
            self._fail(ExitCode.COVERAGE, below)
            self.progress.info("FAILED: " + below)
        self._end_phase()

    def _stop_services(self) -> dict[int, str]:
        """Dependents first; SIGTERM, then SIGKILL after each service's grace. Returns how
        each main process ended, by pid."""
        killed: dict[str, set[int]] = {}
        announced = functools.partial(protocol.announced_pids, self.out / "processes")
        for level in self.stack.stop_levels():
            running = [self.services[n] for n in level]
            targets = [s.stop_target() for s in running if s.proc is not None]

            def reap(services: list[ServiceRun] = running) -> None:
                for svc in services:
                    svc.poll()

            killed.update(stop(targets, reap, announced))
            for svc in running:
                if svc.recipe is not None:
                    svc.recipe.stop()
        death: dict[int, str] = {}
        for svc in self.services.values():
            if svc.proc is None:
                continue
            # only the processes still running when the grace ran out: one that died during
            # the tests (a worker killed, or crashing) was not killed by e2ecov
            for pid in killed.get(svc.name, set()):
                death[pid] = f"was killed by SIGKILL after the {svc.spec.grace:g}s grace period"
            code = svc.poll()
            if code is not None and svc.proc.pid not in death:
                death[svc.proc.pid] = describe_exit(code)
        return death

    def _diagnose(self) -> None:
        if self.diagnosed or not self.staged:
            return
        self.diagnosed = True
        first = self._first_failure()
        message = first[1] if first else "unknown failure"
        more = [m for m in self._findings() if m != message]
        path = diagnostics.write(
            self.out, self.services, message, more, self.out / "logs" / "tests.log"
        )
        self.progress.info(f"diagnostics written ({path.name} first)")

    def _teardown(self, kept: bool) -> None:
        if kept:
            self.progress.info(
                f"stack kept running (stop it with: e2ecov down --artifacts {self.artifacts})"
            )
            self._note_adopted()
            for svc in self.services.values():
                self.progress.info(f"  {svc.name:<14} {svc.url}  pid {svc.pid}")
            return
        self._stop_tests()
        leftovers = [svc.stop_target() for svc in self.services.values() if svc.proc is not None]
        stray = procs.marked(self.run_id)
        if stray or any(t.members() for t in leftovers):
            stop([*leftovers, StopTarget("stray", None, 2.0, self.run_id, every_service=True)])
        self._stop_orphans()
        for svc in self.services.values():
            if svc.recipe is not None:
                with contextlib.suppress(Exception):
                    svc.recipe.cleanup()
            if svc.proc is not None:
                svc.poll()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def _note_server(self, service: str, pid: int) -> None:
        """A recipe's server process, recorded in run.json with its service as soon as it is
        started: killed before the stack was up, e2ecov left a Redis server that nothing
        could name (it hides the run's mark) for `down` or the next run's refusal (an
        outside check)."""
        self.record.spawned.append([pid, procs.start_time(pid), service])
        self.record.write()

    def _note_root(self, root: Path) -> None:
        """A recipe's private directory, recorded as soon as it is made, for `down` to remove
        (a run killed while its recipes started left them in the temporary directory)."""
        self.record.recipe_roots.append(str(root))
        self.record.write()

    def _note_adopted(self) -> None:
        """Record in run.json the helpers this e2ecov (the subreaper) has adopted: once it
        exits (kept, or killed), init adopts them, and only their pids and start times can
        name them for `down` and for the next run's refusal (a daemon with a scrubbed
        environment outlived a killed run's `down`: an outside check)."""
        known = [p.pid for p in self._children() if p is not None]
        adopted = [[pid, procs.start_time(pid)] for pid in sorted(procs.orphans(known))]
        if adopted != self.record.adopted:
            self.record.adopted = adopted
            self.record.write()

    def _stop_orphans(self) -> None:
        """Processes re-parented to e2ecov (the subreaper): helpers whose parent exited after
        they left its session and scrubbed their environment. Nothing else can own them."""
        known = [p.pid for p in self._children() if p is not None]
        adopted = procs.orphans(known)
        if not adopted:
            return
        procs.kill(adopted, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while (left := procs.orphans(known)) and time.monotonic() < deadline:
            procs.reap(adopted)
            time.sleep(0.05)
        procs.kill(left, signal.SIGKILL)
        time.sleep(0.05)
        procs.reap(adopted)

    def _children(self) -> list[subprocess.Popen[bytes] | None]:
        found: list[subprocess.Popen[bytes] | None] = [self.tests_proc]
        for svc in self.services.values():
            found.append(svc.proc)
            found.append(svc.recipe.process if svc.recipe is not None else None)
        return found

    def _finish(self, kept: bool) -> RunResult:
        self._fail_for_signal()
        if self.failures and not self.diagnosed:
            self._diagnose()
        elif self.diagnosed:
            diagnostics.append(self.out, self._late_findings())
        first = self._first_failure()
        code = first[0] if first else ExitCode.OK
        self.record.exit_code = int(code)
        self.record.first_failure = first[1] if first else None
        self.record.kept = kept
        self._record_services()
        if not self.staged:  # the run never got as far as writing anything
            return RunResult(code, self.artifacts, self.record.first_failure, self.losses)
        if not kept:  # a kept stack's ledgers are redacted by `down`, once it is stopped
            diagnostics.redact_ledgers(self.out / "processes")
        self.record.write()
        where = artifacts.publish(self.artifacts, complete=self.tests_ran or kept)
        if where != self.artifacts:
            self.progress.info(
                f"this run did not finish its tests: the previous run's reports stay in "
                f"{self.artifacts}; this run's files (run.json, logs, diagnostics) are in {where}"
            )
        summary = where / "diagnostics" / "summary.txt"
        if first and summary.is_file():
            for line in summary.read_text().splitlines()[:40]:
                self.progress.emit(line)
        if first:
            # the headline alone: the output lines it announces are in the summary above
            headline = first[1].splitlines()[0].removesuffix("; last output:")
            self.progress.info(f"exit {int(code)}: {headline}")
        return RunResult(code, where, first[1] if first else None, self.losses)

    def _findings(self) -> list[str]:
        """The failures, then the losses no failure already says, each once and each as
        `coverage lost: <loss>`: the first loss fails the run in those words (the summary
        said it twice), and the others said bare read as something else."""
        failures = [m for _, m in self.failures]
        losses = [LOSS_FAILURE + m for m in self.losses]
        return list(dict.fromkeys(failures + losses))

    def _late_findings(self) -> list[str]:
        """Failures and losses found after the diagnostics were written."""
        summary = self.out / "diagnostics" / "summary.txt"
        written = summary.read_text() if summary.is_file() else ""
        found = [m.splitlines()[0] for m in self._findings()]
        return [m for m in dict.fromkeys(found) if m not in written]

    def _relative(self, path: str) -> str:
        """Paths inside the run's directory are recorded relative to it (it is renamed)."""
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(self.out))
        return path

    def _record_services(self) -> None:
        for name, svc in self.services.items():
            mine = [o for o in self.outcomes if o.service == name]
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
                "data_files": sorted(
                    self._relative(o.data_file) for o in mine if Path(o.data_file).exists()
                ),
                "lost": [o.message for o in mine if o.is_loss],
                "unmeasured": self.unmeasured.by_service().get(name, []),
                "failure": svc.failure,
            }


def run(stack: Stack, options: RunOptions, progress: Progress | None = None) -> RunResult:
    """Run the stack's end-to-end tests with coverage; see the module docstring."""
    return Run(stack, options, progress or Progress()).execute()
