"""Start signalgate services as real subprocesses on free loopback ports, for tests."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from e2ecov.recipes import free_port

ADMIN_TOKEN = "test-admin-token"
READER_TOKEN = "test-reader-token"
SIGNALS_TOKEN = "test-signals-token"
GATEWAY_TOKENS = {
    ADMIN_TOKEN: "signals:write,remediations:read,remediations:write",
    READER_TOKEN: "remediations:read",
    SIGNALS_TOKEN: "signals:write",
}


def write_tokens_file(path: Path, tokens: Mapping[str, str]) -> Path:
    lines = [f"{hashlib.sha256(t.encode()).hexdigest()} {scopes}" for t, scopes in tokens.items()]
    path.write_text("# test tokens\n" + "\n".join(lines) + "\n")
    return path


@dataclass
class ServiceProcess:
    """A running service: its URLs, its process, and its output file."""

    command: list[str]
    env: dict[str, str]
    api_url: str
    ops_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def start(self, wait: bool = True, timeout: float = 20.0) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(
                    f"{self.command[0]} exited with {code}:\n{self.output()[-3000:]}"
                )
            try:
                answer = httpx.get(f"{self.ops_url}/readyz", timeout=1.0)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"not ready after {timeout}s ({last}):\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ServiceProcess:
        """`with gateway_process(...).start() as service:` stops it on the way out."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def client(self, token: str | None = ADMIN_TOKEN, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30.0, **kwargs)  # type: ignore[arg-type]


def service_process(
    module: str,
    data_dir: Path,
    tokens: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`python -m <module> serve` on free loopback ports, with `tokens` as its tokens file;
    `env` adds `SIGNALGATE_…` settings (the caller's own `SIGNALGATE_…` are not inherited)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    api_port, ops_port = free_port(), free_port()
    tokens_file = write_tokens_file(data_dir / "test-tokens", tokens)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")},
        "SIGNALGATE_SERVER__LISTEN": f"127.0.0.1:{api_port}",
        "SIGNALGATE_SERVER__OPSLISTEN": f"127.0.0.1:{ops_port}",
        "SIGNALGATE_DATADIR": str(data_dir),
        "SIGNALGATE_AUTH__TOKENSFILE": str(tokens_file),
        **(env or {}),
    }
    return ServiceProcess(
        command=[sys.executable, "-m", module, "serve"],
        env=full_env,
        api_url=f"http://127.0.0.1:{api_port}",
        ops_url=f"http://127.0.0.1:{ops_port}",
        log_path=data_dir / f"{module.split('.')[1]}.log",
    )


def gateway_process(
    data_dir: Path, env: Mapping[str, str] | None = None, tokens: Mapping[str, str] | None = None
) -> ServiceProcess:
    """A Gateway on free ports with the test tokens."""
    return service_process("signalgate.gateway.cli", data_dir, tokens or GATEWAY_TOKENS, env)


def rfc3339(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert(
    alertname: str = "PodCrashLooping",
    status: str = "firing",
    starts_at: str | None = None,
    **labels: str,
) -> dict[str, object]:
    """One Alertmanager alert; labels default to a Pod in `prod`."""
    merged = {"alertname": alertname, "severity": "critical", "namespace": "prod", "pod": "api-1"}
    merged.update(labels)
    merged = {k: v for k, v in merged.items() if v != ""}
    return {
        "status": status,
        "labels": merged,
        "annotations": {"summary": f"{alertname} fired"},
        "startsAt": starts_at or rfc3339(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": "0123456789abcdef",
    }


def webhook(*alerts: dict[str, object], status: str = "firing") -> dict[str, object]:
    """A webhook as Alertmanager sends it: `commonLabels` are the labels every alert shares."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "status": status,
        "receiver": "signalgate",
        "groupLabels": {},
        "commonLabels": _shared_labels(alerts),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": list(alerts),
    }


def _shared_labels(alerts: tuple[dict[str, object], ...]) -> dict[str, str]:
    label_sets = [a.get("labels") for a in alerts]
    if not label_sets or not all(isinstance(labels, dict) for labels in label_sets):
        return {}
    first, *rest = label_sets
    assert isinstance(first, dict)
    return {
        k: v
        for k, v in first.items()
        if isinstance(v, str) and all(isinstance(o, dict) and o.get(k) == v for o in rest)
    }


def k8s_event(
    type_: str = "Warning",
    reason: str = "BackOff",
    kind: str = "Pod",
    name: str = "api-1",
    namespace: str | None = "prod",
    last_timestamp: str | None = None,
) -> dict[str, object]:
    involved: dict[str, object] = {"kind": kind, "name": name, "apiVersion": "v1"}
    if namespace is not None:
        involved["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.17a", "namespace": namespace or "default"},
        "type": type_,
        "reason": reason,
        "message": "Back-off restarting failed container",
        "involvedObject": involved,
        "source": {"component": "kubelet"},
        "count": 3,
        "firstTimestamp": last_timestamp or rfc3339(),
        "lastTimestamp": last_timestamp or rfc3339(),
    }


def read_answer(connection: socket.socket) -> str:
    """One whole HTTP/1.1 answer (head and Content-Length body) from a raw socket."""
    connection.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += connection.recv(65536)
    return (head + b"\r\n\r\n" + body).decode()
