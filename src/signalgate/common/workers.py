"""`server.workers > 1`: one supervisor process, N worker processes sharing the API socket.

Why this shape: the event loop and the GIL hold one service process to one core. The
supervisor binds the API listener once (so a busy port fails at start, as with one process)
and starts each worker as a fresh interpreter that inherits the listening socket; the kernel
hands each accepted connection to whichever worker calls accept first. Workers are plain
services (common/server.py's lifecycle, unchanged), each with its own store pool and its own
audit journal directory; across processes the store stays the arbiter of every count.

The ops listener is answered once, by the supervisor:
- `/readyz`: ready only while every worker answers ready (each worker's own checks are
  listed under `worker-<i>`); a worker that is starting, draining or gone makes it 503.
- `/metrics`: every worker's registry, each series with a `worker` label (`worker="0"`…);
  `sum without (worker) (…)` gives the service's figure. A per-worker label (rather than
  prometheus_client's multiprocess files) keeps callback gauges (journal backlog, circuit
  state) and histograms exact without a shared directory to clean.
- `/healthz`: healthy while every worker process runs.

Each worker serves its own ops app on a private Unix socket that only the supervisor reads.
Workers start one after the other (the first one alone runs store migrations). SIGTERM or
SIGINT to the supervisor: readiness turns 503, every worker gets SIGTERM and drains its
in-flight requests (server.shutdownGrace), then the supervisor stops. A worker that exits on
its own stops the others too, and the supervisor exits non-zero so the orchestrator restarts
the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from signalgate.common.config import split_listen
from signalgate.common.hangup import handle_hangup, ignore_hangup
from signalgate.common.http_protocol import HEAD_TIMEOUT
from signalgate.common.listeners import check_listeners
from signalgate.common.logging import SampledLog
from signalgate.common.ops import Readiness, healthy_response, ops_app, readiness_response
from signalgate.common.parent import follow_parent, parent_env
from signalgate.common.problems import problem_response
from signalgate.common.tasks import within

log = logging.getLogger(__name__)
sampled = SampledLog(log)

# what a worker process is told by its supervisor (not settings: no SIGNALGATE_ prefix)
ENV_INDEX = "SG_WORKER_INDEX"
ENV_LISTEN_FD = "SG_WORKER_LISTEN_FD"
ENV_OPS_SOCKET = "SG_WORKER_OPS_SOCKET"


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of a supervisor: serve on the inherited socket."""

    index: int
    listen_fd: int
    ops_socket: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerRole | None:
        environ = os.environ if environ is None else environ
        if ENV_INDEX not in environ:
            return None
        return cls(
            int(environ[ENV_INDEX]),
            int(environ[ENV_LISTEN_FD]),
            environ[ENV_OPS_SOCKET],
        )

    def listen_socket(self) -> socket.socket:
        return socket.socket(fileno=self.listen_fd)


def bind_listener(listen: str) -> socket.socket:
    """The API listener, bound once by the supervisor and inherited by every worker."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Worker:
    def __init__(self, index: int, ops_socket: str) -> None:
        self.index = index
        self.ops_socket = ops_socket
        self.served = False  # answered ready once: it handles SIGHUP from then on
        self.hangup_pending = False  # a SIGHUP came while it started: passed once it serves
        self.proc: asyncio.subprocess.Process | None = None
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=ops_socket),
            base_url="http://worker",
            timeout=5.0,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def hangup(self) -> None:
        """SIGHUP to a serving worker: it reads its tokens file again. One still starting
        gets it once it serves (`serves`): before its handler is set, Python's default
        would end it, and the Gateway with it."""
        if not self.running:
            return
        if self.served:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
        else:
            self.hangup_pending = True

    def serves(self) -> None:
        """It answered ready: SIGHUPs reach it from now on, and one held for it goes now
        (it may have read its tokens file before the edit)."""
        self.served = True
        if self.hangup_pending:
            self.hangup_pending = False
            self.hangup()


class _Collected(Collector):
    """The families gathered from the workers for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_worker_metrics(texts: Sequence[tuple[int, str]]) -> bytes:
    """Each worker's exposition text, one family per name, every sample labelled `worker`."""
    families: dict[str, Metric] = {}
    for index, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(list(families.values())))
    return generate_latest(registry)


