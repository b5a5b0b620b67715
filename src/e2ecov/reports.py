"""Combining the per-process data files and writing every report of the artifacts directory.

coverage.py does the combining (with `[paths]` aliases mapping roots recorded elsewhere, e.g.
inside a container, back to the repository) and the standard reports. e2ecov adds the
grouping per service, the function-level report (from coverage's JSON regions), and the
Markdown summary. Reports use paths relative to the stack file's directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coverage
from coverage.exceptions import CoverageException, NoDataError

try:  # coverage.py's per-file analysis, an internal: see ServiceAnalyser and share_parses
    from coverage.plugin import FileReporter
    from coverage.results import Numbers, analysis_from_file_reporter

    PER_FILE_ANALYSIS = hasattr(coverage.Coverage, "_get_file_reporter")
except ImportError:  # pragma: no cover - another coverage.py: the JSON reports instead
    PER_FILE_ANALYSIS = False

from e2ecov import gocover
from e2ecov.artifacts import SOURCES_FILE, clear_reports
from e2ecov.errors import NoCoverageData
from e2ecov.protocol import DATA_PREFIX, read_ledger

USUAL_CAUSES = """usual causes:
  - the services were not instrumented (coverage = false, or not Python, or PYTHONPATH replaced)
  - the processes were killed before they saved (SIGKILL, or the stack was torn down early)
  - the data directory was not writable by the services
  - the source paths do not match where the code runs (add [run] paths for code run elsewhere)"""


# every Go service's counters together, in one `go tool cover -html` page beside index.html
# (outside `html/go/`, where a service could be named anything)
GO_COMBINED_PAGE = "go-all-services.html"
# what every report (and the run's output) says with its totals when the run lost some
# process's coverage: what is partial (the totals) and why, for a reader who never met the
# ledger ("the processes named LOST was lost" left both to guess, and a process that saved
# earlier is not wholly lost)
PARTIAL = (
    "partial coverage: these totals count only what was saved, and each LOST line names "
    "something missing from them — a process that was killed (or crashed) is counted only up "
    "to its last save, and not at all if it never saved"
)


@dataclass(frozen=True)
class ReportConfig:
    """What the reports need to know about the run (saved in run.json for `e2ecov report`)."""

    root: Path
    source: list[Path]
    paths: dict[str, Path]
    contexts: bool
    fail_under: float = 0.0
    service_fail_under: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    cores: list[str] = field(default_factory=list)
    attribution: str = ""  # as measured by the run ("on ...", "approximate ...", "off ...")
    branch: bool = False
    source_pkgs: list[str] = field(default_factory=list)
    package_dirs: list[Path] = field(default_factory=list)  # where the services found them
    # processes whose coverage the run lost (each as the run said it): the reports' totals
    # leave them out, and every report says so
    lost: list[str] = field(default_factory=list)

    @property
    def approximate(self) -> bool:
        return self.attribution.startswith("approximate")

    @property
    def measured_roots(self) -> list[Path]:
        """Directories whose files are reported: source directories and packages' homes."""
        return [*self.source, *self.package_dirs]

    @property
    def display_root(self) -> Path:
        """Where report paths are relative to: the deepest directory holding the stack file
        and every source (`src/app/x.py` for a stack in `e2e/`, not `/abs/.../src/app/x.py`)."""
        return Path(os.path.commonpath([self.root, *self.source]))

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "source": [str(s) for s in self.source],
            "paths": {k: str(v) for k, v in self.paths.items()},
            "contexts": self.contexts,
            "fail_under": self.fail_under,
            "service_fail_under": self.service_fail_under,
            "branch": self.branch,
            "source_pkgs": self.source_pkgs,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], **extra: Any) -> ReportConfig:
        return cls(
            root=Path(raw["root"]),
            source=[Path(s) for s in raw["source"]],
            paths={k: Path(v) for k, v in raw.get("paths", {}).items()},
            contexts=bool(raw.get("contexts", False)),
            fail_under=float(raw.get("fail_under", 0.0)),
            service_fail_under=dict(raw.get("service_fail_under", {})),
            branch=bool(raw.get("branch", False)),
            source_pkgs=list(raw.get("source_pkgs", [])),
            **extra,
        )


