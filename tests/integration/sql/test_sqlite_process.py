"""The RR store's SQLite child process (`common.sql.sqlite_process`), as a real process:
calls run there in order, errors come back as themselves, a child killed with SIGKILL fails
only the calls it held and is replaced, and a child whose parent dies exits."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from signalgate.common.sql import sqlite_process
from signalgate.common.sql.sqlite_process import ProcessLost, SqliteProcess

# --- the calls (module-level: the child imports them by name) ---------------------------------


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return conn


def refuse(path: Path) -> sqlite3.Connection:
    raise sqlite3.OperationalError(f"unable to open database file {path}")


def connect_unless(path: Path, lost_disk: Path) -> sqlite3.Connection:
    if lost_disk.exists():
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    return connect(path)


def echo(conn: sqlite3.Connection, token: str) -> str:
    return token


def pid(conn: sqlite3.Connection) -> int:
    return os.getpid()


def insert(conn: sqlite3.Connection, value: int) -> int:
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    return value


def values(conn: sqlite3.Connection) -> list[int]:
    return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY rowid")]


def half_done(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (-1)")
    raise ValueError("a bug in the call")


def in_transaction(conn: sqlite3.Connection) -> bool:
    return conn.in_transaction


def sleep(conn: sqlite3.Connection, seconds: float) -> None:
    time.sleep(seconds)


def unpicklable(conn: sqlite3.Connection) -> object:
    return lambda: None


async def test_calls_run_in_one_other_process_in_the_order_sent(tmp_path: Path) -> None:
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect, tmp_path / "t.db")
    try:
        child = await store.run(pid)
        assert child != os.getpid()
        # sent at once, answered in order: each caller gets its own answer
        assert await asyncio.gather(*(store.run(insert, n) for n in range(50))) == list(range(50))
        assert await store.run(values) == list(range(50))
        assert await store.run(pid) == child
    finally:
        await store.close()
    with pytest.raises(RuntimeError, match="test db is not open"):
        await store.run(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # closing stopped (and reaped) the child


async def test_an_error_comes_back_as_itself_and_leaves_no_transaction(tmp_path: Path) -> None:
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect, tmp_path / "t.db")
    try:
        with pytest.raises(ValueError, match="a bug in the call") as raised:
            await store.run(half_done)
        assert any("in the SQLite process" in note for note in raised.value.__notes__)
        assert await store.run(in_transaction) is False
        assert await store.run(values) == []
        # neither an answer nor an argument that does not pickle leaves a caller waiting, or
        # hands the next caller someone else's answer
        with pytest.raises(AttributeError, match="Can't pickle local object"):
            await store.run(unpicklable)
        with pytest.raises(AttributeError, match="Can't pickle local object"):
            await store.run(insert, lambda: 1)
        assert await store.run(insert, 7) == 7
    finally:
        await store.close()


async def test_closing_answers_every_call_already_sent(tmp_path: Path) -> None:
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect, tmp_path / "t.db")
    calls = [asyncio.ensure_future(store.run(echo, f"call-{n}")) for n in range(200)]
    await asyncio.sleep(0)  # every call sent
    await store.close()
    assert await asyncio.gather(*calls) == [f"call-{n}" for n in range(200)]


async def test_a_restart_that_fails_under_load_leaves_every_caller_its_own_answer(
    tmp_path: Path,
) -> None:
    """Callers with deadlines in flight while the child dies and its replacement cannot
    open the file: once the file is back, each caller gets its own answer, none another's,
    and none is left waiting."""
    path, lost_disk = tmp_path / "t.db", tmp_path / "lost-disk"
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect_unless, path, lost_disk)
    stop = False

    async def caller(n: int) -> None:
        while not stop:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.run(sleep, 0.01), (0.005, 0.05, 2)[n % 3])
            await asyncio.sleep(0.005)

    try:
        callers = [asyncio.ensure_future(caller(n)) for n in range(16)]
        await asyncio.sleep(0.3)
        lost_disk.touch()
        os.kill(await store.run(pid), signal.SIGKILL)
        await asyncio.sleep(2.5)  # restarts fail, and the pause after each
        lost_disk.unlink()
        await asyncio.sleep(sqlite_process.START_PAUSE + 0.5)
        stop = True
        await asyncio.gather(*callers)
        tokens = [f"call-{n}" for n in range(60)]
        answers = await asyncio.wait_for(
            asyncio.gather(*(store.run(echo, token) for token in tokens)), 10
        )
        assert answers == tokens
    finally:
        stop = True
        await store.close()


async def test_a_failed_open_leaves_nothing_running(tmp_path: Path) -> None:
    store = SqliteProcess("test db", "test-sqlite")
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await store.open(refuse, tmp_path / "t.db")
    await store.open(connect, tmp_path / "t.db")  # not "already open": it can start again
    await store.close()


async def test_a_killed_child_fails_its_calls_and_the_next_call_starts_another(
    tmp_path: Path,
) -> None:
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect, tmp_path / "t.db")
    try:
        await store.run(insert, 1)
        first = await store.run(pid)
        stuck = asyncio.ensure_future(store.run(sleep, 30))
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ProcessLost, match="test db: its process exited"):
            await asyncio.wait_for(stuck, 10)
        assert await store.run(values) == [1]  # committed before the kill: kept
        assert await store.run(pid) != first
    finally:
        await store.close()


async def test_a_child_that_cannot_start_again_fails_calls_for_a_pause(tmp_path: Path) -> None:
    path, lost_disk = tmp_path / "t.db", tmp_path / "lost-disk"
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect_unless, path, lost_disk)
    try:
        lost_disk.touch()
        os.kill(await store.run(pid), signal.SIGKILL)
        await asyncio.sleep(0.3)
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            await store.run(pid)
        started = time.monotonic()
        with pytest.raises(ProcessLost, match="could not start: unable to open"):
            await store.run(pid)  # within the pause: no new process, the same error at once
        assert time.monotonic() - started < 0.5
        lost_disk.unlink()
        await asyncio.sleep(sqlite_process.START_PAUSE)
        assert await store.run(pid) != os.getpid()  # after the pause a new child starts
    finally:
        await store.close()


def test_the_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    # a parent process holding a store, killed with SIGKILL: its child sees end of input
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import asyncio, sys
                from pathlib import Path
                from tests.integration.sql.test_sqlite_process import connect, pid
                from signalgate.common.sql.sqlite_process import SqliteProcess

                async def main():
                    store = SqliteProcess("test db", "test-sqlite")
                    await store.open(connect, Path({str(tmp_path / "t.db")!r}))
                    print(await store.run(pid), flush=True)
                    await asyncio.sleep(60)

                asyncio.run(main())
                """
            ),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, signal.SIGTERM)  # a group's SIGTERM does not end it before its parent
    time.sleep(0.3)
    os.kill(child, 0)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # reaped by init once it exits; until then it shows as a zombie or still running
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the child {child} outlived its killed parent by 10s")


