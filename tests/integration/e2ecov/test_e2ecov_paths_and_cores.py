"""Path mapping (data recorded under another root) and the coverage core per Python version."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.e2ecov.e2ecov_harness import APP, Outcome, drive, e2ecov, toml_list
from tests.support.pythons import missing_coverage, pythons312

# each prepared 3.12+ (their sys.monitoring differs); skipped only on a machine with none
PYTHONS_312 = pytest.mark.parametrize(
    "py312",
    pythons312()
    or [pytest.param(None, marks=pytest.mark.skip(reason="no Python 3.12+ on this machine"))],
    ids=lambda python: python.parent.parent.name if python else "none",
)


def _require_coverage(python: Path) -> None:
    if reason := missing_coverage(python):
        pytest.fail(reason)


def _stack(
    repo: Path, app_dir: Path, python: str, run_extra: str, steps: tuple[str, ...] = ()
) -> Path:
    command = [python, "-m", "sampleapp.server", "--port", "{port}"]
    path = repo / "stack.toml"
    path.write_text(
        f"""[run]
artifacts = "out"
tests = {toml_list(drive(*(steps or ("/alpha", "/beta"))))}
source = ["app/sampleapp"]
{run_extra}

[services.app]
command = {toml_list(command)}
cwd = {json.dumps(str(app_dir))}
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    )
    return path


def test_data_recorded_under_another_root_reports_against_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    container = tmp_path / "container" / "srv"  # where the code "runs", as inside an image
    shutil.copytree(APP, repo / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(APP, container / "app", ignore=shutil.ignore_patterns("__pycache__"))
    stack = _stack(repo, container / "app", sys.executable, f'paths = {{ "{container}" = "." }}')
    outcome = e2ecov("run", "-c", str(stack), cwd=repo)
    assert outcome.code == 0, outcome.output
    raw = outcome.run_json()["processes"][0]["data_file"]
    import coverage

    recorded = coverage.CoverageData(str(outcome.artifacts / raw))  # relative to the artifacts
    recorded.read()
    assert any(f.startswith(str(container)) for f in recorded.measured_files())
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    assert "app/sampleapp/handlers.py" in report["files"], list(report["files"])
    assert all(not name.startswith(str(container)) for name in report["files"])
    handlers = report["files"]["app/sampleapp/handlers.py"]
    assert handlers["functions"]["alpha"]["summary"]["percent_covered"] == 100.0
    assert "app/sampleapp/handlers.py:" in (outcome.artifacts / "e2e-coverage-func.txt").read_text()
    assert "SF:app/sampleapp/handlers.py" in (outcome.artifacts / "coverage.lcov").read_text()


def test_unmapped_foreign_root_is_explained(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(APP, repo / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(APP, elsewhere / "app", ignore=shutil.ignore_patterns("__pycache__"))
    stack = _stack(repo, elsewhere / "app", sys.executable, "")
    outcome = e2ecov("run", "-c", str(stack), cwd=repo)
    # nothing under the repository's source ran: the report says why instead of showing 0 %
    assert outcome.code in (0, 4), outcome.output
    assert "measured nothing under source" in outcome.output
    assert "[run] paths" in outcome.output


def _run_on(py312: Path, tmp_path: Path, run_extra: str, *steps: str) -> Outcome:
    """e2ecov on the sample app run by `py312`, from a copy of it as the repository."""
    _require_coverage(py312)
    repo = tmp_path / "repo"
    shutil.copytree(APP, repo / "app", ignore=shutil.ignore_patterns("__pycache__"))
    stack = _stack(repo, repo / "app", str(py312), run_extra, steps)
    outcome = e2ecov("run", "-c", str(stack), cwd=repo)
    assert outcome.code == 0, outcome.output
    return outcome


@PYTHONS_312
def test_sysmon_core_on_312_without_contexts(tmp_path: Path, py312: Path) -> None:
    outcome = _run_on(py312, tmp_path, "contexts = false")
    assert outcome.run_json()["cores"] == ["sysmon"]
    assert "core: sysmon" in (outcome.artifacts / "e2e-coverage.txt").read_text()
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    assert (
        report["files"]["app/sampleapp/handlers.py"]["functions"]["beta"]["summary"][
            "percent_covered"
        ]
        == 100.0
    )


@PYTHONS_312
def test_sysmon_core_measures_again_after_a_reset(tmp_path: Path, py312: Path) -> None:
    """sys.monitoring turns a line's event off once it fired: after `reset`, code that had
    run before was never measured again (0 % for a handler the tests ran after it)."""
    outcome = _run_on(py312, tmp_path, "contexts = false", "/alpha", "reset", "/alpha")
    assert outcome.run_json()["cores"] == ["sysmon"]
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    functions = report["files"]["app/sampleapp/handlers.py"]["functions"]
    assert functions["alpha"]["summary"]["percent_covered"] == 100.0


@PYTHONS_312
def test_contexts_select_ctrace_even_on_312(tmp_path: Path, py312: Path) -> None:
    outcome = _run_on(py312, tmp_path, "contexts = true")
    assert outcome.run_json()["cores"] == ["ctrace"]
