"""API discovery through a real API server, of a group an aggregated API serves: an
APIService whose backend is a small HTTPS server started here, answering its group's
discovery with whatever the test sets. The API server passes that answer on as it is, as
it does a metrics adapter's or any extension API server's."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from e2ecov.kubeapi import KubeAPIServer
from signalgate.gateway.cluster import ClusterView
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.kube.settings import KubernetesSettings


class DiscoveryBackend:
    """An HTTPS server answering every GET with `body` (200, JSON content type)."""

    def __init__(self, server: KubeAPIServer) -> None:
        self.body = b"{}"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # any certificate does: the APIService skips verifying it
        tls.load_cert_chain(
            server.root / "certs" / "apiserver.crt", server.root / "certs" / "apiserver.key"
        )
        self._http.socket = tls.wrap_socket(self._http.socket, server_side=True)
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def serve(self, document: Any) -> None:
        self.body = document if isinstance(document, bytes) else orjson.dumps(document)

    def __enter__(self) -> DiscoveryBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def aggregated(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> Iterator[tuple[str, DiscoveryBackend]]:
    """A group version `<unique>.example.com/v1` served by a `DiscoveryBackend`, through an
    APIService whose Service is an ExternalName for localhost (the API server resolves it
    and calls the backend)."""
    group = f"gadgets-{uuid.uuid4().hex[:8]}.example.com"
    with DiscoveryBackend(kube_apiserver) as backend:
        backend.serve(resource_list(group, GADGET))
        kube_apiserver.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "gadgets", "namespace": kube_namespace},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            }
        )
        apiservices = "/apis/apiregistration.k8s.io/v1/apiservices"
        code, made = kube_apiserver.request(
            "POST",
            apiservices,
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"v1.{group}"},
                "spec": {
                    "group": group,
                    "version": "v1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "insecureSkipTLSVerify": True,
                    "service": {
                        "name": "gadgets",
                        "namespace": kube_namespace,
                        "port": backend.port,
                    },
                },
            },
        )
        assert code == 201, made
        try:
            deadline = time.monotonic() + 60
            while kube_apiserver.request("GET", f"/apis/{group}/v1")[0] != 200:
                assert time.monotonic() < deadline, "the aggregated API never answered"
                time.sleep(0.25)
            yield f"{group}/v1", backend
        finally:
            kube_apiserver.request("DELETE", f"{apiservices}/v1.{group}")


GADGET = {"name": "gadgets", "singularName": "gadget", "namespaced": True, "kind": "Gadget"}
GIZMO = {"name": "gizmos", "singularName": "gizmo", "namespaced": True, "kind": "Gizmo"}


def resource_list(group: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/v1",
        "resources": list(resources),
    }


# what an aggregated API answered, each a 200 the API server passed on
MALFORMED: list[Any] = [
    {"kind": "APIResourceList", "resources": ["gadgets"]},  # an entry that is no mapping
    {"kind": "APIResourceList", "resources": [None]},
    {"kind": "APIResourceList", "resources": "gadgets"},  # resources no list
    {"kind": "APIResourceList", "resources": {"gadgets": GADGET}},
    {"kind": "APIResourceList", "resources": [{"name": "gadgets", "namespaced": True}]},  # no kind
    {"kind": "APIResourceList", "resources": [{"kind": "Gadget", "namespaced": True}]},  # no name
    None,  # null
    [GADGET],
    {},
    b"<html>backend restarting</html>",
]


async def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def test_a_group_answering_no_discovery_document_keeps_its_kinds_and_refreshing_goes_on(
    kube_apiserver: KubeAPIServer,
    aggregated: tuple[str, DiscoveryBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each malformed answer is logged with its group version, counted in the discovery
    error metric, and the group's kinds of the last discovery stay (an alert naming a
    `gadget` still has its target and apiVersion); when the group answers properly again,
    the next refresh learns its new kind: the refresh task never ended. Before, a document
    without `resources` or an entry without its `kind` was read as a group serving nothing
    (its kinds dropped, nothing counted), and an escaped error ended the refresh task."""
    group_version, backend = aggregated
    client = KubeClient(config_from_dsn(kube_apiserver.url))
    view = ClusterView(client, KubernetesSettings(), refresh_every=0.1)
    errors = 0

    def counted() -> None:
        nonlocal errors
        errors += 1

    view.on_discovery_error = counted
    caplog.set_level(logging.WARNING, logger="signalgate.gateway.cluster")
    try:
        await view.start()
        found = view.kinds.lookup("Gadget")
        assert found is not None and found.api_version == group_version
        for document in MALFORMED:
            backend.serve(document)
            before = errors
            # two counted refreshes: the first one that read this answer has ended
            await _until(lambda: errors >= before + 2, f"counted: {document!r}")  # noqa: B023
            assert view.kinds.kind_for_label("gadget") == "Gadget", document
            kept = view.kinds.lookup("Gadget")
            assert kept is not None and kept.api_version == group_version, document
            assert view.kinds.resource("Gadget") is not None, document
        logged = [r for r in caplog.records if getattr(r, "groupVersion", "") == group_version]
        assert logged and all("left out" in r.getMessage() for r in logged)
        assert all(r.levelno == logging.WARNING for r in logged)  # none was an unexpected error
        backend.serve(resource_list(group_version.removesuffix("/v1"), GADGET, GIZMO))
        await _until(lambda: view.kinds.lookup("Gizmo") is not None, "Gizmo learnt")
        assert view.kinds.lookup("Gadget") is not None
    finally:
        await view.close()
        await client.close()


