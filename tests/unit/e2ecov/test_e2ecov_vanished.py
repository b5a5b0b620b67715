"""A source file deleted after the run is named in a warning, not a reason to fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from e2ecov.reports import ReportConfig, build


def test_report_survives_a_measured_file_that_no_longer_exists(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.py").write_text("def f():\n    return 1\n\nf()\n")
    (src / "gone.py").write_text("def g():\n    return 2\n\ng()\n")
    data = tmp_path / "artifacts" / "data"
    data.mkdir(parents=True)
    measure = (
        "import coverage, sys; sys.path.insert(0, 'src');"
        f"cov = coverage.Coverage(data_file={str(data / 'coverage.app.1.x')!r});"
        "cov.start(); import kept, gone; cov.stop(); cov.save()"
    )
    subprocess.run([sys.executable, "-c", measure], cwd=tmp_path, check=True)
    (src / "gone.py").unlink()

    config = ReportConfig(root=tmp_path, source=[src], paths={}, contexts=False)
    result = build(tmp_path / "artifacts", config)

    assert any("gone.py no longer exists" in w for w in result.warnings)
    text = (tmp_path / "artifacts" / "e2e-coverage.txt").read_text()
    assert "kept.py" in text and "100%" in text
    assert "gone.py no longer exists" in text


def test_a_source_module_imported_from_a_zip_is_reported_without_a_warning(
    tmp_path: Path,
) -> None:
    """A `source` entry naming a module (not a package) found in a zip archive: its file is
    the measured root itself, and it is reported, so no "outside the source" warning."""
    import zipfile

    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped_mod.py", "def used():\n    return 1\n\nused()\n")
    data = tmp_path / "artifacts" / "data"
    data.mkdir(parents=True)
    measure = (
        f"import coverage, sys; sys.path.insert(0, {str(archive)!r});"
        f"cov = coverage.Coverage(data_file={str(data / 'coverage.app.1.x')!r},"
        " source_pkgs=['zipped_mod']);"
        "cov.start(); import zipped_mod; cov.stop(); cov.save()"
    )
    subprocess.run([sys.executable, "-c", measure], cwd=tmp_path, check=True)
    config = ReportConfig(
        root=tmp_path, source=[], paths={}, contexts=False, source_pkgs=["zipped_mod"],
        package_dirs=[archive / "zipped_mod.py"],
    )  # fmt: skip
    result = build(tmp_path / "artifacts", config)
    assert "zipped_mod.py" in (tmp_path / "artifacts" / "e2e-coverage.txt").read_text()
    assert not [w for w in result.warnings if "outside the source" in w], result.warnings
    assert not [w for w in result.warnings if "was not imported" in w], result.warnings


def test_a_report_with_losses_says_plainly_what_is_partial_and_why(tmp_path: Path) -> None:
    """The line under the totals read "partial: the coverage of the processes named LOST
    was lost; the totals leave it out": what was partial, and that a process killed after
    an autosave still counts up to that save, were left for the reader to guess."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.py").write_text("def f():\n    return 1\n\nf()\n")
    data = tmp_path / "artifacts" / "data"
    data.mkdir(parents=True)
    measure = (
        "import coverage, sys; sys.path.insert(0, 'src');"
        f"cov = coverage.Coverage(data_file={str(data / 'coverage.app.1.x')!r});"
        "cov.start(); import kept; cov.stop(); cov.save()"
    )
    subprocess.run([sys.executable, "-c", measure], cwd=tmp_path, check=True)
    loss = (
        "app pid 4242 wrote partial coverage: last saved at 12:00:01.5 (autosave), then "
        "killed by SIGKILL; what ran after that is lost"
    )
    config = ReportConfig(root=tmp_path, source=[src], paths={}, contexts=False, lost=[loss])
    build(tmp_path / "artifacts", config)
    said = (
        "partial coverage: these totals count only what was saved, and each LOST line names "
        "something missing from them — a process that was killed (or crashed) is counted only "
        "up to its last save, and not at all if it never saved"
    )
    text = (tmp_path / "artifacts" / "e2e-coverage.txt").read_text().splitlines()
    assert text[text.index(f"LOST: {loss}") + 1] == said
    summary = (tmp_path / "artifacts" / "summary.md").read_text()
    assert f"**{said}**\n- :x: LOST: {loss}" in summary
