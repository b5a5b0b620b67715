"""The stack that does not come up, a service killed mid-test, kept stacks and `down`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2ecov.e2ecov_harness import (
    SAMPLES,
    SOURCE,
    app_service,
    drive,
    e2ecov,
    get_script,
    toml_list,
    write_stack,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_service_exiting_during_start_fails_fast_and_keeps_the_rest(tmp_path: Path) -> None:
    services = app_service("steady") + app_service("broken", "--fail-start", timeout="60s")
    stack = write_stack(tmp_path, drive("/alpha"), services)
    outcome = e2ecov("run", "-c", str(stack), "--keep-on-failure", cwd=tmp_path)
    returned = time.time()
    try:
        assert outcome.code == 3, outcome.output
        assert "service 'broken'" in outcome.output and "exited with code 3" in outcome.output
        assert "error: database url missing (SAMPLE_DB)" in outcome.output
        assert "loading configuration" in outcome.output
        run = outcome.run_json()
        health = next(p for p in run["phases"] if p["name"] == "health")
        # the health timeout is 60 s: stopping within seconds means the exit ended the wait
        assert health["duration_s"] < 5, health
        assert outcome.seconds < 30
        diag = outcome.artifacts / "diagnostics"
        assert "error: database url missing" in (diag / "broken" / "stderr.log").read_text()
        stdout = (diag / "broken" / "stdout.log").read_text()
        assert "loading configuration" in stdout
        exited = float(stdout.split("exiting at ")[1].split()[0])
        # the contract: exit code 3, with all of the above, in under 2 s of the service's exit
        assert returned - exited < 2.0, returned - exited
        status = json.loads((diag / "broken" / "status.json").read_text())
        assert status["exit_code"] == 3
        summary = (diag / "summary.txt").read_text()
        assert summary.splitlines()[1].strip().startswith("service 'broken'")
        steady = run["services"]["steady"]
        assert run["kept"] is True and _alive(steady["pid"])
        with urllib.request.urlopen(steady["url"] + "/health", timeout=5) as response:
            assert response.status == 200
        assert steady["url"] in outcome.stdout and str(steady["pid"]) in outcome.stdout
    finally:
        stopped = e2ecov("down", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert stopped.code == 0, stopped.output
    assert "stopped steady" in stopped.stdout
    deadline = time.monotonic() + 10
    while _alive(steady["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(steady["pid"])


def test_why_a_service_refused_its_arguments_is_shown_before_its_usage(tmp_path: Path) -> None:
    """A Go program given a bad flag says why on its first line, then prints 30 lines of
    usage: only the last 10 were shown, the usage's tail, and never the reason."""
    refuse = (
        "import sys; print('Error: invalid log level \"BOGUS\"', file=sys.stderr); "
        "print('Usage of svc:', file=sys.stderr); "
        "[print('  -flag%d string' % i, file=sys.stderr) for i in range(30)]; sys.exit(2)"
    )
    service = f"""
[services.svc]
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(refuse)}]
coverage = false
health = {{ url = "http://127.0.0.1:{{port}}/health", timeout = "20s" }}
"""
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, drive(), service)), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    said = outcome.output.split("exited with code 2 before it was healthy; last output:")[1]
    assert 'stderr| Error: invalid log level "BOGUS"' in said, said
    assert "stderr| [... 19 line(s) ...]" in said and "stderr|   -flag29 string" in said
    summary = (outcome.artifacts / "diagnostics" / "summary.txt").read_text()
    assert 'Error: invalid log level "BOGUS"' in summary


