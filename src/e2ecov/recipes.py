"""Built-in recipes: throwaway PostgreSQL and Redis servers from the system's binaries.

A recipe owns one server process on a free loopback port, with its data in a private
temporary directory. It can be stopped and started again on the same port and data (so
tests can simulate an outage), and it always cleans up after itself.

The same classes back e2ecov's `recipe = "postgres"` / `recipe = "redis"` services and the
test fixtures of projects that use e2ecov, so there is one way to run a throwaway server.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


class RecipeUnavailable(RuntimeError):
    """The machine lacks what a recipe needs; the message names the package to install."""


class RecipeFailed(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


_RECENT_PORTS_LIMIT = 1024
_FRESH_PORT_TRIES = 64
_recent_ports: dict[int, None] = {}  # ports handed out lately, oldest first


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel picks it), and not one this process
    was handed lately: the kernel can give the same port to two binds in a row once the
    first socket is closed, and two services told to listen on it would collide."""
    for _ in range(_FRESH_PORT_TRIES):  # a narrow port range may hold only recent ones
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _recent_ports:
            break
    _recent_ports.pop(port, None)
    _recent_ports[port] = None
    if len(_recent_ports) > _RECENT_PORTS_LIMIT:
        del _recent_ports[next(iter(_recent_ports))]
    return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def find_postgres_bindir() -> Path:
    """Where `initdb` and `postgres` live: PATH first, then Debian's versioned directories."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise RecipeUnavailable(
        "recipe 'postgres' needs PostgreSQL's initdb and postgres binaries: "
        "install the Debian package 'postgresql' (apt-get install postgresql)"
    )


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    raise RecipeUnavailable(
        "recipe 'redis' needs redis-server: install the Debian package 'redis-server' "
        "(apt-get install redis-server)"
    )


@dataclass
class _Identity:
    """Who the server runs as: PostgreSQL refuses root, so root drops to 'postgres'."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def for_postgres(cls) -> _Identity:
        if os.geteuid() != 0:
            return cls(None, os.getuid(), os.getgid())
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        raise RecipeUnavailable(
            "recipe 'postgres' runs as root here and needs an unprivileged user to drop to: "
            "install the Debian package 'postgresql', which creates the 'postgres' user"
        )

    @property
    def run_uid(self) -> int | None:
        """The uid to pass to subprocess (None: stay who we are)."""
        return self.uid if self.user else None

    @property
    def run_gid(self) -> int | None:
        return self.gid if self.user else None


