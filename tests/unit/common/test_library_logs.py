"""A library's warning with a traceback is one log line: asyncpg's pool wrote a few dozen
lines each time it retried a database that was restarting (an outside check)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import asyncpg
import orjson
import pytest

from signalgate.common.logging import configure_logging


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_asyncpg_pool_retries_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    capsys.readouterr()
    pool_log = logging.getLogger("asyncpg.pool")  # the logger asyncpg's pool writes to
    try:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
    except asyncpg.exceptions.CannotConnectNowError:
        pool_log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    [line] = capsys.readouterr().err.splitlines()
    record = orjson.loads(line)
    assert record["level"] == "warning"
    assert record["error"] == "CannotConnectNowError: the database system is shutting down"
    assert "Traceback" not in line
    # an error keeps its traceback: that one is for someone to read
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        pool_log.error("unexpected", exc_info=True)
    assert "Traceback" in capsys.readouterr().err


def test_console_lines_cannot_be_forged_or_recoloured(capsys: pytest.CaptureFixture[str]) -> None:
    """Text from outside in a console line (a message, an extra value) is escaped: a line
    break cannot start a forged line, an escape sequence cannot recolour or move the cursor,
    a bidirectional override cannot reorder what is read."""
    configure_logging("info", "console")
    capsys.readouterr()
    forged = "x\n13:00:00 info    signalgate.auth: token accepted"
    logging.getLogger("signalgate.test").warning(
        f"peer said {forged}", extra={"error": "\x1b[2J\x1b[31mred\r\u2028\u202eevil\x85"}
    )
    line = capsys.readouterr().err
    assert len(line.splitlines()) == 1  # splitlines breaks at \r, \x85 and \u2028 too
    assert "peer said x\\n13:00:00 info    signalgate.auth: token accepted" in line
    assert "error=\\u001b[2J\\u001b[31mred\\r\\u2028\\u202eevil\\u0085" in line
    # text that needs nothing escaped is written as it was
    logging.getLogger("signalgate.test").info("plain café 🚀", extra={"path": "/a b/c"})
    assert "plain café 🚀  path=/a b/c" in capsys.readouterr().err
