"""Run a service: its API and ops listeners in one event loop, with an explicit lifecycle.

States: starting → serving → draining → stopped. SIGTERM/SIGINT move to draining: readiness
turns 503, the API listener stops accepting and lets in-flight requests finish (up to the
grace period; `Lifecycle.closing` tells what waits for a place to give up then), then the
service's own `stop()` runs (flush buffers, close pools), and the ops listener goes last so
probes see the whole shutdown. A service that finds, once serving,
what would have stopped its start (`Lifecycle.fail`) is shut down the same way, and its
error raised to the command, which exits as it would have at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, Protocol

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from signalgate.common.auth import Authenticator, StaticTokenAuth
from signalgate.common.config import split_listen
from signalgate.common.hangup import handle_hangup, ignore_hangup
from signalgate.common.http_protocol import (
    HEAD_TIMEOUT,
    ServiceHttpProtocol,
    service_http_protocol,
)
from signalgate.common.listeners import check_distinct_listeners, check_listeners
from signalgate.common.logging import SampledLog
from signalgate.common.loop_lag import LoopLagMonitor
from signalgate.common.ops import ReadinessProbe, build_ops_app
from signalgate.common.parent import follow_parent
from signalgate.common.sections import AuthSettings
from signalgate.common.tasks import wait_event
from signalgate.common.tls import ServingCertificate, Tls
from signalgate.common.workers import WorkerRole

log = logging.getLogger(__name__)
sampled = SampledLog(log)

# The collector's thresholds while serving (gen0 allocations, then gen1 and gen2 passes).
# A young-generation pass stops the event loop, and every request in flight waits for it:
# with gen0 at 20,000 each pass took 6-10 ms (several per second under load), which was
# most of the duplicates' p99 at c=16 (7-8 ms). At 2,000 a pass takes 0.2-0.5 ms and the
# same p99 is 2.6-3.5 ms, throughput unchanged (bench/ingest.py, A/B; docs/performance.md).
GC_THRESHOLDS = (2_000, 10, 10)

# exit status of a listener that cannot be opened (uvicorn's own)
STARTUP_FAILURE = 3


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class Lifecycle:
    """The one place that knows whether the service is accepting work."""

    def __init__(self) -> None:
        self.state = State.STARTING
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        # set once the API listener stops accepting (after `server.shutdownDelay`): what
        # would wait for a place past then (a costly read, common/reads.py) is refused at
        # once rather than cut, answered 500, when the grace ends
        self.closing = asyncio.Event()

    @property
    def accepting(self) -> bool:
        return self.state is State.SERVING

    def fail(self, error: BaseException) -> None:
        """A part of the running service met what would have stopped its start (DataStorage
        connecting, after start, to a database that refuses it): the runner shuts the service
        down as on SIGTERM and raises `error`. The first failure is the one raised."""
        if self.failure is None:
            self.failure = error
        self._failed.set()

    async def failed(self) -> None:
        """Return once `fail` has been called."""
        await self._failed.wait()


class Service(Protocol):
    lifecycle: Lifecycle
    auth: Authenticator  # a tokens file is kept up to date while the service runs

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the runner owns shutdown order), and with a
    deadline for TLS handshakes.

    uvicorn opens its listeners with asyncio's default handshake timeout, 60 s, and has no
    setting for it: a client that connects to a TLS listener and says nothing held its
    socket for a minute before any of the service's own deadlines (which start once the
    handshake is done) could apply — an outside check exhausted 20,000 descriptors that
    way. Here the handshake has `head_timeout`, the same deadline as a request head.
    """

    def __init__(self, config: uvicorn.Config, head_timeout: float) -> None:
        super().__init__(config)
        self.head_timeout = head_timeout

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def close_each_connection_after_its_answer(self) -> None:
        """The drain has begun: answers say `Connection: close` (see `ServiceHttpProtocol`)."""
        protocol = self.config.http
        if isinstance(protocol, type) and issubclass(protocol, ServiceHttpProtocol):
            protocol.draining[0] = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's own start-up for the three ways the services listen (an inherited
        socket, a Unix socket, host and port), lifespan off, plus the handshake deadline."""
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )

        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if config.ssl is not None:
            tls = {"ssl": config.ssl, "ssl_handshake_timeout": self.head_timeout}
        if sockets is not None:
            self.servers = [
                await loop.create_server(create_protocol, sock=sock, backlog=config.backlog, **tls)
                for sock in sockets
            ]
        elif config.uds is not None:
            self.servers = [
                await loop.create_unix_server(
                    create_protocol, path=config.uds, backlog=config.backlog, **tls
                )
            ]
        else:
            try:
                self.servers = [
                    await loop.create_server(
                        create_protocol,
                        host=config.host,
                        port=config.port,
                        backlog=config.backlog,
                        **tls,
                    )
                ]
            except OSError as exc:
                log.error("cannot listen", extra={"error": str(exc)})
                sys.exit(STARTUP_FAILURE)
        self.started = True


def http_server(
    app: ASGIApp,
    listen: str,
    grace: float,
    tls: Tls | None = None,
    uds: str | None = None,
    head_timeout: float = HEAD_TIMEOUT,
) -> _Server:
    """A uvicorn server on `listen` (host:port), or on the Unix socket `uds` when given. A
    connection whose request head (request line and headers) has not arrived within
    `head_timeout` of connecting, or of the request's first byte, is closed."""
    host, port = split_listen(listen)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=uds,
        log_config=None,
        access_log=False,
        # nothing reads the client address; uvicorn's X-Forwarded-For rewriting would only
        # add one more layer to every request
        proxy_headers=False,
        # each response in one socket write instead of two (headers, then body), and a
        # deadline for request heads (uvicorn has none)
        http=service_http_protocol(head_timeout),
        lifespan="off",
        # no WebSocket: the services serve none, and uvicorn's handshake handed the
        # connection to another protocol, so the listener never counted it closed (2,048
        # `Upgrade: websocket` requests, each answered 403, left it answering 503 to
        # everything for good: an outside check). `Upgrade` is then ignored (RFC 9110 7.8)
        ws="none",
        timeout_graceful_shutdown=int(grace),
        server_header=False,
        date_header=False,
        ssl_certfile=None if tls is None else str(tls.cert_file),
        ssl_keyfile=None if tls is None else str(tls.key_file),
    )
    return _Server(config, head_timeout)


