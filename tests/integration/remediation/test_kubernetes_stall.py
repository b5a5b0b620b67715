"""The Kubernetes RR store when the API server stops answering without closing its
connections: a hung process, a node gone without a reset, a partition behind the
`kubernetes` Service address. Connections opened before the stall stay open and silent;
new ones reach an API server that answers (here: the same one, through a relay).

An outside check found every call waiting behind the RR watch's read deadline (330 s) on
the HTTP/2 connection they shared, and lists answered from the stale cache meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import signalgate.remediation.kubernetes as kubernetes_module
from e2ecov.kubeapi import KubeAPIServer
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.remediation.kubernetes import KubernetesStore
from signalgate.remediation.model import RemediationRequest
from signalgate.remediation.store import ListQuery, StoreUnavailable
from tests.integration.remediation.rrcases import later, make_rr
from tests.integration.remediation.test_kubernetes_store import path

# a generous bound for what must end within seconds: a hang shows as this test failing,
# never as a slow pass (the code before the fix waited 330 s)
HANG = 40.0


class StallingRelay:
    """A TCP relay standing for the Service address. `stall()` stops relaying on every
    connection open so far, closing none; connections made after it are relayed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.epoch = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def stall(self) -> None:
        self.epoch += 1

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        epoch = self.epoch
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    if self.epoch != epoch:  # stalled: swallow everything, close nothing
                        continue
                    sink.write(data)
                    await sink.drain()
                if self.epoch == epoch:
                    sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.fixture
async def relayed(
    kube_apiserver: KubeAPIServer, kube_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[KubernetesStore, StallingRelay]]:
    monkeypatch.setattr(kubernetes_module, "WATCH_SETTLE", 0.0)
    relay = StallingRelay(int(kube_apiserver.api_url.rsplit(":", 1)[1]))
    port = await relay.start()
    config = config_from_dsn(kube_apiserver.url)
    config = dataclasses.replace(config, server=f"https://127.0.0.1:{port}")
    client = KubeClient(config, timeout=2.0)
    store = KubernetesStore(client, kube_namespace)
    await store.open()
    try:
        yield store, relay
    finally:
        await store.close()
        await client.close()
        await relay.close()


async def _answered(call: Callable[[], Awaitable[object]]) -> object:
    """`call`'s answer once it gives one; a failure (503) is retried, as a sender would."""
    async with asyncio.timeout(HANG):
        while True:
            with contextlib.suppress(StoreUnavailable):
                return await call()
            await asyncio.sleep(0.1)


async def _opened(store: KubernetesStore, resource: str) -> RemediationRequest:
    """An RR for `resource` (retried: an API server's first custom resource after its start
    can take longer than the client's deadline, compiling the CRD's validation rules)."""
    outcome = await _answered(lambda: store.record_firing(make_rr(resource), later(0)))
    return outcome.rr  # type: ignore[attr-defined, no-any-return]


async def test_calls_fail_over_to_a_new_connection_and_the_watch_follows(
    relayed: tuple[KubernetesStore, StallingRelay],
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, relay = relayed
    kept = await _opened(store, "kept")
    removed = await _opened(store, "removed")
    relay.stall()
    # a controller, through an API server that answers, deletes one RR
    status, _ = kube_apiserver.request("DELETE", path(kube_namespace, removed.name))
    assert status == 200
    # a call on the stalled connection fails within the client's deadline (a 503 to the
    # sender), and the next one gets its answer on a new connection
    assert await _answered(lambda: store.get(kept.name)) is not None
    # the watch was started again on a new connection: once lists trust the cache again,
    # it has seen the deletion (a watch left on the stalled connection never would)
    monkeypatch.setattr(kubernetes_module, "CACHE_DOUBTED_FOR", 0.0)

    async def watched() -> set[str] | None:
        """The names the watch-fed cache lists, once the watch runs again (lists read the
        API server while it relists)."""
        if not store._cache_trusted():
            return None
        return {rr.name for rr in (await store.list(ListQuery())).items}

    async with asyncio.timeout(HANG):
        while (names := await watched()) is None or removed.name in names:
            await asyncio.sleep(0.1)
    assert kept.name in names


async def test_a_ping_the_readiness_probe_gave_up_on_stops_lists_trusting_the_cache(
    relayed: tuple[KubernetesStore, StallingRelay],
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
) -> None:
    """The probe's deadline (2 s) is shorter than the client's: its ping is cancelled, not
    failed, and lists went on answering from the cache — deleted RRs listed as active."""
    store, relay = relayed
    removed = await _opened(store, "gone-soon")
    relay.stall()
    status, _ = kube_apiserver.request("DELETE", path(kube_namespace, removed.name))
    assert status == 200
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await store.ping()
    listed = await _answered(lambda: store.list(ListQuery(active=True)))
    assert removed.name not in {rr.name for rr in listed.items}  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_calls_a_few_seconds_apart_share_one_connection(
    relayed: tuple[KubernetesStore, StallingRelay],
) -> None:
    """Readiness probes ping every few seconds: with httpx's 5 s keep-alive each one opened
    a new TLS connection to the API server (an outside check)."""
    store, relay = relayed
    await store.ping()
    opened = relay.accepted
    for _ in range(2):
        await asyncio.sleep(6.0)  # longer than httpx's default keep-alive
        await store.ping()
    assert relay.accepted == opened
