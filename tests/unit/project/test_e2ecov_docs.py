"""e2ecov's references stay true. The two of its stack file, the README's "Stack file reference
(e2ecov)" and docs/e2ecov.md's "Stack file", each list every key the loader takes (`RUN_KEYS`,
`SERVICE_KEYS`) and no other: the first cell of each row of their `[run]` and
`[services.NAME]` tables names its keys in backquotes (`command` or `recipe`; `env`, `cwd`).
The two of its exit codes, the README's "e2ecov exit codes" and docs/e2ecov.md's "Exit codes",
give them in the order `ExitCode.first` applies them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2ecov.errors import ExitCode
from e2ecov.stackfile import RUN_KEYS, SERVICE_KEYS

ROOT = Path(__file__).resolve().parents[3]
REFERENCES = [
    ("README.md", "### Stack file reference (e2ecov)"),
    ("docs/e2ecov.md", "## Stack file"),
]


def section(page: str, heading: str) -> str:
    text = (ROOT / page).read_text()
    start = text.index(heading + "\n")
    end = re.search(r"^#{1,3} ", text[start + len(heading) + 1 :], re.MULTILINE)
    return text[start : start + len(heading) + 1 + end.start()] if end else text[start:]


def table_keys(text: str, header: str) -> set[str]:
    """The keys named in the first cells of the table whose header row starts `header`."""
    table = re.search(rf"^{re.escape(header)}.*?(?=^$|\Z)", text, re.MULTILINE | re.DOTALL)
    assert table, f"no table starting {header!r}"
    rows = table.group(0).splitlines()[2:]
    return {key for row in rows for key in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


@pytest.mark.parametrize(("page", "heading"), REFERENCES)
def test_each_stack_file_reference_lists_every_key(page: str, heading: str) -> None:
    body = section(page, heading)
    tables = (("| `[run]` key |", RUN_KEYS), ("| `[services.NAME]` key |", SERVICE_KEYS))
    for header, keys in tables:
        written = table_keys(body, header)
        assert written == set(keys), (
            f"{page} {header}: missing {sorted(set(keys) - written)}, "
            f"not keys {sorted(written - set(keys))}"
        )


def test_each_exit_code_reference_gives_the_codes_in_the_order_they_win() -> None:
    order = sorted(ExitCode, key=lambda code: code.rank)
    rows = re.findall(
        r"^\| ([\d / ]+) \|", section("docs/e2ecov.md", "## Exit codes"), re.MULTILINE
    )
    page = [int(code) for row in rows for code in row.split(" / ")]
    assert page == order, f"docs/e2ecov.md's Exit codes table: {page}, the code's order: {order}"
    prose = section("README.md", "### e2ecov exit codes")
    readme = [
        int(code) for bold in re.findall(r"\*\*([\d / ]+)\*\*", prose) for code in bold.split(" / ")
    ]
    assert readme == order, f"README's e2ecov exit codes: {readme}, the code's order: {order}"
