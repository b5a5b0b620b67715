"""Stack-file validation: every problem with its file and line, before anything starts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from e2ecov import stackfile
from e2ecov.errors import StackFileError

GOOD = """\
[run]
name = "demo"
tests = ["python", "-m", "pytest", "e2e"]
source = ["src"]
autosave = "5s"

[services.db]
recipe = "postgres"

[services.api]
command = ["api", "--listen", "127.0.0.1:{port}", "--ops", "{port.ops}"]
env = { DSN = "{services.db.url}", OUT = "{artifacts}/x", RUN = "{run_id}" }
depends_on = ["db"]
health = { url = "http://127.0.0.1:{port.ops}/readyz", timeout = "30s" }

[services.web]
command = ["web", "--api", "{services.api.url}", "--api-ops", "{services.api.port.ops}"]
depends_on = ["api"]
cwd = "web"
fail_under = 50
"""


def load(tmp_path: Path, text: str) -> stackfile.Stack:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return stackfile.load(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(StackFileError) as caught:
        load(tmp_path, text)
    return [str(p) for p in caught.value.problems]


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_good_stack_resolves_paths_defaults_and_ports(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    stack = load(tmp_path, GOOD)
    assert stack.root == tmp_path and stack.artifacts == tmp_path / "build" / "e2e"
    assert stack.source == [tmp_path / "src"] and stack.autosave == 5.0 and stack.contexts is True
    assert stack.start_order() == ["db", "api", "web"]
    api, db, web = stack.services["api"], stack.services["db"], stack.services["web"]
    assert api.coverage is True and db.coverage is False
    assert api.port_names == {"ops"} and api.health is not None and api.health.timeout == 30.0
    assert web.cwd == tmp_path / "web" and web.fail_under == 50.0 and api.cwd == tmp_path
    assert api.env_prefix == "E2E_API"


def test_unknown_key_names_line_and_expected_keys(tmp_path: Path) -> None:
    text = GOOD.replace('cwd = "web"', 'cwd = "web"\nhelth = "x"')
    [message] = problems(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'stack.toml'}:{line_of(text, 'helth')}: ")
    assert "[services.web] unknown key 'helth'; expected one of: command, coverage, cwd" in message


def test_unknown_key_inside_inline_health_table(tmp_path: Path) -> None:
    text = GOOD.replace('timeout = "30s" }', 'timeot = "30s" }')
    [message] = problems(tmp_path, text)
    assert f":{line_of(text, 'timeot')}: " in message and "unknown key 'timeot'" in message


def test_missing_command(tmp_path: Path) -> None:
    text = GOOD.replace('command = ["web"', 'comand = ["web"')
    found = problems(tmp_path, text)
    assert any(
        f":{line_of(text, '[services.web]')}: [services.web] missing 'command'" in p for p in found
    )


def test_dependency_cycle(tmp_path: Path) -> None:
    text = GOOD.replace('depends_on = ["db"]', 'depends_on = ["db", "web"]')
    [message] = problems(tmp_path, text)
    assert "dependency cycle: " in message
    assert "api → web → api" in message or "web → api → web" in message
    cycle_lines = {
        line_of(text, 'depends_on = ["db", "web"]'),
        line_of(text, 'depends_on = ["api"]'),
    }
    assert any(f"stack.toml:{n}: " in message for n in cycle_lines)


def test_unknown_placeholder(tmp_path: Path) -> None:
    text = GOOD.replace("{run_id}", "{runid}")
    [message] = problems(tmp_path, text)
    assert f":{line_of(text, '{runid}')}: " in message
    assert "unknown placeholder '{runid}'; expected one of {port}" in message


def test_placeholder_naming_unknown_service_or_port(tmp_path: Path) -> None:
    text = GOOD.replace("{services.db.url}", "{services.dbx.url}").replace(
        "{services.api.port.ops}", "{services.api.port.admin}"
    )
    found = problems(tmp_path, text)
    assert any("names unknown service 'dbx'; known services: api, db, web" in p for p in found)
    assert any(
        "names port 'admin' that service 'api' does not use; its named ports: ops" in p
        for p in found
    )


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('recipe = "postgres"', 'recipe = "mysql"').replace(
        'autosave = "5s"', "autosave = true"
    )
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert any("unknown recipe 'mysql'; expected one of: postgres, redis" in p for p in found)
    assert any("'run.autosave' must be 0 (no automatic saves) or at least 10ms" in p for p in found)


def test_not_toml_and_missing_tests(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(tmp_path, "[run\n")[0]
    assert "missing 'tests'" in problems(tmp_path, "[run]\nname = 'x'\n")[0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("30", 30.0),  # a number of seconds, quoted
        (3, 3.0),
        (0.25, 0.25),
        ("x", None),
        ("-3", None),
        ("30 s", None),
        (True, None),
    ],
)
def test_durations(value: object, seconds: float | None) -> None:
    assert stackfile.parse_duration(value) == seconds


def test_source_takes_directories_and_package_names(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    text = GOOD.replace('source = ["src"]', 'source = ["app", "../lib", "httpbin", "my_pkg.sub"]')
    stack = load(tmp_path, text)
    assert stack.source == [tmp_path / "app", tmp_path.parent / "lib"]
    assert stack.source_pkgs == ["httpbin", "my_pkg.sub"]
    assert stack.services["api"].source_pkgs == ["httpbin", "my_pkg.sub"]


def test_port_range(tmp_path: Path) -> None:
    stack = load(tmp_path, GOOD.replace('autosave = "5s"', 'ports = "22000-22999"'))
    assert stack.ports == (22000, 22999)
    for bad in ('"22999-22000"', '"80-90"', "22000", '"many"'):
        found = problems(tmp_path, GOOD.replace('autosave = "5s"', f"ports = {bad}"))
        assert any("'run.ports' must be a range like" in p and bad.strip('"') in p for p in found)


def test_start_order_raises_on_a_cycle_instead_of_looping(tmp_path: Path) -> None:
    stack = load(tmp_path, GOOD)
    api = stack.services["api"]
    looped = dataclasses.replace(
        stack,
        services={
            **stack.services,
            "db": dataclasses.replace(stack.services["db"], depends_on=["web"]),
            "api": api,
        },
    )
    with pytest.raises(StackFileError, match="dependency cycle or unknown dependency among"):
        looped.start_order()
    assert stack.stop_levels() == [["web"], ["api"], ["db"]]


def test_go_services(tmp_path: Path) -> None:
    go = (
        GOOD
        + """