@dataclass
class _LocalServer:
    """What both recipes share: a private directory, one child process and its log."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    # variables added to the server's environment: an e2ecov run's owner mark, by which
    # `e2ecov down` finds (and the next run refuses) a server a kept run left running
    mark: dict[str, str] = field(default_factory=dict)
    # told each server process's pid as soon as it is started (before it is ready): an e2ecov
    # run records it at once, so a run killed while the server starts still names it
    spawned: Callable[[int], None] | None = None
    # told the private directory as soon as it is made (before the server is): a run killed
    # while the server starts left the directory in the temporary directory for good
    rooted: Callable[[Path], None] | None = None
    _root: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    LOG_NAME: ClassVar[str] = "server.log"
    STOP_SIGNAL: ClassVar[int] = signal.SIGTERM

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        assert self._root is not None
        return self._root / self.LOG_NAME

    @property
    def root(self) -> Path | None:
        """The private directory holding data and log (None before start / after cleanup)."""
        return self._root

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server with its `STOP_SIGNAL`, killing it after `timeout` seconds."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(self.STOP_SIGNAL)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _make_root(self, prefix: str) -> Path:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        if self.rooted is not None:
            self.rooted(root)
        return root

    def cleanup(self) -> None:
        self.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


@dataclass
class PostgresServer(_LocalServer):
    """A private PostgreSQL cluster: `start()`, `url`, `stop()`, `start()` again, `cleanup()`."""

    user: str = "postgres"
    database: str = "postgres"
    startup_timeout: float = 30.0
    # False (tests): fsync, synchronous commit and full-page writes off, for speed; True
    # (benchmarks): PostgreSQL's production defaults, every commit on disk before it answers.
    # A crash test needs True: off, an immediate shutdown (SIGQUIT) loses the last commits
    # the server had answered (82 events a client was answered 201 for, in one run)
    durable: bool = False

    LOG_NAME: ClassVar[str] = "postgres.log"
    # fast shutdown: open connections are cut, as in a real outage
    STOP_SIGNAL: ClassVar[int] = signal.SIGINT

    def __post_init__(self) -> None:
        self._bindir = find_postgres_bindir()
        self._identity = _Identity.for_postgres()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def _initdb(self) -> None:
        self._root = self._make_root("e2ecov-pg-")
        (self._root / "data").mkdir()
        (self._root / "sock").mkdir()
        for path in (self._root, self._root / "data", self._root / "sock"):
            os.chown(path, self._identity.uid, self._identity.gid)
        result = subprocess.run(
            [
                str(self._bindir / "initdb"),
                "-D",
                str(self._root / "data"),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            cwd=self._root,
            user=self._identity.run_uid,
            group=self._identity.run_gid,
        )
        if result.returncode != 0:
            raise RecipeFailed(
                f"initdb failed (exit {result.returncode}): "
                + result.stderr.decode(errors="replace")[-2000:]
            )

    def start(self) -> PostgresServer:
        if self._proc and self._proc.poll() is None:
            return self
        if self._root is None:
            self._initdb()
        assert self._root is not None
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        os.chown(self.log_path, self._identity.uid, self._identity.gid)
        self._proc = subprocess.Popen(
            [
                str(self._bindir / "postgres"),
                "-D",
                str(self._root / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self._root / "sock"),
                "-c",
                f"listen_addresses={self.host}",
                *self._durability_flags(),
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._root,
            env={**os.environ, **self.mark},
            start_new_session=True,
            user=self._identity.run_uid,
            group=self._identity.run_gid,
        )
        log.close()
        if self.spawned is not None:
            self.spawned(self._proc.pid)
        self._wait_ready()
        return self

    def _durability_flags(self) -> list[str]:
        value = "on" if self.durable else "off"
        return [f"-c{name}={value}" for name in ("fsync", "synchronous_commit", "full_page_writes")]

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        isready = str(self._bindir / "pg_isready")
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RecipeFailed(
                    f"postgres exited with code {self._proc.returncode} during start:\n"
                    + _tail(self.log_path)
                )
            probe = subprocess.run(
                [isready, "-q", "-h", self.host, "-p", str(self.port), "-U", self.user],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise RecipeFailed(
            f"postgres not ready on port {self.port} after {self.startup_timeout:.0f}s:\n"
            + _tail(self.log_path)
        )

    def create_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def execute(self, sql: str) -> str:
        """Run one SQL command with psql as the server's user; its rows, unaligned
        (CalledProcessError on failure)."""
        psql = self._bindir / "psql"
        command = [str(psql) if psql.exists() else "psql", "-h", self.host, "-p", str(self.port)]
        command += ["-U", self.user, "-d", self.database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c"]
        done = subprocess.run([*command, sql], check=True, capture_output=True, text=True)
        return done.stdout


@dataclass
class RedisServer(_LocalServer):
    """A private redis-server that keeps what it acknowledges, as a production one should:
    an append-only file fsynced before each answer (`appendfsync always`), in its throwaway
    directory, so a stack's test can kill and restart it and find its data. A service that
    checks its Redis persists (signalgate's DataStorage does) accepts it."""

    startup_timeout: float = 15.0

    LOG_NAME: ClassVar[str] = "redis.log"

    def __post_init__(self) -> None:
        self._binary = find_redis_server()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        if self._proc and self._proc.poll() is None:
            return self
        if self._root is None:
            self._root = self._make_root("e2ecov-redis-")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self._root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._root,
            env={**os.environ, **self.mark},
            start_new_session=True,
        )
        log.close()
        if self.spawned is not None:
            self.spawned(self._proc.pid)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RecipeFailed(
                    f"redis-server exited with code {self._proc.returncode} during start:\n"
                    + _tail(self.log_path)
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RecipeFailed(f"redis-server not ready on port {self.port}:\n" + _tail(self.log_path))
