"""The control agent: a thread inside every instrumented process.

Started by the start-up hook (`startup/sitecustomize.py`) before the service's own code runs.
It starts coverage.py with e2ecov's settings, announces the process in the ledger, answers
`save`, `context <name>`, `reset` and `status` on a Unix socket, saves every `autosave`
seconds, at normal exit, in `os._exit` (how forked workers end), before an `exec` replaces
the process and on SIGTERM, and goes on measuring with its own data file in forked children.

Saves are serialised by one lock. A signal that lands while the main thread is inside a save
or the final save (`finish`) only records itself and is acted on when that section ends: a
handler saving inside a save would corrupt the data file, and a handler that found the final
save already begun would end the process before it wrote anything (a pool worker ending in
`os._exit` while `Pool.terminate` sends it SIGTERM).

Stdlib and coverage only: this runs at start-up of every service process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import FrameType
from typing import Any, NoReturn

from e2ecov import protocol

FINAL_SAVE_WAIT_S = 10.0  # how long a SIGTERM waits for a final save another thread began
NUDGE_S = 0.2  # how long a pool worker's main thread has to take a SIGTERM before it is re-sent
HELD_AT_FORK = {signal.SIGTERM, signal.SIGINT}
# Signals a service may wait for: never delivered to the agent's threads. The kernel gives a
# process's signal to any thread not blocking it; taken by an agent thread, it only sets
# Python's flag, and a main thread blocked in a lock (a pool worker waiting for a task)
# was never woken to run the service's handler: `Pool.terminate` waited for good.
SERVICE_SIGNALS = {
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD, signal.SIGWINCH, signal.SIGPIPE,
}  # fmt: skip


@dataclass(frozen=True)
class _WakeupPipe:
    """A pool worker's signal wakeup pipe: its two ends and the file they are (a service may
    close every descriptor it inherited and reuse their numbers)."""

    reader: int
    writer: int
    identity: tuple[int, int]

    def holds(self, fd: int) -> bool:
        """Whether `fd` is still this pipe."""
        return _identity(fd) == self.identity


def _identity(fd: int) -> tuple[int, int]:
    try:
        found = os.fstat(fd)
    except OSError:
        return (-1, -1)
    return (found.st_dev, found.st_ino)


def _forked_pool_worker(frame: FrameType | None) -> bool:
    """Whether the fork that called the at-fork hook above `frame` starts a worker of a
    `multiprocessing.Pool`: multiprocessing's fork launcher (`Popen._launch`) calls
    `os.fork` with the process object, whose target is the pool's `worker`, at hand."""
    pool = sys.modules.get("multiprocessing.pool")
    for _ in range(4):  # the launcher is the hook's caller (os.fork has no frame)
        if frame is None or pool is None:
            return False
        if frame.f_code.co_name == "_launch" and "process_obj" in frame.f_locals:
            target = getattr(frame.f_locals["process_obj"], "_target", None)
            return target is getattr(pool, "worker", None)
        frame = frame.f_back
    return False