[services.goapi]
go_build = "./cmd/api"
command = ["{go_binary}", "--port", "{port}"]

[services.prebuilt]
command = ["/opt/bin/server"]
coverage = "go"
"""
    )
    stack = load(tmp_path, go)
    goapi, prebuilt, api = (stack.services[n] for n in ("goapi", "prebuilt", "api"))
    assert goapi.go and goapi.coverage and goapi.go_build == "./cmd/api"
    assert prebuilt.go and prebuilt.coverage and prebuilt.go_build is None
    assert not api.go
    wrong = GOOD.replace('command = ["web",', 'command = ["{go_binary}", "web",')
    assert any("this service has no go_build" in p for p in problems(tmp_path, wrong))
    bad = go.replace('go_build = "./cmd/api"', "go_build = 3")
    assert any("'go_build' must be a Go package path" in p for p in problems(tmp_path, bad))


def test_coverage_of_a_go_build_service_is_go_or_false(tmp_path: Path) -> None:
    """`coverage = true` is coverage.py's: on a go_build service it was taken for a Python
    program, so the binary was never built and the service failed to start (exit 3)."""
    go = GOOD + '\n[services.goapi]\ngo_build = "."\ncommand = ["{go_binary}"]\n'
    unmeasured = load(tmp_path, go + "coverage = false\n").services["goapi"]
    assert not unmeasured.go and not unmeasured.coverage and unmeasured.go_build == "."
    said = problems(tmp_path, go + "coverage = true\n")
    line = line_of(go + "coverage = true\n", "coverage = true")
    assert said == [
        f"{tmp_path / 'stack.toml'}:{line}: 'services.goapi.coverage' = true measures a "
        'Python program, but go_build builds a Go one: coverage = "go" (go_build\'s '
        "default) measures it, false runs it unmeasured"
    ]
    said = problems(tmp_path, go + 'coverage = "python"\n')
    assert said[0].endswith(
        "'services.goapi.coverage' must be true (Python), false or \"go\", got 'python'"
    )


def test_two_services_giving_the_tests_one_variable_are_refused(tmp_path: Path) -> None:
    """`a-b` and `a_b` both gave the tests `E2E_A_B_URL`: one of the two addresses was
    dropped without a word, and the tests reached one service for both."""
    text = GOOD + (
        '\n[services.a-b]\ncommand = ["x", "{port}"]\n'
        '\n[services.a_b]\ncommand = ["x", "{port}"]\n'
        '\n[services.a]\ncommand = ["x", "{port.b-c}"]\n'
        '\n[services.a-b-c]\ncommand = ["x"]\n'
    )
    text = text.replace(
        '["x", "{port}"]\n\n[services.a_b]', '["x", "{port}", "{port.c}"]\n\n[services.a_b]'
    )
    said = problems(tmp_path, text)
    assert said == [
        f"{tmp_path / 'stack.toml'}:{line_of(text, '[services.a_b]')}: [services.a_b] gives the "
        "test command E2E_A_B_URL, as [services.a-b] does: the tests would get one address "
        "for both; rename one of them",
        f"{tmp_path / 'stack.toml'}:{line_of(text, '[services.a]')}: [services.a] gives the "
        "test command E2E_A_B_C_URL, as [services.a-b] does: the tests would get one address "
        "for both; rename one of them",
    ]
    assert load(tmp_path, GOOD.replace("[services.web]", "[services.web-ui]"))  # no clash


@pytest.mark.parametrize("url", ["127.0.0.1:{port}/health", "ftp://127.0.0.1:{port}/", "http:///x"])
def test_a_health_url_that_is_no_http_url_is_refused(tmp_path: Path, url: str) -> None:
    """Without its scheme, the URL was polled for the whole health timeout ("unknown url
    type: 127.0.0.1") and the run failed with exit 3, the service started for nothing."""
    text = GOOD.replace('"http://127.0.0.1:{port.ops}/readyz"', json.dumps(url))
    assert url in text
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'stack.toml'}:{line_of(text, 'health = ')}: 'services.api.health.url' "
        'must be an http:// or https:// URL, e.g. "http://127.0.0.1:{port}/health", got '
        f"{url!r}"
    ]