def test_a_service_without_health_that_ends_before_the_tests_is_a_stack_down(
    tmp_path: Path,
) -> None:
    """No health check, so "ready" at once, and ended before the tests began: it was counted
    up, the whole suite ran against a stack without it, and its exit was timed as during
    the tests (an outside check). The stack is not up: exit 3, and no test runs."""
    quits = f"""
[services.quits]
command = {json.dumps([sys.executable, "-c", "print('bye'); raise SystemExit(2)"])}
"""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("steady") + quits)
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    assert "service 'quits'" in outcome.output
    assert "exited with code 2 before the tests started" in outcome.output
    assert "bye" in outcome.output
    assert "test" not in [phase["name"] for phase in outcome.run_json()["phases"]]


def test_a_service_naming_another_without_depending_on_it_is_told_to(tmp_path: Path) -> None:
    """`api` reads `{services.db.url}` but has no `depends_on`: both start at once, api
    finds no database and exits. The failure showed its output ("cannot reach the database")
    and nothing said that `depends_on` orders the start (an outside check). `db` becomes
    healthy only after api has given up, so api started before it, every time."""
    gave_up = tmp_path / "api-gave-up"
    db = (
        "import pathlib, sys, time\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        f"while not pathlib.Path({str(gave_up)!r}).exists():\n"
        "    time.sleep(0.02)\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    api = (
        "import os, pathlib, sys, urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen(os.environ['DB_URL'] + '/health', timeout=5)\n"
        "except OSError as exc:\n"
        f"    pathlib.Path({str(gave_up)!r}).touch()\n"
        "    sys.exit(f'api: cannot reach the database: {exc}')\n"
    )
    (tmp_path / "db.py").write_text(db)
    (tmp_path / "api.py").write_text(api)
    services = f"""
[services.db]
command = {toml_list([sys.executable, str(tmp_path / "db.py"), "{port}"])}
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}

[services.api]
command = {toml_list([sys.executable, str(tmp_path / "api.py"), "{port}"])}
env = {{ DB_URL = "{{services.db.url}}" }}
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, drive(), services)), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    assert (
        "exited with code 1 before it was healthy; it started before 'db' "
        "({services.db.url}) was healthy, as it names it without depending on it: if it "
        'needs it up first, add depends_on = ["db"] to [services.api]; last output:'
    ) in outcome.stdout, outcome.output
    assert "api: cannot reach the database" in outcome.stdout
    # its code is outside the run's source, as a service's that never loaded its code is
    # not in it: neither is a question about `source` beside the failure that says why
    assert "service api: every process measured nothing under source" not in outcome.stdout


def test_health_that_never_passes_reports_last_answer(tmp_path: Path) -> None:
    stack = write_stack(
        tmp_path, drive("/alpha"), app_service("app", "--never-healthy", timeout="1s")
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    assert "not healthy after 1s" in outcome.output
    assert "last health answer: HTTP 503: warming up: cache not loaded" in outcome.output
    run = outcome.run_json()
    assert next(p for p in run["phases"] if p["name"] == "health")["duration_s"] >= 1.0
    status = json.loads((outcome.artifacts / "diagnostics" / "app" / "status.json").read_text())
    assert status["last_health_answers"][-1].startswith("HTTP 503")
    # services' output and environments: the run's user's alone
    assert (outcome.artifacts / "diagnostics").stat().st_mode & 0o777 == 0o700
    assert not _alive(run["services"]["app"]["pid"]), "stopped after diagnostics"


def test_a_service_never_healthy_is_shown_with_its_output(tmp_path: Path) -> None:
    """A service listening elsewhere than its {port} (a flag it does not know, a port of its
    own config) is never healthy: "connection refused" was all the run said, and why was
    only in its log."""
    elsewhere = (
        "import sys, time; print('config: port not set, listening on 127.0.0.1:9', "
        "file=sys.stderr, flush=True); time.sleep(60)"
    )
    service = f"""
