"""Progress a person can follow: one line per phase with its duration, a spinner on a tty.

The spinner only ever draws on a terminal, on one line that is cleared before anything
else is printed (test output passes through `emit`), so logs in CI stay clean.
"""

from __future__ import annotations

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
            self.stream.write(f"\r\x1b[2K{frame} {self._phase} {elapsed:4.0f}s {status}"[:200])
            self.stream.flush()
            self._spinning = True

    def _print(self, text: str) -> None:
        with self._lock:
            if self._spinning:
                self.stream.write("\r\x1b[2K")
                self._spinning = False
            self.stream.write(text + "\n")
            self.stream.flush()
