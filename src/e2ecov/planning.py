"""What a run decides before anything starts: its id, its ports, every service's command
and environment, the test command's, the report settings, and what is wrong that needs
nothing running to see.

Kept apart from the phases that run the stack (`runner`) because all of it follows from
the stack file, the run id and where the run writes: it can be computed, checked and tested
without a process started (the tests call `plan` on a stack file alone), and the run calls
it once, while it prepares, then only reads the `Plan`. Nothing here starts a process:
choosing a port binds it for an instant, a recipe's binaries are looked up (a missing one
is a `StackStartError` before anything runs), and `link_agent` makes the agent's home.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import e2ecov
from e2ecov import gocover, placeholders, protocol, reports
from e2ecov.errors import StackStartError
from e2ecov.placeholders import Values
from e2ecov.recipes import RecipeUnavailable, free_port
from e2ecov.services import Recipe, ServiceRun, make_recipe
from e2ecov.stackfile import ServiceSpec, Stack

# the start-up hook put first on a measured Python service's PYTHONPATH
STARTUP_DIR = Path(__file__).parent / "startup"
# the directory holding the e2ecov package, linked into a service's agent home
PACKAGE_HOME = Path(e2ecov.__file__).resolve().parent.parent


def make_run_id(name: str) -> str:
    """Made once per run; every file, tag and name of the run derives from it."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def clean_environ() -> dict[str, str]:
    """e2ecov's environment without e2ecov's own variables (a nested run must not inherit them)."""
    return {k: v for k, v in os.environ.items() if k not in protocol.ALL_ENV}


def _mapped_sources(spec: ServiceSpec, stack: Stack) -> list[str]:
    """What the service measures: its source, plus where that source sits in mapped roots."""
    found = [str(s) for s in spec.source]
    for foreign, local in stack.paths.items():
        for source in spec.source:
            if source == local or local in source.parents:
                found.append(foreign + "/" + str(source.relative_to(local)).removeprefix("."))
    return [f.rstrip("/") for f in found]


class PortPicker:
    """Free loopback ports for `{port}` placeholders, never the same one twice in a run:
    from the kernel, or from the stack's `ports` range (tried from a random point in it)."""

    def __init__(self, span: tuple[int, int] | None) -> None:
        self.span = span
        self.taken: set[int] = set()
        self._next = random.randint(*span) if span else 0

    def __call__(self) -> int:
        if self.span is None:
            return free_port()  # never one it handed out before in this process
        low, high = self.span
        for _ in range(high - low + 1):
            candidate, self._next = self._next, low + (self._next + 1 - low) % (high - low + 1)
            if candidate not in self.taken and _bindable(candidate):
                self.taken.add(candidate)
                return candidate
        raise StackStartError(f'no free port left in [run] ports = "{low}-{high}"')


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Plan:
    """The run as it will be: every service's command, environment and ports, the tests."""

    services: dict[str, ServiceRun]
    tests: list[str]
    test_env: dict[str, str]
    report_config: reports.ReportConfig


@dataclass(frozen=True)
class Addresses:
    """Every service's ports and URL for this run; recipes already know theirs."""

    own: dict[str, dict[str, int]]  # service → port name ("" is {port}) → number
    urls: dict[str, str]
    ports: dict[tuple[str, str], int]  # (service, port name) → number
    recipes: dict[str, Recipe]

    def values(self, stack: Stack, run_id: str, service: str | None, binary: str) -> Values:
        own = self.own[service] if service else {}
        return Values(own, self.urls, self.ports, str(stack.artifacts), run_id, binary)


def addresses(stack: Stack, run_id: str) -> Addresses:
    """Choose the ports (a recipe's too, from the run's range); raises StackStartError when
    a recipe's binaries are missing."""
    pick = PortPicker(stack.ports)
    found = Addresses({}, {}, {}, {})
    for name, spec in stack.services.items():
        if spec.recipe:
            # the owner mark every process of a command service carries: `e2ecov down` left
            # a kept run's recipe servers running without it (and removed their data)
            mark = {protocol.ENV_RUN_ID: run_id, protocol.ENV_STACK_SERVICE: name}
            fixed = Values({}, {}, {}, str(stack.artifacts), run_id, "")
            args = [placeholders.render(a, fixed) for a in spec.extra_args]
            try:
                recipe = make_recipe(spec, pick, mark, args)
            except RecipeUnavailable as exc:
                raise StackStartError(f"service '{name}': {exc}") from exc
            found.recipes[name] = recipe
            found.urls[name] = recipe.url
            found.ports[(name, "")] = recipe.port
            found.own[name] = {}
        else:
            own = {p: pick() for p in ([""] if spec.main_port else []) + sorted(spec.port_names)}
            found.own[name] = own
            template = spec.url_template
            if template is not None:
                found.urls[name] = placeholders.render(template, Values(own, {}, {}, "", "", ""))
            found.ports.update({(name, p): n for p, n in own.items()})
    return found


