"""The stack file: TOML parsed into a typed model, checked strictly before anything starts.

Every problem is collected (not just the first) and carries the file and, where the TOML
text allows it, the line — tomllib gives no positions, so `_Locator` finds table headers and
keys in the text. Relative paths are resolved against the stack file's directory here, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from e2ecov import placeholders
from e2ecov.errors import Problem, StackFileError

RECIPES = ("postgres", "redis", "kube-apiserver")
RUN_KEYS = {
    "name": "a string naming the run",
    "artifacts": "a directory for everything the run writes",
    "tests": "the test command, a list of strings",
    "source": "a list of directories or package names to measure",
    "ports": "a range '22000-22999' that {port} placeholders are chosen from",
    "fail_under": "a total percent (number)",
    "contexts": "true/false: per-test attribution",
    "autosave": "seconds between automatic saves (number or '10s'; 0 turns them off)",
    "grace": "time between SIGTERM and SIGKILL (number or '10s')",
    "timeout": "how long the test command may run before it is stopped (e.g. '30m')",
    "branch": "true/false: measure branches",
    "paths": "a table mapping a recorded root (e.g. inside a container) to a repository path",
    "env": "a table of extra environment variables for the test command",
}
SERVICE_KEYS = {
    "command": "the command line, a list of strings",
    "recipe": "a built-in recipe: " + ", ".join(RECIPES),
    "env": "a table of environment variables",
    "depends_on": "a list of service names",
    "health": "a table: url, timeout, interval",
    "coverage": 'true/false, or "go" for a Go binary built with go build -cover',
    "go_build": "a Go package ('./cmd/server') e2ecov builds with -cover; run as {go_binary}",
    "cwd": "the working directory",
    "fail_under": "a percent (number)",
    "grace": "time between SIGTERM and SIGKILL",
    "source": "directories or packages measured for this service (default: [run] source)",
    "manifests": "recipe kube-apiserver: YAML files applied at start (CRDs and other objects)",
    "extra_args": "recipe kube-apiserver: more kube-apiserver flags, after the recipe's own",
}
# what a recipe's `extra_args` may name: a recipe's flags are chosen before any port is
_EXTRA_ARG_PLACEHOLDERS = ("artifacts", "run_id")
HEALTH_KEYS = {"url": "an http:// URL", "timeout": "e.g. '30s'", "interval": "e.g. '0.1s'"}
# The shortest health interval and autosave: below 10ms a health check polls, and an agent
# saves, in what is a busy loop (`interval = "0s"` made a health wait spin a core)
MIN_PERIOD = 0.01
# The longest health interval: a service ready just after a poll waited that long unseen
MAX_INTERVAL = 60.0
_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# a unit, or none for seconds: `"30"` is what a number of seconds looks like quoted
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", re.ASCII)
_PORT_RANGE = re.compile(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", re.ASCII)
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# what a URL may hold (RFC 3986): anything else (a space, a quote, a non-ASCII letter) must
# be percent-encoded; `%` only starts such an escape
_NOT_URL_CHAR = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})", re.ASCII)


@dataclass(frozen=True)
class _Bounds:
    """The values a key accepts (durations in seconds, or percents), and how its refusal
    says so ("from 10ms to 1m")."""

    says: str
    low: float = 0.0
    high: float = float("inf")
    above_low: bool = False  # `low` itself is refused (a timeout of 0 waits for nothing)
    also: tuple[float, ...] = ()  # accepted outside the range (autosave's 0: off)
    unit: str = "seconds"

    def admit(self, seconds: float) -> bool:
        if seconds in self.also:
            return True
        return (seconds > self.low if self.above_low else seconds >= self.low) and (
            seconds <= self.high
        )


_HEALTH_INTERVAL = _Bounds("from 10ms to 1m", low=MIN_PERIOD, high=MAX_INTERVAL)
_MORE_THAN_0 = _Bounds("more than 0", above_low=True)  # a timeout of 0 waits for nothing
_AUTOSAVE = _Bounds("0 (no automatic saves) or at least 10ms", low=MIN_PERIOD, also=(0.0,))
_AT_LEAST_0 = _Bounds("0 or more")  # a grace of 0: SIGKILL right after SIGTERM
_PERCENT = _Bounds("a percent between 0 and 100", high=100.0, unit="percent")


def _check_bounds(owner: str, built: Any, bounds: dict[str, _Bounds]) -> None:
    """Raise ValueError naming the first attribute of `built` outside its bounds (None, an
    optional value left out, is in them): what a stack-file object built in Python gets,
    where the loader reports the same value with its line."""
    for key, limits in bounds.items():
        value = getattr(built, key)
        if value is not None and not limits.admit(value):
            raise ValueError(f"{owner} {key} must be {limits.says}, got {value!r} {limits.unit}")


@dataclass(frozen=True)
class Health:
    """How to tell a service is ready: an HTTP URL answering 2xx within `timeout`, polled
    every `interval` (seconds). Their ranges are declared and checked here, whoever builds
    one: a Health built in Python with a value outside them raises ValueError; the stack
    file's loader checks each value against the same `BOUNDS` first, to report it with its
    line."""

    url: str
    timeout: float = 30.0
    interval: float = 0.1

    BOUNDS: ClassVar[dict[str, _Bounds]] = {
        "timeout": _MORE_THAN_0,
        "interval": _HEALTH_INTERVAL,
    }

    def __post_init__(self) -> None:
        _check_bounds("health", self, self.BOUNDS)


@dataclass(frozen=True)
class ServiceSpec:
    """One `[services.NAME]` table, resolved. Its ranges (`BOUNDS`) are checked whoever
    builds one, as Health's are: ValueError in Python, a problem with its line in the
    stack file."""

    name: str
    command: list[str] | None
    recipe: str | None
    env: dict[str, str]
    depends_on: list[str]
    health: Health | None
    coverage: bool
    cwd: Path
    fail_under: float | None
    grace: float
    source: list[Path]
    port_names: frozenset[str]  # named ports ({port.NAME}) this service needs
    source_pkgs: list[str] = field(default_factory=list)
    go: bool = False  # a Go binary built with -cover: measured through GOCOVERDIR
    go_build: str | None = None  # the Go package e2ecov builds before anything starts
    # recipe kube-apiserver: manifests applied (CRDs established) before it counts as started
    manifests: tuple[Path, ...] = ()
    # recipe kube-apiserver: more flags (an audit log, an admission plugin), placeholders
    # {artifacts} and {run_id} rendered when the run is planned
    extra_args: tuple[str, ...] = ()
    main_port: bool = True  # its command, env or health URL uses {port}

    BOUNDS: ClassVar[dict[str, _Bounds]] = {"grace": _AT_LEAST_0, "fail_under": _PERCENT}

    def __post_init__(self) -> None:
        _check_bounds(f"service {self.name}", self, self.BOUNDS)

    @property
    def url_template(self) -> str | None:
        """Where the service answers, as a template of its own ports: `{port}` when it uses
        one, else its health URL's origin (`http://127.0.0.1:{port.api}`, or a fixed
        `http://127.0.0.1:8080`), else None: a port picked for `{port}` and used by nothing
        was advertised as its URL (`E2E_<SERVICE>_URL`), where nothing listens. `https` when
        its health URL is an `https://` one on that same port."""
        parts = urlsplit(self.health.url) if self.health is not None else None
        if self.main_port:
            tls = parts is not None and parts.scheme == "https" and parts.netloc.endswith(":{port}")
            return ("https" if tls else "http") + "://127.0.0.1:{port}"
        if parts is None:
            return None
        named = re.fullmatch(r"([^{}]*):\{port\.([A-Za-z0-9_-]+)\}", parts.netloc)
        if named:
            return f"{parts.scheme}://{named.group(1)}:{{port.{named.group(2)}}}"
        if "{" in parts.netloc or "}" in parts.netloc or not parts.netloc:
            return None
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def env_prefix(self) -> str:
        """`E2E_<SERVICE>`: upper-cased, `-` → `_`."""
        return "E2E_" + self.name.upper().replace("-", "_")

    def port_env(self, port_name: str) -> str:
        """`E2E_<SERVICE>_<NAME>_URL`, the test command's variable for a named port."""
        return f"{self.env_prefix}_{port_name.upper().replace('-', '_')}_URL"

    def test_env_names(self) -> list[str]:
        """The variables this service gives the test command: its URL's, if it has one, and
        each named port's."""
        own = [f"{self.env_prefix}_URL"] if self.url_template is not None else []
        return own + [self.port_env(name) for name in sorted(self.port_names)]


