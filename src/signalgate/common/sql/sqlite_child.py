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

FRAME = struct.Struct(">I")  # each message, both ways: its length, then its pickle

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


def frame(message: object) -> bytes:
    """`message` as sent over the socket, by either side."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


def _answer(ok: bool, value: Any) -> bytes:
    try:
        return frame((ok, value))
    except Exception as exc:  # an error carrying something that does not pickle
        if ok:
            raise
        return frame((False, RuntimeError(f"{type(value).__name__}: {value} ({exc})")))


def main() -> None:
    """`python -c BOOTSTRAP <name> <fd>`: serve the parent on socket `fd` until it closes."""
    # lives as long as its socket: a signal to the whole process group (Ctrl-C, a group
    # SIGTERM) must not end it before its parent is done with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[2]))
    incoming = sock.makefile("rb")  # a read of n bytes is short only at end of input
    try:
        while len(header := incoming.read(FRAME.size)) == FRAME.size:
            size = FRAME.unpack(header)[0]
            if len(body := incoming.read(size)) < size:
                break
            fn, *args = pickle.loads(body)  # noqa: S301 - from our own parent only
            try:
                answer = _answer(True, fn(*args))
            except Exception as exc:
                exc.add_note("in the SQLite process:\n" + "".join(traceback.format_exc()))
                answer = _answer(False, exc)
            sock.sendall(answer)
    except OSError:
        pass  # the parent is gone: killed with answers unread, its end was reset
    finally:
        if _connection is not None:
            _connection.close()
        incoming.close()
        sock.close()
