"""End-to-end coverage pipeline benchmark: `make e2e-coverage` by phase, and what
instrumentation costs the Gateway.

1. **Pipeline** — runs `make e2e-coverage` (after making sure `.venv` exists, untimed) and
   prints its wall time split by e2ecov's phases from `build/e2e/run.json`.
2. **Overhead** — for each interpreter, one e2ecov run of a small stack: PostgreSQL plus two
   identical Gateways, `plain` (coverage = false) and `measured` (coverage = true, e2ecov's
   agent inside, exactly as in the E2E stack). The test command is this script in `drive`
   mode: wrk (bench/ingest.py's helpers) against the two Gateways in alternation — A B, then
   B A, ... — so both see the same machine state; the overhead is the ratio of the median
   throughputs. Cases: the default interpreter (3.11: the `ctrace` core), and 3.12+ where
   pyenv has one, with per-test contexts off (the `sys.monitoring` core) and on (`ctrace`).
   3.12 runs the Gateway from a throwaway venv under build/ with the project installed.

Targets (2-core machine): the whole run ≤ 90 s; overhead ≤ 2x on 3.11 and ≤ 1.3x with the
sys.monitoring core.

    python bench/e2e_pipeline.py [--duration 5] [--rounds 2] [--connections 32]
                                 [--skip-pipeline] [--skip-overhead] [--python PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import run_wrk
from tests.support.services import GATEWAY_TOKENS, write_tokens_file

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench-e2e"
PIPELINE_TARGET_S = 90.0
WORKLOAD = "new"  # every signal a new RR: the longest code path per request
PYENV = Path.home() / ".pyenv" / "versions"


@dataclass(frozen=True)
class Case:
    label: str
    python: str  # interpreter running the Gateways
    contexts: bool
    target: float  # overhead target (x)


# ---- 1. the pipeline ---------------------------------------------------------------------


def pipeline() -> tuple[float, dict[str, object]]:
    subprocess.run(["make", "-s", ".venv/.installed"], cwd=REPO, check=True)
    started = time.monotonic()
    result = subprocess.run(["make", "e2e-coverage"], cwd=REPO)
    wall = time.monotonic() - started
    record: dict[str, object] = json.loads((REPO / "build" / "e2e" / "run.json").read_text())
    if result.returncode != 0:
        print(f"\nmake e2e-coverage exited {result.returncode} (figures below still apply)")
    return wall, record


def print_pipeline(wall: float, record: dict[str, object]) -> None:
    phases = {p["name"]: p["duration_s"] for p in record["phases"]}  # type: ignore[attr-defined]
    # start and health overlap (services start as soon as their dependencies are healthy):
    # "start + health" is the health phase, which spans both
    shown = [
        ("prepare", phases.get("prepare", 0.0)),
        ("start + health", phases.get("health", 0.0)),
        ("test", phases.get("test", 0.0)),
        ("flush", phases.get("flush", 0.0)),
        ("report", phases.get("report", 0.0)),
    ]
    accounted = sum(seconds for _, seconds in shown)
    shown.append(("make, teardown, summary", max(0.0, wall - accounted)))
    print(f"\n`make e2e-coverage` — exit {record.get('exit_code')}, run {record.get('run_id')}")
    print(f"{'phase':26} {'seconds':>8}")
    for name, seconds in shown:
        print(f"{name:26} {seconds:8.2f}")
    verdict = "ok" if wall <= PIPELINE_TARGET_S else "OVER TARGET"
    print(f"{'total (wall)':26} {wall:8.2f}   target ≤ {PIPELINE_TARGET_S:.0f} s: {verdict}")


# ---- 3. e2ecov's own overhead --------------------------------------------------------------


def plain_coverage(data: Path, work: Path, source: list[str], contexts: bool) -> float:
    """What a team would do with coverage.py alone: combine the same files, write the same
    reports (text, JSON, HTML, Cobertura, LCOV). Seconds."""
    import io

    import coverage

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    cov = coverage.Coverage(data_file=str(work / ".coverage"), config_file=False)
    cov.set_option("report:include", [f"{s}/*" for s in source])
    cov.set_option("run:disable_warnings", ["no-data-collected", "couldnt-parse"])
    cov.set_option("report:ignore_errors", True)
    cov.combine([str(p) for p in sorted(data.glob("coverage.*"))], keep=True)
    cov.save()
    cov.report(file=io.StringIO())
    cov.json_report(outfile=str(work / "coverage.json"), pretty_print=True, show_contexts=contexts)
    cov.html_report(directory=str(work / "html"), show_contexts=contexts)
    cov.xml_report(outfile=str(work / "coverage.xml"))
    cov.lcov_report(outfile=str(work / "coverage.lcov"))
    return time.perf_counter() - started


def e2ecov_report(artifacts: Path, work: Path, with_go: bool) -> float:
    """e2ecov's report phase on a copy of the run's data. Seconds."""
    from e2ecov import reports

    record = json.loads((artifacts / "run.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for entry in ("data", "processes", *(["go"] if with_go else [])):
        if (artifacts / entry).is_dir():
            shutil.copytree(artifacts / entry, work / entry)
    config = reports.ReportConfig.from_json(record["config"], run_id=record["run_id"])
    go = [
        reports.GoInput.from_json(name, raw) for name, raw in record["config"].get("go", {}).items()
    ]
    started = time.perf_counter()
    reports.build(work, config, go if with_go else ())
    return time.perf_counter() - started


def report_overhead(artifacts: Path, rounds: int) -> None:
    """e2ecov's phases of the last run beside plain coverage.py on the same data files."""
    record = json.loads((artifacts / "run.json").read_text())
    phases = {p["name"]: p["duration_s"] or 0.0 for p in record["phases"]}
    source = record["config"]["source"]
    contexts = bool(record["config"].get("contexts"))
    files = len(list((artifacts / "data").glob("coverage.*")))
    plain, ours, with_go = [], [], []
    for _ in range(rounds):  # alternating, so both see the same machine state
        plain.append(plain_coverage(artifacts / "data", BUILD / "plain-report", source, contexts))
        ours.append(e2ecov_report(artifacts, BUILD / "e2ecov-report", with_go=False))
    if record["config"].get("go"):
        with_go.append(e2ecov_report(artifacts, BUILD / "e2ecov-report", with_go=True))
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"\ne2ecov's own overhead — run {record['run_id']} ({files} Python data files)")
    print(f"{'phase of e2ecov run':34} {'seconds':>8}")
    for name, label in (
        ("start", "start (processes spawned)"),
        ("health", "health (all ready)"),
        ("flush", "collect (live save, stop, ledger)"),
        ("report", "report"),
    ):
        print(f"{label:34} {phases.get(name, 0.0):8.2f}")
    print(f"\nreport phase on the same data, median of {rounds} (Python services)")
    print(f"{'plain coverage.py combine + reports':40} {p:8.2f}")
    verdict = "ok" if o <= 1.3 * p else "OVER TARGET"
    print(
        f"{'e2ecov report (per service + combined)':40} {o:8.2f}   {o / p:5.2f}x  "
        f"target ≤ 1.3x: {verdict}"
    )
    if with_go:
        go_seconds = with_go[0] - o
        print(
            f"{'  + Go services (covdata, cover -html)':40} {go_seconds:8.2f}   (no plain "
            "coverage.py equivalent)"
        )


