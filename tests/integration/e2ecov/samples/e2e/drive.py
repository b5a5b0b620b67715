"""Sample test command as a plain script: `python drive.py PATH...` GETs each path of the app.

`kill` as a path SIGKILLs the service (its pid comes from /pid) after waiting WAIT seconds,
`sleep:N` waits N seconds, `save` asks every agent for a live save, `fail` exits 1.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from e2ecov import protocol


def get(path: str) -> str:
    with urllib.request.urlopen(os.environ["E2E_APP_URL"] + path, timeout=30) as response:
        return response.read().decode()


for step in sys.argv[1:]:
    if step == "kill":
        os.kill(int(get("/pid")), signal.SIGKILL)
    elif step.startswith("sleep:"):
        time.sleep(float(step.split(":")[1]))
    elif step == "save":
        answers = protocol.broadcast(Path(os.environ["E2ECOV_CONTROL_DIR"]), "save")
        print("saved", sorted(answers))
    elif step == "fail":
        sys.exit(1)
    else:
        print(step, get(step))
