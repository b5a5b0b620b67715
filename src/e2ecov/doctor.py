"""`e2ecov doctor`: can this machine run the stack? Binaries, ports, directories, coverage.py.

Each check is one line with ok/FAIL and, on failure, the fix. Prints the effective
configuration too, so a newcomer sees what e2ecov resolved from the stack file.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import coverage

from e2ecov import gocover, recipes, services
from e2ecov.errors import UsageError
from e2ecov.stackfile import ServiceSpec, Stack

MIN_COVERAGE = (7, 14)  # its function regions (start_line) and the run:core option


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def version_of(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as `7.14.0`."""
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def require_coverage() -> None:
    """Refuse (exit 2, before anything starts) a coverage.py too old for e2ecov: with 7.10
    the whole stack ran, then the report crashed with a KeyError and no report was written
    (an outside check)."""
    if version_of(coverage.__version__) < MIN_COVERAGE:
        need = ".".join(map(str, MIN_COVERAGE))
        raise UsageError(
            f"coverage.py {coverage.__version__} is too old for e2ecov (need >= {need}; "
            f"pip install 'coverage>={need}')"
        )


def checks(stack: Stack | None) -> list[Check]:
    found: list[Check] = []
    version = coverage.__version__
    need = ".".join(map(str, MIN_COVERAGE))
    found.append(
        Check(
            "coverage.py",
            version_of(version) >= MIN_COVERAGE,
            f"{version} (need >= {need}; pip install 'coverage>={need}')",
        )
    )
    found.append(Check("python", True, f"{sys.version.split()[0]} at {sys.executable}"))
    try:
        from coverage import tracer  # noqa: F401

        found.append(
            Check("ctrace core", True, "C tracer available (needed for per-test contexts)")
        )
    except ImportError:
        found.append(
            Check(
                "ctrace core",
                False,
                "coverage's C tracer is missing: reinstall coverage from a wheel",
            )
        )
    with tempfile.TemporaryDirectory(prefix="e2ecov-", dir="/tmp") as tmp:
        path = Path(tmp) / "123456.sock"
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(path))
            found.append(Check("control sockets", True, f"Unix sockets work in {Path(tmp).parent}"))
        except OSError as exc:
            found.append(
                Check("control sockets", False, f"cannot bind a Unix socket in /tmp: {exc}")
            )
    try:
        port = recipes.free_port()
        found.append(
            Check("free ports", True, f"the kernel hands out loopback ports (e.g. {port})")
        )
    except OSError as exc:
        found.append(Check("free ports", False, f"cannot bind 127.0.0.1:0: {exc}"))
    if stack is None:
        return found
    artifacts = stack.artifacts
    probe = artifacts if artifacts.exists() else next(p for p in artifacts.parents if p.exists())
    found.append(
        Check(
            "artifacts",
            os.access(probe, os.W_OK),
            f"{artifacts} "
            + (
                "(writable)"
                if os.access(probe, os.W_OK)
                else "(NOT writable: pick another --artifacts)"
            ),
        )
    )
    for source in stack.source:
        found.append(
            Check(
                "source",
                source.is_dir(),
                f"{source}" + ("" if source.is_dir() else " does not exist: fix [run] source"),
            )
        )
    for name, spec in stack.services.items():
        if spec.recipe:
            try:
                # built as `run` builds it (each recipe finds its binaries its own way); a
                # recipe object starts nothing until asked
                services.make_recipe(spec, pick=lambda: 0, mark={})
                found.append(
                    Check(f"service {name}", True, f"recipe {spec.recipe}: binaries found")
                )
            except recipes.RecipeUnavailable as exc:
                found.append(Check(f"service {name}", False, str(exc)))
        elif spec.command and not spec.go_build:  # a go_build binary does not exist yet
            program = spec.command[0]
            # the service's own PATH, as `run` starts it with (its env over this one's)
            where = shutil.which(program, path=_service_path(spec.env)) or (
                str(spec.cwd / program) if (spec.cwd / program).exists() else None
            )
            detail = (
                f"{program} → {where}"
                if where
                else f"{program!r} not found on PATH (install it or fix command)"
            )
            found.append(Check(f"service {name}", where is not None, detail))
        if not spec.cwd.is_dir():
            found.append(Check(f"service {name}", False, f"cwd {spec.cwd} does not exist"))
        if spec.go:
            found.append(_go_service(name, spec.command or [], spec.cwd, spec.go_build))
        elif spec.command and spec.coverage and found[-1].ok:  # the program was found
            found.append(_service_interpreter(name, spec.command, spec.cwd, spec.env))
            if found[-1].ok and spec.source_pkgs:
                packages = _source_packages(name, spec)
                found += [packages] if packages is not None else []
    tests = shutil.which(stack.tests[0]) if stack.tests else None
    found.append(
        Check(
            "tests",
            tests is not None,
            f"{stack.tests[0]} → {tests}" if tests else f"{stack.tests[0]!r} not found on PATH",
        )
    )
    if tests and stack.contexts:
        found.append(_test_interpreter(tests, stack.tests))
    return found


