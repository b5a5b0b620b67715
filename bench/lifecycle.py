"""A benchmark stopped with SIGTERM (`kill`, `pkill`, a CI timeout) still stops its servers.

Python's default SIGTERM ends the process at once, skipping every `finally`: the PostgreSQL,
DataStorage and ceiling processes a benchmark started would stay behind and skew the next
run's figures. Raising SystemExit instead unwinds through the cleanup code.
"""

from __future__ import annotations

import signal
from types import FrameType


def stop_servers_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
