"""Endpoints of the sample service, one function each so attribution is easy to check."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys


def alpha() -> str:
    total = 0
    for number in range(3):
        total += number
    return f"alpha {total}"


def beta() -> str:
    words = ["b", "e", "t", "a"]
    return "".join(words)


def never_called() -> str:
    value = "unused"
    return value


def _square(number: int) -> int:
    return number * number


def work() -> str:
    """Runs code in a forked multiprocessing worker and in a python subprocess."""
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        squares = pool.map(_square, [1, 2, 3])
    done = subprocess.run(
        [sys.executable, "-m", "sampleapp.worker", "7"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"squares {squares} worker {done.stdout.strip()}"


def forked() -> str:
    """A forked child that works in the function that forked it, then `os._exit`s (as a
    daemon's double fork does): its lines are measured in the child."""
    pid = os.fork()
    if pid == 0:
        marker = "ran in the child"  # child-only
        marker += ", then left"  # child-only
        os._exit(0 if marker else 1)
    os.waitpid(pid, 0)
    return "forked"


def before_exec() -> None:
    """Runs only in the image a re-executing service replaces."""
    marker = "before exec"  # pre-exec only
    print(marker, flush=True)


def preexec() -> str:
    """`subprocess` with a `preexec_fn`: Python runs the fork hooks in a child that then
    execs another program."""
    subprocess.run(["/bin/true"], preexec_fn=os.setpgrp, check=True)
    return "preexec"


def loop_spawn() -> str:
    """asyncio's subprocess on uvloop: uvloop runs the fork hooks in its child too, which
    then execs another program (no Python runs there)."""
    import asyncio

    import uvloop

    async def spawn() -> int:
        child = await asyncio.create_subprocess_exec("/bin/true")
        return await child.wait()

    return f"loop-spawn {uvloop.run(spawn())}"


def unhooked() -> str:
    """Python children e2ecov's start-up hook cannot reach: one isolated (`-I` ignores
    PYTHONPATH), one with an environment of its own. Each runs a few seconds."""
    code = "import time; time.sleep(3.5)"
    children = [
        subprocess.Popen([sys.executable, "-I", "-c", code]),
        subprocess.Popen([sys.executable, "-c", code], env={}),
    ]
    return "unhooked " + " ".join(str(child.wait()) for child in children)


def many_forks() -> str:
    """Forks that land in the middle of autosaves: each child works, then `os._exit`s."""
    for _ in range(60):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return "forked 60"
