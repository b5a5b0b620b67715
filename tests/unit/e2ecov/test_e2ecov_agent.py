"""The agent's final save against a SIGTERM that lands at the worst moment.

A pool worker ends through `os._exit`, and `Pool.terminate` may SIGTERM it while that final
save is under way, or while the agent restarts coverage in it right after the fork. Whatever
instant the signal lands at, and whether the agent or the service handles SIGTERM (a handler
that calls `sys.exit`), the process must save and end as it was asked to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

# A process measured by an agent (its files under the directory given first), as the
# start-up hook leaves a service's: what each script below goes on from.
AGENT_STARTED = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from e2ecov.agent import Agent, Settings

    root = Path(sys.argv[1])
    agent = Agent(Settings(
        service="svc", run_id="r", control_dir=root / "control", data_dir=root / "data",
        ledger_dir=root / "ledger", source=[str(root / "src")], source_pkgs=[],
        contexts=False, autosave=0.0, branch=False,
    ))
    (root / "control").mkdir()
    (root / "src").mkdir()
    (root / "src" / "measured.py").write_text("def f():\\n    return 1\\n")
    sys.path.insert(0, str(root / "src"))
    agent.start()
    agent.install()
    """
)

# Then makes the signal land inside the final save: `where` names the step (a method of the
# agent) at whose start SIGTERM is sent to the process itself.
SCRIPT = AGENT_STARTED + textwrap.dedent(
    """
    where, handler = sys.argv[2], sys.argv[3]
    if handler == "service":  # the service's own, installed after the agent's start-up hook
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
    import measured
    measured.f()
    real = getattr(agent, where)

    sent = []

    def interrupted(*args, **kwargs):
        if not sent:  # once: the agent's own handler calls the step again
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    setattr(agent, where, interrupted)
    os._exit(0)
    """
)


@pytest.mark.parametrize("handler", ["agent", "service"])
@pytest.mark.parametrize(
    "where", ["finish", "_signals_deferred", "save", "_package_dirs", "_close_listener"]
)
def test_sigterm_during_the_final_save_still_saves(
    tmp_path: Path, where: str, handler: str
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), where, handler],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if handler == "agent":
        assert done.returncode in (0, -signal.SIGTERM), done.stderr
    else:  # the handler runs once the save is done; os._exit(0) still ends the process
        assert done.returncode == 0, done.stderr
    ledgers = list((tmp_path / "ledger").glob("*.jsonl"))
    assert len(ledgers) == 1
    records = [json.loads(line) for line in ledgers[0].read_text().splitlines()]
    saves = [r for r in records if r["event"] == "save"]
    assert saves and saves[-1]["measured"] == 1, (records, done.stderr)
    assert list((tmp_path / "data").iterdir()), "the data file was written"


# Then fork, and print the child's exit status: 5 if its SIGTERM handler ended it, 0 if it
# ran on (the handler's exit was lost).
FORK_AND_REPORT = textwrap.dedent(
    """
    import measured
    pid = os.fork()
    if pid == 0:
        measured.f()
        time.sleep(0.5)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
    os._exit(0)
    """
)

# A forked child restarting its coverage gets SIGTERM; its handler (the service's) exits 5.
FORK_SCRIPT = (
    AGENT_STARTED
    + textwrap.dedent(
        """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(5))
    real = agent._restart_in_child

    def interrupted():
        os.kill(os.getpid(), signal.SIGTERM)  # held back until the restart is done
        real()

    agent._restart_in_child = interrupted
    """
    )
    + FORK_AND_REPORT
)


