"""The child process of `sqlite_process`: holds one SQLite connection and runs the calls
its parent sends, one at a time, in order, until its socket closes.

Kept apart from `sqlite_process` so that the child imports only this (and what the calls
need), and so that the functions named in the parent's pickles resolve to one module.
"""

from __future__ import annotations

import pickle
import signal
import socket
import sqlite3
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

FRAME = struct.Struct(">I")

# the parent's sys.path, as JSON: the child imports what the parent imports
PATH_VARIABLE = "SIGNALGATE_SQLITE_CHILD_PATH"
# the child's program (`python -c`): the parent's path first, then this module
BOOTSTRAP = (
    "import json, os, sys; "
    f"sys.path[:] = json.loads(os.environ.pop({PATH_VARIABLE!r})); "
    "from signalgate.common.sql.sqlite_child import main; main()"
)

_connection: sqlite3.Connection | None = None


def connect(open_connection: Callable[..., sqlite3.Connection], args: tuple[Any, ...]) -> None:
    """The first message: open (and set up) the connection every later call uses."""
    global _connection  # the one connection of this process
    _connection = open_connection(*args)


def call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """`fn(connection, *args)`; a failure inside a transaction it left open is rolled back
    before the error goes back, so the next call starts clean."""
    conn = _connection
    if conn is None:
        # an OperationalError: "unavailable" to the stores, never a 500
        raise sqlite3.OperationalError("the SQLite process has no connection")
    try:
        return fn(conn, *args)
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _answer(ok: bool, value: Any) -> bytes:
    try:
        data = pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an error carrying something that does not pickle
        if ok:
            raise
        data = pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value} ({exc})")))
    return FRAME.pack(len(data)) + data


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def main() -> None:
    """`python -c BOOTSTRAP <name> <fd>`: serve the parent on socket `fd` until it closes."""
    # lives as long as its socket: a signal to the whole process group (Ctrl-C, a group
    # SIGTERM) must not end it before its parent is done with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[2]))
    try:
        while (header := _read_exactly(sock, FRAME.size)) is not None:
            body = _read_exactly(sock, FRAME.unpack(header)[0])
            if body is None:
                break
            fn, *args = pickle.loads(body)  # noqa: S301 - from our own parent only
            try:
                answer = _answer(True, fn(*args))
            except Exception as exc:
                exc.add_note("in the SQLite process:\n" + "".join(traceback.format_exc()))
                answer = _answer(False, exc)
            try:
                sock.sendall(answer)
            except OSError:
                break  # the parent is gone
    finally:
        if _connection is not None:
            _connection.close()
        sock.close()
