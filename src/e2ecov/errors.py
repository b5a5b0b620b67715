"""Errors e2ecov raises, shaped by what the CLI does with them.

Each error carries the exit code it maps to, so the one top-level handler in `cli.py`
prints the message and exits without a traceback:

- `StackFileError` / `UsageError` → 2: the input is wrong; nothing was started.
- `StackStartError` → 3: the stack could not be brought up.
- `NoCoverageData` → 4: there is nothing to report.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `e2ecov`; when several apply, `ExitCode.first` picks the one that wins.

    An interrupted run (SIGHUP, SIGINT, SIGTERM: 128 + the signal, as shells report it) wins
    over everything; then 2, 3, 1, 4: failing tests plus too little coverage exit 1, because
    the tests' verdict is what a person needs first.
    """

    OK = 0
    TESTS_FAILED = 1
    INVALID = 2
    STACK_DOWN = 3
    COVERAGE = 4
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143

    @property
    def rank(self) -> int:
        """Lower wins."""
        return _PRECEDENCE.index(self)

    @classmethod
    def first(cls, codes: Iterable[ExitCode]) -> ExitCode:
        """The code that applies when all of `codes` happened (OK when none did)."""
        return min(codes, key=lambda code: code.rank, default=cls.OK)

    @classmethod
    def for_signal(cls, signum: int) -> ExitCode:
        """The exit code of a run stopped by `signum` (SIGHUP, SIGINT or SIGTERM)."""
        return cls(128 + signum)


_PRECEDENCE = (
    ExitCode.TERMINATED, ExitCode.INTERRUPTED, ExitCode.HANGUP,
    ExitCode.INVALID, ExitCode.STACK_DOWN, ExitCode.TESTS_FAILED, ExitCode.COVERAGE, ExitCode.OK,
)  # fmt: skip


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


class Interrupted(BaseException):
    """e2ecov received SIGHUP, SIGINT or SIGTERM while it waited; the run stops in order.

    A BaseException so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)
