"""Progress a person can follow: one line per phase with its duration, a spinner on a tty.

The spinner only ever draws on a terminal, on one line that is cleared before anything
else is printed (test output passes through `emit`), so logs in CI stay clean.

A reader that goes away (`e2ecov run | head`) ends the progress, not the run: the stack is
still stopped, measured and reported, and run.json tells how it ended.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    """Prints phase lines; `spin(status)` redraws the live status line on a terminal."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._started = 0.0
        self._frame = 0
        self._spinning = False
        self._closed = False  # the reader went away: nothing more is written

    def phase(self, name: str, detail: str = "") -> None:
        """End the current phase (printing its duration) and start `name`."""
        self.done()
        self._phase = name
        self._started = time.monotonic()
        self._print(f"e2ecov ▸ {name}" + (f": {detail}" if detail else ""))

    def done(self, outcome: str = "done") -> float:
        """End the current phase; returns its duration in seconds."""
        if self._phase is None:
            return 0.0
        duration = time.monotonic() - self._started
        self._print(f"e2ecov ✓ {self._phase} {outcome} in {duration:.2f}s")
        self._phase = None
        return duration

    def info(self, message: str) -> None:
        self._print(f"e2ecov   {message}")

    def emit(self, line: str) -> None:
        """Pass through a line of someone else's output (the tests)."""
        self._print(line.rstrip("\n"))

    def spin(self, status: str) -> None:
        if not self.tty or self._phase is None:
            return
        with self._lock:
            frame = _FRAMES[self._frame % len(_FRAMES)]
            self._frame += 1
            elapsed = time.monotonic() - self._started
            self._write(f"\r\x1b[2K{frame} {self._phase} {elapsed:4.0f}s {status}"[:200])
            self._spinning = True

    def _print(self, text: str) -> None:
        with self._lock:
            if self._spinning:
                self._write("\r\x1b[2K")
                self._spinning = False
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        """Write and flush, under the lock; a closed pipe stops the progress for good."""
        if self._closed:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self._closed = True
            if self.stream is sys.stdout:
                # the interpreter flushes stdout again at exit: point it at /dev/null, so
                # that flush neither fails nor changes the exit code
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
