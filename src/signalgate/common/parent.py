"""Dying with the process that started this one.

A process that starts services and waits for them — `signalgate up`, or the supervisor of
`server.workers` — names itself in the child's environment (`parent_env`), and the child
asks the kernel for SIGTERM when that parent dies (`follow_parent`), so it drains and stops
as on a shutdown. Without it, a launcher or supervisor killed with SIGKILL left its services
serving as orphans: the ports stayed taken, and nothing stopped them. Linux only
(`prctl(PR_SET_PDEATHSIG)`); elsewhere nothing is asked.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping

# the pid of the process that started this one and stops it (not a setting: no SIGNALGATE_)
ENV_PARENT = "SG_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parent_env() -> dict[str, str]:
    """What a child's environment holds so that it follows this process."""
    return {ENV_PARENT: str(os.getpid())}


def follow_parent(environ: Mapping[str, str] | None = None) -> None:
    """SIGTERM to this process when the parent named in `environ` dies (and at once if it
    died before the request was made: this process has another parent already). Read from
    `os.environ` (the default), the name is taken out of it, so that this process's own
    children do not take its parent for theirs."""
    value = os.environ.pop(ENV_PARENT, "0") if environ is None else environ.get(ENV_PARENT, "0")
    try:
        parent = int(value)
    except ValueError:
        return
    if parent <= 0:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