@dataclass(frozen=True)
class Stack:
    """The whole stack file, resolved; `root` is the stack file's directory. Its ranges
    (`BOUNDS`, `PORTS`) are checked whoever builds one, as Health's are: ValueError in
    Python, a problem with its line in the stack file."""

    path: Path
    root: Path
    name: str
    artifacts: Path
    tests: list[str]
    test_env: dict[str, str]
    source: list[Path]
    fail_under: float
    contexts: bool
    autosave: float
    grace: float
    branch: bool
    paths: dict[str, Path]  # recorded root → repository path
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    source_pkgs: list[str] = field(default_factory=list)
    ports: tuple[int, int] | None = None  # the range {port} is chosen from; None: the kernel's
    test_timeout: float | None = None  # seconds the test command may run; None: no limit

    BOUNDS: ClassVar[dict[str, _Bounds]] = {
        "autosave": _AUTOSAVE,
        "grace": _AT_LEAST_0,
        "test_timeout": _MORE_THAN_0,  # a limit of 0 stopped the tests at once
        "fail_under": _PERCENT,
    }
    PORTS: ClassVar[tuple[int, int]] = (1024, 65535)  # what `ports` may range within

    def __post_init__(self) -> None:
        _check_bounds("run", self, self.BOUNDS)
        low, high = self.PORTS
        if self.ports is not None and not low <= self.ports[0] <= self.ports[1] <= high:
            raise ValueError(
                f"run ports must be a range within {low}-{high}, low first, got {self.ports!r}"
            )

    def start_order(self) -> list[str]:
        """Services in an order where each comes after its dependencies (file order otherwise).

        Raises StackFileError on a dependency cycle or an unknown dependency, so no caller can
        loop on a graph that `load` did not check."""
        done: list[str] = []
        while len(done) < len(self.services):
            ready = [
                name
                for name, spec in self.services.items()
                if name not in done and all(d in done for d in spec.depends_on)
            ]
            if not ready:
                stuck = ", ".join(n for n in self.services if n not in done)
                raise StackFileError([Problem(
                    str(self.path), None,
                    f"dependency cycle or unknown dependency among: {stuck}; "
                    "expected depends_on to name existing services without a loop",
                )])  # fmt: skip
            done.append(ready[0])
        return done

    def start_order_text(self) -> str:
        """`db, api (after db), web (after api)`: a bare list read as one service after the
        other, where those without depends_on start together."""
        order = self.start_order()
        if len(order) > 1 and not any(self.services[n].depends_on for n in order):
            return f"{', '.join(order)} (together: none has depends_on)"
        return ", ".join(
            f"{n} (after {', '.join(deps)})" if (deps := self.services[n].depends_on) else n
            for n in order
        )

    def dependencies(self, name: str) -> set[str]:
        """Every service `name` waits for before it starts: its depends_on, theirs, …"""
        found: set[str] = set()
        todo = list(self.services[name].depends_on)
        while todo:
            dep = todo.pop()
            if dep not in found and dep in self.services:
                found.add(dep)
                todo.extend(self.services[dep].depends_on)
        return found

    def unordered_names(self) -> list[tuple[str, str, str]]:
        """(service, other, placeholder) for each service naming another by placeholder
        without depending on it: the two start together, so it may start before the other
        is healthy."""
        return [
            (name, other, placeholder)
            for name, spec in self.services.items()
            for other, placeholder in named_services(spec).items()
            if other in self.services and other not in self.dependencies(name)
        ]

    def stop_levels(self) -> list[list[str]]:
        """Services grouped for stopping: dependents first, each group stopped together."""
        depth: dict[str, int] = {}
        for name in self.start_order():
            deps = self.services[name].depends_on
            depth[name] = 1 + max((depth[d] for d in deps), default=-1)
        top = max(depth.values(), default=-1)
        return [[n for n in depth if depth[n] == level] for level in range(top, -1, -1)]