@dataclass(frozen=True)
class Totals:
    """Statements and, with `branch = true`, branches: the percent is then coverage.py's
    measure of both (covered statements and branches over all of them)."""

    statements: int
    missed: int
    percent: float
    branches: int = 0
    branches_missed: int = 0
    # lines with some branch not taken: what coverage.py's text report shows (`BrPart`)
    branches_partial: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "statements": self.statements,
            "missed": self.missed,
            "percent": round(self.percent, 2),
        }
        if self.branches:
            out["branches"] = self.branches
            out["branches_missed"] = self.branches_missed
        return out

    def counts(self) -> str:
        """`134 statements, 17 missed` (and `, 40 branches, 6 missed` when measured)."""
        said = f"{self.statements} statements, {self.missed} missed"
        if self.branches:
            said += f", {self.branches} branches, {self.branches_missed} missed"
        return said


@dataclass
class ReportResult:
    services: dict[str, Totals]
    combined: Totals
    files: list[Path]
    warnings: list[str]
    below: list[str]  # fail_under violations
    unreadable: list[str]  # data files (Python or Go) that could not be read: losses

    def totals(self, *, partial: bool) -> dict[str, Any]:
        """run.json's `totals`: they leave out what was lost (`partial`, or data this report
        could not read; services.<name>.lost says what)."""
        return {
            "combined": self.combined.to_json(),
            "services": {name: totals.to_json() for name, totals in self.services.items()},
            "partial": partial or bool(self.unreadable),
        }


def data_files(data_dir: Path) -> dict[str, list[Path]]:
    """Non-empty data files grouped by service (`coverage.<service>.<pid>.<token>`)."""
    groups: dict[str, list[Path]] = {}
    if not data_dir.is_dir():
        return groups
    for path in sorted(data_dir.glob(DATA_PREFIX + ".*")):
        parts = path.name.split(".")
        if len(parts) >= 4 and path.is_file() and path.stat().st_size > 0:
            groups.setdefault(parts[1], []).append(path)
    return groups