def service_run(
    spec: ServiceSpec, stack: Stack, where: Addresses, run_id: str, control_dir: Path, out: Path
) -> ServiceRun:
    """One service as it will be started: command, environment and URLs rendered."""
    values = where.values(stack, run_id, spec.name, go_binary(out, spec.name))
    env_added = {k: placeholders.render(v, values) for k, v in spec.env.items()}
    env = {
        **clean_environ(),
        **env_added,
        protocol.ENV_RUN_ID: run_id,
        protocol.ENV_ARTIFACTS: str(stack.artifacts),
        protocol.ENV_STACK_SERVICE: spec.name,
    }
    if spec.go:
        env.update(go_env(spec, control_dir, out, stack.autosave))
    elif spec.coverage:
        env.update(agent_env(spec, stack, run_id, control_dir, out))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(STARTUP_DIR), env.get("PYTHONPATH", "")) if p
        )
    return ServiceRun(
        spec=spec,
        ports=where.own[spec.name],
        command=[placeholders.render(a, values) for a in spec.command or []],
        env_added=env_added,
        env=env,
        log_dir=out / "logs",
        url=where.urls.get(spec.name, ""),
        health_url=placeholders.render(spec.health.url, values) if spec.health else None,
        recipe=where.recipes.get(spec.name),
        run_id=run_id,
    )


def plan(stack: Stack, run_id: str, control_dir: Path, out: Path) -> Plan:
    """Choose ports and render every placeholder; raises StackStartError when a recipe's
    binaries are missing. `out` is where this run writes (data, ledger, logs)."""
    where = addresses(stack, run_id)
    services = {
        name: service_run(spec, stack, where, run_id, control_dir, out)
        for name, spec in stack.services.items()
    }
    test_values = where.values(stack, run_id, None, "")
    return Plan(
        services=services,
        tests=[placeholders.render(a, test_values) for a in stack.tests],
        test_env=test_environment(stack, services, clean_environ(), test_values, control_dir),
        report_config=report_config(stack, run_id),
    )


def go_binary(out: Path, service: str) -> str:
    """Where e2ecov puts the binary it builds from a service's `go_build`."""
    return str(out / "bin" / service)


def go_env(spec: ServiceSpec, control_dir: Path, out: Path, autosave: float) -> dict[str, str]:
    """A Go service's GOCOVERDIR, and what e2ecov's Go agent reads if the service imports it."""
    return {
        "GOCOVERDIR": str(out / gocover.GO_DIR / spec.name),
        protocol.ENV_AUTOSAVE: str(autosave),
        protocol.ENV_SERVICE: spec.name,
        protocol.ENV_CONTROL_DIR: str(control_dir),
        protocol.ENV_LEDGER_DIR: str(out / "processes"),
    }


def agent_env(
    spec: ServiceSpec, stack: Stack, run_id: str, control_dir: Path, out: Path
) -> dict[str, str]:
    """What the agent inside a measured service reads (see `agent.Settings`)."""
    return {
        protocol.ENV_SERVICE: spec.name,
        protocol.ENV_CONTROL_DIR: str(control_dir),
        protocol.ENV_DATA_DIR: str(out / "data"),
        protocol.ENV_LEDGER_DIR: str(out / "processes"),
        protocol.ENV_SOURCE: json.dumps(_mapped_sources(spec, stack)),
        protocol.ENV_SOURCE_PKGS: json.dumps(spec.source_pkgs),
        protocol.ENV_CONTEXTS: "1" if stack.contexts else "0",
        protocol.ENV_CONTEXT: protocol.STARTUP_CONTEXT,
        protocol.ENV_AUTOSAVE: str(stack.autosave),
        protocol.ENV_BRANCH: "1" if stack.branch else "0",
        protocol.ENV_HOME: str(agent_home(control_dir)),
        protocol.ENV_HOOK_DIR: str(STARTUP_DIR),
    }


