"""A service's own figures are coverage.py's analysis of its data: with one service they are
the combined report's, statements, branches and percent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2ecov.reports import PER_FILE_ANALYSIS, ReportConfig, _coverage, _in_directory, build
from tests.support.pythons import missing_coverage, pythons312

# 3.12+ records a line event on each line of a multi-line condition it evaluates
PYTHONS = [Path(sys.executable), *pythons312()]

# an `if (` spread over lines: the interpreter records the condition's own lines, which only
# coverage.py's analysis maps to the statement's first line
CHECK = """\
def check(path):
    if (
        path.startswith("/")
        and len(path) > 0
    ):
        return 200
    return 404


def other(flag):
    if flag:
        return 1
    return 2
"""


def _measure(
    tmp_path: Path, service: str, calls: str, branch: bool, python: Path = Path(sys.executable)
) -> None:
    if reason := missing_coverage(python):
        pytest.fail(reason)
    data = tmp_path / "artifacts" / "data"
    data.mkdir(parents=True, exist_ok=True)
    measure = (
        "import coverage, sys; sys.path.insert(0, 'src');"
        f"cov = coverage.Coverage(data_file={str(data / f'coverage.{service}.1.x')!r},"
        f" branch={branch});"
        f"cov.start(); import check; {calls}; cov.stop(); cov.save()"
    )
    subprocess.run([str(python), "-c", measure], cwd=tmp_path, check=True)


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "check.py").write_text(CHECK)
    return src


@pytest.mark.parametrize("python", PYTHONS, ids=lambda python: python.parent.parent.name)
@pytest.mark.parametrize("branch", [False, True])
def test_one_service_reads_as_the_combined_report(
    tmp_path: Path, branch: bool, python: Path
) -> None:
    """The service's table counted the executed multi-line `if (` as missed (it matched the
    raw recorded lines against the statements) and left branches out: `svc 77.8%` beside a
    combined 88.9%, and a per-service fail_under failed a run coverage.py passed."""
    src = _source(tmp_path)
    _measure(tmp_path, "svc", "check.check('/x'); check.other(True)", branch, python)
    config = ReportConfig(
        root=tmp_path, source=[src], paths={}, contexts=False, branch=branch,
        service_fail_under={"svc": 65.0},
    )  # fmt: skip
    result = build(tmp_path / "artifacts", config)
    assert result.services["svc"] == result.combined
    assert result.combined.missed == 2  # `return 404`, `return 2`
    assert (result.combined.branches > 0) == branch
    assert result.below == []
    text = (tmp_path / "artifacts" / "e2e-coverage.txt").read_text()
    service_table = text.split("== service svc", 1)[1].split("== combined ==", 1)[0]
    total_row = service_table.split("TOTAL", 1)[1].split()
    assert [int(total_row[0]), int(total_row[1])] == [result.combined.statements, 2]
    assert (" Branch BrPart " in service_table) == branch
    # one service: its table reads as coverage.py's own (BrPart, and its rounding)
    combined_table = text.split("== combined ==", 1)[1]
    combined_total = combined_table.split("TOTAL", 1)[1].split("\n", 1)[0].split()
    assert service_table.split("TOTAL", 1)[1].split("\n", 1)[0].split() == combined_total


def test_percent_is_rounded_as_coverage_py_shows_it() -> None:
    """100% and 0% only when exact: 311 of 312 statements read 100% in a service's table
    beside coverage.py's 99% (an outside check)."""
    from e2ecov.reports import _shown

    assert [_shown(p) for p in (100.0, 99.68, 99.4, 50.5, 0.25, 0.0)] == [
        "100", "99", "99", "50", "1", "0",
    ]  # fmt: skip


def test_the_public_report_route_gives_the_same_figures(tmp_path: Path) -> None:
    """Where coverage.py has no per-file analysis to call, a JSON report of each service's
    data alone gives its figures: the same ones."""
    from e2ecov.reports import ServiceAnalyser, json_rows

    src = _source(tmp_path)
    _measure(tmp_path, "a", "check.check('/x')", branch=True)
    _measure(tmp_path, "b", "check.other(False); check.check('')", branch=True)
    config = ReportConfig(root=tmp_path, source=[src], paths={}, contexts=False, branch=True)
    build(tmp_path / "artifacts", config)
    work = tmp_path / "work"
    work.mkdir()
    with _in_directory(config.display_root):
        combined = _coverage(tmp_path / "artifacts" / ".combined" / "combined.coverage", config)
        combined.load()
        analyser = ServiceAnalyser(combined, {"files": {"src/check.py": {}}}, tmp_path)
        for name in ("a", "b"):
            service = _coverage(tmp_path / "artifacts" / ".combined" / f"{name}.coverage", config)
            service.load()
            assert analyser.rows(service, work / "x.json") == json_rows(
                service, work / f"{name}.json"
            )
            assert analyser.rows(service, work / "x.json")[0][1].branches > 0


def test_the_reports_parse_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of coverage.py's reports (text, JSON, HTML, XML, LCOV) made its own file reporter
    per file, and the services' tables another: every file was parsed six times (25 s for
    110 files). They share one reporter per file now. Counted, not timed: the parser runs
    as it is, each call noted."""
    from coverage.parser import PythonParser

    if not PER_FILE_ANALYSIS:
        pytest.skip("this coverage.py has no per-file reporters to share")
    src = _source(tmp_path)
    (src / "other.py").write_text("def twice(x):\n    return 2 * x\n")
    _measure(tmp_path, "a", "check.check('/x'); import other; other.twice(1)", branch=True)
    _measure(tmp_path, "b", "check.other(False)", branch=True)
    parsed: list[str] = []
    parse = PythonParser.parse_source

    def noted(parser: PythonParser) -> None:
        parsed.append(Path(parser.filename).name)
        parse(parser)

    monkeypatch.setattr(PythonParser, "parse_source", noted)
    config = ReportConfig(root=tmp_path, source=[src], paths={}, contexts=False, branch=True)
    result = build(tmp_path / "artifacts", config)
    assert sorted(parsed) == ["check.py", "other.py"]
    assert set(result.services) == {"a", "b"}
    assert any((tmp_path / "artifacts" / "html").glob("*check_py.html"))