class _Locator:
    """Finds the line of a table header or key in the TOML text (best effort)."""

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines, 1):
            match = self._HEADER.match(line)
            if match:
                self.headers[self._split(match.group(1))] = number

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in dotted.split("."))

    def _table_end(self, start: int) -> int:
        for number in range(start + 1, len(self.lines) + 1):
            if self._HEADER.match(self.lines[number - 1]):
                return number - 1
        return len(self.lines)

    def _find_key(self, key: str, start: int, end: int, anywhere: bool = False) -> int | None:
        pattern = re.compile(
            (r"(^|[{,\s])" if anywhere else r"^\s*") + r"[\"']?" + re.escape(key) + r"[\"']?\s*="
        )
        for number in range(start, end + 1):
            if 1 <= number <= len(self.lines) and pattern.search(self.lines[number - 1]):
                return number
        return None

    def line(self, *path: str) -> int | None:
        """The line of `path` (e.g. ("services", "api", "health", "timeout"))."""
        for split in range(len(path), -1, -1):
            table = path[:split]
            if table and table not in self.headers:
                continue
            start = self.headers.get(table, 0) + 1
            header_line = self.headers.get(table)
            end = self._table_end(header_line) if header_line else self._first_header() - 1
            if split == len(path):
                return header_line
            found = self._find_key(path[split], start, end)
            if found is None:
                return header_line
            for key in path[split + 1 :]:
                deeper = self._find_key(key, found, end, anywhere=True)
                if deeper is None:
                    return found
                found = deeper
            return found
        return None

    def _first_header(self) -> int:
        return min(self.headers.values(), default=len(self.lines) + 1)


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like '30s', '500ms', '2m', '1h' or '30' (seconds);
    None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            number = float(match.group(1))
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
            return number * scale
    return None


