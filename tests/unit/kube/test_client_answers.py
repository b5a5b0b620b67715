"""What the API client makes of a 2xx answer that is no JSON: a proxy or load balancer in
front of the API server answering with a page of its own. A real server on a socket plays
that proxy (the API server itself never answers so)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from signalgate.kube.client import KubeClient, KubeUnavailable
from signalgate.kube.config import KubeConfig

PAGE = b"<html><body>Service temporarily moved</body></html>"


class _Proxy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def proxy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_call_answered_with_a_page_that_is_no_json_is_unavailable(proxy: str) -> None:
    client = KubeClient(KubeConfig(server=proxy), timeout=5)
    try:
        with pytest.raises(KubeUnavailable) as refused:
            await client.request("GET", "/api/v1/namespaces/default")
    finally:
        await client.close()
    assert refused.value.reason == "NotJSON"
    assert "GET /api/v1/namespaces/default" in str(refused.value)
    assert "Service temporarily moved" in str(refused.value)


async def test_a_watch_answered_with_a_page_that_is_no_json_is_unavailable(proxy: str) -> None:
    client = KubeClient(KubeConfig(server=proxy), timeout=5)
    try:
        with pytest.raises(KubeUnavailable) as refused:
            async for _ in client.watch(
                "/apis/kubernaut.ai/v1alpha1/remediationrequests", params={}
            ):
                pass
    finally:
        await client.close()
    assert refused.value.reason == "NotJSON"