def test_a_source_entry_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """`source = ["app/main.py"]` measured nothing (coverage.py's source takes directories
    and packages) and the run failed with exit 4 after all of it."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("")
    text = GOOD.replace('source = ["src"]', 'source = ["app/main.py"]').replace(
        'cwd = "web"', 'cwd = "web"\nsource = ["src", "app/main.py"]'
    )
    stack = tmp_path / "stack.toml"
    run_line = line_of(text, 'source = ["app')
    web_line = line_of(text, 'source = ["src", ')
    assert problems(tmp_path, text) == [
        f"{stack}:{run_line}: 'run.source' entry 'app/main.py' is a file: source takes "
        "directories or package names (its directory is 'app')",
        f"{stack}:{web_line}: 'services.web.source' entry 'app/main.py' is a file: source "
        "takes directories or package names (its directory is 'app')",
    ]


KUBE = """\
[run]
tests = ["python", "-m", "pytest", "e2e"]
source = ["src"]

[services.kube]
recipe = "kube-apiserver"
manifests = ["crd.yaml"]

[services.api]
command = ["api", "--kubeconfig-url", "{services.kube.url}"]
depends_on = ["kube"]
"""


def test_the_kube_apiserver_recipe_takes_manifests(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "crd.yaml").write_text("kind: CustomResourceDefinition\n")
    stack = load(tmp_path, KUBE)
    assert stack.services["kube"].manifests == ((tmp_path / "crd.yaml").resolve(),)
    missing = problems(tmp_path, KUBE.replace('"crd.yaml"', '"nowhere.yaml"'))
    assert any("manifest 'nowhere.yaml' is not a file" in p for p in missing), missing
    wrong = KUBE.replace('recipe = "kube-apiserver"', 'recipe = "postgres"')
    assert any("'manifests' is for recipe" in p for p in problems(tmp_path, wrong))


def test_the_kube_apiserver_recipe_takes_extra_args(tmp_path: Path) -> None:
    """More kube-apiserver flags, as `KubeAPIServer(extra_args=...)` takes them in tests:
    `{artifacts}` and `{run_id}` may be named (known before any port is chosen), nothing
    else, and only for that recipe."""
    (tmp_path / "src").mkdir()
    (tmp_path / "crd.yaml").write_text("kind: CustomResourceDefinition\n")
    flags = 'extra_args = ["--audit-log-path={artifacts}/audit-{run_id}.log", "--v=2"]\n'
    with_flags = KUBE.replace('manifests = ["crd.yaml"]\n', f'manifests = ["crd.yaml"]\n{flags}')
    stack = load(tmp_path, with_flags)
    assert stack.services["kube"].extra_args == (
        "--audit-log-path={artifacts}/audit-{run_id}.log",
        "--v=2",
    )
    assert load(tmp_path, KUBE).services["kube"].extra_args == ()
    wrong = with_flags.replace('recipe = "kube-apiserver"', 'recipe = "postgres"')
    wrong = wrong.replace('manifests = ["crd.yaml"]\n', "")
    assert any("'extra_args' is for recipe" in p for p in problems(tmp_path, wrong))
    port = with_flags.replace("--v=2", "--secure-port={port}")
    assert any("only {artifacts} and {run_id}" in p for p in problems(tmp_path, port))
    unknown = with_flags.replace("--v=2", "--x={nothing}")
    assert any("unknown placeholder '{nothing}'" in p for p in problems(tmp_path, unknown))
    not_strings = with_flags.replace('"--v=2"', "2")
    assert any("extra_args" in p for p in problems(tmp_path, not_strings))


def test_a_kube_apiservers_extra_args_are_rendered_and_passed_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bins = tmp_path / "bin"
    bins.mkdir()
    for binary in ("etcd", "kube-apiserver"):
        (bins / binary).write_text("")  # found, never run: planning starts nothing
    monkeypatch.setenv("E2ECOV_KUBE_BIN", str(bins))
    from e2ecov.kubeapi import KubeAPIServer
    from e2ecov.planning import addresses

    (tmp_path / "src").mkdir()
    (tmp_path / "crd.yaml").write_text("kind: CustomResourceDefinition\n")
    flags = 'extra_args = ["--audit-log-path={artifacts}/audit-{run_id}.log"]\n'
    stack = load(tmp_path, KUBE.replace('manifests = ["crd.yaml"]\n', flags))
    recipe = addresses(stack, "r1").recipes["kube"]
    assert isinstance(recipe, KubeAPIServer)
    rendered = f"--audit-log-path={stack.artifacts}/audit-r1.log"
    assert recipe.extra_args == (rendered,)
    assert recipe._apiserver_args()[-1] == rendered


NAMED_ONLY = """\
[run]
tests = ["pytest", "--api", "{services.api.url}", "--fixed", "{services.fixed.url}"]