async def test_a_group_omitting_optional_fields_is_learnt_as_client_go_reads_it(
    kube_apiserver: KubeAPIServer, aggregated: tuple[str, DiscoveryBackend]
) -> None:
    """An aggregated API whose entries carry only `name` and `kind` (no `namespaced`,
    `singularName` or `verbs`, each optional to Go's decoder) has its kinds learnt, as
    cluster-scoped ones (Go's zero value, what client-go reads); before, the group was left
    out as malformed, and such a core `/api/v1` stopped the Gateway at start."""
    group_version, backend = aggregated
    group = group_version.removesuffix("/v1")
    backend.serve(resource_list(group, {"name": "dials", "kind": "Dial"}, GADGET))
    client = KubeClient(config_from_dsn(kube_apiserver.url))
    view = ClusterView(client, KubernetesSettings())
    try:
        await view.discover()
        dial = view.kinds.resource("Dial")
        assert dial is not None and dial.api_version == group_version
        assert not dial.namespaced
        assert dial.path("ns", "d1") == f"/apis/{group_version}/dials/d1"
        gadget = view.kinds.resource("Gadget")
        assert gadget is not None and gadget.namespaced
    finally:
        await client.close()


class GroupListRewritten(KubeClient):
    """A client of the real API server whose `/apis` answer is passed through `rewrite` on
    its way in: a group list as an intermediary (an API proxy, a stripped-down or patched
    server) may pass it on, which no APIService can make the API server itself serve."""

    rewrite: Callable[[dict[str, Any]], dict[str, Any]] = staticmethod(lambda d: d)

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = await super().request(method, path, **kwargs)
        return self.rewrite(answer) if (method, path) == ("GET", "/apis") else answer


async def test_one_group_list_entry_naming_no_version_leaves_out_that_group_alone(
    kube_apiserver: KubeAPIServer,
    aggregated: tuple[str, DiscoveryBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entry of `/apis` that names no version (no object; no `preferredVersion` and no
    `versions`) made the whole discovery `DiscoveryMalformed`: at start the Gateway did not
    start (scope.source cluster), later every refresh failed whole. Now that group alone is
    left out, named in a warning and counted, its kinds of the last discovery kept; every
    other group is read, as client-go fetches only the versions a group lists."""
    group_version, _ = aggregated
    group = group_version.removesuffix("/v1")

    def broken(document: dict[str, Any]) -> dict[str, Any]:
        groups = [g for g in document["groups"] if g.get("name") != group]
        return {**document, "groups": [None, *groups, {"name": group, "versions": []}]}

    client = GroupListRewritten(config_from_dsn(kube_apiserver.url))
    errors = 0

    def counted() -> None:
        nonlocal errors
        errors += 1

    caplog.set_level(logging.WARNING, logger="signalgate.gateway.cluster")
    try:
        # a discovery that meets it first: the start goes on, the others' kinds learnt
        client.rewrite = broken
        first = ClusterView(client, KubernetesSettings())
        first.on_discovery_error = counted
        await first.discover()
        assert first.kinds.resource("Deployment") is not None
        assert first.kinds.resource("RemediationRequest") is not None
        assert first.kinds.resource("Gadget") is None
        assert errors == 2
        named = [r for r in caplog.records if getattr(r, "group", None) == group]
        assert len(named) == 1 and "left out" in named[0].getMessage()

        # one that met it after the group answered: the group's last kinds kept
        client.rewrite = lambda d: d
        view = ClusterView(client, KubernetesSettings())
        await view.discover()
        assert view.kinds.resource("Gadget") is not None
        client.rewrite = broken
        await view.discover()
        kept = view.kinds.resource("Gadget")
        assert kept is not None and kept.api_version == group_version
        assert view.kinds.resource("Deployment") is not None
    finally:
        await client.close()