def _start_quiet(target: Any, name: str, *args: Any) -> None:
    """A daemon thread of the agent that `SERVICE_SIGNALS` never reach (a thread keeps the
    signal mask of the thread that started it)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SERVICE_SIGNALS)
    try:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass(frozen=True)
class Settings:
    """What e2ecov passed in the environment; None from `from_environ` means: not under e2ecov."""

    service: str
    run_id: str
    control_dir: Path
    data_dir: Path
    ledger_dir: Path
    source: list[str]
    source_pkgs: list[str]
    contexts: bool
    autosave: float
    branch: bool
    hook_dir: str = ""  # the start-up hook's directory on PYTHONPATH

    @classmethod
    def from_environ(cls, env: dict[str, str] | None = None) -> Settings | None:
        env = dict(os.environ) if env is None else env
        service = env.get(protocol.ENV_SERVICE)
        if not service or not env.get(protocol.ENV_DATA_DIR):
            return None
        return cls(
            service=service,
            run_id=env.get(protocol.ENV_RUN_ID, ""),
            control_dir=Path(env.get(protocol.ENV_CONTROL_DIR, "/tmp")),
            data_dir=Path(env[protocol.ENV_DATA_DIR]),
            ledger_dir=Path(env.get(protocol.ENV_LEDGER_DIR, env[protocol.ENV_DATA_DIR])),
            source=list(json.loads(env.get(protocol.ENV_SOURCE, "[]"))),
            source_pkgs=list(json.loads(env.get(protocol.ENV_SOURCE_PKGS, "[]"))),
            contexts=env.get(protocol.ENV_CONTEXTS, "1") == "1",
            autosave=float(env.get(protocol.ENV_AUTOSAVE, "10")),
            branch=env.get(protocol.ENV_BRANCH, "0") == "1",
            hook_dir=env.get(protocol.ENV_HOOK_DIR, ""),
        )


def hook_first(pythonpath: str, hook_dir: str) -> str:
    """`pythonpath` with e2ecov's start-up hook first again. Python imports the first
    `sitecustomize` on its path only, and a launcher that puts one of its own before ours and
    execs the service (`opentelemetry-instrument`; `ddtrace-run`'s runs the next one, ours)
    left every process of the service unmeasured; first, ours starts the agent and then runs
    theirs. Unchanged when the hook is not on it (a program that replaced PYTHONPATH runs
    unmeasured)."""
    entries = pythonpath.split(os.pathsep)
    if not hook_dir or hook_dir not in entries or entries[0] == hook_dir:
        return pythonpath
    return os.pathsep.join([hook_dir, *(e for e in entries if e != hook_dir)])


def process_environment() -> dict[str, str]:
    """The environment an exec without one of its own passes on: the C `environ`, which
    `os.putenv` and `os.unsetenv` change and `os.environ` (a copy made at start-up) does not
    see. A name given twice counts as the C library's `getenv` reads it: the first time;
    an entry without `=` (no name) cannot be passed to `execve` and is left out.
    `os.environ` stands in where the C library's `environ` cannot be read."""
    try:
        import ctypes

        environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    except (ImportError, OSError, ValueError, AttributeError):
        return dict(os.environ)
    env: dict[str, str] = {}
    index = 0
    while (entry := environ[index]) is not None:
        name, equals, value = entry.partition(b"=")
        if equals and name:
            env.setdefault(os.fsdecode(name), os.fsdecode(value))  # as os.environ decodes
        index += 1
    return env


def choose_core(contexts: bool, branch: bool, version: tuple[int, int] | None = None) -> str:
    """The coverage.py core, decided in one place.

    - contexts on → `ctrace`: `sysmon` records dynamic contexts incompletely, and it is the
      default on 3.14+, so ctrace must be asked for explicitly;
    - 3.12+ without contexts → `sysmon`, the low-overhead core (unless branches are measured
      before 3.14, which sysmon cannot do there);
    - otherwise (3.11) → `ctrace`, the only fast core there.
    """
    major_minor = version or (sys.version_info.major, sys.version_info.minor)
    if contexts:
        return "ctrace"
    if major_minor >= (3, 12) and not (branch and major_minor < (3, 14)):
        return "sysmon"
    return "ctrace"


_CORE_NAMES = {"CTracer": "ctrace", "SysMonitor": "sysmon", "PyTracer": "pytrace"}


class Agent:
    """One per process; re-initialised in forked children."""

    _finished: bool  # set by `_new_process_state`

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._new_process_state()
        self._wakeup: _WakeupPipe | None = None  # a pool worker's signal wakeup pipe
        self._listener: socket.socket | None = None
        self._listener_identity = (-1, -1)  # the file its descriptor is (`_identity`)
        self._cov: Any = None
        self._measured = 0
        self._fork_mask: set[int | signal.Signals] = set()  # the forking thread's, before a fork
        self.core = "?"
        self.context = os.environ.get(protocol.ENV_CONTEXT) or protocol.STARTUP_CONTEXT
        self.pid = 0
        self.token = ""

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start measuring and serving; called once per process (and again after fork)."""
        import coverage

        suffix = self._new_identity()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        existing = [s for s in self.settings.source if os.path.isdir(s)]
        cov = coverage.Coverage(
            data_file=str(self.settings.data_dir / protocol.DATA_PREFIX),
            data_suffix=suffix,
            source=existing or (self.settings.source if not self.settings.source_pkgs else None),
            source_pkgs=self.settings.source_pkgs or None,
            branch=self.settings.branch,
            config_file=False,
            auto_data=False,
        )
        cov.set_option("run:sigterm", False)
        cov.set_option("run:core", choose_core(self.settings.contexts, self.settings.branch))
        cov.set_option(
            "run:disable_warnings",
            ["no-data-collected", "module-not-imported", "module-not-measured", "no-ctracer"],
        )
        cov.start()
        self._cov = cov
        if self.settings.contexts:
            cov.switch_context(self.context)
        self.core = self._core_name(cov)
        self._announce(suffix)

    def _new_identity(self) -> str:
        """This process's pid and a fresh token; the suffix of its data file and ledger."""
        self.pid = os.getpid()
        self.token = secrets.token_hex(4)
        return f"{self.settings.service}.{self.pid}.{self.token}"

    def _announce(self, suffix: str) -> None:
        """This process's ledger record, control socket and autosave (after a start, and in a
        forked child)."""
        self.data_file = f"{self.settings.data_dir / protocol.DATA_PREFIX}.{suffix}"
        self.ledger = self.settings.ledger_dir / f"{suffix}.jsonl"
        self.settings.ledger_dir.mkdir(parents=True, exist_ok=True)
        protocol.append_record(
            self.ledger,
            {
                "event": "start",
                "service": self.settings.service,
                "pid": self.pid,
                "ppid": os.getppid(),
                "time": time.time(),
                "data_file": self.data_file,
                "core": self.core,
                "python": sys.version.split()[0],
                # the service's own coverage.py: an older one than e2ecov needs measures, but
                # its function figures and options may be wrong (`run` warns)
                "coverage": str(getattr(sys.modules.get("coverage"), "__version__", "")),
                "contexts": self.settings.contexts,
                "argv": sys.argv[:8],
            },
        )
        self._serve()
        if self.settings.autosave > 0:
            _start_quiet(self._autosave, "e2ecov-autosave")

    @staticmethod
    def _core_name(cov: Any) -> str:
        for key, value in cov.sys_info():
            if key == "core":
                return _CORE_NAMES.get(str(value), str(value))
        return "?"

    def install(self) -> None:
        """Process-wide hooks: exit, os._exit, SIGTERM (only when nobody handles it), fork."""
        atexit.register(self._at_exit)
        original_exit = os._exit

        def _exit_with_save(status: int) -> NoReturn:
            # an os._exit ends the process whatever happens in the save, even an exception a
            # service's signal handler raises at its end (it would unwind a forked worker's
            # copy of its parent's stack: the parent's request answered from the child)
            try:
                self.finish("exit")
            except BaseException:
                # raised before the save began (a handler the section had not held back yet):
                # save now; after it, finish has nothing left to do
                with contextlib.suppress(BaseException):
                    self.finish("exit")
            finally:
                original_exit(status)

        os._exit = _exit_with_save
        # exec replaces the process image without running atexit: save first (os.execl*,
        # execvp* and the spawn helpers all end in one of these two)
        execve = os.execve
        os.execv = self._saving_before(os.execv, execve)
        os.execve = self._saving_before(execve, execve)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, self._on_signal)
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._after_fork_in_parent,
            after_in_child=self._after_fork_in_child,
        )

    def _saving_before(self, exec_function: Any, execve: Any) -> Any:
        """`exec_function` (os.execv or os.execve), saving first and keeping e2ecov's hook
        first on the new image's PYTHONPATH; `execve` is the original, which an exec without
        an environment of its own becomes when its PYTHONPATH must change."""

        def exec_with_save(*args: Any) -> Any:
            with contextlib.suppress(Exception):
                self.save("exec")
            function, arguments = self._hook_kept_first(exec_function, execve, args)
            try:
                return function(*arguments)
            except BaseException:
                # the process runs on: that save was not its last (its exit or a loss is)
                with contextlib.suppress(Exception):
                    self.save("exec failed")
                raise

        return exec_with_save

    def _hook_kept_first(
        self, exec_function: Any, execve: Any, args: tuple[Any, ...]
    ) -> tuple[Any, tuple[Any, ...]]:
        """The exec to call and its arguments, the new image's PYTHONPATH starting with
        e2ecov's hook: `execve`'s own environment (path, argv, env), or for `execv` (path,
        argv) a copy of the process's (`process_environment`) passed to `execve`. Ours is
        never changed: rewriting os.environ for the exec (and back if it failed) showed the
        rewritten PYTHONPATH to every other thread of the process meanwhile, and setenv
        racing their getenv is undefined behaviour in C."""
        hook_dir = self.settings.hook_dir
        if len(args) == 3 and isinstance(args[2], Mapping):
            env = dict(args[2])
            if "PYTHONPATH" in env:
                env["PYTHONPATH"] = hook_first(env["PYTHONPATH"], hook_dir)
            return exec_function, (args[0], args[1], env)
        if exec_function is execve or len(args) != 2:
            return exec_function, args  # a call the exec refuses
        # the environment `execv` would pass on, not os.environ: a variable set with
        # os.putenv (or removed with os.unsetenv) is in the C library's only
        environment = process_environment()
        pythonpath = environment.get("PYTHONPATH")
        if pythonpath is None:
            return exec_function, args  # nothing to keep first
        first = hook_first(pythonpath, hook_dir)
        if first == pythonpath:
            return exec_function, args
        return execve, (args[0], args[1], {**environment, "PYTHONPATH": first})

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.finish("exit")

    def finish(self, reason: str) -> None:
        """The last save of this process, then stop serving."""
        with self._signals_deferred():
            if self._finished:
                return
            self._finished = True
            try:
                self.save(reason, final=True)
            finally:
                self._stopped.set()
                self._close_listener(unlink=True)
                self._final_saved.set()

    @contextlib.contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """Hold back a signal landing in this thread until the outermost section ends.

        Entered before any state changes, so a signal that lands before the counter is up
        finds nothing begun and does the whole final save itself. In the main thread (where
        Python runs signal handlers) the service's own SIGTERM/SIGINT handlers are held back
        too: one that raises `SystemExit` inside coverage.py's save left the data file half
        written and the worker running on (an outside check); it runs when the save is done.
        """
        held = self._deferring
        depth = getattr(held, "depth", 0)
        services: dict[int, Any] = {}
        held.depth = depth + 1
        try:
            if depth == 0:
                self._hold_service_handlers(services)
            yield
        finally:
            held.depth = depth
            for signum, handler in services.items():
                signal.signal(signum, handler)
            pending = getattr(held, "pending", None)
            if depth == 0 and pending is not None:
                held.pending = None
                services.get(pending, self._on_signal)(pending, None)

    def _hold_service_handlers(self, services: dict[int, Any]) -> None:
        """Replace the service's Python handlers of SIGTERM/SIGINT by one that only records
        the signal, noting each in `services` as it goes (main thread only: no other may set
        handlers, nor runs them)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(signum)
            if callable(handler) and handler != self._on_signal:
                services[signum] = handler
                signal.signal(signum, self._record_signal)

    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        self._deferring.pending = signum

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._sigterm_taken.set()
        if getattr(self._deferring, "depth", 0):
            self._deferring.pending = signum
            return
        with contextlib.suppress(Exception):
            self.finish("sigterm")
        # another thread may be doing the final save (os._exit off the main thread): let it end
        self._final_saved.wait(FINAL_SAVE_WAIT_S)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _before_fork(self) -> None:
        """No fork in the middle of a save (the autosave thread's): the locks the save holds
        — this agent's, coverage.py's data lock, SQLite's — would stay held in the child,
        and its own saves (at `os._exit`) would wait on them for good.

        SIGTERM/SIGINT are blocked in the forking thread from here, so the child starts
        with them held until its coverage is restarted (`_after_fork_in_child`): one that
        came between the fork and that hook ran its handler in an earlier at-fork hook,
        where Python ignores the handler's `sys.exit`."""
        self._lock.acquire()
        self._fork_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_AT_FORK)

    def _after_fork_in_parent(self) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._fork_mask)
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        """A forked child measures on with its own data file, socket and ledger.

        SIGTERM/SIGINT are held back (since the fork, `_before_fork`) until that is done: a
        pool terminated right after the fork would otherwise save under the parent's name.
        """
        previous = self._fork_mask  # what the forking thread had: held since the fork
        if _in_subprocess_child():
            # it execs the program subprocess was asked to run, or exits: no Python runs
            # (the mask is kept across exec: the program must not start with SIGTERM held)
            self._lock = threading.Lock()  # (the parent's was taken for the fork)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return
        try:
            self._restart_in_child()
            try:
                self._drop_inherited_wakeup()
                if _forked_pool_worker(sys._getframe(1)):
                    self._watch_sigterm()
            except Exception as exc:  # never break the service's worker
                sys.stderr.write(f"e2ecov: SIGTERM not watched in forked child: {exc}\n")
        finally:
            try:
                # a signal held meanwhile is handled here, by whoever handles it
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            except BaseException as exc:
                self._end_as_raised(exc)

    def _end_as_raised(self, exc: BaseException) -> NoReturn:
        """End the child as the exception a signal handler raised would have ended it.

        Python ignores an exception raised in an at-fork hook ("Exception ignored in"), so
        the `sys.exit` of a service's SIGTERM handler, run when the signal held during the
        restart is let in, would be lost: the worker ran on, and the `Pool.terminate` that
        sent it waited for it for good (an outside check: 3 runs in 4). Like an uncaught
        exception in the child, it is reported, the coverage saved, the output flushed.
        """
        if isinstance(exc, SystemExit):
            code = exc.code
            if code is None:
                status = 0
            elif isinstance(code, int):
                status = code
            else:
                sys.stderr.write(f"{code}\n")
                status = 1
        else:
            traceback.print_exception(exc)
            status = 1
        with contextlib.suppress(Exception):
            self.finish("sigterm")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    def _new_process_state(self) -> None:
        """What belongs to one process, made anew in a forked child (the parent's locks may
        have been held at the fork, its saves and its end are not the child's)."""
        self._lock = threading.Lock()
        # per thread: `depth` of the save sections it is inside, `pending` signal held back
        self._deferring = threading.local()
        self._final_saved = threading.Event()
        self._stopped = threading.Event()
        self._sigterm_taken = threading.Event()  # the main thread ran `_on_signal`
        self._saves = 0
        self._last_save: float | None = None
        self._finished = False
        self._final_written = False  # the final save is on disk: nothing is written after it

    def _restart_in_child(self) -> None:
        old = self._cov
        self._new_process_state()
        self._close_listener(unlink=False)
        try:
            if not self._continue_in_child():
                with contextlib.suppress(Exception):
                    old.stop()
                self.start()
        except Exception as exc:  # never break the service's worker
            sys.stderr.write(f"e2ecov: coverage not restarted in forked child: {exc}\n")

    def _watch_sigterm(self) -> None:
        """Make sure a pool worker's main thread runs the agent's SIGTERM handler.

        Python runs a handler only when the main thread next runs bytecode. A SIGTERM landing
        just before a `multiprocessing.Pool` worker blocks on the lock of its task queue
        (which `Pool.terminate` has taken for good) only trips Python's flag: the handler
        never ran, the worker lived on, and `Pool.terminate` waited for it for good (its
        parent's request hung; an outside check: 1 run in 150 under load). Without e2ecov,
        SIGTERM's default action would have ended it. So the worker gets a signal wakeup fd,
        read by a thread that sends SIGTERM again to the main thread until its handler has
        begun: a main thread blocked in a system call is interrupted and runs it.

        Only in pool workers (`_forked_pool_worker`), and only when nothing else holds the
        wakeup fd: in every forked child it made Trio warn that its signal handling
        "collided with another library", and a child that closed its inherited files (a
        daemon) had signal bytes written into a file of its own that took the number."""
        if signal.getsignal(signal.SIGTERM) != self._on_signal:
            return  # the service handles (or ignores) SIGTERM itself
        reader, writer = os.pipe()
        os.set_blocking(writer, False)
        previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        if previous != -1:  # the service's own (an event loop's): left to it
            signal.set_wakeup_fd(previous)
            os.close(reader)
            os.close(writer)
            return
        self._wakeup = _WakeupPipe(reader, writer, _identity(reader))
        _start_quiet(self._resend_sigterm, "e2ecov-sigterm", reader, threading.get_ident())

    def _drop_inherited_wakeup(self) -> None:
        """In a child of a pool worker: its parent's wakeup pipe, no thread reading it here,
        is let go — Python's wakeup fd unset while it is still that pipe, and the pipe's
        descriptors closed while they still are it (a number the service reused is left)."""
        pipe, self._wakeup = self._wakeup, None
        if pipe is None:
            return
        current = signal.set_wakeup_fd(-1)
        if current != -1 and not (current == pipe.writer and pipe.holds(current)):
            signal.set_wakeup_fd(current)  # the service's own since: left to it
        for fd in (pipe.reader, pipe.writer):
            if pipe.holds(fd):
                os.close(fd)

    def _resend_sigterm(self, reader: int, main_thread: int) -> None:
        taken = self._sigterm_taken
        while True:
            try:
                landed = os.read(reader, 512)  # one byte per signal Python caught
            except OSError:
                return
            if not landed:
                return
            while (
                signal.SIGTERM in landed
                and not taken.wait(NUDGE_S)
                and signal.getsignal(signal.SIGTERM) == self._on_signal
            ):
                with contextlib.suppress(OSError):
                    signal.pthread_kill(main_thread, signal.SIGTERM)

    def _continue_in_child(self) -> bool:
        """Measure on with the parent's Coverage, into a data file of this process's own.

        A new Coverage would trace only frames that start after it: the lines still to run in
        the function that called fork (a daemon's double fork, a child that does its work and
        `os._exit`s) would be missed. coverage.py opens a new data file in a forked child
        itself, named with the data object's suffix, before the child first uses it; only
        the suffix is changed here (the parent's would make the child erase the parent's
        file). False when this coverage.py keeps its data elsewhere (then a new Coverage)."""
        data = getattr(self._cov, "_data", None)
        if data is None or not isinstance(getattr(data, "_suffix", None), str):
            return False
        suffix = self._new_identity()
        data._suffix = suffix
        self._announce(suffix)
        return True

    # ---- commands --------------------------------------------------------------------------

    def save(self, reason: str, final: bool = False) -> dict[str, Any]:
        """Write coverage now and keep running; acknowledged in the ledger. After the final
        save (`final`: the process is ending) a save only answers: a live save that waited
        for the lock during the final one wrote the data while coverage.py's own exit hook
        closed it, and the worker died of SIGSEGV in SQLite (an outside check, 8 exits in
        about 600 under live saves)."""
        with self._signals_deferred():
            with self._lock:
                if self._final_written:
                    return self._answer()
                if final:
                    self._final_written = True
                data = self._cov.get_data()
                data.write()
                self._measured = sum(1 for f in data.measured_files() if data.lines(f))
            self._saves += 1
            self._last_save = time.time()
            record = {
                "event": "save",
                "pid": self.pid,
                "reason": reason,
                "time": self._last_save,
                "measured": self._measured,
                "context": self.context,
                "package_dirs": self._package_dirs(),
            }
            with contextlib.suppress(OSError):
                protocol.append_record(self.ledger, record)
        return self._answer()

    def _answer(self) -> dict[str, Any]:
        return {"ok": True, "pid": self.pid, "measured": self._measured, "time": self._last_save}

    def _package_dirs(self) -> list[str]:
        """Where the `source` packages were imported from (their files are reported)."""
        found: list[str] = []
        for name in self.settings.source_pkgs:
            module = sys.modules.get(name)
            paths = getattr(module, "__path__", None)
            where = getattr(module, "__file__", None)
            if paths:
                found.extend(str(path) for path in paths)
            elif where:
                found.append(str(where))
        return found

    def switch(self, name: str) -> dict[str, Any]:
        """Attribute what runs from now on to `name` (also for workers started later)."""
        with self._lock:
            previous = self.context
            if self.settings.contexts:
                self._cov.switch_context(name)
            self.context = name
            os.environ[protocol.ENV_CONTEXT] = name
        return {
            "ok": True,
            "pid": self.pid,
            "previous": previous,
            "contexts": self.settings.contexts,
        }

    def reset(self) -> dict[str, Any]:
        """Discard what was measured so far (the data file is removed until the next save)."""
        with self._lock:
            data = self._cov.get_data()
            data.erase()
            if self.core == "sysmon" and sys.version_info >= (3, 12):
                # sys.monitoring turns a line's event off once it has fired: without turning
                # them on again, what ran before the reset would never be measured again
                sys.monitoring.restart_events()
            if self.settings.contexts:
                self._cov.switch_context(self.context)
        with contextlib.suppress(OSError):
            protocol.append_record(
                self.ledger,
                {
                    "event": "reset",
                    "pid": self.pid,
                    "time": time.time(),
                    "measured": 0,
                    "reason": "reset",
                },
            )
        return {"ok": True, "pid": self.pid}

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": self.pid,
            "service": self.settings.service,
            "run_id": self.settings.run_id,
            "context": self.context,
            "core": self.core,
            "data_file": self.data_file,
            "saves": self._saves,
            "last_save": self._last_save,
            "measured": self._measured,
        }

    def handle(self, line: str) -> dict[str, Any]:
        command, _, argument = line.strip().partition(" ")
        try:
            if command == "save":
                return self.save("save")
            if command == "context" and argument:
                return self.switch(argument)
            if command == "reset":
                return self.reset()
            if command == "status":
                return self.status()
        except Exception as exc:
            return {"ok": False, "pid": self.pid, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "ok": False,
            "pid": self.pid,
            "error": f"unknown command {line.strip()!r}; "
            "expected save, context <name>, reset, status",
        }

    # ---- threads ---------------------------------------------------------------------------

    def _serve(self) -> None:
        path = protocol.socket_path(self.settings.control_dir, self.pid)
        with contextlib.suppress(OSError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(16)
        self._listener = listener
        self._listener_identity = _identity(listener.fileno())
        self._socket_path = path
        _start_quiet(self._accept, "e2ecov-agent", listener)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    answer = self.handle(data.decode(errors="replace"))
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    continue

    def _close_listener(self, unlink: bool) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if _identity(listener.fileno()) != self._listener_identity:
            # the service closed it (a daemon closes what it inherited) and the number is a
            # file of its own now: closing it broke the service's file in a forked child
            listener.detach()
            return
        with contextlib.suppress(OSError):
            listener.close()
        if unlink:
            with contextlib.suppress(OSError):
                self._socket_path.unlink()

    def _autosave(self) -> None:
        stopped = self._stopped
        while not stopped.wait(self.settings.autosave):
            try:
                self.save("autosave")
            except Exception as exc:
                sys.stderr.write(f"e2ecov: autosave failed in pid {os.getpid()}: {exc}\n")


# Python functions on the stack of a fork whose child only execs another program or exits:
# `subprocess` with a `preexec_fn` (Python runs the fork hooks then), and asyncio's
# subprocesses on uvloop (uvloop runs them in every child it spawns).
_EXEC_ONLY_FORKS = frozenset(
    {
        ("subprocess.py", "_execute_child"),
        ("subprocess.py", "create_subprocess_exec"),
        ("subprocess.py", "create_subprocess_shell"),
    }
)


def _in_subprocess_child() -> bool:
    """Whether this fork is one whose child runs no Python of the service — it execs the
    program or exits (`_EXEC_ONLY_FORKS`) — so announcing it would report a process that
    never saves as a loss."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if (PurePath(code.co_filename).name, code.co_name) in _EXEC_ONLY_FORKS:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


_AGENT: Agent | None = None


def activate() -> Agent | None:
    """Entry point of the start-up hook: start the agent if this process is under e2ecov."""
    global _AGENT
    if _AGENT is not None:
        return _AGENT
    settings = Settings.from_environ()
    if settings is None:
        return None
    agent = Agent(settings)
    # Once announced, a process that ends unsaved is a loss: a SIGTERM landing before the
    # handler is in place (e2ecov stopping a stack while a helper still starts) would end it
    # by the default action. Held until then, it reaches the handler, which saves.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        agent.start()
        agent.install()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    _AGENT = agent
    return agent