def _go_service(name: str, command: list[str], cwd: Path, go_build: str | None) -> Check:
    """A Go service needs `go` (reports, go_build) and, when prebuilt, a -cover binary."""
    label = f"service {name}"
    tool = shutil.which("go")
    if tool is None:
        return Check(label, False, "Go services need the go tool on PATH: install Go")
    if go_build:
        if why := gocover.local_package_problem(cwd, go_build):
            return Check(label, False, f"go_build {go_build!r}: {why}")
        return Check(label, True, f"e2ecov builds {go_build} with go build -cover ({tool})")
    program = shutil.which(command[0]) or str(cwd / command[0]) if command else ""
    built = gocover.built_with_cover(Path(program))
    if built is None:
        return Check(
            label, True,
            f"{command[0]} is not a Go binary itself (a wrapper?): make sure what it runs is "
            "built with go build -cover",
        )  # fmt: skip
    if not built:
        return Check(label, False, f"{program} is not built with -cover: go build -cover ...")
    if gocover.instruments_nothing(Path(program)):
        return Check(label, False, gocover.NOTHING_INSTRUMENTED.format(program))
    return Check(label, True, f"{program} is a Go binary built with -cover")


def interpreter(program: str) -> str | None:
    """The Python interpreter that runs `program`: itself, or its `#!` line's (console
    scripts); None when it is not a Python program."""
    if re.fullmatch(r"python[0-9.]*", Path(program).name):
        return program
    try:
        with open(program, "rb") as handle:
            first = handle.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    words = first[2:].split()
    if Path(words[0]).name == "env" and len(words) > 1:
        return shutil.which(words[-1])
    return words[0]


