"""Go services beside Python ones: GOCOVERDIR per service, live saves through e2ecov's Go
agent, loss detection, and one set of reports with a combined total."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from e2ecov import gocounters, gocover
from tests.integration.e2ecov.e2ecov_harness import (
    GOAPP,
    SOURCE,
    app_service,
    e2ecov,
    get_script,
    go_service,
    write_stack,
)

pytestmark = pytest.mark.slow


def setup_module() -> None:
    if shutil.which("go") is None:  # the E2E stack needs Go too (Alertmanager): not a skip
        pytest.fail("Go services need the go tool on PATH (https://go.dev/doc/install)")


def go_module(module: Path, main_go: str, go: str = "1.21") -> Path:
    """A one-file Go module `example.com/<directory name>` at `module`, for a test's service."""
    module.mkdir()
    (module / "go.mod").write_text(f"module example.com/{module.name}\n\ngo {go}\n")
    (module / "main.go").write_text(main_go)
    return module


def _go_file(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(v for k, v in report["files"].items() if k.endswith(f"goapp/{name}"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("mixed")
    tests = get_script(
        root, ("E2E_APP_URL", "/alpha"), ("E2E_GOAPP_URL", "/alpha"), ("E2E_GOAPP_URL", "/beta")
    )
    stack = write_stack(root, tests, app_service("app") + go_service())
    return e2ecov("run", "-c", str(stack), cwd=root, timeout=300)


def test_python_and_go_services_in_one_run(mixed) -> None:  # type: ignore[no-untyped-def]
    assert mixed.code == 0, mixed.output
    assert "goapp: go build -cover ." in mixed.stdout
    assert "live save acknowledged by 2 process(es)" in mixed.stdout  # Python and Go agents
    run = mixed.run_json()
    goapp = [p for p in run["processes"] if p["service"] == "goapp"]
    assert [p["status"] for p in goapp] == ["saved"] and goapp[0]["core"] == "go"
    services = run["totals"]["services"]
    combined = run["totals"]["combined"]
    assert set(services) == {"app", "goapp"}
    assert combined["statements"] == services["app"]["statements"] + services["goapp"]["statements"]
    assert combined["missed"] == services["app"]["missed"] + services["goapp"]["missed"]


def test_go_totals_agree_with_go_tool_covdata(mixed) -> None:  # type: ignore[no-untyped-def]
    covdir = mixed.artifacts / "go" / "goapp"
    percent = subprocess.run(
        ["go", "tool", "covdata", "percent", f"-i={covdir}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = float(percent.split("coverage:")[1].split("%")[0])
    assert mixed.run_json()["totals"]["services"]["goapp"]["percent"] == pytest.approx(
        expected, abs=0.05
    )


def test_every_report_has_the_go_files(mixed) -> None:  # type: ignore[no-untyped-def]
    out = mixed.artifacts
    text = (out / "e2e-coverage.txt").read_text()
    assert "== service goapp (Go" in text and "== combined (Python and Go) ==" in text
    func = (out / "e2e-coverage-func.txt").read_text().splitlines()
    alpha = next(line for line in func if "goapp/main.go:" in line and " alpha " in line)
    assert alpha.split()[-1] == "100.0%"
    never = next(line for line in func if " neverCalled " in line)
    assert never.split()[-1] == "0.0%"
    assert any(" alpha " in line and "handlers.py" in line for line in func)  # Python too
    report = json.loads((out / "coverage.json").read_text())
    main = _go_file(report, "main.go")
    assert main["language"] == "go" and main["service"] == "goapp"
    statements = sum(f["summary"]["num_statements"] for f in report["files"].values())
    assert report["totals"]["num_statements"] == statements
    run = mixed.run_json()
    assert report["totals"]["percent_covered"] == pytest.approx(
        run["totals"]["combined"]["percent"], abs=0.01
    )
    lcov = (out / "coverage.lcov").read_text()
    assert "goapp/main.go" in lcov and "handlers.py" in lcov
    # a Go block's blank, comment and closing-brace lines are no lines of code
    record = lcov.split("goapp/main.go", 1)[1].split("end_of_record", 1)[0]
    source = (GOAPP / "main.go").read_text().splitlines()
    counted = [
        int(line[3:].split(",")[0]) for line in record.splitlines() if line.startswith("DA:")
    ]
    assert counted and len(counted) <= main["summary"]["num_statements"] + 10
    for number in counted:
        text = source[number - 1].strip()
        assert text and text != "}" and not text.startswith("//"), (number, text)
    xml = ET.parse(out / "coverage.xml").getroot()
    assert any(p.get("name") == "example.com/goapp" for p in xml.iter("package"))
    summary = (out / "summary.md").read_text()
    assert "| goapp |" in summary and "| app |" in summary and "**total**" in summary
    page = (out / "html" / "go" / "goapp.html").read_text()
    assert "func alpha()" in page
    assert 'href="go/goapp.html"' in (out / "html" / "index.html").read_text()


def test_go_hit_counts_are_each_blocks_runs(mixed) -> None:  # type: ignore[no-untyped-def]
    """The agent's live save and the runtime's exit counters both hold running totals: both
    were merged, and every hit count was doubled (`beta` called once read 2)."""
    lcov = (mixed.artifacts / "coverage.lcov").read_text()
    record = lcov.split("goapp/main.go\n", 1)[1].split("end_of_record", 1)[0]
    hits = dict(
        line.removeprefix("DA:").split(",")
        for line in record.splitlines()
        if line.startswith("DA:")
    )
    assert hits["28"] == "1"  # beta's body: one request
    assert hits["20"] == "1" and hits["22"] == "3"  # alpha once, its loop three times
    assert hits["32"] == "0"  # neverCalled


def test_report_rebuilds_go_from_the_artifacts(mixed) -> None:  # type: ignore[no-untyped-def]
    before = json.loads((mixed.artifacts / "coverage.json").read_text())["totals"]
    again = e2ecov("report", "--artifacts", str(mixed.artifacts), cwd=mixed.artifacts.parent)
    assert again.code == 0, again.output
    after = json.loads((mixed.artifacts / "coverage.json").read_text())["totals"]
    assert after["num_statements"] == before["num_statements"]
    assert after["covered_lines"] == before["covered_lines"]


def noagent_binary(tmp_path: Path) -> Path:
    """The test app built with -cover but without the e2ecov agent."""
    binary = tmp_path / "goapp-noagent"
    subprocess.run(
        ["go", "build", "-cover", "-tags", "noagent", "-o", str(binary), "."],
        cwd=GOAPP, check=True,
    )  # fmt: skip
    return binary


def prebuilt_go_service(binary: Path, cwd: Path) -> str:
    """A `[services.goapp]` table running a prebuilt `-cover` binary of the sample."""
    return f"""
[services.goapp]
command = ["{binary}", "--port", "{{port}}"]
coverage = "go"
cwd = "{cwd}"
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""


def test_go_process_without_agent_killed_mid_test_is_a_loss(tmp_path: Path) -> None:
    binary = noagent_binary(tmp_path)
    service = prebuilt_go_service(binary, GOAPP)
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"), ("E2E_GOAPP_URL", "kill"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 3, outcome.output  # died during the tests; the loss is named too
    pid = outcome.run_json()["services"]["goapp"]["pid"]
    assert f"LOST: goapp pid {pid} wrote no coverage: was killed by SIGKILL" in outcome.stdout
    # the same binary stopped by SIGTERM returns from main and writes its counters at exit
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/beta"))
    again = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert again.code == 0, again.output
    [process] = again.run_json()["processes"]
    assert process["status"] == "saved" and process["message"].endswith("saved at exit")
    # per-test contexts are a Python services' feature: said so, not blamed on the tests
    assert again.run_json()["attribution"] == (
        "off: per-test attribution is for Python services, and none is measured"
    )
    report = json.loads((again.artifacts / "coverage.json").read_text())
    assert _go_file(report, "main.go")["summary"]["covered_lines"] > 0


def test_a_go_service_with_the_agent_saves_by_itself_every_autosave(tmp_path: Path) -> None:
    """`autosave` promises that a SIGKILL loses at most that much in every measured
    process; the Go agent saved only when e2ecov asked, at the flush, so a Go service
    killed mid-test lost everything it ran (an outside check)."""
    script = tmp_path / "tests.py"
    script.write_text(
        "import os, time, urllib.request\n"
        "url = os.environ['E2E_GOAPP_URL']\n"
        "print(urllib.request.urlopen(url + '/alpha').read())\n"
        "time.sleep(2.5)  # two autosaves\n"
        "os.kill(int(urllib.request.urlopen(url + '/pid').read()), 9)\n"
        "time.sleep(0.3)\n"
    )
    stack = write_stack(tmp_path, [sys.executable, str(script)], go_service(), 'autosave = "1s"')
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path, timeout=300)
    assert outcome.code == 3, outcome.output  # it died during the tests: a stack failure
    assert "wrote no coverage" not in outcome.output
    [process] = outcome.run_json()["processes"]
    # what it ran after its last autosave is lost, and said so (as for a Python service)
    assert process["status"] == "partial", process
    assert "(autosave), then was killed by SIGKILL" in process["message"]
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    assert _go_file(report, "main.go")["summary"]["covered_lines"] > 0


def test_a_cover_binary_listed_without_coverage_go_is_told_to_set_it(tmp_path: Path) -> None:
    """A Go binary built with -cover, listed as a service without `coverage = "go"`, is
    measured as a Python one and announces nothing: the loss asked whether it is a Python
    program, is coverage installed, and never said to set `coverage = "go"`."""
    binary = noagent_binary(tmp_path)
    service = f"""
[services.goapp]
command = ["{binary}", "--port", "{{port}}"]
cwd = "{GOAPP}"
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 4, outcome.output
    assert (
        "LOST: goapp: no process announced itself, so nothing was measured (its program is a Go "
        'binary built with -cover: set coverage = "go" for it)'
    ) in outcome.stdout
    assert "is it a Python program" not in outcome.stdout
    # doctor says the same: it said to set coverage = false, which drops the service's
    # coverage (a second outside check)
    doctor = e2ecov("doctor", "-c", str(tmp_path / "stack.toml"), cwd=tmp_path)
    assert 'is a Go binary built with -cover: set coverage = "go" for it' in doctor.stdout
    assert "set coverage = false" not in doctor.stdout


def test_a_go_only_stack_under_pytest_reports_attribution_off(tmp_path: Path) -> None:
    """The Go agent acknowledges each test's context switch (and ignores it): a stack of Go
    services alone, tested under pytest, said attribution was on."""
    tests = tmp_path / "test_goapp.py"
    tests.write_text(
        "import os, urllib.request\n\n\ndef test_alpha():\n"
        "    urllib.request.urlopen(os.environ['E2E_GOAPP_URL'] + '/alpha').read()\n"
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)]
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, command, go_service())), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "1 passed" in outcome.output
    assert outcome.run_json()["attribution"] == (
        "off: per-test attribution is for Python services, and none is measured"
    )


def test_a_go_service_running_a_program_of_another_module_keeps_its_own_html_page(
    tmp_path: Path,
) -> None:
    """A service in the repository whose helper is a Go program of another module (a tool
    it runs, built with -cover elsewhere): `go tool cover -html` cannot read both modules'
    sources, and the service had no page at all, its own code included (an outside check).
    Its page now shows its own module and names what it leaves out; a profile of the other
    program alone still gets none, and says why."""
    profile = tmp_path / "profile.txt"
    profile.write_text(
        "mode: set\nexample.com/goapp/main.go:19.20,21.27 1 1\n"
        "github.com/prometheus/pushgateway/api/v1/api.go:10.2,12.3 1 1\n"
    )
    page = tmp_path / "page.html"
    modules = {"example.com/goapp": GOAPP}
    made, note = gocover._html(gocover.go(), profile, page, modules, None)
    assert made, note
    assert note is not None and "leaves out" in note
    assert "(github.com/prometheus/pushgateway/api/v1)" in note and "second Go program" in note
    assert "func alpha() string" in page.read_text()  # the service's own file, in its page
    alone = tmp_path / "alone.txt"
    alone.write_text("mode: set\ngithub.com/prometheus/pushgateway/api/v1/api.go:10.2,12.3 1 1\n")
    made, note = gocover._html(gocover.go(), alone, tmp_path / "none.html", modules, None)
    assert not made and note is not None
    assert "github.com/prometheus/pushgateway/api/v1" in note and "second Go program" in note
    # the page of all Go services: its warning read "2 modules (a module outside the
    # repository, example.com/goapp)", naming the repository's module as if outside
    services = [
        gocover.GoService(name, {}, [], None, [], text)
        for name, text in (("api", profile.read_text()), ("tool", alone.read_text()))
    ]
    union = gocover.GoUnion({}, [], [])
    combined = tmp_path / "all.html"
    made, note = gocover.combined_html(services, union, modules, combined, tmp_path)
    assert made and note is not None and "(github.com/prometheus/pushgateway/api/v1)" in note
    assert "func alpha() string" in combined.read_text()


def test_doctor_checks_go_services(tmp_path: Path) -> None:
    plain = tmp_path / "goapp-plain"
    subprocess.run(["go", "build", "-o", str(plain), "."], cwd=GOAPP, check=True)
    service = f'\n[services.prebuilt]\ncommand = ["{plain}"]\ncoverage = "go"\n'
    stack = write_stack(tmp_path, ["true"], go_service() + service)
    outcome = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    lines = outcome.stdout.splitlines()
    assert any(
        line.startswith("ok") and "e2ecov builds . with go build -cover" in line for line in lines
    )
    assert any(line.startswith("FAIL") and "is not built with -cover" in line for line in lines)
    # and `run` refuses it before anything starts (it ran the whole suite, then exit 4)
    run = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert run.code == 2, run.output
    assert "nothing was started" in run.output
    assert f"service 'prebuilt': {plain} is a Go binary not built with -cover" in run.output


def test_report_without_go_keeps_the_python_reports(mixed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "artifacts"
    shutil.copytree(mixed.artifacts, copy)
    env = {**os.environ, "PATH": str(tmp_path / "nothing")}
    again = e2ecov("report", "--artifacts", str(copy), cwd=tmp_path, env=env)
    # the Go service's coverage is not in these reports: a loss (exit 4), named
    assert again.code == 4, again.output
    assert (
        "LOST: Go service goapp: its coverage data could not be read: Go services need the go tool"
    ) in again.stdout
    report = json.loads((copy / "coverage.json").read_text())
    assert not any(k.endswith("goapp/main.go") for k in report["files"])
    assert any(k.endswith("handlers.py") for k in report["files"])


def test_a_binary_from_a_checkout_outside_the_repository_says_how_to_get_its_html(
    tmp_path: Path,
) -> None:
    """Built from a local checkout (`(devel)` in the binary), its sources are nowhere e2ecov
    can find or fetch: the warning says where to keep them, not Go's own error about a
    `require` line e2ecov wrote."""
    checkout = tmp_path / "checkout"
    shutil.copytree(GOAPP, checkout)
    agent = Path(__file__).parents[3] / "src" / "e2ecov" / "go"
    mod = (checkout / "go.mod").read_text()
    (checkout / "go.mod").write_text(mod.replace("../../../../../src/e2ecov/go", str(agent)))
    binary = tmp_path / "bin" / "goapp"
    subprocess.run(
        ["go", "build", "-cover", "-covermode=atomic", "-o", str(binary), "."],
        cwd=checkout, check=True,
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    service = f"""
[services.goapp]
command = ["{binary}", "--port", "{{port}}"]
coverage = "go"
cwd = "{tmp_path / "run"}"
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert (
        "no Go HTML page for service goapp: it was built from a local checkout of "
        f"example.com/goapp, whose sources e2ecov cannot fetch: keep that module's sources in "
        f"{binary.parent / 'src'}"
    ) in outcome.stdout, outcome.stdout
    # built without -covermode=atomic, the agent cannot save live: the run says why; the
    # process still writes its counters as it exits, and that is its save (not a loss)
    subprocess.run(
        ["go", "build", "-cover", "-o", str(binary), "."], cwd=checkout, check=True
    )  # fmt: skip
    unsaved = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert unsaved.code == 0, unsaved.output
    assert "could not save" in unsaved.stdout and "covermode=atomic" in unsaved.stdout
    [goapp] = [p for p in unsaved.run_json()["processes"] if p["service"] == "goapp"]
    assert goapp["status"] == "saved" and "saved at exit" in goapp["message"]


def test_binaries_built_in_two_counter_modes_are_a_named_loss_not_an_empty_report(
    tmp_path: Path,
) -> None:
    """A service that runs a helper built with plain `go build -cover` (counter mode `set`)
    beside its own atomic binary: `go tool covdata` cannot read the two together. That was
    an empty profile, reported as 100 % of 0 statements; it is a loss, saying what to do."""
    module = go_module(
        tmp_path / "helper",
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("helper ran")\n}\n',
    )
    covdir = tmp_path / "go" / "svc"
    covdir.mkdir(parents=True)
    for mode in ("atomic", "set"):
        binary = tmp_path / f"helper-{mode}"
        subprocess.run(
            ["go", "build", "-cover", f"-covermode={mode}", "-o", str(binary), "."],
            cwd=module, check=True,
        )  # fmt: skip
        subprocess.run(
            [str(binary)], env={**os.environ, "GOCOVERDIR": str(covdir)}, check=True
        )  # fmt: skip
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError) as raised:
        gocover.report(
            "svc", covdir, tmp_path / "work", tmp_path / "html", {}, tmp_path, None
        )  # fmt: skip
    message = str(raised.value)
    assert "go tool covdata" in message and "counter mode clash" in message, message
    assert "-covermode=atomic" in message


def test_go_build_runs_in_the_services_environment(tmp_path: Path) -> None:
    """`env = { GOFLAGS = ..., CGO_ENABLED = ... }` on a go_build service is how its build
    is configured in production too: e2ecov's build sees it."""
    service = go_service(extra='env = { GOFLAGS = "-tags=noagent" }')
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    built = subprocess.run(
        ["go", "version", "-m", str(outcome.artifacts / "bin" / "goapp")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "-tags=noagent" in built.stdout, built.stdout


def test_a_go_build_service_run_unmeasured_is_built_without_cover(tmp_path: Path) -> None:
    """`coverage = false` on a go_build service (a dependency nobody measures): e2ecov
    built only measured Go services, so `{go_binary}` did not exist and the run failed to
    start it (exit 3). It is built, without -cover (a -cover binary without GOCOVERDIR
    warns at exit), and measured by nothing."""
    service = go_service(extra="coverage = false")
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "goapp: go build (unmeasured) ." in outcome.stdout
    built = subprocess.run(
        ["go", "version", "-m", str(outcome.artifacts / "bin" / "goapp")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "-cover=true" not in built.stdout, built.stdout
    assert not (outcome.artifacts / "go" / "goapp").exists()
    assert outcome.run_json()["services"]["goapp"]["lost"] == []


@pytest.mark.parametrize("agent", [False, True], ids=["without-agent", "with-agent"])
def test_a_go_service_started_by_a_wrapper_script_is_not_a_loss(
    tmp_path: Path, agent: bool
) -> None:
    """`entrypoint.sh` runs the binary as its child (not `exec`): the main process is a
    shell, which writes no counters. It was named a loss ("wrote no coverage: was killed by
    SIGTERM"), exit 4, though the binary had saved; the totals are `go tool covdata`'s."""
    wrapper = ["/bin/sh", "-c", 'echo starting; "$@"; echo "ended with $?"', "entrypoint.sh"]
    command = [*wrapper, "{go_binary}", "--port", "{port}"]
    service = go_service(extra="" if agent else 'env = { GOFLAGS = "-tags=noagent" }')
    service = service.replace(
        'command = ["{go_binary}", "--port", "{port}"]', f"command = {json.dumps(command)}"
    )
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    assert "LOST" not in outcome.output
    run = outcome.run_json()
    assert [p["status"] for p in run["processes"]] == ["saved"], run["processes"]
    assert run["processes"][0]["pid"] != run["services"]["goapp"]["pid"]  # the binary's
    covdir = outcome.artifacts / "go" / "goapp"
    percent = subprocess.run(
        ["go", "tool", "covdata", "percent", f"-i={covdir}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = float(percent.split("coverage:")[1].split("%")[0])
    assert run["totals"]["services"]["goapp"]["percent"] == pytest.approx(expected, abs=0.05)


def test_a_go_helper_killed_before_it_wrote_counters_is_a_named_loss(tmp_path: Path) -> None:
    """A service's own binary exits cleanly; a helper binary it started is killed: its
    meta-data is in the GOCOVERDIR, its counters never are. That is a loss, named."""
    covdir = tmp_path / "go" / "svc"
    covdir.mkdir(parents=True)
    env = {**os.environ, "GOCOVERDIR": str(covdir)}
    programs = {
        "main": 'package main\n\nfunc main() {\n\tprintln("main ran")\n}\n',
        "helper": 'package main\n\nimport "time"\n\nfunc main() {\n\ttime.Sleep(time.Hour)\n}\n',
    }
    binaries = {}
    for name, source in programs.items():
        module = tmp_path / name
        module.mkdir()
        (module / "go.mod").write_text(f"module example.com/{name}\n\ngo 1.21\n")
        (module / "main.go").write_text(source)
        binaries[name] = tmp_path / f"{name}-bin"
        subprocess.run(
            ["go", "build", "-cover", "-covermode=atomic", "-o", str(binaries[name]), "."],
            cwd=module, check=True,
        )  # fmt: skip
    main = subprocess.run([str(binaries["main"])], env=env, check=True, capture_output=True)
    assert main.returncode == 0
    helper = subprocess.Popen([str(binaries["helper"])], env=env)
    deadline = time.monotonic() + 10
    while len(list(covdir.glob("covmeta.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    helper.kill()
    helper.wait()
    (main_pid,) = gocounters.counter_pids(covdir)
    found = gocover.outcomes("svc", covdir, main_pid, {}, set())
    assert [o.status for o in found] == ["saved", "lost"], found
    assert "a Go binary of this service ran" in found[1].message
    assert "killed before it exited" in found[1].message


_PANICS_ON_SIGTERM = """package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	port := flag.Int("port", 0, "")
	flag.Parse()
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
		panic("shutdown went wrong")
	}()
	fmt.Println(http.ListenAndServe(fmt.Sprintf("127.0.0.1:%d", *port), nil))
}
"""


def test_a_go_service_that_panics_on_sigterm_is_a_loss_that_names_the_panic(
    tmp_path: Path,
) -> None:
    """A Go service that panics as it stops exits with code 2 and writes no counters. The
    loss read "exited with code 2 before it saved (a Go binary writes its counters when
    main returns or os.Exit is called …)": an exit code, yet no counters, and not a word of
    the panic its stderr holds (an outside check)."""
    module = go_module(tmp_path / "panicky", _PANICS_ON_SIGTERM)
    service = f"""
[services.panicky]
go_build = "."
cwd = "{module}"
command = ["{{go_binary}}", "--port", "{{port}}"]
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    tests = get_script(tmp_path, ("E2E_PANICKY_URL", "/health"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 4, outcome.output
    pid = outcome.run_json()["services"]["panicky"]["pid"]
    assert (
        f"LOST: panicky pid {pid} wrote no coverage: exited with code 2 without writing "
        "counters (its stderr: 'panic: shutdown went wrong'): a Go binary writes them only "
        "when main returns or os.Exit is called, not when it panics"
    ) in outcome.stdout


def test_a_go_helper_built_without_cover_is_named_as_unmeasured(tmp_path: Path) -> None:
    """A Go service that runs a second Go binary built without -cover (a sidecar, a tool
    built elsewhere): it wrote no counters and nothing said it ran (an outside check). As a
    Python child the hook never reached is, it is named, a warning and not a loss."""
    module = go_module(
        tmp_path / "sidecar",
        'package main\n\nimport "time"\n\nfunc main() {\n\ttime.Sleep(time.Hour)\n}\n',
    )
    sidecar = tmp_path / "sidecar-plain"
    subprocess.run(["go", "build", "-o", str(sidecar), "."], cwd=module, check=True)
    service = go_service().replace(
        'command = ["{go_binary}", "--port", "{port}"]',
        f'command = ["sh", "-c", "{sidecar} & exec {{go_binary}} --port {{port}}"]',
    )
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    [warning] = outcome.run_json()["services"]["goapp"]["unmeasured"]
    assert f"ran {sidecar}, a Go binary built without -cover, and was not measured" in warning
    assert "warning: " + warning in outcome.stdout  # one: the service's own is not named


_RUNS_ITSELF_AS_ITS_WORKER = """package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "worker" {
		http.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "ok")
		})
		fmt.Println(http.ListenAndServe("127.0.0.1:"+os.Args[2], nil))
		return
	}
	self, _ := os.Executable()
	worker := exec.Command(self, "worker", os.Args[1])
	if err := worker.Start(); err != nil {
		os.Exit(1)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	go func() {
		<-stop
		worker.Process.Signal(syscall.SIGTERM)
	}()
	worker.Wait()
	os.Exit(0)
}
"""


def test_a_go_worker_of_the_services_own_binary_killed_is_a_loss_by_pid(
    tmp_path: Path,
) -> None:
    """A supervisor that runs its own binary again as its worker (jpillora/overseer does):
    SIGTERM ends the worker by Go's default, without counters, while the supervisor exits
    and saves. Worker and supervisor share one meta-data file, so the run counted only the
    supervisor's lines, and said nothing (an outside check): the worker is named now."""
    module = go_module(tmp_path / "relaunch", _RUNS_ITSELF_AS_ITS_WORKER)
    service = f"""
[services.relaunch]
go_build = "."
cwd = "{module}"
command = ["{{go_binary}}", "{{port}}"]
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    tests = get_script(tmp_path, ("E2E_RELAUNCH_URL", "/health"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 4, outcome.output
    port = outcome.run_json()["services"]["relaunch"]["url"].rsplit(":", 1)[1]
    lost = re.search(
        rf"LOST: relaunch pid (\d+) \(\S+/relaunch worker {port}\), a Go process the service "
        r"started, wrote no coverage: it ended without writing counters",
        outcome.stdout,
    )
    assert lost, outcome.output
    main_pid = outcome.run_json()["services"]["relaunch"]["pid"]
    assert int(lost.group(1)) != main_pid


def test_the_combined_total_counts_each_file_once_and_its_branches(tmp_path: Path) -> None:
    """Two Python services running the same code, a Go service, `branch = true`: the text
    report's combined TOTAL added the services' rows (the shared code twice), and merging Go
    recomputed the total from statements alone (the branches dropped out of it and of
    fail_under, so the same Python data passed or failed with a Go service beside it), while
    `percent_statements_covered` stayed Python's."""
    tests = get_script(tmp_path, ("E2E_APP_URL", "/alpha"), ("E2E_GOAPP_URL", "/alpha"))
    services = app_service("app") + app_service("app2") + go_service()
    stack = write_stack(tmp_path, tests, services, run_extra="branch = true")
    done = e2ecov("run", "-c", str(stack), cwd=tmp_path, timeout=300)
    assert done.code == 0, done.output
    combined = done.run_json()["totals"]["combined"]
    per_service = done.run_json()["totals"]["services"]
    assert combined["statements"] < sum(t["statements"] for t in per_service.values())
    text = (done.artifacts / "e2e-coverage.txt").read_text()
    total_row = text.split("== combined (Python and Go) ==", 1)[1].split("TOTAL", 1)[1].split()
    assert [int(total_row[0]), int(total_row[1])] == [combined["statements"], combined["missed"]]
    totals = json.loads((done.artifacts / "coverage.json").read_text())["totals"]
    assert combined["branches"] == totals["num_branches"] > 0
    covered = totals["covered_lines"] + totals["num_branches"] - totals["missing_branches"]
    expected = 100 * covered / (totals["num_statements"] + totals["num_branches"])
    assert combined["percent"] == pytest.approx(expected, abs=0.01)
    assert totals["percent_covered"] == pytest.approx(expected)
    statements_only = 100 * totals["covered_lines"] / totals["num_statements"]
    assert totals["percent_statements_covered"] == pytest.approx(statements_only)
    assert f"{combined['branches']} branches" in done.stdout
    assert "counts branches too" in (done.artifacts / "summary.md").read_text()


def _covdata_total(*covdirs: Path) -> float:
    """The percent `go tool covdata func` gives reading every directory together."""
    listed = subprocess.run(
        ["go", "tool", "covdata", "func", "-i=" + ",".join(str(d) for d in covdirs)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(listed.strip().splitlines()[-1].split()[-1].rstrip("%"))


def _lcov_records(lcov: str, suffix: str) -> list[dict[int, int]]:
    """Each LCOV record of a file whose name ends in `suffix`: line → hits."""
    records = []
    for record in lcov.split("end_of_record"):
        lines = record.strip().splitlines()
        if lines and lines[0].startswith("SF:") and lines[0].endswith(suffix):
            hits = [line[3:].split(",") for line in lines if line.startswith("DA:")]
            records.append({int(n): int(c) for n, c in hits})
    return records


def test_two_go_services_of_one_binary_count_its_files_once(tmp_path: Path) -> None:
    """Two replicas of one -cover binary: the combined total added both services' statements
    (the same files twice), coverage.json kept one service's entry per file (keyed alike),
    LCOV had every file twice and the function report every function twice (an outside
    check). Each file counts once, covered where either replica ran it, as
    `go tool covdata` reading both counter directories says."""
    binary = tmp_path / "bin" / "goapp"
    subprocess.run(
        ["go", "build", "-cover", "-covermode=atomic", "-o", str(binary), "."],
        cwd=GOAPP, check=True,
    )  # fmt: skip
    services = "".join(
        f"""
[services.{name}]
command = ["{binary}", "--port", "{{port}}"]
coverage = "go"
cwd = "{GOAPP}"
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
        for name in ("replica1", "replica2")
    )
    tests = get_script(tmp_path, ("E2E_REPLICA1_URL", "/alpha"), ("E2E_REPLICA2_URL", "/beta"))
    done = e2ecov("run", "-c", str(write_stack(tmp_path, tests, services)), cwd=tmp_path)
    assert done.code == 0, done.output
    out = done.artifacts
    totals = done.run_json()["totals"]
    one, two = totals["services"]["replica1"], totals["services"]["replica2"]
    combined = totals["combined"]
    assert one["statements"] == two["statements"] == combined["statements"]
    # either replica ran alpha or beta; together they ran both
    assert combined["missed"] < min(one["missed"], two["missed"])
    expected = _covdata_total(out / "go" / "replica1", out / "go" / "replica2")
    assert combined["percent"] == pytest.approx(expected, abs=0.05)
    assert one["percent"] == pytest.approx(_covdata_total(out / "go" / "replica1"), abs=0.05)
    report = json.loads((out / "coverage.json").read_text())
    [main] = [v for k, v in report["files"].items() if k.endswith("goapp/main.go")]
    assert main["services"] == ["replica1", "replica2"] and "service" not in main
    assert {20, 28} <= set(main["executed_lines"])  # alpha's body and beta's
    assert 32 in main["missing_lines"]  # neverCalled
    assert report["totals"]["num_statements"] == combined["statements"]
    assert report["totals"]["num_statements"] == sum(
        f["summary"]["num_statements"] for f in report["files"].values()
    )
    [record] = _lcov_records((out / "coverage.lcov").read_text(), "goapp/main.go")
    assert record[20] == 1 and record[28] == 1 and record[32] == 0
    func = (out / "e2e-coverage-func.txt").read_text().splitlines()
    assert [line.split()[-1] for line in func if " alpha " in line] == ["100.0%"]
    assert [line.split()[-1] for line in func if " beta " in line] == ["100.0%"]
    assert func[-1].split()[-1] == f"{combined['percent']:.1f}%"
    xml = ET.parse(out / "coverage.xml").getroot()
    assert len([c for c in xml.iter("class") if c.get("filename", "").endswith("main.go")]) == 1
    text = (out / "e2e-coverage.txt").read_text()
    total_row = text.split("== combined (Python and Go) ==", 1)[1].split("TOTAL", 1)[1].split()
    assert [int(total_row[0]), int(total_row[1])] == [combined["statements"], combined["missed"]]
    summary = (out / "summary.md").read_text()
    assert f"| **total** | **{combined['statements']}** | **{combined['missed']}** |" in summary
    # one HTML page of both replicas' counters: each service's own page showed only its half
    beta = 'return "beta"'
    assert not _covered_in((out / "html" / "go" / "replica1.html").read_text(), beta)
    both = (out / "html" / "go-all-services.html").read_text()
    assert _covered_in(both, beta) and _covered_in(both, "total += n")
    assert not _covered_in(both, 'value := "unused"')
    assert 'href="go-all-services.html"' in (out / "html" / "index.html").read_text()


def _covered_in(page: str, code: str) -> bool:
    """Whether `go tool cover -html` marks the block holding `code` as run."""
    found = re.search(r'<span class="cov(\d+)" title="\d+">[^<]*?' + re.escape(code), page)
    assert found, f"{code!r} not in a block of the page"
    return found.group(1) != "0"


SHARED_LIB = """package lib

func One() string {
	return "one"
}

func Two() string {
	return "two"
}

func Never() string {
	return "never"
}
"""

SHARED_MAIN = """package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"example.com/shared/lib"
)

func call(w http.ResponseWriter, r *http.Request) {
	fmt.Fprint(w, lib.CALL())
}

func main() {
	port := flag.Int("port", 0, "port")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/call", call)
	server := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	go func() {
		<-stop
		server.Shutdown(context.Background())
	}()
	server.ListenAndServe()
}
"""


@pytest.fixture(scope="module")
def sharing(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Two programs of one module outside the stack's directory, both using its `lib`
    package (one calls lib.One, the other lib.Two), each a go_build service."""
    root = tmp_path_factory.mktemp("sharing")
    module = root / "shared"
    (module / "lib").mkdir(parents=True)
    (module / "go.mod").write_text("module example.com/shared\n\ngo 1.22\n")
    (module / "lib" / "lib.go").write_text(SHARED_LIB)
    services = ""
    for name, call in (("one", "One"), ("two", "Two")):
        (module / "cmd" / name).mkdir(parents=True)
        (module / "cmd" / name / "main.go").write_text(SHARED_MAIN.replace("CALL", call))
        services += f"""
[services.{name}]
go_build = "./cmd/{name}"
command = ["{{go_binary}}", "--port", "{{port}}"]
cwd = "{module}"
health = {{ url = "http://127.0.0.1:{{port}}/health", timeout = "20s", interval = "0.05s" }}
"""
    stack = root / "stack"
    stack.mkdir()
    tests = get_script(stack, ("E2E_ONE_URL", "/call"), ("E2E_TWO_URL", "/call"))
    (stack / "stack.toml").write_text(
        f'[run]\nartifacts = "out"\ntests = {json.dumps(tests)}\n{services}'
    )
    return e2ecov("run", "-c", str(stack / "stack.toml"), cwd=stack, timeout=300)


def test_two_go_programs_sharing_a_package_count_it_once(sharing) -> None:  # type: ignore[no-untyped-def]
    """Different binaries, one library package: its file counts once, covered where either
    program ran it (lib.One by one, lib.Two by two), each program's own main once."""
    assert sharing.code == 0, sharing.output
    out = sharing.artifacts
    combined = sharing.run_json()["totals"]["combined"]
    expected = _covdata_total(out / "go" / "one", out / "go" / "two")
    assert combined["percent"] == pytest.approx(expected, abs=0.05)
    report = json.loads((out / "coverage.json").read_text())
    lib = report["files"]["example.com/shared/lib/lib.go"]
    assert lib["services"] == ["one", "two"]
    assert lib["summary"]["num_statements"] == 3 and lib["summary"]["covered_lines"] == 2
    assert report["files"]["example.com/shared/cmd/one/main.go"]["service"] == "one"
    assert report["totals"]["num_statements"] == combined["statements"]
    assert len(_lcov_records((out / "coverage.lcov").read_text(), "lib/lib.go")) == 1
    func = (out / "e2e-coverage-func.txt").read_text().splitlines()
    rows = {line.split()[1]: line.split()[-1] for line in func if "lib/lib.go" in line}
    assert rows == {"One": "100.0%", "Two": "100.0%", "Never": "0.0%"}
    assert "built from different sources" not in sharing.stdout
    both = (out / "html" / "go-all-services.html").read_text()  # one module: one page
    assert _covered_in(both, 'return "one"') and _covered_in(both, 'return "two"')


def test_go_files_of_a_module_outside_the_repository_are_named_by_import_path(sharing) -> None:  # type: ignore[no-untyped-def]
    """A module outside the directory the reports are relative to (the stack file's) was
    shown by its absolute path (`/tmp/.../api/v1/api.go`), which differs on every machine;
    the docs promise its import path."""
    assert sharing.code == 0, sharing.output
    out = sharing.artifacts
    names = set(json.loads((out / "coverage.json").read_text())["files"])
    assert names == {
        "example.com/shared/lib/lib.go",
        "example.com/shared/cmd/one/main.go",
        "example.com/shared/cmd/two/main.go",
    }
    for report in ("e2e-coverage.txt", "e2e-coverage-func.txt", "coverage.lcov", "coverage.xml"):
        assert str(out.parent.parent) not in (out / report).read_text(), report
    # its sources were found all the same: LCOV counts only lines that hold code
    record = _lcov_records((out / "coverage.lcov").read_text(), "lib/lib.go")[0]
    assert sorted(record) == [3, 4, 7, 8, 11, 12]  # no closing braces


def test_a_prebuilt_binary_of_a_module_listed_in_source_is_shown_by_repository_path(
    tmp_path: Path,
) -> None:
    """A prebuilt `-cover` binary started from another directory, its module beside the
    stack file and listed in `source`: its files were shown by import path, with no HTML
    page, as if built from a checkout elsewhere (an outside check): only the service's
    working directory was searched for its module."""
    module = tmp_path / "svc"
    shutil.copytree(GOAPP, module)
    agent = (GOAPP / "../../../../../src/e2ecov/go").resolve()
    mod = (module / "go.mod").read_text()
    (module / "go.mod").write_text(mod.replace("../../../../../src/e2ecov/go", str(agent)))
    binary = tmp_path / "bin" / "goapp"
    subprocess.run(
        ["go", "build", "-cover", "-tags", "noagent", "-o", str(binary), "."],
        cwd=module, check=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    service = prebuilt_go_service(binary, elsewhere)
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    stack = write_stack(tmp_path, tests, service)
    listed = f"source = [{json.dumps(str(SOURCE))}]"
    stack.write_text(stack.read_text().replace(listed, 'source = ["svc"]'))
    outcome = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert outcome.code == 0, outcome.output
    report = json.loads((outcome.artifacts / "coverage.json").read_text())
    assert "svc/main.go" in report["files"], sorted(report["files"])
    assert "no Go HTML page" not in outcome.output


def test_a_failed_go_build_says_why_on_the_runs_last_line(tmp_path: Path) -> None:
    """The run's last line (what a CI log shows first) repeats the failure's first line: a
    `go_build` that failed ended it in "failed:", Go's reason only on the lines above."""
    module = go_module(
        tmp_path / "broken", "package main\n\nfunc main() { undefinedThing() }\n", go="1.22"
    )
    service = go_service().replace(json.dumps(str(GOAPP)), json.dumps(str(module)))
    tests = get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha"))
    outcome = e2ecov("run", "-c", str(write_stack(tmp_path, tests, service)), cwd=tmp_path)
    assert outcome.code == 3, outcome.output
    last = outcome.stdout.strip().splitlines()[-1]
    assert "go build -cover ." in last, last
    assert "failed: " in last and "undefined: undefinedThing" in last, last


def test_a_go_build_package_that_is_no_directory_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """`go_build = "./cmd/nothere"`: doctor said "ok, e2ecov builds ./cmd/nothere", and the
    run found out in its build (exit 3, the stack "could not be brought up")."""
    service = go_service().replace('go_build = "."', 'go_build = "./cmd/nothere"')
    stack = write_stack(tmp_path, get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha")), service)
    said = f"go_build './cmd/nothere': no directory {GOAPP / 'cmd' / 'nothere'}"
    doctor = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert any(line.startswith("FAIL") and said in line for line in doctor.stdout.splitlines())
    run = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert run.code == 2, run.output
    assert "nothing was started" in run.output and f"service 'goapp': {said}" in run.output


def test_a_cover_binary_that_instruments_no_package_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """`go install -cover pkg@version` (here its offline twin, a -coverpkg that matches no
    package) builds a binary whose build info says -cover but which instruments nothing:
    `doctor` said "ok ... built with -cover", and the run ended in a loss asking "is the
    binary built with go build -cover?" — which it was."""
    binary = tmp_path / "goapp-nothing"
    subprocess.run(
        ["go", "build", "-cover", "-coverpkg=nomatch.invalid/...", "-tags", "noagent",
         "-o", str(binary), "."],
        cwd=GOAPP, check=True, capture_output=True,
    )  # fmt: skip
    service = f"""
[services.goapp]
command = ["{binary}", "--port", "{{port}}"]
coverage = "go"
health = {{ url = "http://127.0.0.1:{{port}}/health", interval = "0.05s" }}
"""
    stack = write_stack(tmp_path, get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha")), service)
    said = f"{binary} is built with -cover, but no package of it was instrumented"
    doctor = e2ecov("doctor", "-c", str(stack), cwd=tmp_path)
    assert any(line.startswith("FAIL") and said in line for line in doctor.stdout.splitlines())
    run = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert run.code == 2, run.output
    assert "nothing was started" in run.output and f"service 'goapp': {said}" in run.output


def test_a_go_build_service_whose_cwd_is_missing_is_refused_not_a_traceback(
    tmp_path: Path,
) -> None:
    """The check of a service's `cwd` skipped go_build services: the build was started in
    a directory that does not exist and e2ecov ended in a FileNotFoundError traceback."""
    missing = tmp_path / "nope"
    service = go_service().replace(json.dumps(str(GOAPP)), json.dumps(str(missing)))
    stack = write_stack(tmp_path, get_script(tmp_path, ("E2E_GOAPP_URL", "/alpha")), service)
    run = e2ecov("run", "-c", str(stack), cwd=tmp_path)
    assert run.code == 2, run.output
    assert "Traceback" not in run.output
    assert f"service 'goapp': cwd {missing} does not exist" in run.output
