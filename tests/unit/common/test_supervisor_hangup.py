"""The supervisor's SIGHUP and readiness for a worker that is starting (common/workers.py).

A CI run found a rotated token refused by one of two workers: the supervisor answered ready
as soon as that worker's own `/readyz` did, before its start-up loop had marked it as one to
pass SIGHUPs to, so the SIGHUP sent right after was never passed on. The workers here are
real processes: a small HTTP server on the worker's ops socket that records its SIGHUPs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from signalgate.common.workers import Supervisor

# a stand-in worker: answers /readyz 200 once `ready` exists, appends a line per SIGHUP
WORKER = r"""
import os, signal, socketserver, sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

here = Path(sys.argv[1])
signal.signal(signal.SIGHUP, lambda *_: open(here / "hangups", "a").write("hup\n"))

class Ops(BaseHTTPRequestHandler):
    def address_string(self):
        return "supervisor"

    def do_GET(self):
        ready = (here / "ready").exists()
        body = b'{"status": "ok"}' if ready else b'{"detail": "starting"}'
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = socketserver.UnixStreamServer(os.environ["SG_WORKER_OPS_SOCKET"], Ops)
(here / "listening").touch()
server.serve_forever()
"""


async def started_worker(tmp_path: Path) -> Supervisor:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    supervisor = Supervisor([sys.executable, str(script), str(tmp_path)], 1, 0, os.environ)
    await supervisor.start_worker(supervisor.workers[0], {})
    while not (tmp_path / "listening").exists():
        await asyncio.sleep(0.01)
    return supervisor


async def stopped(supervisor: Supervisor) -> None:
    worker = supervisor.workers[0]
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    await worker.proc.wait()
    await worker.client.aclose()
    shutil.rmtree(supervisor.runtime, ignore_errors=True)


async def test_a_worker_answering_ready_is_not_ready_until_the_supervisor_has_seen_it(
    tmp_path: Path,
) -> None:
    supervisor = await started_worker(tmp_path)
    try:
        (tmp_path / "ready").touch()
        assert (await supervisor.workers[0].client.get("/readyz")).status_code == 200
        before = await supervisor.readiness()
        assert not before.ready, "ready before a SIGHUP would reach the worker"
        assert before.checks["worker-0"] == {"status": "starting"}
        assert await supervisor.wait_ready(supervisor.workers[0])
        assert (await supervisor.readiness()).ready
    finally:
        await stopped(supervisor)


async def test_a_sighup_while_a_worker_starts_is_passed_once_it_answers_ready(
    tmp_path: Path,
) -> None:
    supervisor = await started_worker(tmp_path)
    try:
        supervisor.pass_hangup()  # the worker may have read its tokens file before the edit
        await asyncio.sleep(0.2)
        assert not (tmp_path / "hangups").exists(), "a SIGHUP before its handler would end it"
        (tmp_path / "ready").touch()
        assert await supervisor.wait_ready(supervisor.workers[0])
        for _ in range(100):
            if (tmp_path / "hangups").exists():
                break
            await asyncio.sleep(0.02)
        assert (tmp_path / "hangups").read_text() == "hup\n"
        supervisor.pass_hangup()  # and later ones at once, each once
        for _ in range(100):
            if (tmp_path / "hangups").read_text() == "hup\nhup\n":
                break
            await asyncio.sleep(0.02)
        assert (tmp_path / "hangups").read_text() == "hup\nhup\n"
    finally:
        await stopped(supervisor)