def ops_servers(
    app: ASGIApp,
    ops_listen: str,
    metrics_listen: str | None,
    grace: float,
    head_timeout: float,
    uds: str | None = None,
) -> list[_Server]:
    """The ops routes on `ops_listen` (or the Unix socket `uds`), and on `metrics_listen` too
    when given: what a service and a workers' supervisor both serve."""
    servers = [http_server(app, ops_listen, grace, uds=uds, head_timeout=head_timeout)]
    if metrics_listen is not None:
        servers.append(http_server(app, metrics_listen, grace, head_timeout=head_timeout))
    return servers


def start_servers(servers: list[_Server], name: str) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(server.serve(), name=name) for server in servers]


async def stop_servers(servers: list[_Server], tasks: list[asyncio.Task[None]]) -> None:
    """Ask each server to finish, then wait for each (a failure to stop is not raised)."""
    for server in servers:
        server.should_exit = True
    for task in tasks:
        with contextlib.suppress(Exception):
            await task


async def run_service(
    service: Service,
    api_app: ASGIApp,
    ops_app: ASGIApp,
    listen: str,
    ops_listen: str,
    grace: float = 30.0,
    tls: Tls | None = None,
    role: WorkerRole | None = None,
    lag: LoopLagMonitor | None = None,
    head_timeout: float = HEAD_TIMEOUT,
    metrics_listen: str | None = None,
    delay: float = 0.0,
) -> None:
    """Start `service`, serve both listeners until SIGTERM/SIGINT, then shut down in order:
    readiness turns 503 at once, the API listener goes on serving for `delay` seconds (each
    answer closing its connection), so whatever routes traffic here stops first, then stops
    accepting and lets requests in flight finish (up to `grace`).
    With `tls`, the API listener speaks HTTPS (the ops listener stays plain HTTP: kubelet
    probes and Prometheus scrape it inside the cluster). `metrics_listen` serves the ops
    routes on a second address (Kubernaut's charts probe one port and scrape another). As one
    of several workers (`role`, common/workers.py), the API listener is the supervisor's
    inherited socket and the ops listener a private Unix socket the supervisor reads; the
    supervisor serves `metrics_listen` then."""
    follow_parent()  # a worker of a supervisor, or a service of `signalgate up`: stop with it
    if role is None:
        check_listeners(listen, ops_listen, metrics_listen)
    else:
        metrics_listen = None  # the supervisor serves it for every worker
    await service.start()
    # objects made at start-up live for the whole run: keep them out of every GC pass
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    api = http_server(api_app, listen, grace, tls, head_timeout=head_timeout)
    ops_socket = None if role is None else role.ops_socket
    ops = ops_servers(ops_app, ops_listen, metrics_listen, grace, head_timeout, uds=ops_socket)
    sockets = None if role is None else [role.listen_socket()]
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    certificate = None if tls is None else ServingCertificate(tls)
    keepers: list[asyncio.Task[None]] = []
    if certificate is not None:
        api.config.load()  # what `serve` does first: makes the listener's TLS context
        assert api.config.ssl is not None
        keepers.append(
            asyncio.create_task(certificate.keep(api.config.ssl), name="tls-certificate")
        )
    tokens = service.auth if isinstance(service.auth, StaticTokenAuth) else None
    if tokens is not None:
        keepers.append(asyncio.create_task(tokens.keep(), name="tokens-file"))
    handle_hangup(loop, _reloading(tokens, certificate))

    api_task = asyncio.create_task(api.serve(sockets), name="api-listener")
    ops_tasks = start_servers(ops, "ops-listener")
    if lag is not None:
        lag.start()
    service.lifecycle.state = State.SERVING
    addresses = {"api": listen, "ops": ops_listen}
    if metrics_listen is not None:
        addresses["metrics"] = metrics_listen
    log.info("serving", extra=addresses)
    stop_wait = asyncio.create_task(stop_requested.wait())
    failed_wait = asyncio.create_task(service.lifecycle.failed())
    done, _ = await asyncio.wait(
        {api_task, *ops_tasks, stop_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED
    )
    service.lifecycle.state = State.DRAINING
    if failed_wait in done:
        log.error(
            "shutting down: the service failed", extra={"error": str(service.lifecycle.failure)}
        )
    api.close_each_connection_after_its_answer()
    if delay > 0 and stop_wait in done:
        log.info("shutting down: unready, still serving", extra={"seconds": delay})
        stop_requested.clear()
        if await wait_event(stop_requested, delay):
            log.info("shutting down: a second signal ends the delay")
    log.info("shutting down: draining requests")
    service.lifecycle.closing.set()
    api.should_exit = True
    with contextlib.suppress(Exception):
        await api_task
    try:
        await service.stop()
    finally:
        await stop_servers(ops, ops_tasks)
        stop_wait.cancel()
        failed_wait.cancel()
        for keeper in keepers:
            keeper.cancel()
        if lag is not None:
            await lag.stop()
        service.lifecycle.state = State.STOPPED
        ignore_hangup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    for task in done:
        if task not in (stop_wait, failed_wait) and task.exception() is not None:
            raise RuntimeError("a listener failed to start") from task.exception()
    if service.lifecycle.failure is not None:
        raise service.lifecycle.failure
    log.info("stopped")


def _reloading(
    tokens: StaticTokenAuth | None, certificate: ServingCertificate | None
) -> Callable[[], None]:
    """SIGHUP, an operator's usual "read your files again": the tokens file and the TLS pair
    are read again (the files read while running); it used to end the service with no drain
    and no log line, Python's default for the signal."""

    def on_hangup() -> None:
        sampled.log(  # a storm of signals writes one line per interval
            logging.INFO,
            "sighup",
            "SIGHUP: the tokens file and the TLS certificate are read again; other settings "
            "take a restart",
            {},
        )
        if tokens is not None:
            tokens.check_soon()
        if certificate is not None:
            certificate.check_soon()

    return on_hangup


def run_forever(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop (what uvicorn itself picks when installed)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class ListenerSettings(Protocol):
    """The `server` section every service's settings have."""

    @property
    def tls_cert_file(self) -> Path | None: ...

    @property
    def tls_key_file(self) -> Path | None: ...

    @property
    def listen(self) -> str: ...

    @property
    def ops_listen(self) -> str: ...

    @property
    def shutdown_grace(self) -> float: ...

    @property
    def shutdown_delay(self) -> float: ...

    @property
    def header_read_timeout(self) -> float: ...

    @property
    def metrics_listen(self) -> str | None: ...


def check_listener_settings(
    server: ListenerSettings, auth: AuthSettings, scopes: tuple[str, ...]
) -> None:
    """What every service's `serve` refuses (exit 2) of its `server` and `auth` sections that
    needs no network and writes nothing: the TLS pair, the tokens file, listeners that
    overlap. Each service's `check_settings` (run by `serve` and `check-config` alike) adds
    the directories it writes."""
    Tls.from_settings(server.tls_cert_file, server.tls_key_file)
    if auth.mode == "static" and auth.tokens_file is not None:
        StaticTokenAuth.from_file(auth.tokens_file, scopes)
    check_distinct_listeners(server.listen, server.ops_listen, server.metrics_listen)


def serve(
    service: Service,
    api_app: ASGIApp,
    readiness: ReadinessProbe,
    registry: CollectorRegistry,
    server: ListenerSettings,
) -> None:
    """What every service's `serve` command does once its settings and parts are built."""
    ops_app = build_ops_app(readiness, registry)
    tls = Tls.from_settings(server.tls_cert_file, server.tls_key_file)
    main = run_service(
        service,
        api_app,
        ops_app,
        server.listen,
        server.ops_listen,
        grace=server.shutdown_grace,
        delay=server.shutdown_delay,
        tls=tls,
        role=WorkerRole.from_environ(),
        lag=LoopLagMonitor(registry),
        head_timeout=server.header_read_timeout,
        metrics_listen=server.metrics_listen,
    )
    run_forever(main)