def _readable(groups: dict[str, list[Path]]) -> tuple[dict[str, list[Path]], list[str]]:
    """`groups` without the data files coverage.py cannot open, and a loss for each: combining
    skips such a file with a warning, and a run whose every file was damaged read as "found
    but nothing under source" instead of as coverage lost."""
    kept: dict[str, list[Path]] = {}
    lost: list[str] = []
    for service, paths in groups.items():
        for path in paths:
            try:
                coverage.CoverageData(basename=str(path)).read()
            except CoverageException as exc:
                lost.append(f"{service}: data file {path.name} could not be read: {exc}")
                continue
            kept.setdefault(service, []).append(path)
    return kept, lost


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    """coverage.py names files relative to the current directory when it is created."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _coverage(data_file: Path, config: ReportConfig) -> coverage.Coverage:
    cov = coverage.Coverage(data_file=str(data_file), config_file=False, branch=config.branch)
    aliases = {
        f"mapping{i}": [str(local), foreign]
        for i, (foreign, local) in enumerate(config.paths.items())
    }
    if aliases:
        cov.set_option("paths", aliases)
    roots = config.measured_roots
    cov.set_option("report:include", [f"{s}{os.sep}*" for s in roots] + [str(s) for s in roots])
    cov.set_option("run:disable_warnings", ["no-data-collected", "couldnt-parse"])
    # a source file deleted or renamed since the run is left out (and named in a warning)
    # rather than sinking every report
    cov.set_option("report:ignore_errors", True)
    return cov


def _json_totals(report: dict[str, Any]) -> Totals:
    """A coverage.py JSON report's totals, or one file's (its `summary`)."""
    totals = report["totals"] if "totals" in report else report["summary"]
    return Totals(
        totals["num_statements"],
        totals["missing_lines"],
        float(totals["percent_covered"]),
        totals.get("num_branches", 0),
        totals.get("missing_branches", 0),
        totals.get("num_partial_branches", 0),
    )


def _header(config: ReportConfig) -> list[str]:
    cores = ", ".join(sorted(set(config.cores))) or "unknown"
    lines = [
        f"e2ecov run {config.run_id or '(unknown)'} — measured with coverage.py "
        f"{coverage.__version__}, core: {cores}"
    ]
    if config.contexts or config.attribution:
        lines.append("per-test attribution: " + (config.attribution or "unknown"))
    return lines


@dataclass(frozen=True)
class GoInput:
    """A Go service to report: its GOCOVERDIR is `<artifacts>/go/<name>`."""

    name: str
    binary: str | None
    modules: dict[str, Path]  # module path → its directory, for repository paths

    def to_json(self) -> dict[str, Any]:
        return {"binary": self.binary, "modules": {k: str(v) for k, v in self.modules.items()}}

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any]) -> GoInput:
        modules = {k: Path(v) for k, v in raw.get("modules", {}).items()}
        return cls(name, raw.get("binary"), modules)


@dataclass
class _Python:
    """What the Python part of the reports produced."""

    text: list[str]
    services: dict[str, Totals]
    report: dict[str, Any]
    warnings: list[str]


def build(artifacts: Path, config: ReportConfig, go: Sequence[GoInput] = ()) -> ReportResult:
    """Combine `artifacts/data` (and the Go services' data) and write every report; raises
    NoCoverageData when there is nothing at all."""
    clear_reports(artifacts)
    work = artifacts / ".combined"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    go_services, unreadable = _go_reports(artifacts, config, go, work)
    groups, damaged = _readable(data_files(artifacts / "data"))
    unreadable = [*damaged, *unreadable]
    if not groups and not go_services:
        if unreadable or config.lost:  # there was data: it could not be read, or is gone
            raise NoCoverageData("coverage lost: " + "\n".join([*config.lost, *unreadable]))
        where = f"in {artifacts / 'data'}"
        if go:  # a stack of Go services alone has nothing in data/ by design
            names = ", ".join(g.name for g in go)
            where = f"from the Go services ({names}, in {artifacts / 'go'}) nor {where}"
        raise NoCoverageData(f"no coverage data {where}\n{USUAL_CAUSES}")
    config = dataclasses.replace(
        config, package_dirs=sorted({*config.package_dirs, *package_dirs(artifacts)})
    )
    python = _python_reports(artifacts, config, groups, work) if groups else _no_python(artifacts)
    text = [*_header(config), "", *python.text]
    services = dict(python.services)
    warnings = list(python.warnings)
    func_lines = function_rows(python.report)
    for svc in go_services:
        totals = Totals(
            svc.statements,
            svc.statements - svc.covered,
            _percent(svc.statements, svc.statements - svc.covered),
        )
        services[svc.name] = totals
        text += [
            f"== service {svc.name} (Go, statements as go tool covdata counts them) ==",
            *_table(
                [(f.name, Totals(f.statements, f.missed, f.percent)) for f in svc.files.values()]
            ),
            "",
        ]
        warnings += svc.warnings
    combined_page: Path | None = None  # every Go service's counters together
    if go_services:
        # each Go file once, with what any service ran (replicas of one binary, programs
        # sharing a package): the per-service tables above stay each service's own
        modules = _go_modules(go)
        union = gocover.union(go_services, modules, config.display_root)
        func_lines += union.functions
        warnings += union.warnings
        _merge_go(artifacts, union.files, python.report)
        (artifacts / "coverage.json").write_text(json.dumps(python.report, indent=4))
        if len(go_services) > 1:
            combined_page = artifacts / "html" / GO_COMBINED_PAGE
            made, note = gocover.combined_html(go_services, union, modules, combined_page, work)
            if not made:
                warnings.append(f"no combined Go HTML page: {note}")
                combined_page = None
            elif note:
                warnings.append(f"the combined Go HTML page: {note}")
        _link_go_pages(artifacts / "html" / "index.html", go_services, combined_page)
    combined = _json_totals(python.report)
    if go_services:
        # the TOTAL is the files' (each once), not the services' sum: two services running
        # the same code would count its statements twice
        text += [
            "== combined (Python and Go) ==",
            *_table(sorted(services.items()), label="Service", total=combined),
        ]
        if combined.branches:
            text.append(f"total with branches: {combined.percent:.1f}% ({combined.counts()})")
    text += [*(f"LOST: {w}" for w in [*config.lost, *unreadable])]
    if config.lost or unreadable:
        text.append(PARTIAL)
    text += [f"warning: {w}" for w in warnings]
    (artifacts / "e2e-coverage.txt").write_text("\n".join(text) + "\n")
    func_lines.append(("total:", "(statements)", f"{combined.percent:.1f}%"))
    (artifacts / "e2e-coverage-func.txt").write_text("\n".join(_columns(func_lines)) + "\n")
    below = _below(config, services, combined)
    summary = markdown_summary(config, services, combined, below, go_services, unreadable)
    (artifacts / "summary.md").write_text(summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a") as handle:
            handle.write(summary + "\n")
    files = [artifacts / name for name in (
        "e2e-coverage.txt", "e2e-coverage-func.txt", "html/index.html", "coverage.json",
        "coverage.lcov", "coverage.xml", "summary.md")]  # fmt: skip
    files += [s.html for s in go_services if s.html is not None]
    if combined_page is not None:
        files.append(combined_page)
    return ReportResult(services, combined, files, warnings, below, unreadable)


def _go_reports(
    artifacts: Path, config: ReportConfig, go: Sequence[GoInput], work: Path
) -> tuple[list[gocover.GoService], list[str]]:
    """Each Go service's reports, and why each one that cannot be read (no `go`, a damaged
    GOCOVERDIR, binaries built in different counter modes) could not: a loss the run reports,
    not a reason to sink the Python reports."""
    found, unreadable = [], []
    everyone = _go_modules(go)
    for item in go:
        # the service's own module first (its HTML page is made there), then every other
        # service's: a file is named alike in each service that ran it, and in the union
        modules = {**item.modules, **everyone}
        try:
            svc = gocover.report(
                item.name, artifacts / gocover.GO_DIR / item.name, work,
                artifacts / "html" / "go", modules, config.display_root, item.binary,
            )  # fmt: skip
        except (gocover.GoUnavailable, RuntimeError, OSError) as exc:
            unreadable.append(f"Go service {item.name}: its coverage data could not be read: {exc}")
            continue
        if svc is not None:
            found.append(svc)
    return found, unreadable


def _go_modules(go: Sequence[GoInput]) -> dict[str, Path]:
    """Every Go service's modules (module path → its directory)."""
    return {module: root for item in go for module, root in item.modules.items()}


