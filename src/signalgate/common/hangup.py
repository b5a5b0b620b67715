"""SIGHUP: "read your files again" while a service runs, ignored before and after.

Python's default for SIGHUP ends the process (exit 129): sent while a worker started, it took
the Gateway down; sent as a service stopped, a clean stop exited 129. So a command ignores it
before it imports anything of the service's (signalgate/__main__.py; `ignore_hangup` again in
common/cli.py for a command run another way), a running service handles it
(`handle_hangup`), and a stopping one ignores it again.

The handler is Python's (`signal.signal`), not the event loop's `add_signal_handler`: taking
a loop's handler away puts the default back, and a SIGHUP between that and the next line
setting SIG_IGN ended a stopping service (widened by a sleep, 3 stops in 3; a test sends one
every 2 ms through a stop). With Python's handler, `ignore_hangup` replaces it in one step.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType


def handle_hangup(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> None:
    """Run `handler` on `loop` for each SIGHUP (from the signal handler, which runs between
    two bytecodes of the main thread, the call is only scheduled)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(handler)

    signal.signal(signal.SIGHUP, on_signal)


def ignore_hangup() -> None:
    """SIGHUP does nothing from now on (not Python's default, exit 129)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
