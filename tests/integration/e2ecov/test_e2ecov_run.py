"""A full run against the sample service: reports, contexts, run.json, environment."""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.e2ecov.e2ecov_harness import (
    SAMPLES,
    app_service,
    e2ecov,
    pytest_command,
    write_stack,
)

REPORT_FILES = [
    "e2e-coverage.txt",
    "e2e-coverage-func.txt",
    "html/index.html",
    "html/function_index.html",
    "html/class_index.html",
    "coverage.json",
    "coverage.lcov",
    "coverage.xml",
    "summary.md",
]


@pytest.fixture(scope="module")
def happy(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real run: the sample app with a named port, two pytest tests on two endpoints."""
    root = tmp_path_factory.mktemp("happy")
    env_check = root / "env_check.py"
    env_check.write_text(
        "import json, os, sys\n"
        "keys = ['E2E_APP_URL', 'E2E_APP_OPS_URL', 'E2E_OTHER_URL',\n"
        "        'E2ECOV_RUN_ID', 'E2ECOV_ARTIFACTS']\n"
        "with open('env.json', 'w') as f:\n"
        "    json.dump({k: os.environ.get(k) for k in keys}, f)\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    tests = [sys.executable, str(env_check), *pytest_command()]
    services = app_service(
        "app", extra='env = { SAMPLE_OPS = "{port.ops}", SAMPLE_ART = "{artifacts}" }'
    )
    services += app_service("other", extra='depends_on = ["app"]\ncoverage = false')
    stack = write_stack(root, tests, services)
    outcome = e2ecov("run", "-c", str(stack), cwd=root)
    return root, outcome


def test_run_passes_and_prints_one_line_per_phase(happy) -> None:  # type: ignore[no-untyped-def]
    _root, outcome = happy
    assert outcome.code == 0, outcome.output
    for phase in ("prepare", "start + health", "test", "flush", "report"):
        assert f"e2ecov ▸ {phase}" in outcome.stdout
        assert f"e2ecov ✓ {phase} done in " in outcome.stdout
    assert "2 passed" in outcome.stdout
    assert "\r" not in outcome.stdout  # no spinner when not on a terminal


def test_every_report_exists_and_parses(happy) -> None:  # type: ignore[no-untyped-def]
    _root, outcome = happy
    out = outcome.artifacts
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    report = json.loads((out / "coverage.json").read_text())
    assert report["totals"]["num_statements"] > 0
    ET.parse(out / "coverage.xml")
    lcov = (out / "coverage.lcov").read_text()
    assert lcov.count("end_of_record") == len(report["files"])
    assert "SF:" in lcov and "DA:" in lcov
    text = (out / "e2e-coverage.txt").read_text()
    assert "== service app" in text and "== combined ==" in text and "core: ctrace" in text
    assert "| **total** |" in (out / "summary.md").read_text()
    assert list((out / "data").iterdir()), "raw data, one file per process"
    assert not (out / "diagnostics").exists()


def test_function_report_matches_json(happy) -> None:  # type: ignore[no-untyped-def]
    _root, outcome = happy
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    lines = (outcome.artifacts / "e2e-coverage-func.txt").read_text().splitlines()
    assert lines[-1].split()[:2] == ["total:", "(statements)"]
    assert lines[-1].split()[-1] == f"{report['totals']['percent_covered']:.1f}%"
    rows = {line.split()[1]: line.split() for line in lines[:-1]}
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    for name in ("alpha", "beta", "never_called"):
        expected = handlers["functions"][name]
        location, _, percent = rows[name]
        assert location.endswith(f"handlers.py:{expected['start_line']}:")
        assert percent == f"{expected['summary']['percent_covered']:.1f}%"
    assert rows["alpha"][2] == "100.0%" and rows["never_called"][2] == "0.0%"
    server = next(v for k, v in report["files"].items() if k.endswith("server.py"))
    do_get = server["functions"]["Handler.do_GET"]["start_line"]
    assert rows["Handler.do_GET"][0].endswith(f"server.py:{do_get}:")


def test_contexts_attribute_each_line_to_its_test(happy) -> None:  # type: ignore[no-untyped-def]
    _root, outcome = happy
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    handlers = next(v for k, v in report["files"].items() if k.endswith("handlers.py"))
    alpha = handlers["functions"]["alpha"]
    beta = handlers["functions"]["beta"]
    for line in alpha["executed_lines"][1:]:
        assert handlers["contexts"][str(line)] == ["e2e/check_endpoints.py::test_alpha"]
    for line in beta["executed_lines"]:
        assert handlers["contexts"][str(line)] == ["e2e/check_endpoints.py::test_beta"]
    html = next((outcome.artifacts / "html").glob("*handlers_py.html")).read_text()
    assert "test_alpha" in html and "test_beta" in html


def test_run_json_and_test_environment(happy) -> None:  # type: ignore[no-untyped-def]
    root, outcome = happy
    run = outcome.run_json()
    assert run["exit_code"] == 0
    assert [p["name"] for p in run["phases"]] == [
        "prepare",
        "start",
        "health",
        "test",
        "flush",
        "report",
    ]
    assert all(p["duration_s"] is not None and p["started"] for p in run["phases"])
    app, other = run["services"]["app"], run["services"]["other"]
    assert app["url"].startswith("http://127.0.0.1:") and app["pids"] and app["data_files"]
    assert app["lost"] == [] and app["started"] <= app["ready"]
    assert other["ready"] <= other["started"] or other["started"] >= app["ready"]  # depends_on
    assert other["data_files"] == []
    assert run["totals"]["services"]["app"]["percent"] == pytest.approx(
        run["totals"]["combined"]["percent"], abs=0.01
    )
    assert run["cores"] == ["ctrace"]
    env = json.loads((root / "env.json").read_text())
    assert env["E2E_APP_URL"] == app["url"]
    assert env["E2E_OTHER_URL"] == other["url"] and env["E2E_OTHER_URL"] != env["E2E_APP_URL"]
    assert (
        env["E2E_APP_OPS_URL"].startswith("http://127.0.0.1:")
        and env["E2E_APP_OPS_URL"] != app["url"]
    )
    assert env["E2ECOV_RUN_ID"] == run["run_id"]
    assert env["E2ECOV_ARTIFACTS"] == str(outcome.artifacts)


def test_report_rebuilds_from_data(happy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _root, outcome = happy
    copy = tmp_path / "copy"
    shutil.copytree(outcome.artifacts, copy)
    for name in REPORT_FILES:
        (copy / name).unlink()
    rebuilt = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path)
    assert rebuilt.code == 0, rebuilt.output
    for name in REPORT_FILES:
        assert (copy / name).is_file(), name
    before = json.loads((outcome.artifacts / "coverage.json").read_text())["totals"]
    after = json.loads((copy / "coverage.json").read_text())["totals"]
    assert before["percent_covered"] == after["percent_covered"]


def test_report_without_data_exits_4_with_causes(tmp_path: Path) -> None:
    outcome = e2ecov("report", "--artifacts", str(tmp_path), cwd=tmp_path)
    assert outcome.code == 4
    assert "no coverage data" in outcome.stderr
    assert "killed before they saved" in outcome.stderr and "not writable" in outcome.stderr
    assert "source paths do not match" in outcome.stderr


def test_samples_are_not_collected_by_the_project() -> None:
    assert not list(SAMPLES.rglob("test_*.py")) and os.path.isdir(SAMPLES)


def test_a_report_over_damaged_data_leaves_no_earlier_figures(  # type: ignore[no-untyped-def]
    happy, tmp_path: Path
) -> None:
    """The data damaged or lost after a run: `e2ecov report` fails, and the earlier run's
    reports are gone with it — they no longer read as the figures of this report."""
    _root, outcome = happy
    copy = tmp_path / "copy"
    shutil.copytree(outcome.artifacts, copy)
    damaged = list((copy / "data").iterdir())
    assert damaged
    for path in damaged:
        path.write_bytes(b"not a coverage data file")
    again = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path)
    assert again.code == 4, again.output
    assert "coverage lost" in again.stderr or "no coverage data" in again.stderr, again.stderr
    left = [name for name in REPORT_FILES if (copy / name).exists()]
    assert left == [] and not (copy / "html").exists(), left


def test_a_report_after_a_data_file_was_deleted_says_so(  # type: ignore[no-untyped-def]
    happy, tmp_path: Path
) -> None:
    """A data file deleted after the run: `e2ecov report` left it out of the totals, exit 0,
    saying nothing, and run.json kept the run's figures (an outside check)."""
    _root, outcome = happy
    copy = tmp_path / "copy"
    shutil.copytree(outcome.artifacts, copy)
    recorded = [f for svc in outcome.run_json()["services"].values() for f in svc["data_files"]]
    assert recorded
    (copy / recorded[0]).unlink()
    again = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path)
    assert again.code == 4, again.output
    if len(recorded) == 1:  # nothing left to report: the loss is the answer
        assert f"data file {recorded[0]} (saved by the run) is gone" in again.stderr
        assert not (copy / "coverage.json").exists()
        return
    text = (copy / "e2e-coverage.txt").read_text()
    assert f"data file {recorded[0]} (saved by the run) is gone" in text
    run = json.loads((copy / "run.json").read_text())
    assert run["totals"]["partial"] is True
    report = json.loads((copy / "coverage.json").read_text())
    assert run["totals"]["combined"]["percent"] == pytest.approx(
        report["totals"]["percent_covered"], abs=0.1
    )


def test_a_report_over_emptied_or_no_data_says_so_and_keeps_no_old_totals(  # type: ignore[no-untyped-def]
    happy, tmp_path: Path
) -> None:
    """A data file emptied since the run (a full disk, a bad copy) was read as one that
    measured nothing: exit 0, no loss named. With no data left at all, run.json kept the
    earlier report's totals (an outside check)."""
    _root, outcome = happy
    copy = tmp_path / "copy"
    shutil.copytree(outcome.artifacts, copy)
    recorded = [f for svc in outcome.run_json()["services"].values() for f in svc["data_files"]]
    (copy / recorded[0]).write_bytes(b"")
    again = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path)
    assert again.code == 4, again.output
    assert f"data file {recorded[0]} (saved by the run) is empty" in again.output
    shutil.rmtree(copy / "data")
    nothing = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path)
    assert nothing.code == 4, nothing.output
    assert json.loads((copy / "run.json").read_text())["totals"] == {}
