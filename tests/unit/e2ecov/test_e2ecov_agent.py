"""The agent's final save against a SIGTERM that lands at the worst moment.

A pool worker ends through `os._exit`, and `Pool.terminate` may SIGTERM it while that final
save is under way. Whatever instant the signal lands at, the process must save before it dies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The script starts an agent, then makes the signal land inside the final save: `where` names
# the step (a method of the agent) at whose start SIGTERM is sent to the process itself.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from e2ecov.agent import Agent, Settings

    where, root = sys.argv[1], Path(sys.argv[2])
    agent = Agent(Settings(
        service="svc", run_id="r", control_dir=root / "control", data_dir=root / "data",
        ledger_dir=root / "ledger", source=[str(root / "src")], source_pkgs=[],
        contexts=False, autosave=0.0, branch=False,
    ))
    (root / "control").mkdir()
    (root / "src").mkdir()
    (root / "src" / "measured.py").write_text("def f():\\n    return 1\\n")
    sys.path.insert(0, str(root / "src"))
    agent.start()
    agent.install()
    import measured
    measured.f()
    real = getattr(agent, where)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    setattr(agent, where, interrupted)
    os._exit(0)
    """
)


@pytest.mark.parametrize("where", ["save", "_package_dirs", "_close_listener"])
def test_sigterm_during_the_final_save_still_saves(tmp_path: Path, where: str) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), where, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, -signal.SIGTERM), done.stderr
    ledgers = list((tmp_path / "ledger").glob("*.jsonl"))
    assert len(ledgers) == 1
    records = [json.loads(line) for line in ledgers[0].read_text().splitlines()]
    saves = [r for r in records if r["event"] == "save"]
    assert saves and saves[-1]["measured"] == 1, (records, done.stderr)
    assert list((tmp_path / "data").iterdir()), "the data file was written"