class _Checker:
    """Collects problems while reading the raw TOML into the model."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.locate = _Locator(text)
        self.problems: list[Problem] = []

    def problem(self, where: tuple[str, ...], message: str) -> None:
        self.problems.append(Problem(str(self.path), self.locate.line(*where), message))

    def unknown_keys(
        self, table: dict[str, Any], known: dict[str, str], where: tuple[str, ...]
    ) -> None:
        label = "[" + ".".join(where) + "]"
        for key in table:
            if key not in known:
                expected = ", ".join(sorted(known))
                self.problem(
                    (*where, key), f"{label} unknown key '{key}'; expected one of: {expected}"
                )

    def string_list(
        self, value: Any, where: tuple[str, ...], required: bool = False
    ) -> list[str] | None:
        if value is None:
            if required:
                self.problem(
                    where[:-1],
                    f"[{'.'.join(where[:-1])}] missing '{where[-1]}': expected a list of strings",
                )
            return None
        if (
            not isinstance(value, list)
            or not all(isinstance(v, str) for v in value)
            or (required and not value)
        ):
            self.problem(
                where, f"'{'.'.join(where)}' must be a non-empty list of strings, got {value!r}"
            )
            return None
        return list(value)

    def string_table(self, value: Any, where: tuple[str, ...]) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(
                where, f"'{'.'.join(where)}' must be a table of strings, e.g. {{ KEY = \"value\" }}"
            )
            return {}
        return dict(value)

    def number(self, value: Any, where: tuple[str, ...], default: float, bounds: _Bounds) -> float:
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not bounds.admit(float(value))
        ):
            self.problem(where, f"'{'.'.join(where)}' must be {bounds.says}, got {value!r}")
            return default
        return float(value)

    def duration(
        self,
        value: Any,
        where: tuple[str, ...],
        default: float,
        bounds: _Bounds | None = None,
    ) -> float:
        """Seconds from `value`; a value that is no duration, or one outside `bounds`, is a
        problem naming the key and, when bounded, the range it accepts."""
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None or (bounds is not None and not bounds.admit(seconds)):
            allowed = f"{bounds.says}: " if bounds is not None else ""
            self.problem(
                where,
                f"'{'.'.join(where)}' must be {allowed}a duration like '30s', '500ms' or a "
                f"number of seconds, got {value!r}",
            )
            return default
        return seconds

    def boolean(self, value: Any, where: tuple[str, ...], default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(where, f"'{'.'.join(where)}' must be true or false, got {value!r}")
            return default
        return value


def _test_timeout(check: _Checker, value: Any) -> float | None:
    """`[run] timeout`: None (no limit) when absent; a limit must be more than nothing."""
    if value is None:
        return None
    return check.duration(value, ("run", "timeout"), 0.0, Stack.BOUNDS["test_timeout"]) or None


def load(path: Path, artifacts_override: Path | None = None) -> Stack:
    """Read and check `path`; raises StackFileError listing every problem."""
    path = path.resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackFileError(
            [Problem(str(path), None, f"cannot read the stack file: {exc.strerror}")]
        ) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise StackFileError([Problem(str(path), line, f"not valid TOML: {exc}")]) from exc
    return _build(path, text, raw, artifacts_override)


def _build(path: Path, text: str, raw: dict[str, Any], artifacts_override: Path | None) -> Stack:
    check = _Checker(path, text)
    root = path.parent
    check.unknown_keys(raw, {"run": "", "services": ""}, ())
    run = raw.get("run")
    if not isinstance(run, dict):
        check.problem(("run",), "missing [run] table: expected at least tests = [...]")
        run = {}
    check.unknown_keys(run, RUN_KEYS, ("run",))
    tests = check.string_list(run.get("tests"), ("run", "tests"), required=True) or []
    source_raw = check.string_list(run.get("source", ["."]), ("run", "source")) or ["."]
    ports = _port_range(check, run.get("ports"))
    paths_raw = run.get("paths", {})
    paths: dict[str, Path] = {}
    if not isinstance(paths_raw, dict) or not all(isinstance(v, str) for v in paths_raw.values()):
        check.problem(("run", "paths"), '\'run.paths\' must be a table like { "/app/src" = "src" }')
    else:
        paths = {str(k).rstrip("/"): (root / v).resolve() for k, v in paths_raw.items()}
    name = run.get("name", path.stem)
    if not isinstance(name, str):
        check.problem(("run", "name"), f"'run.name' must be a string, got {name!r}")
        name = path.stem
    artifacts_raw = run.get("artifacts", "build/e2e")
    if not isinstance(artifacts_raw, str):
        check.problem(("run", "artifacts"), "'run.artifacts' must be a directory path string")
        artifacts_raw = "build/e2e"
    services_raw = raw.get("services", {})
    if not isinstance(services_raw, dict):
        check.problem(("services",), "'services' must be tables like [services.NAME]")
        services_raw = {}
    stack_grace = check.duration(run.get("grace"), ("run", "grace"), 10.0, Stack.BOUNDS["grace"])
    _no_files(check, root, source_raw, ("run", "source"))
    source, source_pkgs = split_source(root, source_raw)
    services = {
        svc: _service(check, svc, body, root, stack_grace, (source, source_pkgs))
        for svc, body in services_raw.items()
    }
    stack = Stack(
        path=path,
        root=root,
        name=name,
        artifacts=artifacts_override.resolve()
        if artifacts_override
        else (root / artifacts_raw).resolve(),
        tests=tests,
        test_env=check.string_table(run.get("env"), ("run", "env")),
        source=source,
        fail_under=check.number(
            run.get("fail_under"), ("run", "fail_under"), 0.0, Stack.BOUNDS["fail_under"]
        ),
        contexts=check.boolean(run.get("contexts"), ("run", "contexts"), True),
        autosave=check.duration(
            run.get("autosave"), ("run", "autosave"), 10.0, Stack.BOUNDS["autosave"]
        ),
        grace=stack_grace,
        branch=check.boolean(run.get("branch"), ("run", "branch"), False),
        paths=paths,
        services={k: v for k, v in services.items() if v is not None},
        source_pkgs=source_pkgs,
        ports=ports,
        test_timeout=_test_timeout(check, run.get("timeout")),
    )
    if not check.problems:
        _check_graph(check, stack)
    if not check.problems:
        ports_used, main = _check_placeholders(check, stack)
    if check.problems:
        raise StackFileError(check.problems)
    stack = dataclasses.replace(
        stack,
        services={
            name: dataclasses.replace(
                spec, port_names=frozenset(ports_used[name]), main_port=name in main
            )
            for name, spec in stack.services.items()
        },
    )
    _check_test_env_names(check, stack)
    if check.problems:
        raise StackFileError(check.problems)
    return stack


def _check_test_env_names(check: _Checker, stack: Stack) -> None:
    """Two services whose variables for the test command are spelt the same (`a-b` and `a_b`
    both give `E2E_A_B_URL`; service `a`'s port `b-c` and service `a-b`'s port `c` both
    `E2E_A_B_C_URL`) gave the tests one address for both, the other's silently dropped."""
    owner: dict[str, str] = {}
    for name, spec in stack.services.items():
        for variable in spec.test_env_names():
            first = owner.setdefault(variable, name)
            if first != name:
                check.problem(
                    ("services", name),
                    f"[services.{name}] gives the test command {variable}, as "
                    f"[services.{first}] does: the tests would get one address for both; "
                    "rename one of them",
                )


