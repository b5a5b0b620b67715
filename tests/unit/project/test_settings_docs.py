"""The settings references stay true: every key of each service's settings is in its
reference, and each default written there is the one the code uses.

The Gateway's reference is the README's "Configuration" table (first cell: `section.key`, then
` / `-separated keys of the same section; second cell: their defaults, one for all or one
each). DataStorage's is docs/datastorage.md's "Configuration and commands" table, the same
shape. A default written as a literal (`15s`, `4194304`, `["*"]`, `unset`) is read as a
settings file would be and compared with the model's default; one written as prose or with a
placeholder (`sqlite:///<dataDir>/gateway.db`, `generated`) is only checked to be there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from signalgate.datastorage.settings import DataStorageSettings
from signalgate.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[3]
LITERAL = re.compile(r"^`([^`]*)`$")


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n") + len(heading) + 1
    end = re.search(r"^#{1,3} ", text[start:], re.MULTILINE)
    return text[start : start + end.start()] if end else text[start:]


def documented(text: str) -> dict[str, str | None]:
    """Each key of the table → its default as written (`None`: not a plain literal)."""
    keys: dict[str, str | None] = {}
    table = re.search(r"^\| key \| default \|.*?(?=^$|\Z)", text, re.MULTILINE | re.DOTALL)
    assert table, "no `| key | default |` table"
    for row in re.findall(r"^\| `.*$", table.group(0), re.MULTILINE):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        prefix = names[0].rpartition(".")[0]
        full = [names[0]] + [
            name if "." in name or not prefix else f"{prefix}.{name}" for name in names[1:]
        ]
        defaults = [value.strip() for value in cells[1].split(" / ")]
        if len(defaults) != len(full):
            defaults = [defaults[0]] * len(full) if len(defaults) == 1 else [""] * len(full)
        for name, default in zip(full, defaults, strict=True):
            literal = LITERAL.match(default)
            keys[name] = literal.group(1) if literal else None
    return keys


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(leaves(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value  # type: ignore[no-any-return]


def check(model: type[BaseModel], table: dict[str, str | None], reference: str) -> None:
    defaults = leaves(model().model_dump(mode="json", by_alias=True))
    missing = sorted(set(defaults) - set(table))
    assert not missing, f"{reference} lacks these settings: {missing}"
    unknown = sorted(set(table) - set(defaults))
    assert not unknown, f"{reference} names settings that do not exist: {unknown}"
    wrong = {}
    for key, written in table.items():
        if written is None or "<" in written or " " in written:
            continue
        if written == "unset":
            if defaults[key] not in (None, ""):
                wrong[key] = (written, defaults[key])
            continue
        given = model.model_validate(nested(key, yaml.safe_load(written)))
        meant = leaves(given.model_dump(mode="json", by_alias=True))[key]
        if meant != defaults[key]:
            wrong[key] = (written, defaults[key])
    assert not wrong, f"{reference}: defaults written (as written, in the code): {wrong}"


def test_the_readme_lists_every_gateway_setting_with_its_default() -> None:
    table = documented(section((ROOT / "README.md").read_text(), "## Configuration"))
    check(GatewaySettings, table, "README's Configuration table")


def test_a_row_of_several_keys_shares_its_section() -> None:
    text = "| key | default |\n|---|---|\n| `a.b` / `c` / `d.e` | `1s` / `2` / x | y |\n"
    assert documented(text) == {"a.b": "1s", "a.c": "2", "d.e": None}


def test_the_datastorage_page_lists_every_setting_with_its_default() -> None:
    page = (ROOT / "docs" / "datastorage.md").read_text()
    table = documented(section(page, "## Configuration and commands"))
    check(DataStorageSettings, table, "docs/datastorage.md's settings table")


def test_the_504_bound_documented_is_the_codes() -> None:
    """A request past `server.processingTimeout` waits up to `CANCEL_WAIT` for its statement
    to be cancelled before it is answered 504: the reference says how long in all."""
    from signalgate.remediation.coalesce import CANCEL_WAIT

    text = (ROOT / "docs" / "gateway.md").read_text()
    assert f"The 504\n   comes within `processingTimeout` + {CANCEL_WAIT:g} s" in text
    assert f"answered within it + {CANCEL_WAIT:g} s" in text