def _no_python(artifacts: Path) -> _Python:
    """Go services only: the machine formats start empty and get the Go files."""
    report: dict[str, Any] = {
        "meta": {"format": 3, "version": coverage.__version__, "show_contexts": False},
        "files": {},
        "totals": {"num_statements": 0, "covered_lines": 0, "missing_lines": 0,
                   "excluded_lines": 0, "percent_covered": 100.0,
                   "percent_statements_covered": 100.0},
    }  # fmt: skip
    (artifacts / "coverage.lcov").write_text("")
    (artifacts / "coverage.xml").write_text(
        '<?xml version="1.0" ?>\n<coverage version="e2ecov" line-rate="1" branch-rate="0" '
        'lines-covered="0" lines-valid="0"><sources/><packages/></coverage>\n'
    )
    (artifacts / "html").mkdir(exist_ok=True)
    return _Python([], {}, report, [])


def _python_reports(
    artifacts: Path, config: ReportConfig, groups: dict[str, list[Path]], work: Path
) -> _Python:
    with _in_directory(config.display_root):
        # one combine per run: each process's file is read once, into its service's data;
        # the combined data is the union of those (an in-memory merge, no second read)
        by_service: dict[str, coverage.CoverageData] = {}
        service_covs: dict[str, coverage.Coverage] = {}
        for service, paths in groups.items():
            cov = service_covs[service] = _coverage(work / f"{service}.coverage", config)
            cov.combine([str(p) for p in paths], keep=True)
            by_service[service] = cov.get_data()
        merged = coverage.CoverageData(basename=str(work / "combined.coverage"))
        for data in by_service.values():
            merged.update(data)
        merged.write()
        cov = _coverage(work / "combined.coverage", config)
        cov.load()
        share_parses(cov)
        warnings = _unmapped(cov, config) + _vanished(cov, config) + _unimported(config)
        warnings += _changed_since_the_run(cov, artifacts / SOURCES_FILE)
        title = f"e2e coverage — {config.run_id}" + (
            " (attribution approximate)" if config.approximate else ""
        )
        try:
            buffer = io.StringIO()
            cov.report(file=buffer)
            cov.json_report(
                outfile=str(artifacts / "coverage.json"),
                pretty_print=True,
                show_contexts=config.contexts,
            )
            cov.html_report(
                directory=str(artifacts / "html"), title=title, show_contexts=config.contexts
            )
            cov.xml_report(outfile=str(artifacts / "coverage.xml"))
            cov.lcov_report(outfile=str(artifacts / "coverage.lcov"))
        except CoverageException as exc:
            named = [*(str(s) for s in config.source), *config.source_pkgs]
            hints = "".join(f"\n{hint}" for hint in _unimported(config))
            raise NoCoverageData(
                f"coverage data found in {artifacts / 'data'} but nothing under source "
                f"({', '.join(named)}): {exc}{hints}\n{USUAL_CAUSES}"
            ) from exc
        report = json.loads((artifacts / "coverage.json").read_text())
        analyser = ServiceAnalyser(cov, report, config.display_root)
        services: dict[str, Totals] = {}
        text: list[str] = []
        for service in sorted(by_service):
            rows = analyser.rows(service_covs[service], work / f"{service}.json")
            table, services[service] = service_table(rows)
            count = len(groups[service])
            text += [f"== service {service} ({count} data file(s)) ==", *table, ""]
    text += ["== combined ==", buffer.getvalue().rstrip()]
    return _Python(text, services, report, warnings)


