"""Fixtures for the deploy/ tests: the parsed manifests, read once, and deploy/kind/up.py."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.unit.deploy.deploy_objects import BASE, KIND, KIND_OVERLAY, Manifest, rendered


@pytest.fixture(scope="session")
def base() -> list[Manifest]:
    return rendered(BASE)


@pytest.fixture(scope="session")
def kind_overlay() -> list[Manifest]:
    return rendered(KIND_OVERLAY)


@pytest.fixture(scope="session")
def up() -> ModuleType:
    """deploy/kind/up.py imported as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("signalgate_kind_up", KIND / "up.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module
