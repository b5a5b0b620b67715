"""Runs that never lie or leave processes behind: signals, stale ports, helpers in other
sessions, attribution as measured, checks before anything starts, the last good reports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import coverage
import pytest

from e2ecov import procs
from e2ecov.recipes import free_port
from tests.integration.e2ecov.e2ecov_harness import (
    APP,
    SAMPLES,
    app_service,
    drive,
    e2ecov,
    go_service,
    pytest_command,
    toml_list,
    write_stack,
)


def _alive(pid: int) -> bool:
    return procs.alive(pid)


def _of_run(run_id: str) -> list[str]:
    """Every live process whose environment names this run (services, helpers, tests)."""
    return [
        procs.describe(p.pid)
        for p in procs.snapshot().values()
        if p.alive and procs.environ(p.pid).get("E2ECOV_RUN_ID") == run_id
    ]


def _run_in_background(stack: Path, cwd: Path, output: int) -> subprocess.Popen[str]:
    """`e2ecov run -c stack` started, not waited for (the e2ecov under test)."""
    under_test = os.environ.get("E2ECOV_UNDER_TEST")  # see e2ecov_harness.e2ecov
    return subprocess.Popen(
        [sys.executable, "-m", "e2ecov.cli", "run", "-c", str(stack)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": under_test} if under_test else None,
        stdout=output,
        stderr=subprocess.STDOUT if output == subprocess.PIPE else subprocess.DEVNULL,
        text=True,
    )


def _kill_then_refused_and_stopped(
    run: subprocess.Popen[str], stack: Path, cwd: Path, pid: int, said: str
) -> None:
    """e2ecov `run` SIGKILLed while `pid` (of its stack) runs: the next run in the same
    directory refuses, and `down` names and stops it."""
    run.kill()
    run.wait(10)
    assert _alive(pid)
    refused = e2ecov("run", "-c", str(stack), cwd=cwd)
    assert refused.code == 2, refused.output
    down = e2ecov("down", "--artifacts", str(cwd / "out"), cwd=cwd)
    assert down.code == 0, down.output
    assert f"pid {pid}" in down.stdout and said in down.stdout, down.stdout
    assert not _alive(pid), f"pid {pid} outlived down"


def _leave_nothing(run: subprocess.Popen[str], pid: int) -> None:
    if run.poll() is None:
        run.kill()
    if pid and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _wait_for(path_glob: str, root: Path, text: str, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in root.glob(path_glob):
            if text in path.read_text(errors="replace"):
                return path
        time.sleep(0.05)
    raise AssertionError(f"no {path_glob} under {root} containing {text!r}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_mid_test_stops_everything_and_still_reports(
    tmp_path: Path, signum: int, code: int
) -> None:
    services = '[services.cache]\nrecipe = "redis"\n' + app_service(
        "app", "--spawn-helper", extra='depends_on = ["cache"]'
    )
    stack = write_stack(tmp_path, drive("/alpha", "sleep:60"), services)
    proc = _run_in_background(stack, tmp_path, subprocess.PIPE)
    try:
        _wait_for("logs/tests.log", tmp_path / "out", "/alpha alpha 3")
        # run.json is there from the start, for the tests too (E2ECOV_ARTIFACTS)
        run_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
        assert _of_run(run_id), "the stack is running"
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, output
    assert _of_run(run_id) == [], "no process of the stack, its helper or the tests is left"
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] == run_id and run["exit_code"] == code
    assert f"stopped by {signal.Signals(signum).name}" in run["first_failure"]
    summary = (out / "diagnostics" / "summary.txt").read_text()
    assert signal.Signals(signum).name in summary and "/alpha alpha 3" in summary
    assert (out / "diagnostics" / "app" / "stdout.log").is_file()
    # written before the stack was stopped: the services as the signal found them
    status = json.loads((out / "diagnostics" / "app" / "status.json").read_text())
    assert status["state"] == "running", status
    phases = [p["name"] for p in run["phases"]]
    assert phases[-2:] == ["flush", "report"], phases
    report = json.loads((out / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0
    for name in ("app", "cache"):
        assert not _alive(run["services"][name]["pid"]), name


@pytest.mark.slow
def test_helper_in_another_session_is_stopped_with_its_service(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--spawn-helper"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    stdout = (outcome.artifacts / "logs" / "app.stdout.log").read_text()
    helper = int(stdout.split("helper pid ")[1].split()[0])
    assert not _alive(helper), "the helper it started with setsid outlived the run"


@pytest.mark.slow
def test_a_helper_started_after_the_sigterm_sweep_gets_its_own_sigterm(tmp_path: Path) -> None:
    """A service that starts a helper as it is stopped: the helper, not running when the
    service's processes were listed and sent SIGTERM, was SIGKILLed after the grace and its
    coverage reported lost (exit 4). Each process of the service found while the grace runs
    gets its SIGTERM, and saves."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--spawn-helper-on-sigterm"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    stdout = (outcome.artifacts / "logs" / "app.stdout.log").read_text()
    helper = int(stdout.split("helper on SIGTERM pid ")[1].split()[0])
    assert not _alive(helper)
    # it saved (measuring nothing under source: `python -c`), not lost
    [record] = [p for p in outcome.run_json()["processes"] if p["pid"] == helper]
    assert record["status"] == "empty", record


