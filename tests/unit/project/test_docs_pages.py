"""The README and docs/ read as written: every relative link names a file of the repository
(and, with `#…`, a heading of that page), and every table row belongs to a table (a row set
apart from its table's header by a paragraph renders as a line of pipes, not as a row)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGES = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "e2ecov").rglob("*.md")),
    *sorted((ROOT / "e2e").rglob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
DELIMITER = re.compile(r"^\|\s*:?-{3,}")


def prose(page: Path) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their numbers."""
    lines, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces → `-`."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for _, line in prose(page)
        for heading in re.findall(r"^#{1,6} (.*)$", line)
    }


def test_every_relative_link_names_a_file_and_a_heading_there() -> None:
    broken = []
    for page in PAGES:
        for number, line in prose(page):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                linked = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not linked.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_table_row_is_under_its_header() -> None:
    strays = []
    for page in PAGES:
        lines = prose(page)
        for index, (number, line) in enumerate(lines):
            if not line.startswith("|"):
                continue
            start = index
            while start > 0 and lines[start - 1][1].startswith("|"):
                start -= 1
            block = [text for _, text in lines[start : index + 1]]
            if start == index and index + 1 < len(lines):
                block.append(lines[index + 1][1])
            if len(block) < 2 or not DELIMITER.match(block[1]):
                strays.append(f"{page.relative_to(ROOT)}:{number}: {line[:60]}")
    assert not strays, "table rows outside a table:\n" + "\n".join(strays)


def test_nothing_points_at_numbered_sections_of_a_document_outside_the_repository() -> None:
    """The docs are docs/ and the README: a comment or page citing `gateway.md section 6`
    named a numbered section of a contract that is not in the repository (docs/ numbers
    none), which a reader of the repository cannot open."""
    cited = re.compile(r"\b[a-z0-9]+\.md,? sections? \d")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".toml", ".sh", ""} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if cited.search(line) and name != "tests/unit/project/test_docs_pages.py":
                found.append(f"{name}:{number}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


def test_every_make_target_the_pages_name_is_in_the_makefile() -> None:
    targets = set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {
        (page.relative_to(ROOT), target)
        for page in PAGES
        for target in re.findall(r"`make ([a-z0-9-]+)", page.read_text())
    }
    assert named, "no `make …` found: wrong pages?"
    missing = sorted(f"{page}: make {target}" for page, target in named if target not in targets)
    assert not missing, missing
