"""Sample test command as a plain script: `python drive.py PATH...` GETs each path of the app.

`kill` as a path SIGKILLs the service (its pid comes from /pid), `restart` stops it and
starts the same command again with its environment (as a test of an outage would), `stop`
stops it after telling e2ecov it is on purpose, `sleep:N` waits N seconds, `say:TEXT` prints
TEXT, `save` asks every agent for a live save, `fail` exits 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from e2ecov import protocol


def get(path: str) -> str:
    with urllib.request.urlopen(os.environ["E2E_APP_URL"] + path, timeout=30) as response:
        body: bytes = response.read()
        return body.decode()


for step in sys.argv[1:]:
    if step == "kill":
        os.kill(int(get("/pid")), signal.SIGKILL)
    elif step == "kill-master":  # the parent of the process that answers (a prefork master)
        os.kill(int(get("/ppid")), signal.SIGKILL)
    elif step.startswith("sleep:"):
        time.sleep(float(step.split(":")[1]))
    elif step.startswith("say:"):
        print(step.split(":", 1)[1], flush=True)
    elif step == "restart":  # stop the service and start it again with its environment
        pid = int(get("/pid"))
        env = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
            if "=" in item
        )
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text():
            time.sleep(0.05)
        again = subprocess.Popen(
            argv, env=env, cwd=cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        print("restarted as", again.pid, flush=True)
        for _ in range(200):
            try:
                get("/health")
                break
            except OSError:
                time.sleep(0.05)
    elif step == "stop":  # an outage on purpose, said so to e2ecov first
        pid = int(get("/pid"))
        protocol.expect_exit(pid, "drive.py stop")
        os.kill(pid, signal.SIGTERM)
        print("stopped", pid, flush=True)
    elif step == "save":
        answers = protocol.broadcast(Path(os.environ["E2ECOV_CONTROL_DIR"]), "save")
        print("saved", sorted(answers))
    elif step == "reset":
        answers = protocol.broadcast(Path(os.environ["E2ECOV_CONTROL_DIR"]), "reset")
        print("reset", sorted(answers))
    elif step == "fail":
        sys.exit(1)
    else:
        print(step, get(step))