[services.svc]
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(elsewhere)}]
coverage = false
health = {{ url = "http://127.0.0.1:{{port}}/health", timeout = "1s" }}
"""
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, drive(), service)), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    said = outcome.output.split("not healthy after 1s")[1]
    assert "last health answer: connection refused; last output:" in said, said
    assert "stderr| config: port not set, listening on 127.0.0.1:9" in said
    assert "exit 3: service 'svc' (pid " in outcome.output
    assert "last health answer: connection refused\n" in outcome.output  # the headline


def test_a_service_on_https_with_a_self_signed_certificate_gets_healthy(tmp_path: Path) -> None:
    """A service serving HTTPS on loopback has a self-signed or test certificate: the health
    check verified it and the service was never healthy ("certificate verify failed"), and
    the tests were given an http:// URL for it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=svc.internal", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    serve = (
        "import http.server, ssl, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
        "tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
        "tls.load_cert_chain(sys.argv[2], sys.argv[3])\n"
        "server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)\n"
        "server.socket = tls.wrap_socket(server.socket, server_side=True)\n"
        "server.serve_forever()\n"
    )
    check = (
        "import os, ssl, urllib.request\n"
        "url = os.environ['E2E_SVC_URL']\n"
        "assert url.startswith('https://'), url\n"
        "urllib.request.urlopen(url, context=ssl._create_unverified_context()).read()\n"
    )
    command = [sys.executable, "-c", serve, "{port}", str(cert), str(key)]
    service = f"""
[services.svc]
command = {json.dumps(command)}
coverage = false
health = {{ url = "https://127.0.0.1:{{port}}/health", timeout = "10s" }}
"""
    tests = [sys.executable, "-c", check]
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output