@pytest.mark.slow
def test_service_restarted_or_stopped_by_the_tests_on_purpose_is_no_failure(
    tmp_path: Path,
) -> None:
    restarted = write_stack(tmp_path / "a", drive("/alpha", "restart", "/beta"), app_service("app"))
    outcome = e2ecov("run", "-c", str(restarted), cwd=tmp_path / "a")
    assert outcome.code == 0, outcome.output
    new_pid = int(outcome.stdout.split("restarted as ")[1].split()[0])
    assert f"pid {new_pid}, started with its environment, answers its health URL" in (
        outcome.stdout
    )
    assert not _alive(new_pid), "the replacement carries the owner mark: stopped with the stack"
    saved = {p["pid"] for p in outcome.run_json()["processes"] if p["status"] == "saved"}
    assert new_pid in saved  # measured too: it announced itself with the same environment
    stopped = write_stack(tmp_path / "b", drive("/alpha", "stop"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stopped), cwd=tmp_path / "b")
    assert outcome.code == 0, outcome.output
    assert "stopped by them on purpose (drive.py stop)" in outcome.stdout


@pytest.mark.slow
def test_orphan_that_scrubbed_its_environment_is_stopped(tmp_path: Path) -> None:
    # no owner mark, another session, and its parent gone: e2ecov, the subreaper, adopts it
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--spawn-orphan"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    stdout = (outcome.artifacts / "logs" / "app.stdout.log").read_text()
    orphan = int(stdout.split("orphan pid ")[1].split()[0])
    assert not _alive(orphan), "the orphan outlived the run"


def test_a_master_killed_while_its_orphaned_worker_serves_is_a_stack_down(
    tmp_path: Path,
) -> None:
    """A prefork server's master SIGKILLed by the tests: its worker, orphaned, still answers
    the health URL, and was taken for the service restarted by the tests (an outside check
    on uvicorn --workers 2). A process that ran below the dead main one is no restart."""
    for steps in (("kill-master",), ("/recycle", "sleep:0.1", "kill-master")):
        # the second: a worker forked 0.1 s before the kill (as --max-requests recycles)
        stack = write_stack(
            tmp_path, drive("/alpha", *steps, "sleep:0.5"), app_service("app", "--prefork")
        )
        outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
        assert outcome.code == 3, outcome.output
        assert "answers its health URL" not in outcome.stdout
        assert "was killed by SIGKILL during the tests" in outcome.output


