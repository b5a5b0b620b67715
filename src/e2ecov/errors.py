"""Errors e2ecov raises, shaped by what the CLI does with them.

Each error carries the exit code it maps to, so the one top-level handler in `cli.py`
prints the message and exits without a traceback:

- `StackFileError` / `UsageError` → 2: the input is wrong; nothing was started.
- `StackStartError` → 3: the stack could not be brought up.
- `NoCoverageData` → 4: there is nothing to report.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `e2ecov`; when several apply, the lowest-numbered cause wins (2, 3, 1, 4)."""

    OK = 0
    TESTS_FAILED = 1
    INVALID = 2
    STACK_DOWN = 3
    COVERAGE = 4


class E2ecovError(Exception):
    """Base of every controlled error; `exit_code` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.INVALID


class UsageError(E2ecovError):
    """Bad command-line arguments or artifacts directory."""

    exit_code = ExitCode.INVALID


class Problem:
    """One thing wrong with a stack file: where it is and what was expected."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class StackFileError(E2ecovError):
    """The stack file is invalid; lists every problem found, each with its line."""

    exit_code = ExitCode.INVALID

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StackStartError(E2ecovError):
    """A service (or recipe) could not be started or never became healthy."""

    exit_code = ExitCode.STACK_DOWN


class NoCoverageData(E2ecovError):
    """No usable coverage data; the message lists the usual causes."""

    exit_code = ExitCode.COVERAGE