[services.api]
command = ["api", "--listen", "127.0.0.1:{port.http}", "--ops", "{port.ops}"]
health = { url = "http://127.0.0.1:{port.http}/healthz" }

[services.fixed]
command = ["fixed", "--listen", "127.0.0.1:18080"]
health = { url = "http://localhost:18080/ready" }

[services.worker]
command = ["worker", "--metrics", "{port.metrics}"]
"""


def test_a_service_without_its_own_port_is_at_its_health_urls_origin(tmp_path: Path) -> None:
    """A port was picked for `{port}` whether the service used it or not, and its URL
    (`E2E_<SERVICE>_URL`, `{services.X.url}`) pointed there, where nothing listens (an
    outside check). A service with only named ports, or a fixed one, is at its health URL's
    origin; one with neither has no URL."""
    from e2ecov.planning import plan

    stack = load(tmp_path, NAMED_ONLY)
    planned = plan(stack, "r1", tmp_path / "control", tmp_path / "out")
    api, fixed, worker = (planned.services[n] for n in ("api", "fixed", "worker"))
    assert set(api.ports) == {"http", "ops"} and set(worker.ports) == {"metrics"}
    assert api.url == f"http://127.0.0.1:{api.ports['http']}"
    assert fixed.url == "http://localhost:18080" and fixed.ports == {}
    assert worker.url == ""
    assert planned.test_env["E2E_API_URL"] == api.url
    assert planned.test_env["E2E_API_OPS_URL"] == f"http://127.0.0.1:{api.ports['ops']}"
    assert planned.test_env["E2E_FIXED_URL"] == "http://localhost:18080"
    assert "E2E_WORKER_URL" not in planned.test_env
    assert planned.tests == ["pytest", "--api", api.url, "--fixed", fixed.url]


def test_a_port_or_url_a_service_does_not_have_is_refused(tmp_path: Path) -> None:
    text = NAMED_ONLY.replace(
        'tests = ["pytest"', 'tests = ["pytest", "{services.worker.url}", "{services.api.port}"'
    )
    found = problems(tmp_path, text)
    assert any(
        "service 'worker' uses no {port} of its own, and its health URL names no port" in p
        and "{services.worker.port.metrics}" in p
        for p in found
    ), found
    assert any(
        "service 'api' uses no {port} of its own; use {services.api.port.http}" in p for p in found
    ), found


def run_exit_and_stderr(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """What a user sees of `e2ecov run` on this stack file: its exit code and stderr."""
    from e2ecov import cli

    path = tmp_path / "stack.toml"
    path.write_text(text)
    code = cli.main(["run", "-c", str(path)])
    return code, capsys.readouterr().err


HEALTH_LINE = 'health = { url = "http://127.0.0.1:{port.ops}/readyz", timeout = "30s" }'


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("interval", '"0s"', "from 10ms to 1m"),
        ("interval", "0", "from 10ms to 1m"),
        ("interval", '"1ms"', "from 10ms to 1m"),
        ("interval", "-1", "from 10ms to 1m"),
        ("interval", '"5m"', "from 10ms to 1m"),
        ("timeout", '"0s"', "more than 0"),
        ("timeout", "-5", "more than 0"),
    ],
)
def test_a_health_interval_or_timeout_out_of_range_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, allowed: str
) -> None:
    """`interval = "0s"` polled the health URL in a busy loop for the whole timeout, and
    `timeout = "0s"` gave up after one answer: both are refused before anything starts."""
    health = f'health = {{ url = "http://127.0.0.1:{{port.ops}}/readyz", {key} = {value} }}'
    text = GOOD.replace(HEALTH_LINE, health)
    code, err = run_exit_and_stderr(tmp_path, text, capsys)
    assert code == 2, err
    assert (
        f"stack.toml:{line_of(text, 'health = ')}: 'services.api.health.{key}' must be "
        f"{allowed}: a duration like '30s', '500ms' or a number of seconds, got "
    ) in err


@pytest.mark.parametrize(
    ("interval", "timeout", "seconds"),
    [('"10ms"', '"1ms"', (0.01, 0.001)), ('"1m"', '"2h"', (60.0, 7200.0))],
)
def test_health_interval_and_timeout_at_the_ends_of_their_range_are_taken(
    tmp_path: Path, interval: str, timeout: str, seconds: tuple[float, float]
) -> None:
    health = (
        'health = { url = "http://127.0.0.1:{port.ops}/readyz", '
        f"interval = {interval}, timeout = {timeout} }}"
    )
    health_of_api = load(tmp_path, GOOD.replace(HEALTH_LINE, health)).services["api"].health
    assert health_of_api is not None
    assert (health_of_api.interval, health_of_api.timeout) == seconds


@pytest.mark.parametrize(
    ("key", "seconds", "allowed"),
    [
        ("interval", 0.0, "from 10ms to 1m"),
        ("interval", 0.001, "from 10ms to 1m"),
        ("interval", 300.0, "from 10ms to 1m"),
        ("timeout", 0.0, "more than 0"),
        ("timeout", -5.0, "more than 0"),
    ],
)
def test_a_health_built_in_python_out_of_range_is_refused_as_the_stack_file_refuses_it(
    key: str, seconds: float, allowed: str
) -> None:
    """Only the stack file's loader checked the ranges: `Health(url, interval=0)` built in
    Python was taken, and its health wait polled in a busy loop for the whole timeout."""
    with pytest.raises(ValueError, match=f"health {key} must be {allowed}, got "):
        stackfile.Health("http://127.0.0.1:1/health", **{key: seconds})


def test_a_health_built_in_python_at_the_ends_of_its_ranges_is_taken() -> None:
    for interval, timeout in ((0.01, 0.001), (60.0, 7200.0)):
        health = stackfile.Health("http://127.0.0.1:1/health", timeout, interval)
        assert (health.interval, health.timeout) == (interval, timeout)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("autosave", 0.001, "run autosave must be 0 (no automatic saves) or at least 10ms"),
        ("autosave", -1.0, "run autosave must be 0 (no automatic saves) or at least 10ms"),
        ("test_timeout", 0.0, "run test_timeout must be more than 0, got 0.0 seconds"),
        ("grace", -1.0, "run grace must be 0 or more"),
        ("fail_under", 101.0, "run fail_under must be a percent between 0 and 100, got 101.0"),
        ("fail_under", -1.0, "run fail_under must be a percent between 0 and 100"),
        ("ports", (80, 90), "run ports must be a range within 1024-65535"),
        ("ports", (23000, 22000), "run ports must be a range within 1024-65535, low first"),
    ],
)
def test_a_stack_built_in_python_out_of_range_is_refused_as_the_stack_file_refuses_it(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    """Only the loader checked the run's ranges: a Stack built in Python (or changed with
    dataclasses.replace) took `autosave = 0.001`, an agent saving in a busy loop, or a test
    timeout of 0, which stopped the tests at once."""
    good = load(tmp_path, GOOD)
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(good, **{key: value})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("grace", -0.5, "service api grace must be 0 or more, got -0.5 seconds"),
        ("fail_under", 100.5, "service api fail_under must be a percent between 0 and 100"),
    ],
)
def test_a_service_built_in_python_out_of_range_is_refused_as_the_stack_file_refuses_it(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    api = load(tmp_path, GOOD).services["api"]
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(api, **{key: value})


def test_a_stack_built_in_python_at_the_ends_of_its_ranges_is_taken(tmp_path: Path) -> None:
    good = load(tmp_path, GOOD)
    ends: dict[str, Any]
    for ends in (
        {"autosave": 0.0, "grace": 0.0, "test_timeout": 0.001, "fail_under": 0.0},
        {"autosave": 0.01, "test_timeout": None, "fail_under": 100.0, "ports": (1024, 65535)},
    ):
        stack = dataclasses.replace(good, **ends)
        assert {key: getattr(stack, key) for key in ends} == ends
    api = dataclasses.replace(good.services["api"], grace=0.0, fail_under=100.0)
    assert (api.grace, api.fail_under) == (0.0, 100.0)


def test_the_loader_reports_the_ranges_the_objects_declare(tmp_path: Path) -> None:
    """Each range lives on its object; the loader's messages read it from there."""
    text = GOOD.replace('autosave = "5s"', 'autosave = "5s"\nfail_under = 150\nports = "80-90"')
    found = "\n".join(problems(tmp_path, text))
    assert "'run.fail_under' must be a percent between 0 and 100, got 150" in found
    assert "'run.ports' must be a range like \"22000-22999\" within 1024-65535" in found


