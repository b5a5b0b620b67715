"""Go services: a GOCOVERDIR per service, loss detection, and reports via `go tool covdata`.

A Go service is a binary built with `go build -cover` (e2ecov builds it from a `go_build`
package with `-covermode=atomic`, which live saves need). Each process writes its counters into
the service's GOCOVERDIR when main returns or os.Exit is called; a process killed by a signal
writes nothing — unless it imports e2ecov's Go agent (the `go` directory of this package),
which announces it in the ledger and writes counters on e2ecov's live save, like the Python
agent does.

Loss detection knows which processes should have written: the service's main process, plus
every process that announced itself. A main process with no counter file of its pid is lost.

Reports: `go tool covdata textfmt` gives the statement blocks (the unit of every total here, as
in `go tool covdata percent`), `go tool covdata func` the per-function lines, and
`go tool cover -html` the HTML page per service. Import paths are shown as repository paths
when the module lives in the repository.

Several Go services may run the same code (replicas of one binary, a cluster of one program,
two programs sharing a library): `union` counts each file once, with what any of them ran, as
`go tool covdata` reading all their counter directories together does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from e2ecov.collect import ProcessOutcome
from e2ecov.gocounters import counter_pids, merged_inputs, silent_binaries

GO_DIR = "go"  # <run directory>/go/<service>/: the service's GOCOVERDIR
INSTALL_HINT = "install Go (https://go.dev/doc/install) or put `go` on PATH"
_BLOCK = re.compile(r"^(.+):(\d+)\.(\d+),(\d+)\.(\d+) (\d+) (\d+)$")
_MODULE = re.compile(r"^module\s+(\S+)", re.MULTILINE)
# how `go tool cover` names a package whose sources it cannot find
_MISSING_PACKAGE = re.compile(r"no required module provides package (\S+?);?\s")


class GoUnavailable(RuntimeError):
    """`go` is not on PATH."""


def go() -> str:
    found = shutil.which("go")
    if found is None:
        raise GoUnavailable(f"Go services need the go tool: {INSTALL_HINT}")
    return found


BUILD_TIMEOUT = 600  # seconds


def build(
    name: str,
    package: str,
    cwd: Path,
    output: Path,
    env: dict[str, str] | None = None,
    *,
    cover: bool = True,
) -> str | None:
    """`go build -cover -covermode=atomic` (a plain `go build` for a service run unmeasured),
    in the service's environment (its `CGO_ENABLED`, `GOFLAGS`...); returns the build's
    error output on failure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    flags = ["-cover", "-covermode=atomic"] if cover else []
    said_build = "go build -cover" if cover else "go build"
    try:
        command = [go(), "build", *flags, "-o", str(output), package]
    except GoUnavailable as exc:
        return str(exc)
    # its own process group: `go build` runs the compiler and linker as children, and an
    # interrupted run (e2ecov signalled, the build timed out) must stop all of them
    build = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        said, _ = build.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(build)
        return f"service '{name}': {said_build} {package} (in {cwd}) took over {BUILD_TIMEOUT}s"
    except BaseException:  # e2ecov interrupted (a signal) while it waited
        _kill_group(build)
        raise
    if build.returncode != 0:
        # Go's first error goes on the message's first line, which the run's last line
        # repeats (a "# package" line only names the package the errors below it are in)
        said_lines = said.strip().splitlines()
        cause = next((line for line in said_lines if not line.startswith("#")), "")
        headline = f"service '{name}': {said_build} {package} (in {cwd}) failed"
        if not cause:
            return f"{headline} (exit {build.returncode}, no output)"
        # below it, what Go said as it said it (a "# package" line before its errors)
        shown = said_lines[-15:] if said_lines != [cause] else []
        return "\n    ".join([f"{headline}: {cause}", *shown])
    return None