# ---- 2. instrumentation overhead ----------------------------------------------------------


def venv_for(python: str) -> str:
    """A throwaway venv under build/ with the project installed (kept while pyproject matches)."""
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    venv = REPO / "build" / f"bench-venv-{version}"
    stamp = venv / ".installed"
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != want:
        print(f"creating {venv} for Python {version} (project installed editable)...")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        for extra in (["--upgrade", "pip"], ["-e", str(REPO)]):
            done = subprocess.run([*pip, *extra], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"pip install {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
        stamp.write_text(want)
    return str(venv / "bin" / "python")


def cases(extra_python: str | None) -> list[Case]:
    found = [Case("3.11 default (ctrace)", sys.executable, True, 2.0)]
    candidates = (
        [extra_python]
        if extra_python
        else sorted(str(p) for p in PYENV.glob("3.1[2-9]*/bin/python"))[:1]
    )
    for python in candidates:
        if python and Path(python).exists():
            venv_python = venv_for(python)
            version = Path(venv_python).parents[1].name.removeprefix("bench-venv-")
            found.append(Case(f"{version} sys.monitoring", venv_python, False, 1.3))
            found.append(Case(f"{version} contexts (ctrace)", venv_python, True, 2.0))
    return found


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def gateway_service(name: str, python: str, coverage: bool, tokens: Path) -> str:
    command = [python, "-m", "signalgate.gateway.cli", "serve"]
    return f"""
[services.{name}]
command = {toml_list(command)}
depends_on = ["postgres"]
coverage = {str(coverage).lower()}
health = {{ url = "http://127.0.0.1:{{port.ops}}/readyz", timeout = "30s", interval = "0.05s" }}
[services.{name}.env]
SIGNALGATE_SERVER__LISTEN = "127.0.0.1:{{port}}"
SIGNALGATE_SERVER__OPSLISTEN = "127.0.0.1:{{port.ops}}"
SIGNALGATE_SERVER__MAXCONCURRENTREQUESTS = "1000"
SIGNALGATE_STORE__DSN = "{{services.postgres.url}}"
SIGNALGATE_AUTH__TOKENSFILE = {json.dumps(str(tokens))}
SIGNALGATE_LOGGING__LEVEL = "warning"
SIGNALGATE_DATADIR = "{{artifacts}}/state/{name}"
"""


def overhead(case: Case, args: argparse.Namespace, index: int) -> dict[str, object]:
    directory = BUILD / f"case{index}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    tokens = write_tokens_file(directory / "tokens", GATEWAY_TOKENS)
    result_file = directory / "result.json"
    drive = [sys.executable, str(Path(__file__).resolve()), "drive", "--out", str(result_file)]
    drive += ["--duration", str(args.duration), "--rounds", str(args.rounds)]
    drive += ["--connections", str(args.connections)]
    stack = directory / "stack.toml"
    stack.write_text(
        f"""[run]
name = "bench-overhead"
artifacts = "out"
tests = {toml_list(drive)}
source = [{json.dumps(str(REPO / "src" / "signalgate"))}]
contexts = {str(case.contexts).lower()}

[services.postgres]
recipe = "postgres"
"""
        + gateway_service("plain", case.python, False, tokens)
        + gateway_service("measured", case.python, True, tokens)
    )
    print(f"\n== {case.label}: {case.python}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2ECOV_")}
    e2ecov = [sys.executable, "-m", "e2ecov.cli", "run", "-c", str(stack)]
    run = subprocess.run(e2ecov, cwd=REPO, env=env, capture_output=True, text=True)
    if not result_file.is_file():
        print(run.stdout[-4000:], run.stderr[-2000:])
        raise SystemExit(f"overhead run for {case.label} failed (e2ecov exit {run.returncode})")
    figures: dict[str, object] = json.loads(result_file.read_text())
    record = json.loads((directory / "out" / "run.json").read_text())
    figures["cores"] = record.get("cores", [])
    figures["e2ecov_exit"] = run.returncode
    return figures


