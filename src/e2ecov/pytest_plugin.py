"""pytest plugin shipped with e2ecov: per-test coverage contexts in the services under test.

Inert unless the test command runs under `e2ecov run` (which sets E2ECOV_RUN_ID and the
control directory). Then, before each test, every instrumented service process is switched
to the test's node id, and back to `idle` after it. Under pytest-xdist the tests run in
parallel, so the plugin leaves a marker and the reports say attribution is approximate.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

from e2ecov import protocol


def _control_dir() -> Path | None:
    if not os.environ.get(protocol.ENV_RUN_ID) or os.environ.get(protocol.ENV_CONTEXTS) != "1":
        return None
    directory = os.environ.get(protocol.ENV_CONTROL_DIR)
    return Path(directory) if directory and os.path.isdir(directory) else None


def pytest_configure(config: pytest.Config) -> None:
    control = _control_dir()
    if control is None:
        return
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None):
        (control / protocol.PARALLEL_MARKER).touch()
    config.pluginmanager.register(_Contexts(control), "e2ecov-contexts")


class _Contexts:
    """Switches the services' context around each test (setup, call and teardown)."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.switched = False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        answers = protocol.broadcast(self.control, f"context {item.nodeid}")
        if answers and not self.switched:
            self.switched = True  # attribution is on as measured, not as configured
            (self.control / protocol.ATTRIBUTION_MARKER).touch()
        try:
            return (yield)
        finally:
            protocol.broadcast(self.control, f"context {protocol.IDLE_CONTEXT}")
