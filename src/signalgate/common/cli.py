"""What every service's command line shares: exit codes, settings loading, one error handler."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from signalgate.common.config import ConfigError, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1  # a dependency was unavailable at start, or the service failed
EXIT_CONFIG = 2  # invalid settings, tokens file or arguments

M = TypeVar("M", bound=BaseModel)


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--listen", help="API listener host:port (server.listen)")
    parser.add_argument("--ops-listen", help="ops listener host:port (server.opsListen)")
    parser.add_argument("--data-dir", help="data directory (dataDir)")


def settings_from_args(
    model: type[M], args: argparse.Namespace, shorthands: Mapping[str, str]
) -> M:
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("listen", "server.listen"),
        ("ops_listen", "server.opsListen"),
        ("data_dir", "dataDir"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return load_settings(
        model, getattr(args, "config", None), shorthands=shorthands, overrides=overrides
    )


def run_guarded(main: Callable[[], int]) -> int:
    """Print controlled errors as one line without a traceback, with the right exit code."""
    try:
        return main()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