def test_a_service_that_daemonizes_is_told_to_stay_in_the_foreground(tmp_path: Path) -> None:
    """gunicorn --daemon: the main process forks a detached server and exits 0. Reported as
    "exited with code 0 before it was healthy" alone, the server it left was not named. The
    detached server may answer the health check before the exit is seen ("before the tests
    started", which did not name it either: a fresh clone's run on a quiet machine)."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--daemon"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    assert (
        "exited with code 0 before it was healthy, leaving pid " in outcome.output
        or "exited with code 0 before the tests started, leaving pid " in outcome.output
    ), outcome.output
    assert "sampleapp.server" in outcome.output and "stay in the foreground" in outcome.output
    left = int(outcome.output.split("leaving pid ")[1].split()[0])
    assert not _alive(left), "the detached server was stopped with the stack"


@pytest.mark.slow
def test_service_dying_mid_test_fails_the_run_and_autosave_recovers(tmp_path: Path) -> None:
    stack = write_stack(
        tmp_path,
        drive("/alpha", "sleep:1.2", "kill", "sleep:1.0", "say:tests-go-on"),
        app_service("app"),
        run_extra='autosave = "0.3s"\ncontexts = false',
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    # a service that dies during the tests fails the run even though the tests passed
    assert outcome.code == 3, outcome.output
    run = outcome.run_json()
    pid = run["services"]["app"]["pid"]
    assert f"exit 3: service 'app' (pid {pid}) was killed by SIGKILL during the tests" in (
        outcome.output
    )
    summary = (outcome.artifacts / "diagnostics" / "summary.txt").read_text().splitlines()
    assert "during the tests" in summary[1] and 'request "GET /pid' in "\n".join(summary[2:6])
    assert f"app pid {pid} wrote partial coverage" in outcome.output
    assert "was killed by SIGKILL" in outcome.output
    # said when it happened, beside the tests' output, not only in the summary
    told = f"app: pid {pid} was killed by SIGKILL while the tests run (judged when they end"
    assert told in outcome.output
    assert outcome.output.index(told) < outcome.output.index("\ntests-go-on\n"), outcome.output
    assert run["services"]["app"]["lost"] and str(pid) in run["services"]["app"]["lost"][0]
    assert run["services"]["app"]["exit_code"] == -signal.SIGKILL
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0
    # said once: it was in the summary as the failure "coverage lost: …" and as the loss too
    said = (outcome.artifacts / "diagnostics" / "summary.txt").read_text()
    assert said.count(f"app pid {pid} wrote partial coverage") == 1, said


@pytest.mark.slow
def test_live_save_and_every_worker_counted(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/work", "save", "/beta"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    run = outcome.run_json()
    main_pid = run["services"]["app"]["pid"]
    # the live save answered while running (pool workers still exiting may answer too)
    saved_line = next(line for line in outcome.stdout.splitlines() if line.startswith("saved ["))
    assert main_pid in json.loads(saved_line.removeprefix("saved "))
    processes = run["processes"]
    assert len(processes) >= 4, processes  # the service, 2 pool workers, 1 python subprocess
    assert all(p["status"] in ("saved", "empty") for p in processes)
    saved = {p["data_file"] for p in processes if p["status"] == "saved"}
    assert len(saved) >= 3 and saved <= set(run["services"]["app"]["data_files"])
    flush = datetime.fromisoformat(
        next(p for p in run["phases"] if p["name"] == "flush")["started"]
    )
    ledger = [
        json.loads(line)
        for path in (outcome.artifacts / "processes").glob(f"app.{main_pid}.*.jsonl")
        for line in path.read_text().splitlines()
    ]
    live = [e for e in ledger if e.get("reason") == "save" and e["time"] < flush.timestamp()]
    assert live and live[0]["measured"] > 0, ledger
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    worker = next(v for k, v in report["files"].items() if k.endswith("worker.py"))
    assert handlers["functions"]["_square"]["summary"]["percent_covered"] == 100.0  # forked pool
    assert worker["functions"]["triple"]["summary"]["percent_covered"] == 100.0  # python subprocess


def test_a_forked_child_is_measured_in_the_function_that_forked_it(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/forked"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    name, handlers = next((k, v) for k, v in report["files"].items() if k.endswith("handlers.py"))
    source = (SOURCE / "handlers.py").read_text().splitlines()
    child_only = [n for n, line in enumerate(source, 1) if line.endswith("# child-only")]
    assert len(child_only) == 2
    assert set(child_only) <= set(handlers["executed_lines"]), (name, handlers["missing_lines"])
    # the child saved into a file of its own: the parent's is whole
    run = outcome.run_json()
    assert len(run["services"]["app"]["data_files"]) >= 2, run["services"]["app"]
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 0.0


def test_a_subprocess_with_a_preexec_fn_is_not_a_loss(tmp_path: Path) -> None:
    """Python runs fork hooks in a `preexec_fn` child, which then execs `/bin/true`: it was
    announced as a process and reported lost (exit 4)."""
    stack = write_stack(tmp_path, drive("/preexec"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "LOST" not in outcome.output


def test_a_subprocess_spawned_by_uvloop_is_not_a_loss(tmp_path: Path) -> None:
    """uvloop runs the fork hooks in the child of `asyncio.create_subprocess_exec` before it
    execs: announced as a process and reported lost (exit 4) for every child an async
    service (the Gateway's SQLite store) starts that way."""
    stack = write_stack(tmp_path, drive("/loop-spawn"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "LOST" not in outcome.output


def test_python_children_the_hook_cannot_reach_are_named(tmp_path: Path) -> None:
    """A child started with `python -I`, or with an environment of its own, runs without
    e2ecov's hook: measured by nothing and absent from the ledger. The run names each (a
    warning: what it ran may not be the service's code); the measured ones are not named."""
    stack = write_stack(tmp_path, drive("/unhooked", "/work"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    named = outcome.run_json()["services"]["app"]["unmeasured"]
    assert len(named) == 2, (named, outcome.output)
    assert any(" -I -c import time" in message for message in named), named
    assert all("ran Python and was not measured" in message for message in named)
    assert outcome.output.count("ran Python and was not measured") == 2
    # /work's pool worker and `python -m sampleapp.worker` announced themselves
    assert "sampleapp.worker" not in " ".join(named)


def test_forks_during_autosaves_all_save(tmp_path: Path) -> None:
    """A fork while the autosave thread was saving left its locks held in the child, whose
    own save at `os._exit` then waited for good (the request waiting on it too)."""
    stack = write_stack(
        tmp_path, drive("/many-forks"), app_service("app"), run_extra='autosave = "0.01s"'
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path, timeout=90)
    assert outcome.code == 0, outcome.output
    processes = outcome.run_json()["processes"]
    assert len(processes) == 61
    assert all(p["status"] in ("saved", "empty") for p in processes), processes


def test_what_ran_before_the_service_re_executed_itself_is_measured(tmp_path: Path) -> None:
    """A launcher that re-executes itself (`os.execv`): the replaced image saves first; it
    was a loss blamed on the later SIGTERM."""
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", "--reexec"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "LOST" not in outcome.output
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["before_exec"]["summary"]["percent_covered"] == 100.0
    statuses = [p["status"] for p in outcome.run_json()["processes"]]
    assert statuses == ["saved", "saved"], outcome.run_json()["processes"]


def test_a_launcher_with_a_start_up_hook_of_its_own_is_measured(tmp_path: Path) -> None:
    """`opentelemetry-instrument` puts its own `sitecustomize` first on PYTHONPATH and
    execs the service: Python ran that one only, so the service was measured by
    nothing (0 %, exit 0, its processes named as unreached). The exec keeps e2ecov's hook
    first, and it runs theirs after it."""
    launcher = SAMPLES / "launcher" / "instrument.py"
    command = [sys.executable, str(launcher), sys.executable, "-m", "sampleapp.server"]
    service = app_service("app").replace(
        f"command = {toml_list([sys.executable, '-m', 'sampleapp.server'])[:-1]}",
        f"command = {toml_list(command)[:-1]}",
    )
    assert str(launcher) in service
    outcome = e2ecov(
        "run", "-c", str(write_stack(tmp_path, drive("/alpha"), service)), cwd=tmp_path
    )
    assert outcome.code == 0, outcome.output
    assert "was not measured" not in outcome.output
    run = outcome.run_json()
    # the launcher ran nothing under source; the service it exec'd is measured
    assert [p["status"] for p in run["processes"]] == ["empty", "saved"], run["processes"]
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0
    log = (outcome.artifacts / "logs" / "app.stderr.log").read_text()
    assert f"launcher hook ran in pid {run['services']['app']['pid']}" in log, log


def test_invalid_stack_file_exits_2_with_line(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app", extra='helth = "x"'))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 2
    line = next(
        n for n, text in enumerate(stack.read_text().splitlines(), 1) if text.startswith("helth")
    )
    assert f"{stack}:{line}: [services.app] unknown key 'helth'; expected one of:" in outcome.stderr
    assert not (tmp_path / "out").exists(), "nothing started or written"


def run_in_background(stack: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """`e2ecov run` of `stack`, left running (for a test to kill it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "e2ecov.cli", "run", "-c", str(stack)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_e2ecov_leaves_a_stack_the_next_run_names(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha", "sleep:60"), app_service("app"))
    first = run_in_background(stack, tmp_path)
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 60
        record: dict[str, Any] = {}
        while not record.get("services", {}).get("app", {}).get("pid"):
            if time.monotonic() > deadline:
                pytest.fail("the first run never started its service")
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError):
                record = json.loads((out / "run.json").read_text())
        app_pid = record["services"]["app"]["pid"]
        # a second run in the same directory while the first is still going on
        busy = e2ecov("run", "-c", str(stack), cwd=tmp_path)
        assert busy.code == 2, busy.output
        assert f"in use by another e2ecov run (run {record['run_id']}, pid {first.pid})" in (
            busy.stderr
        )
        first.kill()
        first.wait(10)
        assert _alive(app_pid), "nothing stopped the stack of the killed run"
        left = e2ecov("run", "-c", str(stack), cwd=tmp_path)
        assert left.code == 2, left.output
        assert f"run {record['run_id']} in {out} ended without stopping its stack" in left.stderr
        assert f"e2ecov down --artifacts {out}" in left.stderr
        assert _alive(app_pid), "the refused run started nothing and stopped nothing"
    finally:
        first.kill()
        stopped = e2ecov("down", "--artifacts", str(out), cwd=tmp_path)
    assert stopped.code == 0, stopped.output
    deadline = time.monotonic() + 10
    while _alive(app_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(app_pid)
    short = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    again = e2ecov("run", "-c", str(short), cwd=tmp_path)
    assert again.code == 0, again.output


def test_the_test_command_of_a_killed_e2ecov_is_refused_and_stopped_by_down(
    tmp_path: Path,
) -> None:
    """A killed e2ecov leaves its test command running (in its own session, under init, with
    the run's id in its environment). Only the services' processes counted: `down` left the
    tests running and the next run was not refused, so the old tests could hit the new run's
    services on reused ports."""
    pid_file = tmp_path / "tests.pid"
    script = tmp_path / "tests.py"
    script.write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    stack = write_stack(tmp_path, [sys.executable, str(script)], app_service("app"))
    first = run_in_background(stack, tmp_path)
    out = tmp_path / "out"
    tests_pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()):
            if time.monotonic() > deadline:
                pytest.fail("the first run never started its tests")
            time.sleep(0.1)
        tests_pid = int(pid_file.read_text())
        app_pid = json.loads((out / "run.json").read_text())["services"]["app"]["pid"]
        first.kill()
        first.wait(10)
        os.kill(app_pid, signal.SIGKILL)  # the service gone: only the tests are left
        deadline = time.monotonic() + 10
        while _alive(app_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(tests_pid), "nothing stopped the tests of the killed run"
        short = write_stack(tmp_path / "second", drive("/alpha"), app_service("app"))
        refused = e2ecov("run", "-c", str(short), "--artifacts", str(out), cwd=tmp_path)
        assert refused.code == 2, refused.output
        assert "ended without stopping its stack" in refused.stderr
        assert "1 of its processes still run" in refused.stderr
        stopped = e2ecov("down", "--artifacts", str(out), cwd=tmp_path)
        assert stopped.code == 0, stopped.output
        assert f"stopped pid {tests_pid} (" in stopped.stdout
        deadline = time.monotonic() + 10
        while _alive(tests_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(tests_pid), "e2ecov down left the tests running"
        again = e2ecov("run", "-c", str(short), "--artifacts", str(out), cwd=tmp_path)
        assert again.code == 0, again.output
    finally:
        first.kill()
        if tests_pid and _alive(tests_pid):
            os.kill(tests_pid, signal.SIGKILL)


@pytest.mark.slow
def test_every_loss_in_the_diagnostics_summary_reads_as_a_loss(tmp_path: Path) -> None:
    """The summary's `also:` lines named the first loss "coverage lost: a pid …" (the
    failure it made) and every other one bare ("b pid … wrote no coverage"), as if the
    second were something else. Each reads as a loss now."""
    tests = get_script(
        tmp_path, ("E2E_A_URL", "/alpha"), ("E2E_A_URL", "kill"), ("E2E_B_URL", "kill")
    )
    stack = write_stack(tmp_path, tests, app_service("a") + app_service("b"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    summary = (outcome.artifacts / "diagnostics" / "summary.txt").read_text().splitlines()
    pids = {name: outcome.run_json()["services"][name]["pid"] for name in ("a", "b")}
    also = [line for line in summary if line.startswith("also: ") and " pid " in line]
    for name, pid in pids.items():
        said = [line for line in also if f"{name} pid {pid} wrote no coverage" in line]
        assert len(said) == 1, summary
        assert said[0].startswith(f"also: coverage lost: {name} pid {pid} "), summary