@pytest.mark.parametrize("flags", [["-P"], ["-I"]], ids=["safe-path", "isolated"])
def test_the_child_imports_what_its_parent_imports_whatever_the_working_directory(
    tmp_path: Path, flags: list[str]
) -> None:
    """A parent started from a directory holding a `struct.py` (as a console script is:
    the working directory not on its path), or isolated (`-I`): its child imports the
    parent's modules, not the directory's."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    for shadow in ("struct", "pickle", "socket", "json"):
        (workdir / f"{shadow}.py").write_text("raise SystemExit('imported from the cwd')\n")
    repo = Path(__file__).resolve().parents[3]
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(repo)!r})
        from pathlib import Path
        from tests.integration.sql.test_sqlite_process import connect, echo
        from signalgate.common.sql.sqlite_process import SqliteProcess

        async def main():
            store = SqliteProcess("test db", "test-sqlite")
            await store.open(connect, Path({str(tmp_path / "t.db")!r}))
            print(await store.run(echo, "answered"), flush=True)
            await store.close()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, *flags, "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "answered\n", done.stderr


def connect_counted(path: Path, starts: Path) -> sqlite3.Connection:
    with starts.open("a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.3)  # a start that takes a while, as imports and migrations do
    return connect(path)


async def test_a_caller_that_gives_up_does_not_cancel_the_restart(tmp_path: Path) -> None:
    """A request past its deadline while the replacement child starts: the start goes on
    for the callers after it, instead of each of them starting one and giving up in turn."""
    starts = tmp_path / "starts"
    store = SqliteProcess("test db", "test-sqlite")
    await store.open(connect_counted, tmp_path / "t.db", starts)
    try:
        first = await store.run(pid)
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.3)
        for _ in range(5):  # each gives up long before a start could end
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.run(pid), 0.05)
        assert await asyncio.wait_for(store.run(pid), 5) != first
        assert len(starts.read_text().split()) == 2  # the first child, and one replacement
    finally:
        await store.close()


def test_under_uvloop_a_dying_child_fails_calls_only_with_process_lost(tmp_path: Path) -> None:
    """uvloop raises RuntimeError for a write to a closed socket (asyncio only logs it):
    calls sent while the child died were answered with it (a 500), and closing the store
    after its child died raised it (the service's stop failed)."""
    import uvloop

    outcomes: collections.Counter[str] = collections.Counter()

    async def scenario() -> None:
        store = SqliteProcess("test db", "test-sqlite")
        await store.open(connect, tmp_path / "t.db")
        stop = asyncio.Event()

        async def one(token: str) -> None:
            try:
                answered = await store.run(echo, token)
                outcomes["answered" if answered == token else "another's"] += 1
            except ProcessLost:
                outcomes["ProcessLost"] += 1
            except Exception as exc:
                outcomes[f"{type(exc).__name__}: {exc}"] += 1

        async def arrivals() -> None:  # new calls arrive on their own, as requests do
            held: set[asyncio.Task[None]] = set()
            n = 0
            while not stop.is_set():
                n += 1
                task = asyncio.ensure_future(one(f"call-{n}"))
                held.add(task)
                task.add_done_callback(held.discard)
                await asyncio.sleep(0.0005)
            await asyncio.gather(*held)

        load = asyncio.ensure_future(arrivals())
        for _ in range(4):
            await asyncio.sleep(0.5)
            os.kill(await store.run(pid), signal.SIGKILL)
        await asyncio.sleep(0.5)
        stop.set()
        await load
        os.kill(await store.run(pid), signal.SIGKILL)
        await asyncio.sleep(0.3)
        await store.close()  # after its child died: no error

    uvloop.run(scenario())
    assert set(outcomes) <= {"answered", "ProcessLost"}, outcomes
    assert outcomes["answered"] > 100, outcomes