def test_autosave_0_turns_automatic_saves_off_and_doctor_says_so(tmp_path: Path) -> None:
    """0 is documented as "off" (the agents start no autosave at 0); `doctor` said
    "autosave: 0s", which reads as saving all the time."""
    from e2ecov import doctor

    stack = load(tmp_path, GOOD.replace('autosave = "5s"', "autosave = 0"))
    assert stack.autosave == 0.0
    assert "autosave:    off (autosave = 0)" in doctor.configuration(stack)
    assert "autosave:    5s" in doctor.configuration(load(tmp_path, GOOD))


@pytest.mark.parametrize("value", ["-1", '"-1s"', "-0.5", '"1ms"'])
def test_a_negative_or_busy_autosave_is_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    text = GOOD.replace('autosave = "5s"', f"autosave = {value}")
    code, err = run_exit_and_stderr(tmp_path, text, capsys)
    assert code == 2, err
    assert (
        f"stack.toml:{line_of(text, 'autosave')}: 'run.autosave' must be 0 (no automatic "
        "saves) or at least 10ms: a duration like '30s', '500ms' or a number of seconds, got "
    ) in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:{port.ops}/ready now", "' '"),
        ("http://127.0.0.1:{port.ops}/ready\tnow", "'\\t'"),
        ('http://127.0.0.1:{port.ops}/"readyz"', "'\"'"),
        ("http://127.0.0.1:{port.ops}/prêt", "'ê'"),
        ("http://127.0.0.1:{port.ops}/100%", "'%'"),
        ("http://127.0.0.1:{port.ops}/a|b<c>", "'<', '>', '|'"),
    ],
)
def test_a_health_url_with_characters_a_url_cannot_hold_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, shown: str
) -> None:
    """A space in the URL was accepted, then every health request failed ("URL can't contain
    control characters") for the whole timeout: exit 3 after the stack had started."""
    text = GOOD.replace('"http://127.0.0.1:{port.ops}/readyz"', json.dumps(url))
    code, err = run_exit_and_stderr(tmp_path, text, capsys)
    assert code == 2, err
    assert (
        f"stack.toml:{line_of(text, 'health = ')}: 'services.api.health.url' holds characters "
        f"a URL cannot: {shown}; percent-encode them (a space is %20, a % is %25), got {url!r}"
    ) in err