def drive(args: argparse.Namespace) -> int:
    """Test command inside the overhead stack: wrk against both Gateways in alternation."""
    urls = {"plain": os.environ["E2E_PLAIN_URL"], "measured": os.environ["E2E_MEASURED_URL"]}
    workdir = Path(args.out).parent
    rps: dict[str, list[float]] = {"plain": [], "measured": []}
    p99: dict[str, list[float]] = {"plain": [], "measured": []}
    for url in urls.values():
        run_wrk(url, WORKLOAD, 2, args.connections, workdir)  # warm-up
    for round_no in range(args.rounds):
        order = ["plain", "measured"] if round_no % 2 == 0 else ["measured", "plain"]
        for name in order:
            figures = run_wrk(urls[name], WORKLOAD, args.duration, args.connections, workdir)
            if figures["non_2xx"]:
                print(f"{name}: {int(figures['non_2xx'])} non-2xx answers", file=sys.stderr)
                return 1
            rps[name].append(figures["rps"])
            p99[name].append(figures["p99_ms"])
            print(f"round {round_no + 1} {name:9} {figures['rps']:8.0f} signals/s")
    result = {
        "plain_rps": statistics.median(rps["plain"]),
        "measured_rps": statistics.median(rps["measured"]),
        "plain_p99_ms": statistics.median(p99["plain"]),
        "measured_p99_ms": statistics.median(p99["measured"]),
        "samples": rps,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "drive"])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per Gateway")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", help="(drive) where to write the figures")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument(
        "--skip-report-overhead",
        action="store_true",
        help="skip e2ecov's phases vs plain coverage.py on the last run's data",
    )
    parser.add_argument("--python", help="the 3.12+ interpreter (default: newest under pyenv)")
    args = parser.parse_args()
    if args.mode == "drive":
        return drive(args)
    if args.skip_overhead and args.skip_pipeline:
        report_overhead(REPO / "build" / "e2e", max(args.rounds, 3))
        return 0
    if shutil.which("wrk") is None:
        print("bench/e2e_pipeline.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    pipeline_figures = None if args.skip_pipeline else pipeline()
    rows = []
    if not args.skip_overhead:
        for index, case in enumerate(cases(args.python)):
            rows.append((case, overhead(case, args, index)))

    if pipeline_figures is not None:
        print_pipeline(*pipeline_figures)
    if not args.skip_report_overhead and (REPO / "build" / "e2e" / "run.json").is_file():
        report_overhead(REPO / "build" / "e2e", max(args.rounds, 3))
    if rows:
        print(
            f"\nGateway throughput with and without e2ecov instrumentation "
            f"(wrk -t2 -c{args.connections}, workload '{WORKLOAD}', PostgreSQL, "
            f"median of {args.rounds} x {args.duration}s, alternating)"
        )
        print(
            f"{'case':28} {'core':8} {'plain/s':>8} {'measured/s':>10} {'overhead':>9} "
            f"{'target':>7}  {'p99 plain':>9} {'p99 meas.':>9}"
        )
        for case, f in rows:
            ratio = float(f["plain_rps"]) / float(f["measured_rps"])  # type: ignore[arg-type]
            verdict = "ok" if ratio <= case.target else "OVER"
            cores = ",".join(f["cores"])  # type: ignore[arg-type]
            print(
                f"{case.label:28} {cores:8} {f['plain_rps']:8.0f} {f['measured_rps']:10.0f} "
                f"{ratio:8.2f}x {'≤' + format(case.target, 'g') + 'x':>7}  "
                f"{f['plain_p99_ms']:7.1f}ms {f['measured_p99_ms']:7.1f}ms  {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