def share_parses(cov: coverage.Coverage) -> None:
    """Make every report of `cov` parse each file once, not once per report.

    coverage.py keeps no analysis between reports: each of them (text, JSON, HTML, XML,
    LCOV) asks `Coverage._get_file_reporter` for a new file reporter per file, and a new
    reporter parses its file again, so the report phase parsed every file five times, six
    with the services' tables (25 s for 110 files). A file reporter keeps its parse, so one
    per file, made the first time and handed out again, is parsed once for all of them.
    The reporters live as long as `cov` (coverage.py drops each after its report to keep
    its memory small: here they are the run's measured files, held for the report phase).
    `_get_file_reporter` is coverage.py's internal: where this coverage.py has none, every
    report parses on its own, as before."""
    if not PER_FILE_ANALYSIS:
        return
    made: dict[str, FileReporter] = {}
    own = cov._get_file_reporter

    def reporter(morf: Any) -> FileReporter:
        if not isinstance(morf, str):  # a module object: not what the reports pass
            return own(morf)
        found = made.get(morf)
        if found is None:
            found = made[morf] = own(morf)
        return found

    cov._get_file_reporter = reporter  # type: ignore[method-assign]


class ServiceAnalyser:
    """Each service's figures per file, as coverage.py's own analysis makes them from the
    service's data alone: a line recorded anywhere inside a multi-line statement counts for the
    statement, arcs count as the file's branches. (Matching a service's raw recorded lines
    against the combined report's statements counted an executed multi-line `if (` as missed,
    and left branches out.) So a service that ran everything the run measured reads as the
    combined report, statements, branches and percent.

    coverage.py's public API analyses a Coverage object's whole data: a JSON report per service
    parses every file once more per service (the report phase of the E2E stack took 1.5 times
    plain coverage.py's). The function each of its reports runs per file,
    `analysis_from_file_reporter`, takes any data and a file reporter, which keeps its parse:
    the combined reports' reporters (`share_parses`) serve every service, so no file is
    parsed again here. It is coverage.py's internal, so where
    this coverage.py has none (another version), each service's figures come from a JSON report
    of its data instead: the same figures, slower."""

    def __init__(self, combined: coverage.Coverage, report: dict[str, Any], display_root: Path):
        self._combined = combined
        self._reported = set(report["files"])
        self._prefix = os.path.join(str(display_root), "")  # "/" stays "/"

    def rows(self, service: coverage.Coverage, outfile: Path) -> list[tuple[str, Totals]]:
        """`(report name, figures)` per file of the service's data the combined report has;
        `outfile` is where a JSON report of the service goes when one is needed."""
        if not PER_FILE_ANALYSIS:
            return json_rows(service, outfile)
        data = service.get_data()
        found: list[tuple[str, Totals]] = []
        for measured in data.measured_files():
            name = measured.removeprefix(self._prefix)
            if name not in self._reported:
                continue  # outside source, or not reportable
            # the combined reports' reporter of the file, its parse kept (share_parses)
            reporter = self._combined._get_file_reporter(measured)
            numbers = analysis_from_file_reporter(data, 0, reporter, measured).numbers
            found.append((name, _numbers_totals(numbers)))
        return found


def json_rows(service: coverage.Coverage, outfile: Path) -> list[tuple[str, Totals]]:
    """The service's figures per file from coverage.py's JSON report of its data alone (public
    API, one more analysis of every file). Runs where the current directory is the display
    root, as the combined reports' names are."""
    try:
        service.json_report(outfile=str(outfile))
    except NoDataError:  # nothing of the service's data is under source
        return []
    report = json.loads(outfile.read_text())
    return [(name, _json_totals(entry)) for name, entry in report["files"].items()]


def _numbers_totals(numbers: Numbers) -> Totals:
    """coverage.py's `Numbers` of an analysis as Totals."""
    return Totals(
        numbers.n_statements,
        numbers.n_missing,
        numbers.pc_covered,
        numbers.n_branches,
        numbers.n_missing_branches,
        numbers.n_partial_branches,
    )


def service_table(rows: list[tuple[str, Totals]]) -> tuple[list[str], Totals]:
    """One service's per-file table and totals (coverage.py's percent of statements and
    branches over all the service's files)."""
    total = _sum(rows)
    if not rows:
        return ["(nothing under source)"], total
    return _table(rows), total