def local_package_problem(cwd: Path, package: str) -> str | None:
    """Why `package`, a directory of `cwd` (`.`, `./cmd/server`), cannot be built: there is
    no such directory, or no `.go` file in it; seen before anything starts (the build said
    so only after the run had begun, exit 3). None for an import path or a pattern, which
    `go build` resolves and judges itself."""
    if "..." in package or not (package in (".", "..") or package.startswith(("./", "../"))):
        return None
    directory = cwd / package
    if not directory.is_dir():
        return f"no directory {directory}"
    if not any(directory.glob("*.go")):
        return f"no .go file in {directory}"
    return None


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


_BUILD_INFO = b"\xff Go buildinf:"  # the magic `go version -m` looks for
_COVER_SETTING = b"\nbuild\t-cover=true\n"  # a line of the build info (it prints it indented)
# the runtime function an instrumented package registers its meta-data with (Go 1.20 and
# later), by name in the binary's function table (kept by -ldflags=-s too); the linker
# leaves it out when no package of the binary was instrumented
_COVER_REGISTERED = b"runtime.addCovMeta"


def _markers(program: Path) -> set[bytes] | None:
    """Which of the build info, its `-cover=true` and a package's coverage registration
    `program` holds; None when it cannot be read."""
    wanted = (_BUILD_INFO, _COVER_SETTING, _COVER_REGISTERED)
    found: set[bytes] = set()
    tail = b""
    keep = max(len(marker) for marker in wanted)
    try:
        with program.open("rb") as handle:
            while len(found) < len(wanted) and (chunk := handle.read(1 << 20)):
                window = tail + chunk
                found.update(marker for marker in wanted if marker in window)
                tail = window[-keep:]
    except OSError:
        return None
    return found


def built_with_cover(program: Path) -> bool | None:
    """Whether `program` is a Go binary built with `-cover`, read from the build info the Go
    linker embeds (what `go version -m` prints; no go tool needed): listed as a Python
    service, such a binary announces nothing, and the hint is `coverage = "go"`; listed as a
    Go service without it, it would write no coverage. None: no Go binary (a wrapper script,
    or nothing readable)."""
    found = _markers(program)
    if found is None or _BUILD_INFO not in found:
        return None
    return _COVER_SETTING in found


# what `run` and `doctor` say of such a binary (`{}`: its path)
NOTHING_INSTRUMENTED = (
    "{} is built with -cover, but no package of it was instrumented (go install -cover "
    "pkg@version builds such a binary, as does a -coverpkg that matches none of its "
    "packages), so it would write no coverage: build it in a checkout of its module (go mod "
    "download gives one) with go build -cover, or let e2ecov build it there: go_build with cwd"
)


def instruments_nothing(program: Path) -> bool:
    """Whether `program` is a Go binary built with `-cover` of which no package was
    instrumented: `go install -cover pkg@version` builds one (with no main module, no
    package is the main module's, and `-coverpkg` is not applied either), as does a
    `-coverpkg` that matches none of its packages. It writes no counters however it ends,
    and its empty GOCOVERDIR read as a binary built without `-cover`, which its build info
    denies."""
    found = _markers(program)
    return (
        found is not None
        and {_BUILD_INFO, _COVER_SETTING} <= found
        and (_COVER_REGISTERED not in found)
    )


def module_of(directory: Path) -> tuple[str, Path] | None:
    """The Go module a directory belongs to: (module path, module root)."""
    for candidate in [directory, *directory.parents]:
        mod = candidate / "go.mod"
        if mod.is_file():
            match = _MODULE.search(mod.read_text(errors="replace"))
            return (match.group(1), candidate) if match else None
    return None