def test_sigterm_while_a_forked_child_restarts_ends_it_as_its_handler_asks(
    tmp_path: Path,
) -> None:
    """Python ignores an exception raised in an at-fork hook: the service handler's
    `sys.exit`, run when the agent lets the held signal in, was lost, and the worker ran on
    (a `Pool.terminate` then waited for it for good)."""
    script = tmp_path / "script.py"
    script.write_text(FORK_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5", done.stderr
    children = [
        [json.loads(line) for line in ledger.read_text().splitlines()]
        for ledger in (tmp_path / "ledger").glob("*.jsonl")
        if json.loads(ledger.read_text().splitlines()[0])["pid"]
        != json.loads(ledger.read_text().splitlines()[0])["ppid"]
    ]
    saves = [r["reason"] for records in children for r in records if r["event"] == "save"]
    assert "sigterm" in saves, (children, done.stderr)


# A signal that lands in the child before the agent's at-fork hook runs (here: sent by an
# at-fork hook registered before the agent's), and what the agent's own threads block.
EARLY_SCRIPT = (
    textwrap.dedent(
        """
    import os, signal, sys, threading
    from pathlib import Path
    os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
    """
    )
    + AGENT_STARTED.replace("import os, signal, sys, time", "import time")
    + textwrap.dedent(
        """
    def blocked(thread):
        status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
        mask = int(status.split("SigBlk:")[1].split()[0], 16)
        return bool(mask & (1 << (signal.SIGTERM - 1)))

    print(sorted((t.name, blocked(t)) for t in threading.enumerate()))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(5))
    """
    )
    + FORK_AND_REPORT
)


def test_the_agents_threads_never_take_the_services_signals_and_a_fork_holds_them(
    tmp_path: Path,
) -> None:
    """The kernel gives a process's SIGTERM to any thread not blocking it: taken by an agent
    thread, a pool worker's main thread blocked in a lock never ran its handler (a
    `Pool.terminate` waited for good). And a SIGTERM landing in a child before the agent's
    at-fork hook ran its handler in an earlier hook, where Python ignores `sys.exit`."""
    script = tmp_path / "script.py"
    script.write_text(EARLY_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    threads, code = done.stdout.strip().splitlines()
    assert threads == str([("MainThread", False), ("e2ecov-agent", True)])
    assert code == "5", done.stderr


# A pool worker whose SIGTERM is caught (Python's flag tripped) while its main thread is
# blocked in C without a timeout: here another thread of the worker takes the signal, as the
# main thread does when it lands just before it blocks (on the task queue's lock, which
# `Pool.terminate` holds). Then a plain forked child, which must not get the agent's wakeup
# fd (Trio, a daemon closing its files). Prints the worker's exit code (or "hung") and what
# the plain child's `set_wakeup_fd` found.
MISSED_SCRIPT = AGENT_STARTED + textwrap.dedent(
    """
    import multiprocessing, threading

    def blocked_until_killed():
        def take_it():
            time.sleep(0.3)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        threading.Thread(target=take_it, daemon=True).start()
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()

    pool = multiprocessing.get_context("fork").Pool(1)
    worker = pool._pool[0]
    pool.apply_async(blocked_until_killed)
    deadline = time.monotonic() + 10
    while worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("hung" if worker.is_alive() else worker.exitcode)
    pool.terminate()
    pid = os.fork()
    if pid == 0:
        found = signal.set_wakeup_fd(-1)
        os.write(1, f"{found}\\n".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    sys.stdout.flush()
    os._exit(0)
    """
)


def test_a_sigterm_the_main_thread_missed_still_ends_a_pool_worker(tmp_path: Path) -> None:
    """A SIGTERM that lands just before a pool worker's main thread blocks in the task
    queue's lock (which `Pool.terminate` holds for good) only trips Python's flag: the
    agent's handler never ran and `Pool.terminate` waited for the worker for good. The
    agent sends it to the main thread again until its handler runs — in pool workers only:
    a plain forked child keeps no wakeup fd of the agent's (in every child it made Trio
    warn, and wrote signal bytes into a daemon's reused descriptors)."""
    script = tmp_path / "script.py"
    script.write_text(MISSED_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-signal.SIGTERM), "-1"], done.stderr
    reasons = [
        record.get("reason")
        for ledger in (tmp_path / "ledger").glob("*.jsonl")
        for record in map(json.loads, ledger.read_text().splitlines())
    ]
    assert "sigterm" in reasons, (reasons, done.stderr)


# A live save asked for as the process ends: it waited for the lock while the final save
# wrote, and runs after it. Prints what it answered.
LATE_SAVE_SCRIPT = AGENT_STARTED + textwrap.dedent(
    """
    import json
    import measured
    measured.f()
    agent.finish("exit")
    data = Path(agent._cov.get_data().data_filename())
    written = data.stat().st_mtime_ns
    answer = agent.save("live")
    print(json.dumps({"answer": answer, "rewritten": data.stat().st_mtime_ns != written}))
    os._exit(0)
    """
)


def test_a_save_after_the_final_one_writes_nothing(tmp_path: Path) -> None:
    """coverage.py's own exit hook closes the data after the agent's final save: a live save
    that had waited for the lock meanwhile wrote it as it was closed, and the worker died of
    SIGSEGV in SQLite (an outside check: 8 exits in about 600 under live saves). It now
    answers with the final save's figures and writes nothing."""
    script = tmp_path / "script.py"
    script.write_text(LATE_SAVE_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    late = json.loads(done.stdout)
    assert late["answer"]["ok"] and late["answer"]["measured"] >= 1
    assert not late["rewritten"]
    reasons = [
        record.get("reason")
        for ledger in (tmp_path / "ledger").glob("*.jsonl")
        for record in map(json.loads, ledger.read_text().splitlines())
        if record.get("event") == "save"
    ]
    assert reasons == ["exit"], reasons


# A service that closed what it inherited (a daemon) and opened files of its own, which took
# the numbers of the agent's descriptors, then forks. Prints what the child could write.
REUSED_SCRIPT = AGENT_STARTED + textwrap.dedent(
    """
    number = agent._listener.fileno()
    os.close(number)  # as python-daemon closes every inherited descriptor
    handle = open(root / "records", "w", buffering=1)
    assert handle.fileno() == number
    pid = os.fork()
    if pid == 0:
        try:
            handle.write("from the child\\n")
            print("written")
        except OSError as exc:
            print(exc)
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    os._exit(0)
    """
)


def test_a_forked_child_leaves_the_descriptors_its_service_reused(tmp_path: Path) -> None:
    """The agent's listener, closed by the service and its number reused for a file of the
    service's: a forked child's agent closed that number again as its stale listener, and
    the child's writes to the file failed (an outside check, with python-daemon)."""
    script = tmp_path / "script.py"
    script.write_text(REUSED_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "written", (done.stdout, done.stderr)
    assert (tmp_path / "records").read_text() == "from the child\n"


# A process started by the start-up hook gets SIGTERM right as it is announced in the ledger
# (e2ecov stopping a stack while a helper the service spawned is still starting; a CI run).
ANNOUNCED_THEN_TERMINATED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from e2ecov import agent as agent_module
    from e2ecov import protocol

    root = Path(sys.argv[1])
    (root / "control").mkdir()
    os.environ.update({
        protocol.ENV_SERVICE: "svc", protocol.ENV_CONTROL_DIR: str(root / "control"),
        protocol.ENV_DATA_DIR: str(root / "data"), protocol.ENV_LEDGER_DIR: str(root / "ledger"),
        protocol.ENV_SOURCE: '["' + str(root) + '"]', protocol.ENV_AUTOSAVE: "0",
    })
    real = agent_module.Agent._announce

    def announced_then_terminated(self, suffix):
        real(self, suffix)
        os.kill(os.getpid(), signal.SIGTERM)

    agent_module.Agent._announce = announced_then_terminated
    agent_module.activate()
    print("ran on after SIGTERM", flush=True)
    """
)


def test_sigterm_right_after_the_announcement_is_a_save_not_a_loss(tmp_path: Path) -> None:
    """Announced but killed before its SIGTERM handler was in place, a process ended unsaved
    and the run reported its coverage lost (exit 4); the signal now waits for the handler."""
    script = tmp_path / "script.py"
    script.write_text(ANNOUNCED_THEN_TERMINATED)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM, (done.stdout, done.stderr)
    assert "ran on" not in done.stdout
    (ledger,) = (tmp_path / "ledger").glob("*.jsonl")
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [r["reason"] for r in records if r["event"] == "save"] == ["sigterm"], records


# A service that a launcher (`opentelemetry-instrument`) started with its own hook before
# e2ecov's, and that execs its program in the way named by the second argument. The
# process's real execv/execve are stand-ins that print what they were called with and what
# the process's own environment said at that moment (as any other thread of it would see
# it), then end the process as an exec would; a path under /missing fails as a missing file.
EXEC_WITHOUT_ENV = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    seen = []
    gone = os._exit  # the process image replaced: no exit of its own (the agent saves at one)

    def stand_in(name):
        def exec_(path, argv, env=None):
            seen.append({
                "exec": name, "path": os.fsdecode(path), "argv": list(argv),
                "ours": os.environ.get("PYTHONPATH"),
                "theirs": None if env is None else env.get("PYTHONPATH"),
                "other": None if env is None else env.get("OTHER"),
            })
            if os.fsdecode(path).startswith("/missing"):
                raise FileNotFoundError(2, "No such file or directory", path)
            print(json.dumps(seen), flush=True)
            gone(0)
        return exec_

    os.execv, os.execve = stand_in("execv"), stand_in("execve")
    from e2ecov.agent import Agent, Settings

    root = Path(sys.argv[1])
    (root / "control").mkdir()
    agent = Agent(Settings(
        service="svc", run_id="r", control_dir=root / "control", data_dir=root / "data",
        ledger_dir=root / "ledger", source=[str(root)], source_pkgs=[],
        contexts=False, autosave=0.0, branch=False, hook_dir="/hook",
    ))
    agent.start()
    agent.install()
    os.environ["PYTHONPATH"] = "/otel:/hook:/app"
    os.environ["OTHER"] = "kept"
    how = sys.argv[2]
    if how == "execv":
        os.execv("/bin/prog", ["prog", "x"])
    elif how == "execl":
        os.execl("/bin/prog", "prog", "x")
    elif how == "execvp":  # a PATH search, whose first directory has no such program
        os.environ["PATH"] = "/missing:/bin"
        os.execvp("prog", ["prog", "x"])
    elif how == "execve":  # an environment of its own
        os.execve("/bin/prog", ["prog", "x"], {"PYTHONPATH": "/otel:/hook", "OTHER": "theirs"})
    else:  # the hook is first already
        os.environ["PYTHONPATH"] = "/hook:/app"
        os.execv("/bin/prog", ["prog", "x"])
    """
)


def exec_calls(tmp_path: Path, how: str) -> list[dict[str, Any]]:
    """What the execs of EXEC_WITHOUT_ENV were called with, `how` it exec'd."""
    script = tmp_path / "script.py"
    script.write_text(EXEC_WITHOUT_ENV)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), how],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls: list[dict[str, Any]] = json.loads(done.stdout)
    return calls