@pytest.mark.slow
def test_orphan_of_a_kept_stack_is_stopped_by_down(tmp_path: Path) -> None:
    """The same orphan under `--keep`: once e2ecov had exited, init adopted it, and `down`
    (which finds a stack's processes by their mark) said the stack was stopped and left it
    running (an outside check). The kept run records it by pid and start time."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--spawn-orphan"))
    outcome = e2ecov("run", "--keep", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    stdout = (outcome.artifacts / "logs" / "app.stdout.log").read_text()
    orphan = int(stdout.split("orphan pid ")[1].split()[0])
    assert _alive(orphan)
    assert [orphan, procs.start_time(orphan)] in outcome.run_json()["adopted"]
    down = e2ecov("down", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert down.code == 0, down.output
    assert f"pid {orphan}" in down.stdout and "a helper the run adopted" in down.stdout
    assert not _alive(orphan), "the orphan outlived down"


@pytest.mark.slow
def test_orphan_of_a_killed_run_blocks_the_next_and_is_stopped_by_down(tmp_path: Path) -> None:
    """e2ecov SIGKILLed during the tests: a helper with a scrubbed environment, adopted by
    it, was neither a reason for the next run to refuse nor stopped by `down` (an outside
    check). The run records what it adopts as it goes."""
    stack = write_stack(tmp_path, drive("/alpha", "sleep:60"), app_service("app", "--spawn-orphan"))
    proc = _run_in_background(stack, tmp_path, subprocess.DEVNULL)
    orphan = 0
    try:
        out = tmp_path / "out"
        _wait_for("logs/tests.log", out, "/alpha alpha 3")
        orphan = int(
            (out / "logs" / "app.stdout.log").read_text().split("orphan pid ")[1].split()[0]
        )
        deadline = time.monotonic() + 20
        while orphan not in [a[0] for a in json.loads((out / "run.json").read_text())["adopted"]]:
            assert time.monotonic() < deadline, "the orphan was never recorded"
            time.sleep(0.2)
        _kill_then_refused_and_stopped(proc, stack, tmp_path, orphan, "a helper the run adopted")
    finally:
        _leave_nothing(proc, orphan)


@pytest.mark.slow
def test_a_recipe_server_of_a_run_killed_while_starting_is_found(tmp_path: Path) -> None:
    """e2ecov SIGKILLed before its stack was up (a service still waiting for its health):
    the Redis recipe's server, which hides the run's mark, was not recorded yet, so the
    next run started beside it and `down` said nothing was running (an outside check)."""
    services = '[services.cache]\nrecipe = "redis"\n' + app_service(
        "app", "--never-healthy", extra='depends_on = ["cache"]'
    )
    stack = write_stack(tmp_path, drive("/alpha"), services)
    proc = _run_in_background(stack, tmp_path, subprocess.DEVNULL)
    server = 0
    try:
        out = tmp_path / "out"
        deadline = time.monotonic() + 30
        while not server:
            assert time.monotonic() < deadline, "the Redis server was never recorded"
            time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                server = json.loads((out / "run.json").read_text())["spawned"][0][0]
        roots = json.loads((out / "run.json").read_text())["recipe_roots"]
        assert len(roots) == 1 and Path(roots[0]).is_dir()  # the server's data and log
        _kill_then_refused_and_stopped(proc, stack, tmp_path, server, "cache (pid")
        assert not Path(roots[0]).exists(), "down left the recipe's directory behind"
    finally:
        _leave_nothing(proc, server)


def test_port_held_by_a_stale_server_is_exit_3_naming_it(tmp_path: Path) -> None:
    port = free_port()
    stale = subprocess.Popen(
        [sys.executable, "-m", "sampleapp.server", "--port", str(port)],
        cwd=APP,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert stale.stdout is not None and "listening" in stale.stdout.readline().decode()
        # the new service would die with "Address already in use" while the stale one
        # answered its health check: the run must not pass
        service = app_service("app").replace('"{port}"', f'"{port}"').replace("{{port}}", str(port))
        service = service.replace(":{port}/", f":{port}/")
        stack = write_stack(tmp_path, drive("/alpha"), service)
        outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
        assert outcome.code == 3, outcome.output
        assert f"port {port}" in outcome.output and f"already taken by pid {stale.pid}" in (
            outcome.output
        )
        assert "sampleapp.server" in outcome.output
        assert "start + health" not in outcome.stdout, "nothing was started"
        assert outcome.run_json()["services"]["app"]["started"] is None
        assert stale.poll() is None, "a process e2ecov did not start is left alone"
    finally:
        stale.terminate()
        stale.wait(10)


def test_missing_service_program_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    services = '[services.postgres]\nrecipe = "postgres"\n\n[services.api]\n'
    services += (
        'command = ["no-such-program-e2ecov", "--port", "{port}"]\ndepends_on = ["postgres"]\n'
    )
    stack = write_stack(tmp_path, ["no-such-test-runner-e2ecov"], services)
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 2, outcome.output
    assert "service 'api': program 'no-such-program-e2ecov' not found" in outcome.stderr
    assert "[run] tests: program 'no-such-test-runner-e2ecov' not found" in outcome.stderr
    assert "nothing was started" in outcome.stderr
    assert "prepare" not in outcome.stdout and not (tmp_path / "out").exists()


def test_attribution_is_reported_as_measured(tmp_path: Path) -> None:
    # contexts are on, but a plain script never switches them: the reports must say "off"
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    text = (outcome.artifacts / "e2e-coverage.txt").read_text()
    assert "per-test attribution: off: no test switched the services' context" in text
    assert "attribution: on" not in text
    assert "attribution: off" in (outcome.artifacts / "summary.md").read_text()
    assert outcome.run_json()["attribution"].startswith("off")


def test_worker_started_during_a_test_is_attributed_to_it(tmp_path: Path) -> None:
    tests = [*pytest_command()[:-1], str(SAMPLES / "e2e" / "check_work.py")]
    outcome = e2ecov(
        "run", "-c", str(write_stack(tmp_path, tests, app_service("app"))), cwd=tmp_path
    )
    assert outcome.code == 0, outcome.output
    assert "per-test attribution: on (tests ran one at a time)" in outcome.stdout
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    worker = next(v for k, v in report["files"].items() if k.endswith("worker.py"))
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    test = "e2e/check_work.py::test_work"
    for line in worker["functions"]["triple"]["executed_lines"]:
        assert worker["contexts"][str(line)] == [test]  # a python subprocess started later
    for line in handlers["functions"]["_square"]["executed_lines"]:
        assert handlers["contexts"][str(line)] == [test]  # forked pool workers


def test_failed_tests_and_low_coverage_exit_1(tmp_path: Path) -> None:
    stack = write_stack(
        tmp_path, drive("/alpha", "fail"), app_service("app"), run_extra="fail_under = 99"
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 1, outcome.output
    run = outcome.run_json()
    assert run["exit_code"] == 1 and run["first_failure"].startswith("the tests failed")
    assert "is below fail_under 99%" in outcome.output


def test_measured_service_that_never_announces_itself_is_a_loss(tmp_path: Path) -> None:
    command = ["env", "-u", "PYTHONPATH", sys.executable, "-m", "sampleapp.server"]
    service = app_service("app").replace(
        toml_list([sys.executable, "-m", "sampleapp.server"])[:-1], toml_list(command)[:-1]
    )
    assert "PYTHONPATH" in service
    outcome = e2ecov(
        "run", "-c", str(write_stack(tmp_path, drive("/alpha"), service)), cwd=tmp_path
    )
    assert outcome.code == 4, outcome.output
    assert "LOST: app: no process announced itself" in outcome.stdout


def test_failed_run_keeps_the_last_good_reports(tmp_path: Path) -> None:
    good = e2ecov(
        "run", "-c", str(write_stack(tmp_path, drive("/alpha"), app_service("app"))), cwd=tmp_path
    )
    assert good.code == 0, good.output
    reports = {n: (tmp_path / "out" / n).read_bytes() for n in ("coverage.json", "summary.md")}
    good_run = good.run_json()["run_id"]
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--fail-start"))
    bad = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert bad.code == 3, bad.output
    out = tmp_path / "out"
    assert {n: (out / n).read_bytes() for n in reports} == reports
    assert json.loads((out / "run.json").read_text())["run_id"] == good_run
    failed = json.loads((out / "failed-run" / "run.json").read_text())
    assert failed["exit_code"] == 3 and failed["run_id"] != good_run
    assert "exited with code 3" in (out / "failed-run" / "diagnostics" / "summary.txt").read_text()
    assert f"the previous run's reports stay in {out}" in bad.stdout
    assert not (out / ".previous").exists()
    # the next good run replaces everything, the failed run's directory included
    again = e2ecov(
        "run", "-c", str(write_stack(tmp_path, drive("/beta"), app_service("app"))), cwd=tmp_path
    )
    assert again.code == 0, again.output
    assert not (out / "failed-run").exists() and not (out / "diagnostics").exists()


def test_doctor_checks_every_interpreter(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    service = app_service("app").replace(json.dumps(sys.executable), json.dumps(python), 1)
    stack = write_stack(tmp_path, [python, "-m", "pytest", "e2e"], service)
    outcome = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    lines = outcome.stdout.splitlines()
    service_line = next(line for line in lines if line.startswith("FAIL  service app"))
    assert "cannot import coverage" in service_line and "pip install 'coverage>=" in service_line
    tests_line = next(line for line in lines if "attribution" in line)
    assert tests_line.startswith("FAIL") and "cannot import pytest" in tests_line
    fine = write_stack(tmp_path, pytest_command(), app_service("app"))
    healthy = e2ecov("doctor", "-c", str(fine), cwd=tmp_path)
    assert healthy.code == 0, healthy.output
    assert "has coverage" in healthy.stdout and "and e2ecov" in healthy.stdout
    # a program found on the service's own PATH, as `run` finds it (doctor looked on its
    # own PATH only: "not found on PATH", a second outside check)
    bin_dir = tmp_path / "service-bin"
    bin_dir.mkdir()
    (bin_dir / "pyapp").symlink_to(sys.executable)
    on_path = app_service("app", extra=f'env = {{ PATH = "{bin_dir}" }}').replace(
        json.dumps(sys.executable), json.dumps("pyapp"), 1
    )
    found = e2ecov(
        "doctor", "-c", str(write_stack(tmp_path, pytest_command(), on_path)), cwd=tmp_path
    )
    assert "not found on PATH" not in found.stdout, found.output
    assert f"pyapp → {bin_dir / 'pyapp'}" in found.stdout, found.output


def test_doctor_takes_a_wrapper_the_run_measures_through(tmp_path: Path) -> None:
    """`sh -c "exec python -m ..."` (or an entrypoint script) starts a Python service that
    the run measures through the hook on PYTHONPATH; doctor said "FAIL ... sh is not a
    Python program, so coverage = true measures nothing: set coverage = false", advice
    that dropped the service's coverage."""
    server = f"exec {sys.executable} -m sampleapp.server --port {{port}}"
    service = app_service("app").replace(
        toml_list([sys.executable, "-m", "sampleapp.server", "--port", "{port}"]),
        toml_list(["sh", "-c", server]),
    )
    assert '"sh", "-c"' in service
    stack = write_stack(tmp_path, drive("/beta"), service)
    doctor = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    said = [line for line in doctor.stdout.splitlines() if "service app" in line]
    assert said and not any(line.startswith("FAIL") for line in said), doctor.output
    assert any("sh is not a Python program itself (a wrapper?)" in line for line in said)
    run = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert run.code == 0, run.output
    assert run.run_json()["totals"]["services"]["app"]["percent"] > 0, run.output