def _sum(rows: list[tuple[str, Totals]]) -> Totals:
    statements = sum(t.statements for _, t in rows)
    missed = sum(t.missed for _, t in rows)
    branches = sum(t.branches for _, t in rows)
    branches_missed = sum(t.branches_missed for _, t in rows)
    partial = sum(t.branches_partial for _, t in rows)
    percent = _percent(statements + branches, missed + branches_missed)
    return Totals(statements, missed, percent, branches, branches_missed, partial)


def _table(
    rows: list[tuple[str, Totals]], label: str = "Name", total: Totals | None = None
) -> list[str]:
    """`Name  Stmts  Miss  Cover` rows (with `Branch  BrPart` when branches were measured) and
    a TOTAL (the rows' sum unless `total` is given), as coverage.py's text report shows them:
    the lines with a branch not taken, and the percent never 100 or 0 unless exact (a stack
    of one service read 100% in its own table and 99% in coverage.py's, an outside check)."""
    rows = sorted(rows, key=lambda row: row[0])
    total = total or _sum(rows)
    with_branches = any(t.branches for _, t in [*rows, ("TOTAL", total)])
    width = max(len(label), *(len(r[0]) for r in rows)) if rows else len(label)
    heading = f"{label:<{width}}   Stmts   Miss"
    if with_branches:
        heading += " Branch BrPart"
    lines = [heading + "  Cover", "-" * len(heading + "  Cover")]
    for name, totals in [*rows, ("TOTAL", total)]:
        if name == "TOTAL":
            lines.append(lines[1])
        line = f"{name:<{width}}  {totals.statements:6d} {totals.missed:6d}"
        if with_branches:
            line += f" {totals.branches:6d} {totals.branches_partial:6d}"
        lines.append(line + f" {_shown(totals.percent) + '%':>6}")
    return lines


def _shown(percent: float) -> str:
    """`percent` as coverage.py's text report rounds it: 100 and 0 only when exact."""
    if 0 < percent < 1:
        percent = 1.0
    elif 99 < percent < 100:
        percent = 99.0
    return f"{percent:.0f}"


def _percent(statements: int, missed: int) -> float:
    return 100.0 * (statements - missed) / statements if statements else 100.0


def package_dirs(artifacts: Path) -> list[Path]:
    """Where the services' interpreters found the `source` packages (from the ledger)."""
    found: set[Path] = set()
    for record in read_ledger(artifacts / "processes"):
        found.update(Path(d) for d in record.package_dirs)
    return sorted(found)


def _unimported(config: ReportConfig) -> list[str]:
    """`source` packages no measured process imported: a misspelt name reports nothing of
    what it meant, silently (coverage.py's own warning is off in the services)."""
    homes = {d.stem for d in config.package_dirs}
    return [
        f"source package '{name}' was not imported by any measured process, so none of it is "
        "reported (a misspelt name, or a directory that does not exist?)"
        for name in config.source_pkgs
        if name.rpartition(".")[2] not in homes
    ]


def _vanished(cov: coverage.Coverage, config: ReportConfig) -> list[str]:
    """Measured source files that no longer exist: changed since the run, so not reported."""
    roots = tuple(str(s) + os.sep for s in config.measured_roots)
    gone = sorted(
        f for f in cov.get_data().measured_files() if f.startswith(roots) and not Path(f).exists()
    )
    return [
        f"measured file {f} no longer exists (changed since the run?); not reported" for f in gone
    ]


def _changed_since_the_run(cov: coverage.Coverage, record: Path) -> list[str]:
    """Measured files whose text changed since the run: coverage data holds line numbers,
    so a report made against the new text puts the run's lines on other lines, silently.
    The first report of a run records each file's digest; a later `e2ecov report` compares."""
    digests = {}
    for name in cov.get_data().measured_files():
        with contextlib.suppress(OSError):
            digests[name] = hashlib.sha256(Path(name).read_bytes()).hexdigest()
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        record.write_text(json.dumps(digests, indent=1, sort_keys=True))
        return []
    return [
        f"measured file {name} changed since the run: its figures put the run's line numbers "
        "on the new text"
        for name, digest in sorted(digests.items())
        if recorded.get(name, digest) != digest
    ]


def _unmapped(cov: coverage.Coverage, config: ReportConfig) -> list[str]:
    """Files measured outside every source directory: usually a missing [run] paths entry."""
    roots = tuple(str(s) + os.sep for s in config.measured_roots)
    modules = {str(s) for s in config.measured_roots}  # a `source` module's own file
    outside = [
        f for f in cov.get_data().measured_files() if not f.startswith(roots) and f not in modules
    ]
    if not outside:
        return []
    return [
        f"{len(outside)} measured file(s) are outside the source directories and not reported, "
        f"e.g. {sorted(outside)[0]}; if that code ran elsewhere (a container), map its root "
        'with [run] paths = { "/recorded/root" = "local/path" }'
    ]


