"""The layering of docs/layering.md, enforced: every import under src/ (top-level, inside
functions and under TYPE_CHECKING alike) goes to the package itself or to one the table
allows, so a new upward import (say, the RR store importing the Gateway) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"

ALLOWED: dict[str, set[str]] = {
    "signalgate.common": set(),
    "signalgate.kube": {"signalgate.common"},
    "signalgate.audit": {"signalgate.common"},
    "signalgate.remediation": {"signalgate.common", "signalgate.kube"},
    "signalgate.gateway": {
        "signalgate.common",
        "signalgate.kube",
        "signalgate.audit",
        "signalgate.remediation",
    },
    "signalgate.datastorage": {"signalgate.common", "signalgate.kube"},
    "signalgate.cli": {"signalgate.common"},
    "signalgate": set(),  # the package's own __init__
    "signalgate.__main__": set(),  # the entry points: they import the commands by name
    "e2ecov": set(),
}


def layer_of(module: str) -> str:
    """`signalgate.gateway.app` → `signalgate.gateway`; `e2ecov.runner` → `e2ecov`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "signalgate" and len(parts) > 1 else parts[0]


def imports_of(path: Path, module: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                found.append(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.append(node.module)
    return [name for name in found if name.split(".")[0] in ("signalgate", "e2ecov")]


def test_no_package_imports_one_above_it() -> None:
    broken: list[str] = []
    seen: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        layer = layer_of(module)
        seen.add(layer)
        assert layer in ALLOWED, f"{module}: package {layer} is not in docs/layering.md"
        for imported in imports_of(path, module):
            target = layer_of(imported)
            if target != layer and target not in ALLOWED[layer]:
                broken.append(f"{module} imports {imported} ({layer} may not import {target})")
    assert not broken, "imports against docs/layering.md:\n" + "\n".join(broken)
    assert {"signalgate.common", "signalgate.gateway", "e2ecov"} <= seen


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "store.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from signalgate.gateway.app import GatewayApp\n"
        "def f() -> None:\n"
        "    import signalgate.datastorage.app\n"
    )
    found = imports_of(module, "signalgate.remediation.store")
    assert found == ["signalgate.gateway.app", "signalgate.datastorage.app"]
    assert not {layer_of(n) for n in found} <= ALLOWED["signalgate.remediation"]