def test_a_health_url_with_an_unclosed_bracket_is_exit_2_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """urlsplit's "Invalid IPv6 URL" ended the stack file's check with a traceback."""
    url = "http://[::1:{port.ops}/readyz"
    text = GOOD.replace('"http://127.0.0.1:{port.ops}/readyz"', json.dumps(url))
    code, err = run_exit_and_stderr(tmp_path, text, capsys)
    assert code == 2, err
    assert f"'services.api.health.url' is not a URL (Invalid IPv6 URL), got {url!r}" in err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port.ops}/ready%20now?probe=1&x=[a]#top",
        "http://[::1]:{port.ops}/readyz",
        "https://127.0.0.1:{port.ops}/~status;v=1",
    ],
)
def test_a_health_url_with_only_url_characters_is_taken(tmp_path: Path, url: str) -> None:
    stack = load(tmp_path, GOOD.replace('"http://127.0.0.1:{port.ops}/readyz"', json.dumps(url)))
    health = stack.services["api"].health
    assert health is not None and health.url == url


def test_doctor_says_which_services_start_together_and_which_name_one_unordered(
    tmp_path: Path,
) -> None:
    """`start order: db, api` read as one after the other where they start together, and
    a service reading another's URL without depends_on was not mentioned: it failed at run
    time "cannot reach the database" (an outside check)."""
    from e2ecov import doctor

    ordered = doctor.configuration(load(tmp_path, GOOD))
    assert "start order: db, api (after db), web (after api)" in ordered
    assert not [line for line in ordered if line.startswith("note:")]
    unordered = GOOD.replace('depends_on = ["db"]\n', "").replace('depends_on = ["api"]\n', "")
    lines = doctor.configuration(load(tmp_path, unordered))
    assert "start order: db, api, web (together: none has depends_on)" in lines
    assert [line for line in lines if line.startswith("note:")] == [
        "note:        service api names db ({services.db.url}) without depending on it: they "
        'start together, api maybe before db is healthy; depends_on = ["db"] in '
        "[services.api] orders them",
        "note:        service web names api ({services.api.url}) without depending on it: "
        'they start together, web maybe before api is healthy; depends_on = ["api"] in '
        "[services.web] orders them",
    ]