def function_report(report: dict[str, Any]) -> list[str]:
    """`path:line  name  percent` per function, then the total: like `go tool covdata func`."""
    total = ("total:", "(statements)", f"{report['totals']['percent_covered']:.1f}%")
    return _columns([*function_rows(report), total])


def _columns(rows: list[tuple[str, str, str]]) -> list[str]:
    width_a = max(len(r[0]) for r in rows)
    width_b = max(len(r[1]) for r in rows)
    return [f"{a:<{width_a}}  {b:<{width_b}}  {c:>6}" for a, b, c in rows]


def function_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One row per Python function of a coverage.py JSON report."""
    rows: list[tuple[str, str, str]] = []
    for path, data in sorted(report["files"].items()):
        for name, region in sorted(
            data.get("functions", {}).items(), key=lambda kv: kv[1]["start_line"]
        ):
            if not name or not region["summary"]["num_statements"]:
                continue
            rows.append(
                (
                    f"{path}:{region['start_line']}:",
                    name,
                    f"{region['summary']['percent_covered']:.1f}%",
                )
            )
    return rows


def _below(config: ReportConfig, services: dict[str, Totals], combined: Totals) -> list[str]:
    below = []
    if config.fail_under > 0 and not combined.statements:
        below.append("nothing under source was measured to hold to fail_under")
    elif combined.percent < config.fail_under:
        shown = _below_shown(combined.percent, config.fail_under)
        below.append(f"total coverage {shown}% is below fail_under {config.fail_under:g}%")
    for service, limit in config.service_fail_under.items():
        measured = services.get(service, Totals(0, 0, 0.0))
        if limit > 0 and not measured.statements:
            # nothing of its source measured reads 100%: it met any bound (an outside check),
            # where coverage.py's --fail-under says "No data to report"
            below.append(f"service {service} has nothing under source to measure its fail_under")
            continue
        got = measured.percent
        if got < limit:
            shown = _below_shown(got, limit)
            below.append(f"service {service} coverage {shown}% is below its fail_under {limit:g}%")
    return below


def _below_shown(percent: float, limit: float) -> str:
    """`percent` with as many decimals as it takes to read below `limit` (76.087 against
    76.1 read "76.1% is below fail_under 76.1%")."""
    for decimals in range(1, 6):
        shown = f"{percent:.{decimals}f}"
        if float(shown) < limit:
            return shown
    return f"{percent:.6f}"


def markdown_summary(
    config: ReportConfig,
    services: dict[str, Totals],
    combined: Totals,
    below: list[str],
    go_services: Sequence[gocover.GoService] = (),
    unreadable: Sequence[str] = (),
) -> str:
    lost = [*config.lost, *unreadable]
    lines = [
        f"### End-to-end coverage ({config.run_id})" + (" — partial" if lost else ""),
        "",
        *(f"_{h}_  " for h in _header(config)[1:]),
        "",
    ]
    lines += ["| service | statements | missed | cover |", "|---|---:|---:|---:|"]
    for name, totals in sorted(services.items()):
        lines.append(f"| {name} | {totals.statements} | {totals.missed} | {totals.percent:.1f}% |")
    lines.append(
        f"| **total** | **{combined.statements}** | **{combined.missed}** "
        f"| **{combined.percent:.1f}%** |"
    )
    if combined.branches:
        lines += [
            "",
            f"Each cover counts branches too (coverage.py's measure with `branch = true`); "
            f"the total: {combined.counts()}.",
        ]
    lines += ["", f"core: {', '.join(sorted(set(config.cores))) or 'unknown'}"]
    lines += [f"- Go service {s.name}: statements as `go tool covdata` counts them; HTML "
              f"`html/go/{s.name}.html`" for s in go_services if s.html is not None]  # fmt: skip
    lines += [f"- :x: {b}" for b in below]
    if lost:
        lines += ["", f"**{PARTIAL}**", *(f"- :x: LOST: {loss}" for loss in lost)]
    return "\n".join(lines) + "\n"


def _merge_go(artifacts: Path, files: dict[str, gocover.GoFile], report: dict[str, Any]) -> None:
    """Put the Go files (each once, `gocover.union`) into the machine formats beside the
    Python ones, and make their totals the combined ones (statements, as `go tool covdata`
    counts them). A JSON entry names the services that ran the file in `services`, and in
    `service` too when only one did."""
    totals = report["totals"]
    lcov: list[str] = []
    packages: dict[str, list[gocover.GoFile]] = {}
    for go_file in sorted(files.values(), key=lambda f: f.name):
        hit = sorted(n for n, c in go_file.lines.items() if c)
        missed = sorted(n for n, c in go_file.lines.items() if not c)
        ran_by: dict[str, Any] = {"services": sorted(go_file.services)}
        if len(go_file.services) == 1:
            ran_by["service"] = go_file.services[0]
        report["files"][go_file.name] = {
            "language": "go",
            **ran_by,
            "executed_lines": hit,
            "missing_lines": missed,
            "excluded_lines": [],
            "summary": {
                "num_statements": go_file.statements,
                "covered_lines": go_file.covered,
                "missing_lines": go_file.missed,
                "excluded_lines": 0,
                "percent_covered": go_file.percent,
            },
        }
        totals["num_statements"] += go_file.statements
        totals["covered_lines"] += go_file.covered
        totals["missing_lines"] += go_file.missed
        lcov += [f"SF:{go_file.name}", *(f"DA:{n},{c}" for n, c in sorted(go_file.lines.items()))]
        lcov += [f"LF:{len(go_file.lines)}", f"LH:{len(hit)}", "end_of_record"]
        packages.setdefault(go_file.package, []).append(go_file)
    statements = totals["num_statements"]
    # coverage.py's measure: covered statements and branches over all of them (Go's
    # statements join both counts; Go has no branch data)
    branches = totals.get("num_branches", 0)
    missed = totals["missing_lines"] + totals.get("missing_branches", 0)
    totals["percent_covered"] = _percent(statements + branches, missed)
    totals["percent_covered_display"] = f"{totals['percent_covered']:.0f}"
    if "percent_statements_covered" in totals:
        totals["percent_statements_covered"] = _percent(statements, totals["missing_lines"])
        totals["percent_statements_covered_display"] = f"{totals['percent_statements_covered']:.0f}"
    with (artifacts / "coverage.lcov").open("a") as handle:
        handle.write("\n".join(lcov) + "\n")
    _merge_cobertura(artifacts / "coverage.xml", packages)


def _merge_cobertura(path: Path, packages: dict[str, list[gocover.GoFile]]) -> None:
    tree = ET.parse(path)  # noqa: S314 - coverage.py's own output of this run
    root = tree.getroot()
    container = root.find("packages")
    if container is None:
        container = ET.SubElement(root, "packages")
    valid = int(root.get("lines-valid", "0"))
    covered = int(root.get("lines-covered", "0"))
    for name, files in sorted(packages.items()):
        package = ET.SubElement(container, "package", name=name, complexity="0")
        classes = ET.SubElement(package, "classes")
        package_lines = package_hit = 0
        for go_file in files:
            hits = sum(1 for c in go_file.lines.values() if c)
            rate = hits / len(go_file.lines) if go_file.lines else 1.0
            element = ET.SubElement(classes, "class", name=Path(go_file.name).name)
            element.set("filename", go_file.name)
            element.set("complexity", "0")
            element.set("line-rate", f"{rate:.4g}")
            element.set("branch-rate", "0")
            ET.SubElement(element, "methods")
            lines = ET.SubElement(element, "lines")
            for number, count in sorted(go_file.lines.items()):
                ET.SubElement(lines, "line", number=str(number), hits=str(count))
            package_lines += len(go_file.lines)
            package_hit += hits
        rate = package_hit / package_lines if package_lines else 1.0
        package.set("line-rate", f"{rate:.4g}")
        package.set("branch-rate", "0")
        valid += package_lines
        covered += package_hit
    root.set("lines-valid", str(valid))
    root.set("lines-covered", str(covered))
    root.set("line-rate", f"{covered / valid if valid else 1.0:.4g}")
    tree.write(path, xml_declaration=True, encoding="unicode")


def _link_go_pages(
    index: Path, go_services: Sequence[gocover.GoService], combined: Path | None = None
) -> None:
    """The HTML index links each Go service's page (written by `go tool cover -html`), and
    the page of all of them together when there are several."""
    pages = [s for s in go_services if s.html is not None]
    if not pages and combined is None:
        return
    links = " · ".join(
        ([f'<a href="{combined.name}">all Go services together</a>'] if combined else [])
        + [f'<a href="go/{s.name}.html">{s.name}</a>' for s in pages]
    )
    note = f'<p class="e2ecov-go">Go services (go tool cover -html): {links}</p>'
    if index.is_file():
        html = index.read_text()
        index.write_text(html.replace("</body>", note + "\n</body>", 1))
    else:
        index.write_text(f"<!doctype html>\n<html><body>{note}</body></html>\n")
