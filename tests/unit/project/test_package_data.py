"""Every data file the code loads at run time (migrations, Lua scripts) ships in the wheel:
each non-Python file under src/signalgate is matched by pyproject's package-data."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src"


def test_every_data_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared: set[Path] = set()
    for package, patterns in config["tool"]["setuptools"]["package-data"].items():
        folder = SRC.joinpath(*package.split("."))
        for pattern in patterns:
            declared |= set(folder.glob(pattern))
    data = {
        path
        for path in (SRC / "signalgate").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and path.name != "py.typed"
    }
    assert data, "no data files found: the test is looking in the wrong place"
    missing = sorted(str(p.relative_to(SRC)) for p in data - declared)
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