@pytest.mark.parametrize("how", ["execv", "execl", "execvp"])
def test_an_exec_without_an_environment_leaves_the_process_environment_alone(
    tmp_path: Path, how: str
) -> None:
    """An exec without an environment of its own got e2ecov's hook first on the new image's
    PYTHONPATH by rewriting os.environ["PYTHONPATH"] for the exec (and back only if it
    failed): every other thread of the service saw the rewritten value meanwhile. Now the
    exec becomes an execve with a copy of the environment, the process's own untouched."""
    calls = exec_calls(tmp_path, how)
    tried = ["/missing/prog", "/bin/prog"] if how == "execvp" else ["/bin/prog"]
    assert [call["path"] for call in calls] == tried
    for call in calls:
        assert call["ours"] == "/otel:/hook:/app", call  # as the service left it
        assert call["exec"] == "execve" and call["argv"] == ["prog", "x"], call
        assert call["theirs"] == "/hook:/otel:/app", call  # the new image's: the hook first
        assert call["other"] == "kept", call  # the rest of the environment goes with it
    (ledger,) = (tmp_path / "ledger").glob("*.jsonl")
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    reasons = [r["reason"] for r in records if r["event"] == "save"]
    assert reasons == (["exec", "exec failed", "exec"] if how == "execvp" else ["exec"]), records


