"""HTTPS on the API listener (server.tlsCertFile / server.tlsKeyFile), from PEM files as a
mounted Secret provides them; a half-configured pair stops start-up naming the key."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.datastorage.dstools import ADMIN_TOKEN as DS_ADMIN
from tests.integration.datastorage.dstools import datastorage_process
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_env(cert: Path, key: Path) -> dict[str, str]:
    return {"SIGNALGATE_SERVER__TLSCERTFILE": str(cert), "SIGNALGATE_SERVER__TLSKEYFILE": str(key)}


def on_https(service: ServiceProcess) -> ServiceProcess:
    """The service with its API URL as https:// (its ops listener stays plain HTTP)."""
    service.api_url = service.api_url.replace("http://", "https://")
    return service


def test_the_api_listener_speaks_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    gateway = on_https(gateway_process(tmp_path / "gw", env=tls_env(cert, key))).start()
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=gateway.api_url, verify=trust, headers=headers) as c:
            answer = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="tls-1")))
            assert answer.status_code == 201, answer.text
        # plain HTTP on the same port gets no answer a client could mistake for the API
        plain = gateway.api_url.replace("https://", "http://")
        try:
            refused = httpx.get(f"{plain}/openapi.json", timeout=5).status_code
        except httpx.HTTPError:
            refused = 0
        assert refused != 200
    finally:
        gateway.stop()


def test_a_tls_connection_that_never_finishes_its_handshake_is_closed(tmp_path: Path) -> None:
    """A client that connects and says nothing, or starts a handshake and stops, is closed
    after `server.headerReadTimeout` (the handshake's deadline was asyncio's 60 s: silent
    connections held the service's descriptors a minute each)."""
    cert, key = self_signed(tmp_path)
    env = {**tls_env(cert, key), "SIGNALGATE_SERVER__HEADERREADTIMEOUT": "1s"}
    gateway = on_https(gateway_process(tmp_path / "gw", env=env)).start()
    try:
        host, port = gateway.api_url.removeprefix("https://").split(":")
        half_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        stalled = []
        for sent in (b"", half_hello):
            connection = socket.create_connection((host, int(port)))
            connection.sendall(sent)
            stalled.append(connection)
        started = time.monotonic()
        for connection in stalled:
            connection.settimeout(30)
            assert connection.recv(1024) == b""  # closed by the server, nothing answered
            connection.close()
        assert time.monotonic() - started < 10
        trust = ssl.create_default_context(cafile=str(cert))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=gateway.api_url, verify=trust, headers=headers) as c:
            answer = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="tls-2")))
            assert answer.status_code == 201, answer.text
    finally:
        gateway.stop()


def test_a_tls_sender_refused_before_its_body_ends_is_closed_after_the_linger(
    tmp_path: Path,
) -> None:
    """A request refused before its body arrived (a 401 here) lingers for the body, then
    closes. Over TLS the close waited up to 30 s for the client's close_notify, reading and
    decrypting all it still sent (830 MB from one client in an outside check)."""
    cert, key = self_signed(tmp_path)
    gateway = on_https(gateway_process(tmp_path / "gw", env=tls_env(cert, key))).start()
    try:
        host, port = gateway.api_url.removeprefix("https://").split(":")
        trust = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection((host, int(port))) as raw,
            trust.wrap_socket(raw, server_hostname=host) as connection,
        ):
            connection.sendall(
                b"POST /api/v1/signals/prometheus HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer not-a-token\r\nContent-Length: 100000000000\r\n\r\n"
            )
            started = time.monotonic()
            try:
                while time.monotonic() - started < 40:
                    connection.sendall(b"x" * 65536)
            except OSError:  # closed under the sender: a reset, a broken pipe, an SSL error
                pass
            assert time.monotonic() - started < 10
    finally:
        gateway.stop()


