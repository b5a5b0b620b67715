"""How this interpreter was started, as flags for the ones it starts (the services' worker
processes, `signalgate up`'s services, the SQLite stores' child processes)."""

from __future__ import annotations

import os
import sys


def interpreter_flags(*, safe_path: bool = False) -> list[str]:
    """Flags that start another interpreter as isolated as this one (`-I`, `-E`, `-s`), and
    with `-P` (no working directory on its path) unless this one has its working directory
    first on its path (as `python -m` and `python -c` do) and `safe_path` is not asked for:
    a child imports what its parent imports, not a `struct.py` that happens to lie in the
    directory a console script was started from."""
    if sys.flags.isolated:
        return ["-I"]
    flags = []
    cwd_first = sys.path[:1] in ([""], [os.getcwd()])
    if safe_path or sys.flags.safe_path or not cwd_first:
        flags.append("-P")
    if sys.flags.ignore_environment:
        flags.append("-E")
    if sys.flags.no_user_site:
        flags.append("-s")
    return flags