def outcomes(
    service: str,
    covdir: Path,
    main_pid: int | None,
    death: dict[int, str],
    announced: set[int],
    main_program: str | None = None,
    stderr: Path | None = None,
) -> list[ProcessOutcome]:
    """The main process of a Go service that did not announce itself (saved or lost), and
    any other Go binary of the service that ran and wrote no counters (lost: a helper the
    service started, killed before it exited). `main_program`: what the main process ran
    when the stack was stopped, when known; `stderr`: the service's stderr log, where a
    panic that ended it without counters is told."""
    if main_pid is None or main_pid in announced:  # the agent's ledger judges the main one
        return _silent(service, covdir, main_lost=main_pid not in counter_pids(covdir))
    if _a_wrapper(main_program) and any(covdir.glob("covmeta.*")):
        # a wrapper script (`entrypoint.sh` running the binary as its child): the shell
        # writes no counters, and was a loss although the binary had saved. The Go
        # processes are judged by their own files: counters, or meta-data alone (lost).
        children = [
            ProcessOutcome(
                service, pid, "saved", f"{service} pid {pid} saved at exit", str(covdir), None,
                "go",
            )
            for pid in sorted(counter_pids(covdir) - announced)
        ]  # fmt: skip
        return [*children, *_silent(service, covdir, main_lost=False)]
    who = f"{service} pid {main_pid}"
    if main_pid in counter_pids(covdir):
        saved = ProcessOutcome(
            service, main_pid, "saved", f"{who} saved at exit", str(covdir), None, "go"
        )
        return [saved, *_silent(service, covdir, main_lost=False)]
    how = death.get(main_pid, "did not exit")
    if not any(covdir.glob("covmeta.*")):
        cause = f"{how}, and its GOCOVERDIR stayed empty: is the binary built with go build -cover?"
    elif how.startswith("exited"):
        # it exited, yet neither through main's return nor os.Exit: a panic, a fatal error
        # (both exit code 2) or syscall.Exit. "os.Exit writes counters" alone read as a
        # contradiction of the exit code the user saw.
        panic = _panic_line(stderr)
        told = f" (its stderr: {panic!r})" if panic else ""
        cause = (
            f"{how} without writing counters{told}: a Go binary writes them only when main "
            "returns or os.Exit is called, not when it panics, hits a fatal error or calls "
            "syscall.Exit (a panic: fix it); e2ecov's Go agent, imported, keeps what it ran "
            "up to its last live save"
        )
    else:
        cause = (
            f"{how} before it saved (a Go binary writes its counters when main returns or "
            "os.Exit is called; one killed by a signal writes nothing unless it imports "
            "e2ecov's Go agent)"
        )
    lost = ProcessOutcome(
        service, main_pid, "lost", f"{who} wrote no coverage: {cause}", str(covdir), None, "go"
    )
    return [lost, *_silent(service, covdir, main_lost=True)]


def _panic_line(stderr: Path | None) -> str | None:
    """The first line of a Go panic or fatal error in a service's stderr log (the last one
    printed: a service restarted by its tests panics once per run of it)."""
    if stderr is None:
        return None
    try:
        text = stderr.read_text(errors="replace")
    except OSError:
        return None
    found = [line for line in text.splitlines() if line.startswith(("panic: ", "fatal error: "))]
    return found[-1] if found else None


def child_outcomes(
    service: str, covdir: Path, children: dict[int, str], announced: set[int]
) -> list[ProcessOutcome]:
    """The Go processes built with -cover seen running below a Go service's main process
    (pid → command line) that left no counters: killed by a signal, or a panic. A child of
    the main binary's own kind (a supervisor that re-runs itself as its worker) shares its
    meta-data, so `_silent` cannot see it; its pid can. One that announced itself is judged
    by the agent's ledger."""
    written = counter_pids(covdir)
    return [
        ProcessOutcome(
            service, pid, "lost",
            f"{service} pid {pid} ({command[:160]}), a Go process the service started, wrote "
            "no coverage: it ended without writing counters (killed by a signal, or a panic); "
            "let it return from main on SIGTERM, or import e2ecov's Go agent in it",
            str(covdir), None, "go",
        )
        for pid, command in sorted(children.items())
        if pid not in written and pid not in announced
    ]  # fmt: skip


def _a_wrapper(program: str | None) -> bool:
    """Whether the main process ran a program that is no Go binary (a shell, `tini`)."""
    if program is None or not Path(program).is_file():
        return False  # not known, or gone (" (deleted)"): judged as the Go binary
    return built_with_cover(Path(program)) is None