def agent_home(control_dir: Path) -> Path:
    """What a measured service whose interpreter lacks e2ecov appends to its path: a
    directory holding only a link to the e2ecov package. Not e2ecov's whole environment: a
    service must not import coverage.py or its own dependencies from there, and so pass
    under e2ecov while it would fail in production (its interpreter needs coverage.py; the
    agent says so in the service's log when it is missing)."""
    return control_dir / "agent-home"


def link_agent(control_dir: Path) -> None:
    home = agent_home(control_dir)
    home.mkdir()
    (home / "e2ecov").symlink_to(PACKAGE_HOME / "e2ecov", target_is_directory=True)


def test_environment(
    stack: Stack,
    services: dict[str, ServiceRun],
    base: dict[str, str],
    values: Values,
    control_dir: Path,
) -> dict[str, str]:
    """The test command's environment: every service's URLs plus e2ecov's run variables."""
    env = {**base, **{k: placeholders.render(v, values) for k, v in stack.test_env.items()}}
    for svc in services.values():
        prefix = svc.spec.env_prefix
        if svc.url:  # none for a service with no {port} and no port in its health URL
            env[f"{prefix}_URL"] = svc.url
        for port_name, number in svc.ports.items():
            if port_name:
                env[svc.spec.port_env(port_name)] = f"http://127.0.0.1:{number}"
    env.update({
        protocol.ENV_RUN_ID: values.run_id,
        protocol.ENV_ARTIFACTS: str(stack.artifacts),
        protocol.ENV_CONTROL_DIR: str(control_dir),
        protocol.ENV_CONTEXTS: "1" if stack.contexts else "0",
    })  # fmt: skip
    return env


def report_config(stack: Stack, run_id: str) -> reports.ReportConfig:
    measured = [spec for spec in stack.services.values() if spec.coverage and not spec.go]
    return reports.ReportConfig(
        root=stack.root,
        source=sorted({s for spec in measured for s in spec.source} or set(stack.source)),
        source_pkgs=sorted({p for spec in measured for p in spec.source_pkgs}),
        paths=stack.paths,
        contexts=stack.contexts,
        fail_under=stack.fail_under,
        service_fail_under={
            n: s.fail_under for n, s in stack.services.items() if s.fail_under is not None
        },
        run_id=run_id,
        branch=stack.branch,
    )


def find_program(command: list[str], cwd: Path, env: dict[str, str]) -> str | None:
    """Where `command[0]` is, as the process will look for it (None: nowhere)."""
    program = command[0]
    if os.sep in program:
        path = cwd / program
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def preflight(stack: Stack, planned: Plan) -> list[str]:
    """What is wrong that needs nothing running to see (exit 2 when not empty)."""
    problems = []
    if any(s.spec.go for s in planned.services.values()) and shutil.which("go") is None:
        problems.append(f"the stack has Go services, whose reports need go: {gocover.INSTALL_HINT}")
    for name, svc in planned.services.items():
        go_build = svc.spec.go_build
        if not svc.command:
            continue
        if not svc.spec.cwd.is_dir():
            problems.append(f"service '{name}': cwd {svc.spec.cwd} does not exist")
        elif go_build:
            if why := gocover.local_package_problem(svc.spec.cwd, go_build):
                problems.append(f"service '{name}': go_build {go_build!r}: {why}")
        elif (program := find_program(svc.command, svc.spec.cwd, svc.env)) is None:
            problems.append(
                f"service '{name}': program {svc.command[0]!r} not found "
                f"(looked on PATH and in {svc.spec.cwd}); install it or fix its command"
            )
        elif svc.spec.go and gocover.built_with_cover(Path(program)) is False:
            # found only after the whole suite had run (it wrote no counters) until then
            problems.append(
                f"service '{name}': {program} is a Go binary not built with -cover, so it "
                "would write no coverage: rebuild it with go build -cover (or let e2ecov "
                "build it: go_build)"
            )
        elif svc.spec.go and gocover.instruments_nothing(Path(program)):
            problems.append(f"service '{name}': {gocover.NOTHING_INSTRUMENTED.format(program)}")
    if planned.tests and find_program(planned.tests, stack.root, planned.test_env) is None:
        problems.append(
            f"[run] tests: program {planned.tests[0]!r} not found (looked on PATH and in "
            f"{stack.root}); install it or fix the test command"
        )
    return problems
