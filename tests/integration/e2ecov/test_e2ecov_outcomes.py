"""Exit codes and their causes: failed tests, fail_under, grace then SIGKILL, recipes, doctor."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from e2ecov.reports import PARTIAL
from tests.integration.e2ecov.e2ecov_harness import APP, app_service, drive, e2ecov, write_stack

SECRETS = {  # each was in clear in diagnostics/<service>/env.txt
    "GITHUB_PAT": "ghp_PatSecret",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/XXsecretXX",
    "SENTRY_DSN": "https://DsnKeySecret@o1.ingest.sentry.io/42",
    "NOTIFY_URL": "https://discord.com/api/webhooks/1/HookTokenSecret",
    "MYSQL_PWD": "MysqlPwdSecret",
    "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=AzureKeySecret==;X=y",
}
NOT_SECRETS = {  # each was hidden whole or in part
    "UPSTREAM": "http://127.0.0.1:8080/users/@me/profile",
    "PASSWORD_FILE": "/run/secrets/db_password",
}


def test_failed_tests_exit_1_with_reports_and_diagnostics(tmp_path: Path) -> None:
    shown = SECRETS | NOT_SECRETS
    env = "env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in shown.items()) + " }"
    stack = write_stack(tmp_path, drive("/alpha", "fail"), app_service("app", extra=env))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 1, outcome.output
    assert (outcome.artifacts / "coverage.json").is_file(), "reports are still written"
    summary = (outcome.artifacts / "diagnostics" / "summary.txt").read_text()
    assert "the tests failed" in summary.splitlines()[1]
    assert "alpha 3" in (outcome.artifacts / "diagnostics" / "tests.log").read_text()
    assert (outcome.artifacts / "diagnostics" / "app" / "stderr.log").is_file()
    assert outcome.run_json()["exit_code"] == 1
    env_txt = (outcome.artifacts / "diagnostics" / "app" / "env.txt").read_text()
    assert "GITHUB_PAT=***" in env_txt and "SLACK_WEBHOOK=***" in env_txt
    assert "SENTRY_DSN=https://***@o1.ingest.sentry.io/42" in env_txt
    assert "NOTIFY_URL=https://discord.com/api/webhooks/***" in env_txt
    hidden = ("PatSecret", "XXsecretXX", "DsnKey", "HookToken", "MysqlPwd", "AzureKey")
    assert not [s for s in hidden if s in env_txt]
    assert "MYSQL_PWD=***" in env_txt
    assert [f"{k}={v}" for k, v in NOT_SECRETS.items() if f"{k}={v}\n" not in env_txt] == []


def test_below_fail_under_exits_4(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"), run_extra="fail_under = 99")
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 4, outcome.output
    assert "is below fail_under 99%" in outcome.output
    assert ":x: total coverage" in (outcome.artifacts / "summary.md").read_text()


def test_sigterm_ignored_is_saved_live_then_killed_after_grace(tmp_path: Path) -> None:
    services = app_service("app", "--ignore-sigterm").replace('grace = "5s"', 'grace = "0.5s"')
    stack = write_stack(tmp_path, drive("/beta"), services, run_extra="contexts = false")
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    # the live save at the start of the flush counts: nothing was lost despite SIGKILL
    assert outcome.code == 0, outcome.output
    run = outcome.run_json()
    assert run["services"]["app"]["exit_code"] == -9
    [process] = run["processes"]
    assert process["status"] == "saved"
    # but what it ran after that save is not measured, and the run says so
    assert (f"warning: app pid {process['pid']} saved at save (") in outcome.stdout, outcome.stdout
    assert (
        "then was killed by SIGKILL after the 0.5s grace period: what it ran after that "
        "(its shutdown) is not counted"
    ) in outcome.stdout
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["beta"]["summary"]["percent_covered"] == 100.0


def test_missing_recipe_binary_is_reported_at_once(tmp_path: Path) -> None:
    services = '[services.cache]\nrecipe = "redis"\n' + app_service("app")
    stack = write_stack(tmp_path, drive("/alpha"), services)
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path, env=env)
    assert outcome.code == 3, outcome.output
    assert "install the Debian package 'redis-server'" in outcome.output
    assert outcome.seconds < 20
    assert "start + health" not in outcome.stdout, "nothing was started"


@pytest.mark.slow
def test_recipes_give_their_urls_to_services_and_tests(tmp_path: Path) -> None:
    check = tmp_path / "check_env.py"
    check.write_text(
        "import os, sys\n"
        "assert os.environ['E2E_POSTGRES_URL'].startswith('postgresql://'), os.environ\n"
        "assert os.environ['E2E_CACHE_URL'].startswith('redis://'), os.environ\n"
        "assert os.environ['E2E_APP_URL'].startswith('http://127.0.0.1:')\n"
        "print('env ok')\n"
    )
    services = '[services.postgres]\nrecipe = "postgres"\n\n[services.cache]\nrecipe = "redis"\n'
    services += app_service(
        "app",
        extra='depends_on = ["postgres", "cache"]\n'
        'env = { SAMPLE_DB = "{services.postgres.url}", SAMPLE_CACHE = "{services.cache.url}" }',
    )
    stack = write_stack(tmp_path, [sys.executable, str(check)], services)
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "env ok" in outcome.stdout
    run = outcome.run_json()
    assert run["services"]["postgres"]["url"].startswith("postgresql://")
    assert run["services"]["app"]["started"] >= run["services"]["postgres"]["ready"]
    assert run["services"]["app"]["started"] >= run["services"]["cache"]["ready"]
    assert not Path(run["services"]["postgres"]["recipe_root"] or "/nonexistent").exists()


def test_doctor_checks_the_machine_and_the_stack(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    outcome = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    for name in ("coverage.py", "ctrace core", "control sockets", "free ports", "artifacts"):
        assert f"ok    {name}" in outcome.stdout
    assert "start order: app" in outcome.stdout
    broken = write_stack(tmp_path / "b", ["no-such-test-runner"], app_service("app"))
    failed = e2ecov("doctor", "-c", str(broken), cwd=tmp_path)
    assert failed.code != 0 and "FAIL  tests" in failed.stdout


def test_keep_and_keep_on_failure_are_exclusive(tmp_path: Path) -> None:
    outcome = e2ecov("run", "--keep", "--keep-on-failure", cwd=tmp_path)
    assert outcome.code == 2 and "not allowed with argument" in outcome.stderr


SERVICE_WITH_A_CHILD = """\
import os, signal, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so stopping it takes the SIGKILL
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(child.pid if self.path == "/child" else "ok").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_process_that_died_during_the_tests_is_not_blamed_on_the_grace_period(
    tmp_path: Path,
) -> None:
    """A service's child SIGKILLed during the tests, the service stopped with SIGKILL after its
    grace: the child was said to be "killed by SIGKILL after the 0.5s grace period", a kill
    e2ecov never sent it (every process of a service that needed the SIGKILL was)."""
    (tmp_path / "service.py").write_text(SERVICE_WITH_A_CHILD)
    tests = tmp_path / "tests.py"
    tests.write_text(
        "import os, signal, time, urllib.request\n"
        "from pathlib import Path\n"
        "url = os.environ['E2E_APP_URL'] + '/child'\n"
        "pid = int(urllib.request.urlopen(url, timeout=10).read())\n"
        "ledger = Path(os.environ['E2ECOV_ARTIFACTS']) / 'processes'\n"
        "for _ in range(200):  # once it has announced itself\n"
        "    if any(f'\"pid\": {pid},' in f.read_text() for f in ledger.iterdir()):\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "os.kill(pid, signal.SIGKILL)\n"
        "print('killed', pid, flush=True)\n"
        "time.sleep(0.5)\n"
    )
    services = f"""
[services.app]
command = {json.dumps([sys.executable, str(tmp_path / "service.py"), "{port}"])}
health = {{ url = "http://127.0.0.1:{{port}}/", interval = "0.05s" }}
grace = "0.5s"
"""
    stack = write_stack(tmp_path, [sys.executable, str(tests)], services, "contexts = false")
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    run = outcome.run_json()
    assert run["services"]["app"]["exit_code"] == -9  # e2ecov did kill the service
    child = int(outcome.stdout.split("killed ", 1)[1].split()[0])
    [process] = [p for p in run["processes"] if p["pid"] == child]
    assert process["status"] == "lost"
    assert "grace period" not in process["message"], process["message"]
    assert process["message"].endswith(
        "wrote no coverage: it ended (killed by a signal, or crashed) before it saved"
    )
    # the reports' totals leave it out, and every report says so (they said nothing: a CI
    # summary showed a normal-looking total for a partial stack)
    assert run["totals"]["partial"] is True
    loss = f"LOST: {process['message']}"
    text = (outcome.artifacts / "e2e-coverage.txt").read_text()
    assert loss in text and PARTIAL in text
    # the run's own output says it too, after the totals it printed
    said = outcome.stdout.splitlines()
    total = next(i for i, line in enumerate(said) if line.startswith("e2ecov   total "))
    assert said.index(f"e2ecov   {PARTIAL}") > total, outcome.stdout
    assert PARTIAL.startswith("partial coverage: these totals count only what was saved")
    summary = (outcome.artifacts / "summary.md").read_text()
    assert summary.splitlines()[0].endswith("— partial") and loss in summary
    rebuilt = e2ecov("report", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert loss in rebuilt.stdout and PARTIAL in rebuilt.stdout
    # (test_sigterm_ignored_is_saved_live_then_killed_after_grace: one e2ecov killed is named)


ABORTING_SERVICE = """\
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.path.insert(0, sys.argv[2])
from sampleapp import handlers


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/abort":
            os.abort()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(handlers.alpha().encode())


HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
ABORTING_TESTS = (
    "import os, urllib.request\n"
    "def get(path):\n"
    "    try:\n"
    "        urllib.request.urlopen(os.environ['E2E_APP_URL'] + path, timeout=10).read()\n"
    "    except OSError:\n"
    "        pass\n"
    "def test_one():\n"
    "    get('/one')\n"
    "def test_two():\n"  # its context switch writes test_one's lines; then the abort
    "    get('/abort')\n"
)


def aborting_stack(tmp_path: Path) -> Path:
    """A stack whose one service aborts (SIGABRT) in its second test, before any save."""
    (tmp_path / "service.py").write_text(ABORTING_SERVICE)
    (tmp_path / "test_abort.py").write_text(ABORTING_TESTS)
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_abort.py"]
    services = f"""
[services.app]
command = {json.dumps([sys.executable, str(tmp_path / "service.py"), "{port}", str(APP)])}
health = {{ url = "http://127.0.0.1:{{port}}/", interval = "0.05s" }}
"""
    return write_stack(tmp_path, tests, services)


def test_a_process_that_died_before_saving_but_left_data_is_partial(tmp_path: Path) -> None:
    """coverage.py writes what it collected at each switch of per-test context: a service
    that aborted before its first save left lines the report counts, and was said to have
    "wrote no coverage" (`lost`) all the same."""
    stack = aborting_stack(tmp_path)
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    run = outcome.run_json()
    [process] = run["processes"]
    counted = run["totals"]["services"]["app"]
    assert counted["missed"] < counted["statements"]  # its lines are in the report
    assert process["status"] == "partial", process["message"]
    assert "wrote partial coverage: it never saved, but its data file holds" in process["message"]
    assert "was killed by SIGABRT" in process["message"]
    assert "wrote no coverage" not in outcome.output


def test_a_package_only_a_process_that_never_saved_imported_is_reported(tmp_path: Path) -> None:
    """`source` names a package: where a process found it reached the ledger with its saves,
    so the package of a process that died before its first save was reported as "not
    imported by any measured process" and counted 0, its lines in the data file all the
    same. Its data file's measured paths now say where the package is."""
    stack = aborting_stack(tmp_path)
    stack.write_text(stack.read_text().replace(json.dumps(str(APP / "sampleapp")), '"sampleapp"'))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    run = outcome.run_json()
    assert run["config"]["source_pkgs"] == ["sampleapp"]
    [process] = run["processes"]
    assert process["status"] == "partial", process["message"]
    assert "was not imported by any measured process" not in outcome.output
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("sampleapp/handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0


def test_tests_past_the_timeout_are_stopped_and_the_run_still_reports(tmp_path: Path) -> None:
    """A hung test no longer holds the stack until CI cancels the job: past `[run] timeout`
    the test command is stopped, the run fails (exit 1) saying so, and what the tests
    reached before is still collected and reported."""
    pid_file = tmp_path / "tests.pid"
    hang = (
        "import os, time, urllib.request\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "urllib.request.urlopen(os.environ['E2E_APP_URL'] + '/alpha').read()\n"
        "print('alpha reached', flush=True)\n"
        "time.sleep(600)\n"
    )
    stack = write_stack(
        tmp_path, [sys.executable, "-c", hang], app_service("app"), run_extra='timeout = "3s"'
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 1, outcome.output
    assert "the tests ran past [run] timeout (3s); stopping them" in outcome.output
    run = outcome.run_json()
    assert run["first_failure"].startswith("the tests timed out"), run["first_failure"]
    [test_phase] = [phase for phase in run["phases"] if phase["name"] == "test"]
    assert test_phase["outcome"] == "FAILED (timed out after 3s)"
    assert test_phase["duration_s"] < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] > 0
    assert "alpha reached" in (outcome.artifacts / "diagnostics" / "tests.log").read_text()


@pytest.mark.parametrize("value", ["0s", "soon", -1])
def test_a_timeout_that_is_no_limit_is_refused(tmp_path: Path, value: object) -> None:
    stack = write_stack(
        tmp_path, drive("/alpha"), app_service("app"), run_extra=f"timeout = {json.dumps(value)}"
    )
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 2, outcome.output
    assert "run.timeout" in outcome.output


def test_down_stops_a_kept_runs_recipes_and_their_ports_are_in_the_range(
    tmp_path: Path,
) -> None:
    """After `--keep`, `e2ecov down` said the recipe servers were "not running any more",
    left PostgreSQL and Redis running and removed PostgreSQL's data directory under it (an
    outside check): they lacked the run's owner mark. Their ports came from the kernel
    whatever `[run] ports` said."""
    import socket
    import time
    from urllib.parse import urlsplit

    services = '[services.postgres]\nrecipe = "postgres"\n\n[services.cache]\nrecipe = "redis"\n'
    services += app_service("app", extra='depends_on = ["postgres", "cache"]')
    stack = write_stack(tmp_path, drive("/alpha"), services, run_extra='ports = "39100-39199"')
    outcome = e2ecov("run", "--keep", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    run = outcome.run_json()
    recipes = {name: run["services"][name] for name in ("postgres", "cache")}
    ports = {name: urlsplit(svc["url"]).port for name, svc in recipes.items()}
    assert all(port is not None and 39100 <= port <= 39199 for port in ports.values()), ports

    def answers(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    assert all(answers(port) for port in ports.values() if port)
    down = e2ecov("down", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert down.code == 0, down.output
    assert "not running any more" not in down.stdout, down.stdout
    for name in ("postgres", "cache", "app"):
        assert f"stopped {name}" in down.stdout, down.stdout
    deadline = time.monotonic() + 10
    while any(answers(port) for port in ports.values() if port):
        assert time.monotonic() < deadline, "a recipe server still answers after down"
        time.sleep(0.2)
    assert not Path(recipes["postgres"]["recipe_root"]).exists()


def test_down_stops_dependents_first(tmp_path: Path) -> None:
    """`down` stopped every service at once: a worker's shutdown met its Redis already gone
    (an outside check, with rq), where the run itself stops dependents first."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import signal, socket, sys, time\n"
        "from urllib.parse import urlsplit\n"
        "url, out = sys.argv[1], sys.argv[2]\n"
        "def bye(*_):\n"
        "    time.sleep(0.5)  # a shutdown that still talks to its dependency\n"
        "    where = urlsplit(url)\n"
        "    with socket.socket() as sock:\n"
        "        sock.settimeout(1)\n"
        "        up = sock.connect_ex((where.hostname, where.port)) == 0\n"
        "    open(out, 'w').write('up' if up else 'gone')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    seen = tmp_path / "seen.txt"
    command = [sys.executable, str(worker), "{services.cache.url}", str(seen)]
    services = '[services.cache]\nrecipe = "redis"\n\n[services.worker]\n'
    services += f'command = {json.dumps(command)}\ndepends_on = ["cache"]\ncoverage = false\n'
    stack = write_stack(tmp_path, ["true"], services)
    outcome = e2ecov("run", "--keep", "-c", str(stack), cwd=tmp_path)
    try:
        assert outcome.code == 0, outcome.output
    finally:  # a kept stack is stopped whatever the run said
        down = e2ecov("down", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert down.code == 0, down.output
    assert down.stdout.index("stopped worker") < down.stdout.index("stopped cache")
    assert seen.read_text() == "up", "the worker's shutdown found its Redis gone"


def test_report_of_a_kept_stack_includes_what_it_ran_since_its_tests(tmp_path: Path) -> None:
    """`report` on a kept stack still running reported the end of the tests, silently (an
    outside check): it asks for a live save first."""
    import httpx

    stack = write_stack(tmp_path, drive("/alpha"), app_service("app"))
    outcome = e2ecov("run", "--keep", "-c", str(stack), cwd=tmp_path)
    try:
        assert outcome.code == 0, outcome.output

        def beta_covered() -> bool:
            report = json.loads((outcome.artifacts / "coverage.json").read_text())
            handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
            return bool(handlers["functions"]["beta"]["summary"]["covered_lines"])

        assert not beta_covered()
        url = outcome.run_json()["services"]["app"]["url"]
        assert httpx.get(f"{url}/beta", timeout=10).status_code == 200  # after the tests
        again = e2ecov("report", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
        assert again.code == 0, again.output
        assert "the kept stack is running: live save acknowledged by 1 process(es)" in again.stdout
        assert beta_covered()
    finally:
        down = e2ecov("down", "--artifacts", str(outcome.artifacts), cwd=tmp_path)
    assert "to report what it ran since its tests: e2ecov report" in down.stdout