def _silent(service: str, covdir: Path, main_lost: bool) -> list[ProcessOutcome]:
    silent = silent_binaries(covdir)
    if main_lost and len(silent) <= 1:
        return []  # that binary is the main process's: its loss is named already
    message = (
        "{service}: a Go binary of this service ran (meta-data {digest}…) but none of its "
        "processes wrote counters — a helper it started, killed before it exited? What it ran "
        "is lost (let it exit, or import e2ecov's Go agent in it)"
    )
    return [
        ProcessOutcome(
            service,
            0,
            "lost",
            message.format(service=service, digest=digest[:12]),
            str(covdir),
            None,
            "go",
        )
        for digest in silent
    ]


@dataclass
class GoFile:
    """One source file: statements as Go counts them, and hits per line (for line formats)."""

    name: str
    package: str
    statements: int = 0
    covered: int = 0
    lines: dict[int, int] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)  # the Go services that ran it

    @property
    def missed(self) -> int:
        return self.statements - self.covered

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.statements if self.statements else 100.0


@dataclass
class GoService:
    name: str
    files: dict[str, GoFile]
    functions: list[tuple[str, str, str]]  # ("path:line:", name, "NN.N%")
    html: Path | None
    warnings: list[str]
    profile: str = ""  # `go tool covdata textfmt` of the service's counters
    merged: Path | None = None  # its counters merged into one directory (`go tool covdata`)
    binary: str | None = None  # the program, when prebuilt (its sources for the HTML page)

    @property
    def statements(self) -> int:
        return sum(f.statements for f in self.files.values())

    @property
    def covered(self) -> int:
        return sum(f.covered for f in self.files.values())


def _module(import_path: str, modules: dict[str, Path]) -> str | None:
    """The module of `modules` that holds the file: the longest module path that does, since
    with several services' modules one may be nested in another (`example.com/a` and
    `example.com/a/tools`); None for a module outside them."""
    return max((m for m in modules if import_path.startswith(m + "/")), key=len, default=None)


def _local(import_path: str, modules: dict[str, Path]) -> Path | None:
    """The file's path on disk, for files of modules built from a local checkout."""
    module = _module(import_path, modules)
    if module is None:
        return None
    return modules[module] / import_path[len(module) + 1 :]


def _display(import_path: str, modules: dict[str, Path], display_root: Path) -> str:
    """A repository path for files of modules in the repository (under `display_root`, where
    every report path is relative to), else the import path: a module checked out elsewhere
    (a dependency built from /tmp, another checkout) has a name that does not change from one
    machine or run to the next, an absolute path has not."""
    local = _local(import_path, modules)
    if local is None:
        return import_path
    try:
        return str(local.relative_to(display_root))
    except ValueError:
        return import_path


# a line of nothing but brackets and separators: a block's closing brace, `})`, `},`
_PUNCTUATION = re.compile(r"^[\s{}()\[\],;]*$")


def _code_lines(source: Path) -> set[int] | None:
    """The lines of a Go file that can hold a statement: not blank, not only a comment, not
    only braces (None when the file cannot be read). A profile's block spans whole line
    ranges, comments and closing braces included; counted as lines they were 2.4 times a
    real service's statements in LCOV and Cobertura."""
    try:
        text = source.read_text(errors="replace")
    except OSError:
        return None
    code: set[int] = set()
    in_comment = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_comment:
            if "*/" not in line:
                continue
            in_comment = False
            line = line.split("*/", 1)[1].strip()
        if line.startswith("/*") and "*/" not in line:
            in_comment = True
            continue
        if not line or line.startswith("//") or _PUNCTUATION.match(line):
            continue
        code.add(number)
    return code


Block = tuple[str, int, int, int, int]  # import path of the file, start line.col, end line.col