def _no_files(check: _Checker, root: Path, entries: list[str], where: tuple[str, ...]) -> None:
    """A `source` entry that is a file measured nothing, exit 4 after the whole run: it is
    neither a directory nor a package name (coverage.py's `source` takes no files)."""
    for entry in entries:
        if (root / entry).is_file():
            check.problem(
                where,
                f"'{'.'.join(where)}' entry {entry!r} is a file: source takes directories or "
                f"package names (its directory is {str(Path(entry).parent)!r})",
            )


def split_source(root: Path, entries: list[str]) -> tuple[list[Path], list[str]]:
    """Directories and package names, decided as coverage.py's own `source` does: an entry
    that is an existing directory (relative to the stack file) is one; a dotted name that is
    not is a package (imported from wherever the service's interpreter finds it)."""
    directories: list[Path] = []
    packages: list[str] = []
    for entry in entries:
        path = (root / entry).resolve()
        if _PACKAGE.fullmatch(entry) and not path.is_dir():
            packages.append(entry)
        else:
            directories.append(path)
    return directories, packages


def _port_range(check: _Checker, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    match = _PORT_RANGE.fullmatch(value) if isinstance(value, str) else None
    low, high = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    lowest, highest = Stack.PORTS
    if not match or not lowest <= low <= high <= highest:
        check.problem(
            ("run", "ports"),
            f"'run.ports' must be a range like \"22000-22999\" within {lowest}-{highest}, "
            f"got {value!r}",
        )
        return None
    return low, high


def _service(
    check: _Checker,
    name: str,
    body: Any,
    root: Path,
    grace: float,
    source: tuple[list[Path], list[str]],
) -> ServiceSpec | None:
    where = ("services", name)
    if not _SERVICE_NAME.fullmatch(name):
        check.problem(
            where, f"service name '{name}' must be lower-case letters, digits, '-' or '_'"
        )
    if not isinstance(body, dict):
        check.problem(where, f"[services.{name}] must be a table")
        return None
    check.unknown_keys(body, SERVICE_KEYS, where)
    recipe = body.get("recipe")
    command = body.get("command")
    if recipe is not None and command is not None:
        check.problem(
            (*where, "recipe"),
            f"[services.{name}] has both 'recipe' and 'command'; expected one of them",
        )
    if recipe is not None and recipe not in RECIPES:
        check.problem(
            (*where, "recipe"),
            f"[services.{name}] unknown recipe {recipe!r}; expected one of: {', '.join(RECIPES)}",
        )
    if recipe is None and command is None:
        check.problem(
            where,
            f"[services.{name}] missing 'command': expected "
            'command = ["program", "arg", ...] or recipe = "postgres"/"redis"/"kube-apiserver"',
        )
    command_list = check.string_list(command, (*where, "command")) if command is not None else None
    health_raw = body.get("health")
    health: Health | None = None
    if health_raw is not None:
        if not isinstance(health_raw, dict) or not isinstance(health_raw.get("url"), str):
            check.problem(
                (*where, "health"),
                f"[services.{name}] 'health' must be a table with url = \"http://...\"",
            )
        else:
            check.unknown_keys(health_raw, HEALTH_KEYS, (*where, "health"))
            _check_health_url(check, name, health_raw["url"])
            health = Health(
                url=health_raw["url"],
                timeout=check.duration(
                    health_raw.get("timeout"),
                    (*where, "health", "timeout"),
                    30.0,
                    Health.BOUNDS["timeout"],
                ),
                interval=check.duration(
                    health_raw.get("interval"),
                    (*where, "health", "interval"),
                    0.1,
                    Health.BOUNDS["interval"],
                ),
            )
    depends_on = check.string_list(body.get("depends_on", []), (*where, "depends_on")) or []
    cwd = body.get("cwd", ".")
    if not isinstance(cwd, str):
        check.problem((*where, "cwd"), f"[services.{name}] 'cwd' must be a directory path string")
        cwd = "."
    fail_under = body.get("fail_under")
    own_source = check.string_list(body.get("source"), (*where, "source"))
    _no_files(check, root, own_source or [], (*where, "source"))
    go_build = body.get("go_build")
    if go_build is not None and (not isinstance(go_build, str) or not go_build):
        check.problem(
            (*where, "go_build"),
            f"[services.{name}] 'go_build' must be a Go package path like './cmd/server', "
            f"got {go_build!r}",
        )
        go_build = None
    manifests = check.string_list(body.get("manifests"), (*where, "manifests")) or []
    if manifests and recipe != "kube-apiserver":
        check.problem(
            (*where, "manifests"),
            f"[services.{name}] 'manifests' is for recipe = \"kube-apiserver\" only",
        )
    for manifest in manifests:
        if not (root / manifest).is_file():
            check.problem(
                (*where, "manifests"),
                f"[services.{name}] manifest {manifest!r} is not a file (relative to {root})",
            )
    extra_args = check.string_list(body.get("extra_args"), (*where, "extra_args")) or []
    if extra_args and recipe != "kube-apiserver":
        check.problem(
            (*where, "extra_args"),
            f"[services.{name}] 'extra_args' is for recipe = \"kube-apiserver\" only",
        )
    for arg in extra_args:
        _check_extra_arg(check, name, arg)
    raw_coverage = body.get("coverage")
    if raw_coverage is not None and raw_coverage != "go" and not isinstance(raw_coverage, bool):
        check.problem(
            (*where, "coverage"),
            f"'services.{name}.coverage' must be true (Python), false or \"go\", "
            f"got {raw_coverage!r}",
        )
        raw_coverage = None
    elif go_build is not None and raw_coverage is True:
        # true starts coverage.py in a Python program: the Go binary would run unmeasured
        check.problem(
            (*where, "coverage"),
            f"'services.{name}.coverage' = true measures a Python program, but go_build "
            'builds a Go one: coverage = "go" (go_build\'s default) measures it, '
            "false runs it unmeasured",
        )
    go_service = raw_coverage == "go" or (go_build is not None and raw_coverage is None)
    coverage = go_service or (command is not None if raw_coverage is None else bool(raw_coverage))
    spec = ServiceSpec(
        name=name,
        command=command_list,
        recipe=recipe if isinstance(recipe, str) else None,
        env=check.string_table(body.get("env"), (*where, "env")),
        depends_on=depends_on,
        health=health,
        coverage=coverage,
        go=go_service,
        go_build=go_build,
        cwd=(root / cwd).resolve(),
        fail_under=None
        if fail_under is None
        else check.number(
            fail_under, (*where, "fail_under"), 0.0, ServiceSpec.BOUNDS["fail_under"]
        ),
        grace=check.duration(
            body.get("grace"), (*where, "grace"), grace, ServiceSpec.BOUNDS["grace"]
        ),
        source=split_source(root, own_source)[0] if own_source else source[0],
        source_pkgs=split_source(root, own_source)[1] if own_source else source[1],
        port_names=frozenset(),
        manifests=tuple((root / m).resolve() for m in manifests),
        extra_args=tuple(extra_args),
    )
    if spec.recipe and spec.coverage:
        check.problem(
            (*where, "coverage"),
            f"[services.{name}] a recipe cannot be measured; expected coverage = false",
        )
    return spec


def _check_extra_arg(check: _Checker, name: str, arg: str) -> None:
    """A recipe's flag may name `{artifacts}` and `{run_id}` only: its ports, and so every
    service's URL, are not chosen yet when its flags are."""
    where = ("services", name, "extra_args")
    try:
        found = list(placeholders.find(arg))
    except placeholders.PlaceholderError as exc:
        check.problem(where, f"'services.{name}.extra_args': {exc}")
        return
    for ph in found:
        if ph.kind not in _EXTRA_ARG_PLACEHOLDERS:
            check.problem(
                where,
                f"'services.{name}.extra_args': '{{{ph.text}}}' is not known when a recipe's "
                f"flags are chosen; only {{artifacts}} and {{run_id}} are, got {arg!r}",
            )


def _check_health_url(check: _Checker, name: str, template: str) -> None:
    """A health URL that could never be requested is refused before anything starts: one
    without an http(s) scheme ("127.0.0.1:{port}/health") or with characters a URL cannot
    hold (a space, a quote) was polled for the whole health timeout, an exit 3 after the
    service had started; an unbalanced `[` made the check itself crash. Placeholders are
    checked as what they stand for (a port, an address), so they are taken out first."""
    where = ("services", name, "health", "url")
    key = f"'services.{name}.health.url'"
    bare = placeholders.blank(template)
    bad = sorted(set(_NOT_URL_CHAR.findall(bare)))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        check.problem(
            where,
            f"{key} holds characters a URL cannot: {shown}; percent-encode them (a space is "
            f"%20, a % is %25), got {template!r}",
        )
        return
    try:
        url = urlsplit(bare)
    except ValueError as exc:  # "Invalid IPv6 URL": a `[` without its `]`
        check.problem(where, f"{key} is not a URL ({exc}), got {template!r}")
        return
    whole = template.startswith("{")  # a placeholder: checked as rendered
    if not whole and (url.scheme not in ("http", "https") or not url.netloc):
        check.problem(
            where,
            f"{key} must be an http:// or https:// URL, e.g. "
            f'"http://127.0.0.1:{{port}}/health", got {template!r}',
        )


def _check_graph(check: _Checker, stack: Stack) -> None:
    for name, spec in stack.services.items():
        for dep in spec.depends_on:
            if dep not in stack.services:
                known = ", ".join(sorted(stack.services)) or "(none)"
                check.problem(
                    ("services", name, "depends_on"),
                    f"[services.{name}] depends on unknown service '{dep}'; "
                    f"known services: {known}",
                )
    if check.problems:
        return
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> bool:
        if state.get(name) == 2:
            return False
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            check.problem(
                ("services", name, "depends_on"),
                "dependency cycle: " + " → ".join(cycle) + "; expected depends_on to form no loop",
            )
            return True
        state[name] = 1
        for dep in stack.services[name].depends_on:
            if visit(dep, [*trail, name]):
                return True
        state[name] = 2
        return False

    for name in stack.services:
        if visit(name, []):
            return


def named_services(spec: ServiceSpec) -> dict[str, str]:
    """The other services a service's command, env and health URL name by placeholder
    (`{services.db.url}`), each with the first placeholder naming it. Naming one does not
    order the start (two services may name each other: a cluster); `depends_on` does."""
    templates = [*(spec.command or []), *spec.env.values()]
    if spec.health is not None:
        templates.append(spec.health.url)
    found: dict[str, str] = {}
    for template in templates:
        with contextlib.suppress(placeholders.PlaceholderError):  # load refused it already
            for ph in placeholders.find(template):
                if ph.service is not None and ph.service != spec.name:
                    found.setdefault(ph.service, "{" + ph.text + "}")
    return found


def _templates(stack: Stack) -> list[tuple[tuple[str, ...], str, str | None]]:
    """(where, template, owning service or None for the test command)."""
    found: list[tuple[tuple[str, ...], str, str | None]] = []
    for name, spec in stack.services.items():
        for arg in spec.command or []:
            found.append((("services", name, "command"), arg, name))
        for key, value in spec.env.items():
            found.append((("services", name, "env", key), value, name))
        if spec.health:
            found.append((("services", name, "health", "url"), spec.health.url, name))
    for arg in stack.tests:
        found.append((("run", "tests"), arg, None))
    for key, value in stack.test_env.items():
        found.append((("run", "env", key), value, None))
    return found


def _check_placeholders(check: _Checker, stack: Stack) -> tuple[dict[str, set[str]], set[str]]:
    """Every placeholder must name something; returns each service's named ports, and the
    services that use `{port}` themselves."""
    ports: dict[str, set[str]] = {name: set() for name in stack.services}
    main: set[str] = set()  # the services whose own templates use {port}
    parsed: list[tuple[tuple[str, ...], placeholders.Placeholder, str | None]] = []
    for where, template, owner in _templates(stack):
        try:
            for ph in placeholders.find(template):
                parsed.append((where, ph, owner))
                if ph.kind == "port" and owner is not None:
                    if ph.port_name:
                        ports[owner].add(ph.port_name)
                    else:
                        main.add(owner)
        except placeholders.PlaceholderError as exc:
            check.problem(where, f"'{'.'.join(where)}': {exc}")
    for where, ph, owner in parsed:
        label = "'" + ".".join(where) + "'"
        if ph.kind == "port" and owner is None:
            check.problem(
                where,
                f"{label}: '{{{ph.text}}}' names no service here; "
                "the test command uses {services.X.port}",
            )
        elif ph.kind == "port" and owner is not None and stack.services[owner].recipe:
            check.problem(where, f"{label}: a recipe has no command to put '{{{ph.text}}}' in")
        elif ph.kind == "go_binary" and (owner is None or not stack.services[owner].go_build):
            check.problem(
                where,
                f"{label}: '{{go_binary}}' is the binary built from a service's go_build; "
                "this " + ("is the test command" if owner is None else "service has no go_build"),
            )
        elif ph.service is not None:
            if ph.service not in stack.services:
                known = ", ".join(sorted(stack.services)) or "(none)"
                check.problem(
                    where,
                    f"{label}: '{{{ph.text}}}' names unknown service '{ph.service}'; "
                    f"known services: {known}",
                )
            elif ph.port_name and ph.port_name not in ports[ph.service]:
                have = ", ".join(sorted(ports[ph.service])) or "(none)"
                check.problem(
                    where,
                    f"{label}: '{{{ph.text}}}' names port '{ph.port_name}' that service "
                    f"'{ph.service}' does not use; its named ports: {have}",
                )
            elif not _has_address(stack.services[ph.service], ph, main):
                have = ", ".join(
                    f"{{services.{ph.service}.port.{p}}}" for p in sorted(ports[ph.service])
                )
                check.problem(
                    where,
                    f"{label}: service '{ph.service}' uses no {{port}} of its own"
                    + (
                        ", and its health URL names no port to take as its URL"
                        if ph.kind == "service_url"
                        else ""
                    )
                    + (f"; use {have}" if have else ""),
                )
    return ports, main


def _has_address(spec: ServiceSpec, ph: placeholders.Placeholder, main: set[str]) -> bool:
    """Whether `{services.X.port}` or `{services.X.url}` names something of service X: a
    recipe's own, its `{port}`, or (a URL) its health URL's origin."""
    if spec.recipe or ph.port_name or ph.kind not in ("service_url", "service_port"):
        return True
    own = dataclasses.replace(spec, main_port=spec.name in main)
    return own.main_port or (ph.kind == "service_url" and own.url_template is not None)