def test_a_certificate_without_its_key_stops_start_up(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    env = {"SIGNALGATE_SERVER__TLSCERTFILE": str(cert)}
    gateway = gateway_process(tmp_path / "gw", env=env)
    done = subprocess.run(
        [sys.executable, "-m", "signalgate.gateway.cli", "serve"],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "server.tlsKeyFile" in done.stderr


def test_the_gateway_delivers_audit_over_https_to_a_datastorage_with_tls(tmp_path: Path) -> None:

    cert, key = self_signed(tmp_path)
    datastorage = on_https(datastorage_process(tmp_path / "ds", env=tls_env(cert, key))).start()
    try:
        token_file = tmp_path / "ds.token"
        token_file.write_text(DS_ADMIN)
        gateway = gateway_process(
            tmp_path / "gw",
            env={
                "SIGNALGATE_DATASTORAGE__URL": datastorage.api_url,
                "SIGNALGATE_DATASTORAGE__TOKENFILE": str(token_file),
                "SIGNALGATE_DATASTORAGE__CAFILE": str(cert),
                "SIGNALGATE_DATASTORAGE__FLUSHINTERVAL": "100ms",
            },
        ).start()
        try:
            with gateway.client() as c:
                created = c.post("/api/v1/signals/prometheus", json=webhook(alert(pod="tls-2")))
                assert created.status_code == 201, created.text
            name = created.json()["remediationRequestName"]
            trust = ssl.create_default_context(cafile=str(cert))
            headers = {"Authorization": f"Bearer {DS_ADMIN}"}
            with httpx.Client(base_url=datastorage.api_url, verify=trust, headers=headers) as ds:
                types: list[str] = []
                for _ in range(100):
                    found = ds.get("/api/v1/audit/events", params={"correlation_id": name})
                    types = [e["event_type"] for e in found.json()["data"]]
                    if len(types) >= 2:
                        break
                    time.sleep(0.1)
            assert sorted(types) == ["gateway.crd.created", "gateway.signal.received"]
        finally:
            gateway.stop()
    finally:
        datastorage.stop()


def _serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalgate.gateway.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_key_of_another_certificate_or_a_missing_ca_is_one_line(tmp_path: Path) -> None:
    """Found from outside as tracebacks (exit 1): a key that is not the certificate's, and a
    `datastorage.caFile` that does not exist. Each is exit 2 and one line naming the keys."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = self_signed(tmp_path / "a")
    _, other_key = self_signed(tmp_path / "b")
    gateway = gateway_process(tmp_path / "gw", env=tls_env(cert, other_key))
    mismatched = _serve_once(gateway.env)
    assert mismatched.returncode == 2, mismatched.stderr
    assert (
        mismatched.stderr.strip()
        .splitlines()[-1]
        .startswith("error: config keys 'server.tlsCertFile' / 'server.tlsKeyFile':")
    ), mismatched.stderr
    assert "Traceback" not in mismatched.stderr

    missing = gateway_process(
        tmp_path / "gw2",
        env={
            "SIGNALGATE_DATASTORAGE__URL": "https://127.0.0.1:1",
            "SIGNALGATE_DATASTORAGE__CAFILE": str(tmp_path / "no-such-ca.pem"),
        },
    )
    done = _serve_once(missing.env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config key 'datastorage.caFile'"), done.stderr
    assert "not a readable PEM CA bundle" in last and "Traceback" not in done.stderr


def _served_pem(api_url: str) -> str:
    """The certificate a new connection gets (no verification: the test compares it)."""
    host, port = api_url.removeprefix("https://").split(":")
    return ssl.get_server_certificate((host, int(port)), timeout=10)


def _same_certificate(pem_a: str, pem_b: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem_a) == ssl.PEM_cert_to_DER_cert(pem_b)


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, workers: int) -> None:
    """cert-manager renews the Secret's pair in place: new connections get the new
    certificate, connections already open keep working, and a pair that does not load (a
    key of another certificate) is not taken. With 2 workers every worker takes it."""
    live = tmp_path / "secret"
    live.mkdir()
    first_cert, first_key = self_signed(live)
    env = {**tls_env(first_cert, first_key), "SIGNALGATE_SERVER__WORKERS": str(workers)}
    gateway = on_https(gateway_process(tmp_path / "gw", env=env)).start()
    try:
        first_pem = first_cert.read_text()
        trust_first = ssl.create_default_context(cafile=str(first_cert))
        with gateway.client(verify=trust_first) as kept_open:
            assert kept_open.post(PROM, json=webhook(alert(pod="renew-1"))).status_code == 201
            renewed = tmp_path / "renewed"
            renewed.mkdir()
            new_cert, new_key = self_signed(renewed)
            new_pem = new_cert.read_text()
            os.replace(new_key, first_key)  # as a Secret's update: files swapped whole
            os.replace(new_cert, first_cert)

            def every_new_connection_is_renewed() -> bool:
                # several connections: with 2 workers each may take any of them
                return all(
                    _same_certificate(_served_pem(gateway.api_url), new_pem) for _ in range(8)
                )

            _wait_until(every_new_connection_is_renewed, "the renewed pair was never served")
            assert "TLS certificate reloaded" in gateway.output()
            # the connection made before the renewal goes on with its handshake's certificate
            assert kept_open.post(PROM, json=webhook(alert(pod="renew-1"))).status_code == 202

        # a certificate written without its key: not taken, the last good pair served
        other = tmp_path / "other"
        other.mkdir()
        stray_cert, _ = self_signed(other)
        os.replace(stray_cert, first_cert)
        _wait_until(
            lambda: "TLS certificate not reloaded" in gateway.output(),
            "a mismatched pair was not reported",
        )
        assert all(_same_certificate(_served_pem(gateway.api_url), new_pem) for _ in range(8))
        assert not _same_certificate(first_pem, new_pem)
        trust_new = ssl.create_default_context(cadata=new_pem)
        with gateway.client(verify=trust_new) as fresh:  # verified against the renewed one
            assert fresh.post(PROM, json=webhook(alert(pod="renew-2"))).status_code == 201
    finally:
        assert gateway.stop() == 0