def _blocks(text: str) -> dict[Block, tuple[int, int]]:
    """`go tool covdata textfmt` output → block → (statements, hits): a block listed more than
    once (several processes, programs or services) has the sum of their hits."""
    blocks: dict[Block, tuple[int, int]] = {}
    for line in text.splitlines():
        match = _BLOCK.match(line.strip())
        if not match:
            continue
        path, l1, c1, l2, c2, statements, count = match.groups()
        key = (path, int(l1), int(c1), int(l2), int(c2))
        previous = blocks.get(key, (int(statements), 0))
        blocks[key] = (int(statements), previous[1] + int(count))
    return blocks


def parse_profile(text: str, modules: dict[str, Path], display_root: Path) -> dict[str, GoFile]:
    """`go tool covdata textfmt` output → files (blocks merged: a block is covered once any
    process ran it)."""
    blocks = _blocks(text)
    files: dict[str, GoFile] = {}
    for (path, start, _c1, end, _c2), (statements, count) in blocks.items():
        name = _display(path, modules, display_root)
        entry = files.setdefault(name, GoFile(name, path.rsplit("/", 1)[0]))
        entry.statements += statements
        entry.covered += statements if count else 0
        for number in range(start, end + 1):
            entry.lines[number] = max(entry.lines.get(number, 0), count)
    for path in {key[0] for key in blocks}:
        entry = files[_display(path, modules, display_root)]
        local = _local(path, modules)
        code = _code_lines(local) if local is not None else None
        if code is not None:
            entry.lines = {n: hits for n, hits in entry.lines.items() if n in code}
    return files


