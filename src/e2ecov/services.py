"""Starting the stack: processes and recipes, in dependency order, with fail-fast health waits.

One thread per service waits for its dependencies to be healthy, starts the service and
polls its health URL. The wait stops at once when the process exits (with its exit code and
last output lines) and, on timeout, names the last health answer. The first failure aborts
every other wait, so the run can write diagnostics while everything is still as it was.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from e2ecov import procs, protocol
from e2ecov.kubeapi import KubeAPIServer, find_kube_binaries
from e2ecov.recipes import PostgresServer, RecipeFailed, RecipeUnavailable, RedisServer
from e2ecov.stackfile import ServiceSpec, named_services

Recipe = PostgresServer | RedisServer | KubeAPIServer
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def describe_exit(code: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def tail(path: Path, lines: int = 10) -> list[str]:
    """The last lines of a log file (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def excerpt(path: Path, lines: int = 10, head: int = 3) -> list[str]:
    """The last lines of a log file, after its first `head` ones when it has more: a program
    refusing its arguments says why first and then prints its usage (Go's `flag` package,
    many CLIs), which would fill the last lines alone."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    every = text.splitlines()
    if len(every) <= head + lines:
        return every
    skipped = len(every) - head - lines
    return [*every[:head], f"[... {skipped} line(s) ...]", *every[-lines:]]


@dataclass
class ServiceRun:
    """One service of this run: how it was started and what happened to it."""

    spec: ServiceSpec
    ports: dict[str, int]  # "" is {port}
    command: list[str]
    env_added: dict[str, str]
    env: dict[str, str]
    log_dir: Path
    url: str = ""
    health_url: str | None = None
    recipe: Recipe | None = None
    run_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started: float | None = None
    ready: float | None = None
    exit_code: int | None = None
    failure: str | None = None
    # pid → start time of the processes seen below the main one while it ran (looked at
    # now and then during the tests): its orphaned workers are not a restart once it dies
    family: dict[int, int] = field(default_factory=dict)
    health_answers: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    # the services it names by placeholder that were not healthy when it started
    named_unready: dict[str, str] = field(default_factory=dict)
    ready_event: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        if self.recipe is not None:
            return self.recipe.pid
        return self.proc.pid if self.proc else None

    @property
    def stdout_path(self) -> Path:
        if self.recipe is not None:
            with contextlib.suppress(AssertionError):
                return self.recipe.log_path
        return self.log_dir / f"{self.name}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr.log"

    def poll(self) -> int | None:
        """The exit code once the main process has ended."""
        if self.proc is not None and self.exit_code is None:
            self.exit_code = self.proc.poll()
        elif self.recipe is not None and self.recipe.process is not None and self.exit_code is None:
            self.exit_code = self.recipe.process.poll()
        return self.exit_code

    def stop_target(self) -> StopTarget:
        pgid = self.proc.pid if self.proc is not None else None
        return StopTarget(self.name, pgid, self.spec.grace, self.run_id)

    def last_output(self, lines: int = 10) -> list[str]:
        out = excerpt(self.stdout_path, lines)
        err = excerpt(self.stderr_path, lines) if self.recipe is None else []
        return [*(f"stdout| {line}" for line in out), *(f"stderr| {line}" for line in err)]


def make_recipe(
    spec: ServiceSpec,
    pick: Callable[[], int],
    mark: dict[str, str],
    extra_args: Sequence[str] = (),
) -> Recipe:
    """The recipe object, its ports taken from `pick` (the run's port range), `mark` in its
    servers' environment, `extra_args` its `extra_args` rendered; raises RecipeUnavailable at
    once when its binaries are missing."""
    if spec.recipe == "postgres":
        return PostgresServer(port=pick(), mark=mark)
    if spec.recipe == "redis":
        return RedisServer(port=pick(), mark=mark)
    if spec.recipe == "kube-apiserver":
        # binaries from $E2ECOV_KUBE_BIN or PATH, checked now, before anything starts
        return KubeAPIServer(
            bin_dir=find_kube_binaries(None),
            crds=spec.manifests,
            extra_args=tuple(extra_args),
            port=pick(),
            etcd_port=pick(),
            etcd_peer_port=pick(),
            mark=mark,
        )
    raise RecipeUnavailable(f"unknown recipe {spec.recipe!r}")


class Supervisor:
    """Brings the stack up; `first_failure` names what went wrong first."""

    def __init__(self, services: dict[str, ServiceRun], order: list[str]) -> None:
        self.services = services
        self.order = order
        self.abort = threading.Event()
        self.first_failure: str | None = None
        self._failure_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _fail(self, svc: ServiceRun, message: str) -> None:
        svc.failure = message
        with self._failure_lock:
            if self.first_failure is None:
                self.first_failure = message
        self.abort.set()

    def start_all(self, tick: Callable[[str], None] = lambda status: None) -> bool:
        """Start everything; True when every service is ready. `tick` feeds the spinner."""
        threads = self._threads = [
            threading.Thread(
                target=self._bring_up,
                args=(self.services[n],),
                name=f"e2ecov-{n}",
                daemon=True,  # an interrupted run must not wait for health timeouts
            )
            for n in self.order
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            waiting = [s.name for s in self.services.values() if not s.ready_event.is_set()]
            tick("waiting for " + ", ".join(waiting) if waiting else "")
            time.sleep(0.1)
        return self.first_failure is None

    def join(self, timeout: float) -> None:
        """Wait (after `abort`) for the start threads, so no process starts after this."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _bring_up(self, svc: ServiceRun) -> None:
        for dep in svc.spec.depends_on:
            while not self.services[dep].ready_event.wait(0.05):
                if self.abort.is_set():
                    return
        if self.abort.is_set():
            return
        svc.named_unready = {
            other: placeholder
            for other, placeholder in named_services(svc.spec).items()
            if other in self.services and not self.services[other].ready_event.is_set()
        }
        try:
            self._start(svc)
        except (RecipeFailed, RecipeUnavailable) as exc:
            self._fail(svc, f"service '{svc.name}' (recipe {svc.spec.recipe}) did not start: {exc}")
            return
        except OSError as exc:
            program = svc.command[0] if svc.command else "?"
            self._fail(
                svc,
                f"service '{svc.name}' could not be started: {program!r}: {exc.strerror or exc}"
                " (is it installed and on PATH, and is cwd right?)",
            )
            return
        if svc.recipe is None:
            self._wait_healthy(svc)
        else:
            svc.ready = time.time()
            svc.ready_event.set()

    def _start(self, svc: ServiceRun) -> None:
        svc.started = time.time()
        if svc.recipe is not None:
            svc.recipe.start()
            return
        svc.log_dir.mkdir(parents=True, exist_ok=True)
        with open(svc.stdout_path, "wb") as out, open(svc.stderr_path, "wb") as err:
            svc.proc = subprocess.Popen(
                svc.command,
                cwd=svc.spec.cwd,
                env=svc.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: workers are stopped with it
            )

    def _wait_healthy(self, svc: ServiceRun) -> None:
        health = svc.spec.health
        if health is None:
            svc.ready = time.time()
            svc.ready_event.set()
            return
        url = svc.health_url or health.url
        deadline = time.monotonic() + health.timeout
        while True:
            code = svc.poll()
            if code is not None:
                lines = "\n    ".join(svc.last_output()) or "(no output)"
                self._fail(
                    svc,
                    f"service '{svc.name}' (pid {svc.pid}) {describe_exit(code)} before it was "
                    f"healthy{detached(svc)}{started_early(svc)}; last output:\n    {lines}",
                )
                return
            remaining = deadline - time.monotonic()
            answer = probe(url, max(0.2, min(1.0, remaining)))
            svc.health_answers.append(answer)
            if answer.startswith("HTTP 2"):
                foreign = foreign_answer(svc, url)
                if foreign:
                    self._fail(svc, foreign)
                    return
                svc.ready = time.time()
                svc.ready_event.set()
                return
            if time.monotonic() >= deadline:
                # its output says why as often as the answer does: listening elsewhere than
                # its {port}, waiting for something, a warning about its configuration
                lines = "\n    ".join(svc.last_output()) or "(no output)"
                self._fail(
                    svc,
                    f"service '{svc.name}' (pid {svc.pid}) not healthy after "
                    f"{health.timeout:g}s at {url}; last health answer: {answer}"
                    f"{started_early(svc)}; last output:\n    {lines}",
                )
                return
            if self.abort.wait(min(health.interval, max(0.0, deadline - time.monotonic()))):
                return


def started_early(svc: ServiceRun) -> str:
    """A service that failed to come up and names another by placeholder without depending
    on it was started beside it, maybe before it was healthy: "cannot reach the database"
    in its output did not say that `depends_on` orders the start."""
    if not svc.named_unready:
        return ""
    names = sorted(svc.named_unready)
    which = ", ".join(f"'{n}' ({svc.named_unready[n]})" for n in names)
    wanted = ", ".join(f'"{n}"' for n in [*svc.spec.depends_on, *names])
    was, them = ("was", "it") if len(names) == 1 else ("were", "them")
    return (
        f"; it started before {which} {was} healthy, as it names {them} without depending on "
        f"{them}: if it needs {them} up first, add depends_on = [{wanted}] to "
        f"[services.{svc.name}]"
    )


def detached(svc: ServiceRun) -> str:
    """What a service whose main process exited left running: a daemon (gunicorn `--daemon`,
    a server's own `-D`) forks, detaches and exits, and "exited with code 0 before it was
    healthy" alone did not say that the server was up, only no longer e2ecov's child. Said
    too when the detached server answered the health check before the exit was seen."""
    run_id = svc.env.get(protocol.ENV_RUN_ID)
    left = sorted(procs.marked(run_id, svc.name) - {svc.pid}) if run_id else []
    if not left:
        return ""
    named = ", ".join(procs.describe(pid) for pid in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return (
        f", leaving {named}{more} running: a service must stay in the foreground "
        "(drop a daemonizing option such as gunicorn's --daemon)"
    )


def foreign_answer(svc: ServiceRun, url: str) -> str | None:
    """Why the process answering `url` is not this service's (None: it is, or nobody can tell).

    A stale server from an earlier run on the same port would otherwise pass the health check
    for a service that died with "Address already in use"."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK or parts.port is None:
        return None
    holders = procs.port_holders(parts.port)
    if not holders:
        return None  # nobody / nobody visible: /proc cannot prove anything either way
    if holders & svc.stop_target().members():
        return None
    who = ", ".join(procs.describe(pid) for pid in sorted(holders))
    return (
        f"service '{svc.name}' (pid {svc.pid}) is not what answers {url}: port {parts.port} is "
        f"held by {who}, which this run did not start (a server left from an earlier run?); "
        "stop that process or give the service another port"
    )


def taken_port_problems(svc: ServiceRun) -> list[str]:
    """Before anything starts: every loopback port the service will listen on must be free."""
    wanted: dict[int, str] = {
        number: f"{{port.{name}}}" if name else "{port}" for name, number in svc.ports.items()
    }
    if svc.health_url:
        parts = urlsplit(svc.health_url)
        if parts.hostname in LOOPBACK and parts.port is not None:
            wanted.setdefault(parts.port, f"its health URL {svc.health_url}")
    problems = []
    for number, what in sorted(wanted.items()):
        holders = procs.port_holders(number)
        if holders is None:
            continue
        who = ", ".join(procs.describe(pid) for pid in sorted(holders)) or "a process /proc hides"
        problems.append(
            f"service '{svc.name}': port {number} ({what}) is already taken by {who}; "
            "stop that process or pick another port"
        )
    return problems


def probe(url: str, timeout: float) -> str:
    """One health request, as a short human-readable answer (no proxy from the environment:
    the stack is on loopback). An `https://` health URL's certificate is not verified: a
    service on loopback serves a self-signed or test certificate, which could never be
    trusted here, and whether it answers is all the check asks (the tests verify what they
    must; who answers, `foreign_answer` tells)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
    )
    try:
        with opener.open(url, timeout=timeout) as response:
            status, raw = response.status, response.read(4096)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(4096)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:.1f}s"
        return f"cannot connect: {reason}"
    except TimeoutError:
        return f"no answer within {timeout:.1f}s"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    body = " ".join(raw.decode(errors="replace").split())[:200]
    return f"HTTP {status}: {body}" if body else f"HTTP {status}"


# ---- stopping -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopTarget:
    """One service's processes: its process group, plus everything carrying its owner mark
    (helpers it started in another session) and their descendants."""

    name: str
    pgid: int | None
    grace: float
    run_id: str
    every_service: bool = False  # every process marked with the run id, whichever service
    # processes named by pid (checked against their recorded start time by the caller): a
    # recipe's servers, and helpers a kept run adopted, which may carry no mark
    pids: frozenset[int] = frozenset()

    def members(self) -> set[int]:
        table = procs.snapshot()
        roots = {p.pid for p in table.values() if p.alive and p.pgid == self.pgid}
        roots |= {self.pgid} if self.pgid in table and table[self.pgid].alive else set()
        roots |= {pid for pid in self.pids if pid in table and table[pid].alive}
        roots |= procs.marked(self.run_id, None if self.every_service else self.name)
        return {pid for pid in procs.descendants(roots, table) if table[pid].alive}

    def signal(self, signum: int) -> set[int]:
        """The process group at once, then each member outside it (one signal per process:
        a second SIGTERM would land in the middle of the first one's save). Returns the
        members signalled: the processes running then."""
        members = self.members()
        if self.pgid is not None:
            signal_group(self.pgid, signum)
        procs.kill(self.outside_group(members), signum)
        return members

    def outside_group(self, pids: set[int]) -> set[int]:
        """Those of `pids` running outside the service's process group."""
        if not pids:
            return set()
        table = procs.snapshot()
        return {p for p in pids if p in table and table[p].pgid != self.pgid}


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop(
    targets: list[StopTarget],
    reap: Callable[[], None] = lambda: None,
    announced: Callable[[], set[int]] = set,
) -> dict[str, set[int]]:
    """SIGTERM every target, SIGKILL those still running after their grace; returns, per target
    that had to be killed, the processes the SIGKILL was for (those running after the grace:
    a process of the target that had ended before, on its own, was not killed by e2ecov).
    Waits until every process of every target is gone.

    `announced`: the measured processes (pids in the ledger). One that starts after the
    SIGTERM went out, in a session of its own (a helper the service spawns as it stops),
    gets its own SIGTERM once it is measured, so it saves: its first signal was the SIGKILL
    at the grace's end, and its coverage was lost. Only once measured: a SIGTERM while it
    starts would end it before it measured anything, or did its job. A new process in the
    service's group is left to the service (a command its shutdown runs and waits for)."""
    termed = {target.name: target.signal(signal.SIGTERM) for target in targets}
    start = time.monotonic()
    killed: dict[str, set[int]] = {}
    pending = {t.name: t for t in targets}
    while pending:
        reap()
        for name, target in list(pending.items()):
            elapsed = time.monotonic() - start
            members = target.members()
            if not members:
                del pending[name]
            elif name not in killed and elapsed < target.grace:
                late = members - termed[name]  # started since the SIGTERM went out
                if late and (late := target.outside_group(late & announced())):
                    procs.kill(late, signal.SIGTERM)  # once each, and the same grace's end
                    termed[name] |= late
            elif name not in killed:
                killed[name] = target.signal(signal.SIGKILL)
            elif elapsed >= target.grace + 5.0:
                del pending[name]  # SIGKILL did not end it either (uninterruptible): give up
        if pending:
            time.sleep(0.05)
    reap()
    return killed