class Supervisor:
    """Starts, watches and stops the workers; answers the ops listener for all of them."""

    def __init__(
        self, command: Sequence[str], workers: int, listen_fd: int, env: Mapping[str, str]
    ) -> None:
        self.command = list(command)
        self.listen_fd = listen_fd
        self.env = dict(env)
        self.runtime = Path(tempfile.mkdtemp(prefix="signalgate-workers-"))
        self.workers = [_Worker(i, str(self.runtime / f"ops-{i}.sock")) for i in range(workers)]
        self.draining = False

    async def start_worker(self, worker: _Worker, extra_env: Mapping[str, str]) -> None:
        env = {
            **self.env,
            **extra_env,
            ENV_INDEX: str(worker.index),
            ENV_LISTEN_FD: str(self.listen_fd),
            ENV_OPS_SOCKET: worker.ops_socket,
            **parent_env(),  # a supervisor killed with SIGKILL takes its workers along
        }
        worker.proc = await asyncio.create_subprocess_exec(
            *self.command, env=env, pass_fds=(self.listen_fd,)
        )

    async def wait_ready(self, worker: _Worker) -> bool:
        """True once the worker answers ready; False if it exits first."""
        while worker.running:
            with contextlib.suppress(httpx.HTTPError):
                if (await worker.client.get("/readyz")).status_code == 200:
                    worker.serves()
                    return True
            await asyncio.sleep(0.05)
        return False

    async def readiness(self) -> Readiness:
        checks: dict[str, Any] = {}
        reason = ""
        for worker in self.workers:
            key = f"worker-{worker.index}"
            if self.draining or not worker.running:
                checks[key] = {"status": "draining" if self.draining else "not running"}
                reason = reason or f"{key} is not serving"
                continue
            if not worker.served:
                # it may answer ready already, but until the supervisor has seen it so a
                # SIGHUP is held for it: ready now, a token rotated next could be missed
                checks[key] = {"status": "starting"}
                reason = reason or f"{key} is starting"
                continue
            try:
                answer = await worker.client.get("/readyz")
                body = answer.json()
                checks[key] = body.get("checks", body)
                if answer.status_code != 200:
                    reason = reason or f"{key}: {body.get('detail', 'not ready')}"
            except (httpx.HTTPError, ValueError) as exc:
                checks[key] = {"status": "unreachable"}
                reason = reason or f"{key}: its ops socket does not answer ({exc})"
        return Readiness(not reason, reason, checks)

    def ops_app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            if all(w.running for w in self.workers):
                return healthy_response()
            gone = [w.index for w in self.workers if not w.running]
            return problem_response(
                503, "service-unavailable", f"workers {gone} are not running", request.url.path
            )

        async def readyz(request: Request) -> Response:
            return readiness_response(await self.readiness(), request.url.path)

        async def metrics(request: Request) -> Response:
            texts = []
            for worker in self.workers:
                if worker.running:
                    with contextlib.suppress(httpx.HTTPError):
                        texts.append((worker.index, (await worker.client.get("/metrics")).text))
            return Response(merge_worker_metrics(texts), media_type=CONTENT_TYPE_LATEST)

        return ops_app(healthz, readyz, metrics)

    def pass_hangup(self) -> None:
        """SIGHUP to the supervisor: each worker reads its tokens file again."""
        sampled.log(logging.INFO, "sighup", "SIGHUP: passed to every worker serving", {})
        for worker in self.workers:
            worker.hangup()

    async def stop_workers(self, grace: float) -> None:
        self.draining = True
        for worker in self.workers:
            if worker.running:
                assert worker.proc is not None
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                await within(worker.proc.wait(), grace + 10)
            except TimeoutError:
                log.error("worker did not stop in time: killed", extra={"worker": worker.index})
                worker.proc.kill()
                await worker.proc.wait()
            await worker.client.aclose()


async def supervise(
    command: Sequence[str],
    workers: int,
    listen: str,
    ops_listen: str,
    grace: float,
    per_worker_env: Sequence[Mapping[str, str]],
    startup_timeout: float = 120.0,
    head_timeout: float = HEAD_TIMEOUT,
    metrics_listen: str | None = None,
) -> int:
    """Run `workers` copies of `command` on one API socket until SIGTERM/SIGINT; the exit
    code is non-zero when a worker failed to start or exited on its own. The supervisor
    answers the ops routes for all of them, on `ops_listen` and `metrics_listen`."""
    from signalgate.common.server import ops_servers, start_servers, stop_servers

    follow_parent()  # started by `signalgate up`: stop with it
    # as one process checks them (common/server.run_service): one line, not a traceback
    check_listeners(listen, ops_listen, metrics_listen)
    listener = bind_listener(listen)
    supervisor = Supervisor(command, workers, listener.fileno(), os.environ)
    ops = ops_servers(supervisor.ops_app(), ops_listen, metrics_listen, grace, head_timeout)
    ops_tasks = start_servers(ops, "ops-listener")
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    handle_hangup(loop, supervisor.pass_hangup)
    exit_code = 0
    try:
        for worker, extra in zip(supervisor.workers, per_worker_env, strict=True):
            await supervisor.start_worker(worker, extra)
            # one at a time: the first applies store migrations before the others open it
            try:
                async with asyncio.timeout(startup_timeout):
                    started = await supervisor.wait_ready(worker)
            except TimeoutError:
                started = False
            if not started:
                log.error("worker failed to start", extra={"worker": worker.index})
                exit_code = 1
                break
        else:
            # every worker holds the listening socket now: the supervisor's own copy would
            # keep it open after they all stopped accepting, and connections arriving then
            # waited in its queue, unserved, to be reset at the end (one process refuses them)
            listener.close()
            log.info("serving", extra={"api": listen, "ops": ops_listen, "workers": workers})
            exits = [
                asyncio.create_task(w.proc.wait()) for w in supervisor.workers if w.proc is not None
            ]
            stop_wait = asyncio.create_task(stop_requested.wait())
            done, _ = await asyncio.wait({stop_wait, *exits}, return_when=asyncio.FIRST_COMPLETED)
            if stop_wait not in done:
                log.error("a worker exited on its own: stopping the others")
                exit_code = 1
            stop_wait.cancel()
    finally:
        log.info("shutting down: draining every worker")
        await supervisor.stop_workers(grace)
        listener.close()
        await stop_servers(ops, ops_tasks)
        ignore_hangup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(OSError):
            for path in supervisor.runtime.iterdir():
                path.unlink()
            supervisor.runtime.rmdir()
    log.info("stopped")
    return exit_code
