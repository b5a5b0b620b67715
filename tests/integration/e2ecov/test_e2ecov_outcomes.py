"""Exit codes and their causes: failed tests, fail_under, grace then SIGKILL, recipes, doctor."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.integration.e2ecov.e2ecov_harness import app_service, drive, e2ecov, write_stack


def test_failed_tests_exit_1_with_reports_and_diagnostics(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, drive("/alpha", "fail"), app_service("app"))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 1, outcome.output
    assert (outcome.artifacts / "coverage.json").is_file(), "reports are still written"
    summary = (outcome.artifacts / "diagnostics" / "summary.txt").read_text()
    assert "the tests failed" in summary.splitlines()[1]
    assert "alpha 3" in (outcome.artifacts / "diagnostics" / "tests.log").read_text()
    assert (outcome.artifacts / "diagnostics" / "app" / "stderr.log").is_file()
    assert outcome.run_json()["exit_code"] == 1


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
