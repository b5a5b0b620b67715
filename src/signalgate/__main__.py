"""The commands' entry points, which ignore SIGHUP before anything else is imported.

A command imports its whole service (Starlette, uvicorn, pydantic, the stores) before its
`main` runs, about 0.2 s. Python's default for SIGHUP ends a process (exit 129), so a SIGHUP
in that time (`systemctl reload` or `pkill -HUP` right after a start, a supervisor passing one
to a worker it just started) ended the command. This module imports nothing of the service's
until SIGHUP is ignored; the running service then handles it (common/hangup.py).

The console scripts (`signalgate`, `signalgate-gateway`, `signalgate-datastorage`) are its
functions, and the processes the services start for themselves (`signalgate up`'s services,
the Gateway's workers) are `python -m signalgate <command> …` (`common.cli.command_line`).
It imports the commands by name, so it sits above every layer (docs/layering.md).
"""

from __future__ import annotations

import signal
import sys
from importlib import import_module

# a command's name → the module whose `main(argv)` runs it
COMMANDS = {
    "signalgate": "signalgate.cli",
    "gateway": "signalgate.gateway.cli",
    "datastorage": "signalgate.datastorage.cli",
}


def run(command: str, argv: list[str] | None = None) -> int:
    """SIGHUP ignored, then `command`'s module imported and its `main` run on `argv` (the
    process's arguments when None)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    main = import_module(COMMANDS[command]).main
    return int(main(argv))


def signalgate() -> None:
    sys.exit(run("signalgate"))


def gateway() -> None:
    sys.exit(run("gateway"))


def datastorage() -> None:
    sys.exit(run("datastorage"))


def _main(args: list[str]) -> int:
    """`python -m signalgate <command> [arguments]`."""
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m signalgate {{{','.join(COMMANDS)}}} [arguments]", file=sys.stderr)
        return 2
    return run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
