"""What every service's command line shares: exit codes, settings loading, one error handler."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from signalgate.common.config import ConfigError, FileTranslator, Resolved, resolve_settings
from signalgate.common.hangup import ignore_hangup
from signalgate.common.interpreter import interpreter_flags
from signalgate.common.listeners import ListenerUnavailable

EXIT_OK = 0
EXIT_FAILURE = 1  # a dependency was unavailable at start, or the service failed
# invalid settings, tokens file or arguments; a directory a setting names that cannot be
# written (read-only, another user's) too: a restart would not mend it
EXIT_CONFIG = 2

M = TypeVar("M", bound=BaseModel)


def add_serve_flags(
    parser: argparse.ArgumentParser, listens: bool = True, data_dir: str | None = None
) -> None:
    """The settings flags (`data_dir`: the service's default data directory, for the help).
    A command that opens no listener (`migrate`, `verify-all`, …) has `listens` off:
    `--listen` and `--ops-listen` are still taken, so a job that reuses `serve`'s arguments
    keeps working, but left out of its `--help`, where they read as doing something."""
    parser.add_argument("--config", type=Path, help="YAML settings file")
    for flag, text in (
        ("--listen", "API listener host:port (server.listen)"),
        ("--ops-listen", "ops listener host:port (server.opsListen)"),
    ):
        parser.add_argument(flag, help=text if listens else argparse.SUPPRESS)
    default = f"; default {data_dir}" if data_dir else ""
    parser.add_argument("--data-dir", help=f"data directory (dataDir{default})")


class Commands:
    """A service's command line (`parser`): its commands, each with the settings flags
    (`add_serve_flags`) and the service's default data directory, read once from its
    settings model (`dataDir`'s default, as the help says it: `./var`)."""

    def __init__(self, prog: str, description: str | None, model: type[BaseModel]) -> None:
        self.parser = argparse.ArgumentParser(
            prog=prog,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self._commands = self.parser.add_subparsers(dest="command", required=True)
        self._data_dir = f"./{model.model_fields['data_dir'].default}"

    def add(self, name: str, text: str, listens: bool = True) -> argparse.ArgumentParser:
        """The command `name` (`text` its help), with the settings flags."""
        command = self._commands.add_parser(name, help=text)
        add_serve_flags(command, listens=listens, data_dir=self._data_dir)
        return command

    def add_check_config(self, text: str) -> None:
        """The `check-config` command, the same for both services: the settings file as
        `--config FILE` (as `serve` takes it) or as its one argument, the other serve flags
        applied as they would be."""
        check = self.add("check-config", text)
        check.add_argument("file", nargs="?", type=Path, help="YAML settings file (or --config)")


def with_default_command(argv: Sequence[str]) -> list[str]:
    """`argv` with `serve` in front when it starts with an option instead of a command:
    `signalgate-gateway --config=/etc/gateway/config.yaml`, as Kubernaut's charts start their
    services, serves; so does the bare command (no arguments: settings from the environment
    and defaults), as the README says `serve` is the default. `--help` alone still prints
    the commands."""
    if not argv:
        return ["serve"]
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        return ["serve", *argv]
    return list(argv)


def resolve_args(
    model: type[M],
    args: argparse.Namespace,
    shorthands: Mapping[str, str],
    translator: FileTranslator | None = None,
) -> Resolved[M]:
    """The settings a command's flags, file and environment give, and where each came from
    (a setting given as a flag is named by the flag: `--data-dir`)."""
    overrides: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for flag, key in (
        ("listen", "server.listen"),
        ("ops_listen", "server.opsListen"),
        ("data_dir", "dataDir"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
            flags[key] = "--" + flag.replace("_", "-")
    config, file = getattr(args, "config", None), getattr(args, "file", None)
    if config is not None and file is not None and config != file:
        raise ConfigError(f"two settings files given ({str(file)!r} and --config {str(config)!r})")
    return resolve_settings(
        model,
        config or file,
        shorthands=shorthands,
        overrides=overrides,
        translator=translator,
        override_origins=flags,
    )


# what a service writes (RR and audit databases, the audit journal with whole alert
# payloads, tokens files, the dead-letter queue) is its user's alone, whatever the umask it
# was started with: an audit trail readable by any local user needs no `audit:read`
PRIVATE_UMASK = 0o077


def database_advice(dsn: str, named: Callable[[str], str]) -> str:
    """What to check, appended to the one line a PostgreSQL `store.dsn` that cannot be used
    at start ends with (a refused connection, a wrong password, a database that does not
    exist): the setting as the user gave it (`Resolved.named`). Empty for other stores."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        return ""
    return (
        f"; check {named('store.dsn')}: PostgreSQL must answer at its host and port, and "
        "its user, password and database must exist"
    )


def keep_files_private() -> None:
    """Files and directories made from now on: owner only (0600 and 0700)."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def command_line(command: str) -> list[str]:
    """How a service starts one of the commands (`signalgate`, `gateway`, `datastorage`) in
    a process of its own, arguments to follow: through `signalgate/__main__.py`, which
    ignores SIGHUP before it imports the command."""
    return [sys.executable, *interpreter_flags(), "-m", "signalgate", command]


def run_guarded(main: Callable[[], int]) -> int:
    """Print controlled errors as one line without a traceback, with the right exit code.
    Files the command makes are private to its user (`keep_files_private`)."""
    keep_files_private()
    ignore_hangup()  # until a service runs, and for the other commands (common/hangup.py)
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit
        return code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ListenerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # the reader went away (`check-config | head`): nothing left to say to it, and
        # Python would otherwise report the failed flush at exit with a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