def test_health_answered_by_another_process_is_not_healthy(tmp_path: Path) -> None:
    port = free_port()
    stale = subprocess.Popen(
        [sys.executable, "-m", "sampleapp.server", "--port", str(port)],
        cwd=APP,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert stale.stdout is not None
        stale.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
        from e2ecov.services import foreign_answer

        ours = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            svc = _service_run(ours)
            message = foreign_answer(svc, f"http://127.0.0.1:{port}/health")
            assert message is not None and f"held by pid {stale.pid}" in message
            svc.proc = stale
            assert foreign_answer(svc, f"http://127.0.0.1:{port}/health") is None
        finally:
            ours.kill()
            ours.wait()
    finally:
        stale.terminate()
        stale.wait(10)


def _service_run(proc: subprocess.Popen[bytes]):  # type: ignore[no-untyped-def]
    from e2ecov.services import ServiceRun
    from e2ecov.stackfile import ServiceSpec

    spec = ServiceSpec(
        name="app", command=["sleep"], recipe=None, env={}, depends_on=[], health=None,
        coverage=False, cwd=APP, fail_under=None, grace=1.0, source=[], port_names=frozenset(),
    )  # fmt: skip
    return ServiceRun(
        spec=spec, ports={}, command=["sleep"], env_added={}, env={}, log_dir=APP, proc=proc
    )


def test_source_names_a_package_wherever_it_is_imported_from(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    stack.write_text(
        stack.read_text().replace(json.dumps(str(SAMPLES / "app" / "sampleapp")), '"sampleapp"')
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("sampleapp/handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0
    assert "measured nothing under source" not in outcome.output
    assert outcome.run_json()["config"]["source_pkgs"] == ["sampleapp"]
    assert "was not imported by any measured process" not in outcome.output
    # each process tells its coverage.py (an old one is warned about): this one, current
    from e2ecov.protocol import read_ledger

    [record] = read_ledger(outcome.artifacts / "processes")
    assert record.coverage == coverage.__version__
    assert "warning: service app measured with coverage" not in outcome.output


def test_a_misspelt_source_package_is_named(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    sample = json.dumps(str(SAMPLES / "app" / "sampleapp"))
    stack.write_text(stack.read_text().replace(sample, f'{sample}, "sampleap"'))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert (
        "warning: source package 'sampleap' was not imported by any measured process, so none "
        "of it is reported"
    ) in outcome.output
    doctor = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert doctor.code == 3, doctor.output
    assert "'sampleap' not importable by" in doctor.stdout
    assert "sampleap" in next(ln for ln in doctor.stdout.splitlines() if "source:" in ln)


def test_a_misspelt_only_source_package_is_named(tmp_path: Path) -> None:
    """With no other source, the run said only "nothing under source (): No data to
    report" (an outside check): the name is given, and why it measured nothing."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    sample = json.dumps(str(SAMPLES / "app" / "sampleapp"))
    stack.write_text(stack.read_text().replace(sample, '"sampleap"'))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 4, outcome.output
    assert "nothing under source (sampleap)" in outcome.output
    assert "source package 'sampleap' was not imported by any measured process" in outcome.output


def test_ports_come_from_the_configured_range(tmp_path: Path) -> None:
    low = min(free_port(), 65000)
    stack = write_stack(
        tmp_path,
        drive("/alpha"),
        app_service("app", extra='env = { SAMPLE_OPS = "{port.ops}" }'),
        run_extra=f'ports = "{low}-{low + 40}"',
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    port = int(outcome.run_json()["services"]["app"]["url"].rsplit(":", 1)[1])
    assert low <= port <= low + 40


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_go_build_stops_it_and_keeps_the_last_reports(
    tmp_path: Path, signum: int
) -> None:
    """A build can take minutes (a cold Go cache); a signal then stops the build and every
    process it started, and the run ends like any interrupted one: run.json written, the
    last good run's reports back in place. The `go` here is a stand-in on PATH that starts
    a child and waits, as `go build` waits for its compiler."""
    good = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    assert e2ecov("run", "-c", str(good), cwd=tmp_path).code == 0
    fake = tmp_path / "fakego"
    fake.mkdir()
    pids = tmp_path / "build.pids"
    (fake / "go").write_text(f'#!/bin/sh\nsleep 300 &\necho "$$ $!" > {pids}\nwait\n')
    (fake / "go").chmod(0o755)
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app") + go_service("goapp"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2ecov.cli", "run", "-c", str(stack)],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (pids.is_file() and len(pids.read_text().split()) == 2):
            assert time.monotonic() < deadline and proc.poll() is None, "the build never started"
            time.sleep(0.05)
        build = [int(pid) for pid in pids.read_text().split()]
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, output
    time.sleep(0.2)
    assert [pid for pid in build if _alive(pid)] == [], "the build (or its child) outlived e2ecov"
    out = tmp_path / "out"
    assert (out / "coverage.json").is_file(), "the last good run's reports are back"
    assert not (out / ".previous").exists()
    failed = json.loads((out / "failed-run" / "run.json").read_text())
    assert failed["exit_code"] == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in failed["first_failure"]


@pytest.mark.slow
def test_a_reader_that_goes_away_does_not_end_the_run(tmp_path: Path) -> None:
    """`e2ecov run | head -3`: the progress stops, the run does not; it ends as it would
    have, reports written and its exit code its own."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2ecov.cli", "run", "-c", str(stack)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # as `head -3` exits
    errors = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, (first, errors)
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    out = tmp_path / "out"
    assert json.loads((out / "run.json").read_text())["exit_code"] == 0
    assert (out / "coverage.json").is_file() and not (out / ".previous").exists()


@pytest.mark.slow
def test_a_service_never_imports_from_e2ecovs_own_environment(tmp_path: Path) -> None:
    """A service run by an interpreter without coverage.py (a bare virtualenv) is not
    measured, and says why; it must not borrow coverage.py, or any of its own dependencies,
    from e2ecov's environment and so pass under e2ecov while it would fail in production."""
    import venv

    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    python = str(bare / "bin" / "python")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib.util, sys\n"
        "for name in ('coverage', 'pytest', 'httpx', 'signalgate'):\n"
        "    print(name, 'importable' if importlib.util.find_spec(name) else 'missing')\n"
        "sys.stdout.flush()\n"
        "from sampleapp import server\n"
        "sys.argv = ['server', *sys.argv[1:]]\n"
        "server.main()\n"
    )
    service = app_service("app").replace(
        toml_list([sys.executable, "-m", "sampleapp.server"])[:-1],
        toml_list([python, str(probe)])[:-1],
    )
    assert str(probe) in service
    stack = write_stack(tmp_path, drive("/alpha"), service, run_extra="")
    env = {**os.environ, "PYTHONPATH": str(APP)}
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path, env=env)
    stdout = (tmp_path / "out" / "logs" / "app.stdout.log").read_text()
    stderr = (tmp_path / "out" / "logs" / "app.stderr.log").read_text()
    assert "coverage missing" in stdout and "pytest missing" in stdout, stdout
    assert "httpx missing" in stdout and "signalgate missing" in stdout, stdout
    assert "coverage agent not started" in stderr and "coverage" in stderr, stderr
    assert outcome.code == 4, outcome.output
    assert "LOST: app: no process announced itself" in outcome.stdout
    # the agent's own reason, from the service's log, beside the loss
    lost = next(line for line in outcome.stdout.splitlines() if "LOST: app:" in line)
    assert "its log says: e2ecov: coverage agent not started in pid" in lost, lost
    assert "ModuleNotFoundError" in lost, lost
