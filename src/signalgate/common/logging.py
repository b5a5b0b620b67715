"""Structured logs: one JSON object per line (or a console format for people at a terminal).

The request id travels in a context variable, so every line logged while serving a request
carries it without being passed around. Nothing here ever sees request headers, so tokens
and `Authorization` values cannot reach the logs through this module.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# Characters that would let a value change what a terminal shows: line breaks (a client's
# alert name could forge a whole log line), other C0/C1 controls (escape sequences move the
# cursor or recolour), and the bidirectional overrides that reorder what is read.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _printable(text: str) -> str:
    """`text` with every character that could forge or hide part of a console line written
    as an escape (`\\n`, `\\u001b`): one record is always one line. The JSON format needs
    none of this: its encoder escapes them."""
    return _UNPRINTABLE.sub(_escape, text)


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS level logger: msg key=value` for a person watching a terminal. The message
    and values are written with `_printable`: they carry text from outside (a peer's error,
    a file's path, an exception's message), which must not start a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(
            f"{key}={_printable(str(value))}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        )
        message = _printable(record.getMessage())
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {message}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# uvicorn logs its lifecycle once per server, and a service runs two (API and ops listeners):
# these lines are kept the first time in a process, so each service says them once.
_LIFECYCLE = ("Started server process", "Shutting down", "Finished server process")


class _LifecycleOnce(logging.Filter):
    """Pass each uvicorn lifecycle message once per process; everything else untouched."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_LIFECYCLE):
            return True
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


class _ExceptionAsField(logging.Filter):
    """A library's warning with a traceback (asyncpg's pool, while the database restarts: a
    few dozen lines each time it tries to reconnect) written as one line, the exception in
    its `error` field: the database being down is said by the services' own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno < logging.ERROR:
            exc = record.exc_info[1]
            record.error = f"{type(exc).__name__}: {exc}"
            record.exc_info = None
            record.exc_text = None
        return True


class _PerKindInterval:
    """One of each kind per `interval` seconds, the rest counted: what both samplers below
    decide. Kinds must come from a closed set (they are kept)."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def admit(self, kind: Hashable) -> int | None:
        """None when this one is held back (counted); else how many were held back since
        the last one admitted."""
        last = self._last.get(kind)
        if last is not None and self._clock() - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        return self.release(kind)

    def release(self, kind: Hashable) -> int:
        """Admit one now: the count held back until now (the interval starts again)."""
        self._last[kind] = self._clock()
        return self._held.pop(kind, 0)

    def held(self, kind: Hashable) -> int:
        return self._held.get(kind, 0)

    def left(self, kind: Hashable) -> float:
        """Seconds until the kind's interval ends."""
        return max(self._last[kind] + self.interval - self._clock(), 0.0)


# uvicorn warns once for every malformed request it refuses: any client that reaches the port
# could add log lines at will. These are passed once per kind and interval, saying how many
# were held back since the last one.
_CLIENT_MISTAKES = (
    "Invalid HTTP request received.",
    "Unsupported upgrade request.",
    "No supported WebSocket library detected.",
)
CLIENT_MISTAKE_INTERVAL = 60.0


class _ClientMistakesSampled(logging.Filter):
    """Pass uvicorn's warning about a client's malformed request once per kind and
    `interval` seconds; the next one passed says how many were held back."""

    def __init__(
        self,
        interval: float = CLIENT_MISTAKE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._sampled = _PerKindInterval(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = next((k for k in _CLIENT_MISTAKES if message.startswith(k)), None)
        if kind is None:
            return True
        held = self._sampled.admit(kind)
        if held is None:
            return False
        if held:
            record.msg, record.args = f"{message} ({held} more since the last one)", ()
        return True


# how often a line a request can cause is written, per kind (see `SampledLog`)
SAMPLE_INTERVAL = 10.0


class SampledLog:
    """Log lines that every request could cause — a refused request, a 503 while a
    dependency is down — written once per kind and `interval` seconds; the next one written
    says how many were held back (`held_back`). A busy sender during an outage wrote one
    line per answer: 130 MB of log a minute. A burst that ends still gets its count: the
    first line held back in an interval schedules one more line at its end (when an event
    loop runs). Kinds must come from a closed set (a status and problem type, never a
    client's text): they are kept."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = SAMPLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._sampled = _PerKindInterval(interval, clock)

    def log(self, level: int, kind: Hashable, message: str, extra: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        held = self._sampled.admit(kind)
        if held is not None:
            self._write(level, message, extra, held)
        elif self._sampled.held(kind) == 1:  # the first held back: its count at the end
            self._flush_later(level, kind, message, extra)

    def _write(self, level: int, message: str, extra: dict[str, Any], held: int) -> None:
        self._logger.log(level, message, extra={**extra, "held_back": held} if held else extra)

    def _flush_later(self, level: int, kind: Hashable, message: str, extra: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the next line of this kind carries the count
            return

        def flush() -> None:
            if self._sampled.held(kind):
                self._write(level, message, extra, self._sampled.release(kind))

        loop.call_later(self._sampled.left(kind), flush)


def configure_logging(level: str = "info", fmt: str = "json", notes: Sequence[str] = ()) -> None:
    """Route our loggers and uvicorn's through one handler on stderr; then log `notes`, the
    warnings found while reading the settings (`Resolved.notes`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    lifecycle = logging.getLogger("uvicorn.error")
    lifecycle.filters[:] = [
        f for f in lifecycle.filters if not isinstance(f, _LifecycleOnce | _ClientMistakesSampled)
    ]
    lifecycle.addFilter(_LifecycleOnce())
    lifecycle.addFilter(_ClientMistakesSampled())
    # httpx logs every request it sends at INFO (the Gateway's audit batches, for one):
    # that detail is for debugging, so it shows only at level debug
    quiet = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    pool = logging.getLogger("asyncpg.pool")
    pool.filters[:] = [f for f in pool.filters if not isinstance(f, _ExceptionAsField)]
    pool.addFilter(_ExceptionAsField())
    # uvicorn's access log would repeat every request; our metrics already count them
    logging.getLogger("uvicorn.access").disabled = True
    # read before logging existed: a renamed settings key still in use
    for note in notes:
        logging.getLogger("signalgate.config").warning(note)