# A service that changes its environment below os.environ (os.putenv, os.unsetenv) and then
# execs a real program without an environment of its own, e2ecov's hook not first on its
# PYTHONPATH: the new image prints the environment it was given.
PUTENV_THEN_EXEC = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from e2ecov.agent import Agent, Settings

    root = Path(sys.argv[1])
    (root / "control").mkdir()
    agent = Agent(Settings(
        service="svc", run_id="r", control_dir=root / "control", data_dir=root / "data",
        ledger_dir=root / "ledger", source=[str(root)], source_pkgs=[],
        contexts=False, autosave=0.0, branch=False, hook_dir="/hook",
    ))
    agent.start()
    agent.install()
    os.environ["PYTHONPATH"] = "/otel:/hook:" + os.environ["PYTHONPATH"]
    os.putenv("ONLY_PUT", "by putenv")
    os.unsetenv("ONLY_UNSET")
    shown = "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
    shown += "('ONLY_PUT', 'ONLY_UNSET', 'PYTHONPATH')}))"
    os.execv(sys.executable, [sys.executable, "-c", shown])
    """
)


def test_an_exec_without_an_environment_passes_on_the_c_environment(tmp_path: Path) -> None:
    """An `execv` that e2ecov made an `execve` (its hook first on PYTHONPATH) was given a
    copy of os.environ: a variable set with os.putenv was missing in the new program, one
    removed with os.unsetenv came back. The new program now sees what a plain `execv`
    would have given it, the hook first on its PYTHONPATH."""
    script = tmp_path / "script.py"
    script.write_text(PUTENV_THEN_EXEC)
    env = {**os.environ, "ONLY_UNSET": "still here", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["ONLY_PUT"] == "by putenv", seen
    assert seen["ONLY_UNSET"] is None, seen
    assert seen["PYTHONPATH"].startswith("/hook:/otel:"), seen


def test_an_exec_with_its_own_environment_gets_the_hook_first_in_it(tmp_path: Path) -> None:
    [call] = exec_calls(tmp_path, "execve")
    assert call["exec"] == "execve" and call["ours"] == "/otel:/hook:/app", call
    assert call["theirs"] == "/hook:/otel" and call["other"] == "theirs", call


def test_an_exec_whose_pythonpath_starts_with_the_hook_is_passed_on_as_is(
    tmp_path: Path,
) -> None:
    [call] = exec_calls(tmp_path, "hook first already")
    assert call["exec"] == "execv" and call["ours"] == "/hook:/app", call
