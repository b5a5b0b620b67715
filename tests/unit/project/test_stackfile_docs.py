"""The two references of e2ecov's stack file, the README's "Stack file reference (e2ecov)" and
docs/e2ecov.md's "Stack file", each list every key the loader takes (`RUN_KEYS`,
`SERVICE_KEYS`) and no other: the first cell of each row of their `[run]` and
`[services.NAME]` tables names its keys in backquotes (`command` or `recipe`; `env`, `cwd`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2ecov.stackfile import RUN_KEYS, SERVICE_KEYS

ROOT = Path(__file__).resolve().parents[3]
REFERENCES = [
    ("README.md", "### Stack file reference (e2ecov)"),
    ("docs/e2ecov.md", "## Stack file"),
]


def table_keys(text: str, header: str) -> set[str]:
    """The keys named in the first cells of the table whose header row starts `header`."""
    table = re.search(rf"^{re.escape(header)}.*?(?=^$|\Z)", text, re.MULTILINE | re.DOTALL)
    assert table, f"no table starting {header!r}"
    rows = table.group(0).splitlines()[2:]
    return {key for row in rows for key in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


@pytest.mark.parametrize(("page", "heading"), REFERENCES)
def test_each_stack_file_reference_lists_every_key(page: str, heading: str) -> None:
    text = (ROOT / page).read_text()
    start = text.index(heading + "\n")
    end = re.search(r"^#{1,3} ", text[start + len(heading) + 1 :], re.MULTILINE)
    body = text[start : start + len(heading) + 1 + end.start()] if end else text[start:]
    tables = (("| `[run]` key |", RUN_KEYS), ("| `[services.NAME]` key |", SERVICE_KEYS))
    for header, keys in tables:
        written = table_keys(body, header)
        assert written == set(keys), (
            f"{page} {header}: missing {sorted(set(keys) - written)}, "
            f"not keys {sorted(written - set(keys))}"
        )