def _functions(
    text: str, modules: dict[str, Path], display_root: Path
) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] in ("total", "total:"):
            continue
        where, name, percent = parts
        path, _, number = where.rstrip(":").rpartition(":")
        rows.append((f"{_display(path, modules, display_root)}:{number}:", name, percent))
    return rows


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _checked(name: str, done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """A `go tool covdata` step that failed reads as no coverage at all: say why instead."""
    if done.returncode == 0:
        return done
    said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    hint = ""
    if "counter mode clash" in said:
        hint = (
            "; every binary of a Go service must be built with `go build -cover "
            "-covermode=atomic` (as e2ecov builds go_build services)"
        )
    raise RuntimeError(f"go tool covdata {done.args[3]} for {name}: {said}{hint}")


def report(
    name: str,
    covdir: Path,
    work: Path,
    html_dir: Path,
    modules: dict[str, Path],
    display_root: Path,
    binary: str | None,
) -> GoService | None:
    """One Go service's reports; None when it wrote no coverage at all."""
    if not any(covdir.glob("covmeta.*")) or not counter_pids(covdir):
        return None
    tool = go()
    merged = work / f"go-{name}"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir(parents=True)
    warnings: list[str] = []
    counted = _counted_files(covdir, work / f"go-{name}-in")
    _checked(name, _run([tool, "tool", "covdata", "merge", f"-i={counted}", f"-o={merged}"]))
    profile = work / f"go-{name}.cov"
    _checked(name, _run([tool, "tool", "covdata", "textfmt", f"-i={merged}", f"-o={profile}"]))
    text = profile.read_text()
    files = parse_profile(text, modules, display_root)
    for go_file in files.values():
        go_file.services = [name]
    listed = _checked(name, _run([tool, "tool", "covdata", "func", f"-i={merged}"]))
    functions = _functions(listed.stdout, modules, display_root)
    html = html_dir / f"{name}.html"
    html_dir.mkdir(parents=True, exist_ok=True)
    made, note = _html(tool, profile, html, modules, binary)
    if not made:
        warnings.append(f"no Go HTML page for service {name}: {note}")
        html = None  # type: ignore[assignment]
    elif note:
        warnings.append(f"the Go HTML page of service {name}: {note}")
    return GoService(name, files, functions, html, warnings, text, merged, binary)


@dataclass
class GoUnion:
    """The Go files of every Go service, each once: what the combined reports count."""

    files: dict[str, GoFile]
    functions: list[tuple[str, str, str]]
    warnings: list[str]
    different_builds: bool = False  # a file ran from different sources in the services


def union(services: list[GoService], modules: dict[str, Path], display_root: Path) -> GoUnion:
    """Each Go file once, covered where any service ran it, and each function once, as
    `go tool covdata` reading every service's counters together counts them. Two replicas of
    one binary (or two programs sharing a package) run the same files: adding the services'
    files counted their statements twice and listed each file once per service.

    The blocks are merged here rather than by `go tool covdata textfmt`, which refuses
    services built in different counter modes (`set` and `atomic`) that each read alone."""
    if len(services) == 1:
        only = services[0]
        return GoUnion(only.files, only.functions, [])
    files = parse_profile("\n".join(s.profile for s in services), modules, display_root)
    for svc in services:
        for name in svc.files:
            files[name].services.append(svc.name)
    different = _different_builds(services, modules, display_root)
    warnings = list(different)
    merged = ",".join(str(s.merged) for s in services if s.merged is not None)
    listed = _run([go(), "tool", "covdata", "func", f"-i={merged}"])
    if listed.returncode == 0:
        functions = _functions(listed.stdout, modules, display_root)
    else:
        said = (listed.stderr.strip().splitlines() or [f"exit {listed.returncode}"])[-1]
        warnings.append(
            f"go tool covdata func could not read the Go services together ({said}): the "
            "function lines are each service's, a function run by several is listed once each"
        )
        functions = [row for svc in services for row in svc.functions]
    return GoUnion(files, functions, warnings, bool(different))


def combined_html(
    services: list[GoService], union: GoUnion, modules: dict[str, Path], html: Path, work: Path
) -> tuple[bool, str | None]:
    """One `go tool cover -html` page of every Go service's counters together: a file's
    lines as covered where any service ran them, as the combined reports count it (each
    service's own page shows only what it ran). (made, note), as `_html`'s.

    The services' blocks are merged here (hits added, `set` kept when every service used
    it), as `union` does; the page is made from one module's sources, so programs of two
    modules of the repository get none (their own pages stay), and the files of modules
    outside it beside one of the repository's are left out of it, said in the note."""
    if union.different_builds:  # the union's warning names the files
        return False, "a Go file was built from different sources in the services"
    modes = {s.profile.partition("\n")[0].removeprefix("mode:").strip() for s in services}
    mode = "set" if modes == {"set"} else "count"
    blocks = _blocks("\n".join(s.profile for s in services))
    # "2 modules (a module outside the repository, example.com/shapes)" read as if the
    # repository's module were the outside one: only the repository's are counted here
    held = sorted({m for path, *_ in blocks if (m := _module(path, modules)) is not None})
    if len(held) > 1:
        return False, (
            f"the Go services' files come from {len(held)} modules ({', '.join(held)}) and "
            "`go tool cover -html` reads one module's sources at a time; each service's own "
            "page is in html/go/"
        )
    lines = [f"mode: {mode}"]
    for (path, l1, c1, l2, c2), (statements, hits) in blocks.items():
        lines.append(
            f"{path}:{l1}.{c1},{l2}.{c2} {statements} {min(hits, 1) if mode == 'set' else hits}"
        )
    profile = work / "go-all-services.cov"
    profile.write_text("\n".join(lines) + "\n")
    binary = next((s.binary for s in services if s.binary), None)
    html.parent.mkdir(parents=True, exist_ok=True)
    return _html(go(), profile, html, modules, binary)


def _different_builds(
    services: list[GoService], modules: dict[str, Path], display_root: Path
) -> list[str]:
    """Files that services ran from different sources (their blocks differ): their combined
    figures add both versions' blocks, which is no version's count."""
    seen: dict[str, tuple[str, set[Block]]] = {}
    differing: dict[str, list[str]] = {}
    for svc in services:
        by_file: dict[str, set[Block]] = {}
        for block in _blocks(svc.profile):
            by_file.setdefault(_display(block[0], modules, display_root), set()).add(block)
        for name, blocks in by_file.items():
            first = seen.setdefault(name, (svc.name, blocks))
            if first[1] != blocks:
                differing.setdefault(name, [first[0]]).append(svc.name)
    return [
        f"Go file {name} was built from different sources in services {', '.join(names)}: its "
        "combined figures count the blocks of every version"
        for name, names in sorted(differing.items())
    ]


def _counted_files(covdir: Path, staging: Path) -> Path:
    """`gocounters.merged_inputs`, linked into `staging` (covdata reads a directory)."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in merged_inputs(covdir):
        (staging / path.name).symlink_to(path.resolve())
    return staging


def _html(
    tool: str, profile: Path, html: Path, modules: dict[str, Path], binary: str | None
) -> tuple[bool, str | None]:
    """`go tool cover -html` needs the sources: from a module in the repository, the module
    kept in `src/` next to the binary, or (for a binary built from the module proxy) a
    throwaway module requiring what it was built from, resolved through the module cache.

    (made, note): whether the page was written, and why not, or what it leaves out."""
    command = [tool, "tool", "cover", f"-html={profile}", f"-o={html}"]
    roots = list(modules.values())
    if binary and (Path(binary).parent / "src" / "go.mod").is_file():
        roots.append(Path(binary).parent / "src")  # the module a binary was built from, kept
    missing: set[str] = set()
    for root in roots:
        done = _run(command, cwd=root)
        if done.returncode == 0:
            return True, None
        missing.update(_MISSING_PACKAGE.findall(done.stderr))
    foreign = sorted(p for p in missing if not any(p.startswith(m + "/") for m in modules))
    if roots and foreign:  # a second program's packages: the checkout is not what is missing
        # the service's own module still gets its page: a helper of another module (a tool
        # it runs) took the whole page with it. Its files are in every other report.
        mode, *blocks = profile.read_text().splitlines()
        files = {b: b.partition(":")[0] for b in blocks}
        ours = [b for b in blocks if _module(files[b], modules) is not None]
        others = {f.rpartition("/")[0] for f in files.values() if _module(f, modules) is None}
        foreign = sorted(others) or foreign
        named = foreign[0] + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
        own = profile.with_name(profile.stem + "-own" + profile.suffix)
        own.write_text("\n".join([mode, *ours]) + "\n")
        own_command = [tool, "tool", "cover", f"-html={own}", f"-o={html}"]
        for root in roots if ours else []:
            if _run(own_command, cwd=root).returncode == 0:
                return True, (
                    f"it leaves out the packages of no module in the repository ({named}): "
                    "a second Go program, of another module, run by a service? `go tool "
                    "cover -html` reads one module's sources at a time (their files are in "
                    "the other reports)"
                )
        return False, (
            f"its counters hold packages of no module in the repository ({named}): a second "
            "Go program measured under this service? `go tool cover -html` reads one "
            "module's sources at a time"
        )
    main = _main_module(tool, binary) if binary else None
    if main is None:
        return False, "its sources are not in a module of the repository"
    if main[1] == "(devel)":  # built from a checkout, not from the module proxy
        kept = Path(binary).parent / "src" if binary else Path("src")
        return False, (
            f"it was built from a local checkout of {main[0]}, whose sources e2ecov cannot "
            f"fetch: keep that module's sources in {kept} (its go.mod there), or build it "
            "from a module of this repository"
        )
    with tempfile.TemporaryDirectory(prefix="e2ecov-go-") as tmp:
        (Path(tmp) / "go.mod").write_text(
            f"module e2ecov.invalid/html\n\nrequire {main[0]} {main[1]}\n"
        )
        env_run = subprocess.run(
            command, cwd=tmp, capture_output=True, text=True, timeout=300,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )  # fmt: skip
    if env_run.returncode != 0:
        return False, (env_run.stderr.strip().splitlines() or ["go tool cover failed"])[-1]
    return True, None


def _main_module(tool: str, binary: str) -> tuple[str, str] | None:
    """(module path, version) a Go binary was built from (`go version -m`)."""
    done = _run([tool, "version", "-m", binary])
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "mod":
            return parts[1], parts[2]
    return None