def _ask(
    python: str, code: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Run `code` in `python` (in `cwd`, with `env` over a clean environment); (worked, its
    last output line)."""
    try:
        done = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_clean_env(), **(env or {})},
            cwd=cwd,
        )
    except OSError as exc:
        return False, str(exc)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else ""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("E2ECOV_", "PYTHON"))}


def _service_path(env: dict[str, str]) -> str | None:
    return env.get("PATH") or os.environ.get("PATH")


def _service_program(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Where the service's program is, as it is started (its own PATH, then its cwd)."""
    return shutil.which(command[0], path=_service_path(env)) or str(cwd / command[0])


def _service_interpreter(name: str, command: list[str], cwd: Path, env: dict[str, str]) -> Check:
    program = _service_program(command, cwd, env)
    python = interpreter(program)
    label = f"service {name}"
    if python is None:
        if gocover.built_with_cover(Path(program)):
            # what `run` says of it too: doctor said to turn coverage off, and dropped it
            return Check(
                label,
                False,
                f'{command[0]} is a Go binary built with -cover: set coverage = "go" for it',
            )
        # a wrapper (`sh -c "exec gunicorn ..."`, an entrypoint script, `env`, `tini`) is
        # measured through the Python it starts, as `run` does: "set coverage = false" here
        # dropped a service the run measured. One that starts no Python is the run's loss,
        # named there ("no process announced itself").
        return Check(
            label,
            True,
            f"{command[0]} is not a Python program itself (a wrapper?): the Python processes "
            "it starts are measured; if it starts none, set coverage = false",
        )
    need = ".".join(map(str, MIN_COVERAGE))
    ok, said = _ask(python, "import coverage; print(coverage.__version__)")
    if not ok or version_of(said) < MIN_COVERAGE:
        why = f"has coverage {said}" if ok else "cannot import coverage"
        return Check(label, False, f"{python} {why}: {python} -m pip install 'coverage>={need}'")
    return Check(label, True, f"interpreter {python} has coverage {said}")


def _source_packages(name: str, spec: ServiceSpec) -> Check | None:
    """The `source` packages the service's interpreter cannot find, as it runs (its cwd and
    environment): a misspelt name measures nothing of what it meant, and the run only says
    "No data to report"."""
    cwd, env, packages = spec.cwd, spec.env, spec.source_pkgs
    program = _service_program(spec.command or [], cwd, env)
    python = interpreter(program)
    if python is None:
        return None  # a wrapper: the interpreter it starts is not known here
    code = (
        "import importlib.util\n"
        "def found(name):\n"
        "    try:\n"
        "        return importlib.util.find_spec(name) is not None\n"
        "    except (ImportError, ValueError):\n"
        "        return False\n"
        f"print(' '.join(n for n in {packages!r} if not found(n)) or 'all')\n"
    )
    ok, said = _ask(python, code, cwd, env)
    missing = [] if said == "all" else said.split()
    if not ok or missing:
        what = ", ".join(repr(p) for p in missing) or " ".join(packages)
        return Check(
            f"service {name}",
            False,
            f"source package(s) {what} not importable by {python} (a misspelt name in "
            "[run] source or the service's source?)",
        )
    return Check(f"service {name}", True, f"source package(s) {', '.join(packages)} found")


_PLUGIN_CHECK = """
import importlib.metadata as m, pytest
names = [e.value for e in m.entry_points(group="pytest11")]
print("pytest", pytest.__version__, "plugin", "yes" if "e2ecov.pytest_plugin" in names else "no")
"""


def _test_interpreter(program: str, tests: list[str]) -> Check:
    """Per-test attribution needs pytest and e2ecov's plugin in the test interpreter."""
    python = interpreter(program)
    if python is None:
        return Check(
            "attribution", True,
            f"{tests[0]} is not a Python program: per-test attribution happens only under "
            "pytest with e2ecov's plugin (the reports will say it was off)",
        )  # fmt: skip
    ok, said = _ask(python, _PLUGIN_CHECK)
    if not ok:
        return Check(
            "attribution", False,
            f"{python} cannot import pytest ({said}): per-test attribution needs "
            f"{python} -m pip install pytest e2ecov",
        )  # fmt: skip
    if said.endswith("plugin no"):
        return Check(
            "attribution", False,
            f"{python} has {said.rsplit(' plugin', 1)[0]} but not e2ecov's pytest plugin: "
            f"{python} -m pip install e2ecov",
        )  # fmt: skip
    return Check("attribution", True, f"{python}: {said.replace('plugin yes', 'and e2ecov')}")


def configuration(stack: Stack) -> list[str]:
    lines = [
        f"stack file:  {stack.path}",
        f"artifacts:   {stack.artifacts}",
        f"tests:       {' '.join(stack.tests)}",
        f"source:      {', '.join([*(str(s) for s in stack.source), *stack.source_pkgs])}",
        f"contexts:    {stack.contexts}",
        # 0 turns automatic saves off: said in words, "0s" read as saving all the time
        f"autosave:    {f'{stack.autosave:g}s' if stack.autosave else 'off (autosave = 0)'}",
        f"fail_under:  {stack.fail_under:g}%",
        f"start order: {stack.start_order_text()}",
    ]
    for name, other, placeholder in stack.unordered_names():
        lines.append(
            f"note:        service {name} names {other} ({placeholder}) without depending on "
            f"it: they start together, {name} maybe before {other} is healthy; "
            f'depends_on = ["{other}"] in [services.{name}] orders them'
        )
    for foreign, local in stack.paths.items():
        lines.append(f"paths:       {foreign} → {local}")
    return lines
