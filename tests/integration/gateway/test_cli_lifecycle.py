"""The `signalgate-gateway` command: start-up refusals, first-start token, graceful SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import free_port
from signalgate.common.auth import hash_token
from tests.support.services import ADMIN_TOKEN, ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "signalgate.gateway.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_invalid_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "serve", env={"SIGNALGATE_SERVER__LISTEN": "8080", "SIGNALGATE_DATADIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: config key 'server.listen' (from environment variable "
        "SIGNALGATE_SERVER__LISTEN): '8080' is not host:port (e.g. 127.0.0.1:8080)"
    ]
    # a flag is named by the flag, not "command line"
    flag = run_cli("serve", "--listen", "8080", env={"SIGNALGATE_DATADIR": str(tmp_path)})
    assert flag.returncode == 2
    assert flag.stderr.strip().splitlines() == [
        "error: config key 'server.listen' (from --listen): '8080' is not host:port "
        "(e.g. 127.0.0.1:8080)"
    ]


def test_config_file_errors_and_check_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  listen: 127.0.0.1:9999\nscope:\n  managedNamespaces: [prod]\n")
    ok = run_cli(
        "check-config", str(config), env={"SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:9998"}
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        '"listen": "127.0.0.1:9999"' in ok.stdout and '"opsListen": "127.0.0.1:9998"' in ok.stdout
    )
    assert '"prod"' in ok.stdout
    # what follows from other settings is printed resolved, not null
    resolved = json.loads(ok.stdout)
    data = Path(resolved["dataDir"])
    assert resolved["store"]["dsn"] == f"sqlite:///{data / 'gateway.db'}"
    assert resolved["datastorage"]["spoolPath"] == str(data / "audit-journal")
    assert resolved["scope"]["source"] == "settings"
    config.write_text("server:\n  lisen: 127.0.0.1:9999\n")
    bad = run_cli("check-config", str(config))
    assert bad.returncode == 2 and "server.lisen" in bad.stderr and "unknown setting" in bad.stderr


def test_check_config_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`check-config FILE | head -1`: the reader leaves, the command ends without a
    traceback."""
    config = tmp_path / "gateway.yaml"
    config.write_text("logging:\n  level: info\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "signalgate.gateway.cli", "check-config", str(config)],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    said = process.stderr.read().decode()
    assert process.wait(30) == 1
    assert "Traceback" not in said and "BrokenPipeError" not in said, said


def test_missing_or_bad_tokens_file_stops_start_up(tmp_path: Path) -> None:
    missing = run_cli(
        "serve",
        env={
            "SIGNALGATE_AUTH__TOKENSFILE": str(tmp_path / "nope"),
            "SIGNALGATE_DATADIR": str(tmp_path),
        },
    )
    assert missing.returncode == 2 and "auth.tokensFile" in missing.stderr
    bad = tmp_path / "tokens"
    bad.write_text("# ok\n" + "a" * 64 + " signals:write\nnot a line\n")
    result = run_cli(
        "serve", env={"SIGNALGATE_AUTH__TOKENSFILE": str(bad), "SIGNALGATE_DATADIR": str(tmp_path)}
    )
    assert result.returncode == 2 and "line 3" in result.stderr
    bad.write_bytes(b"\xff\xfe not text\n")
    binary = run_cli(
        "serve", env={"SIGNALGATE_AUTH__TOKENSFILE": str(bad), "SIGNALGATE_DATADIR": str(tmp_path)}
    )
    assert binary.returncode == 2, binary.stderr
    assert (
        binary.stderr.strip() == f"error: config key 'auth.tokensFile': '{bad}' is not UTF-8 text"
    )


def test_first_start_generates_an_admin_token_and_never_logs_it(tmp_path: Path) -> None:
    service = gateway_process(tmp_path)
    del service.env["SIGNALGATE_AUTH__TOKENSFILE"]
    service.start()
    try:
        token_file = tmp_path / "admin.token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        with service.client(token=token) as c:
            assert c.post(PROM, json=webhook(alert(pod="first-1"))).status_code == 201
            assert c.get("/api/v1/remediation-requests").status_code == 200
    finally:
        service.stop()
    output = service.output()
    assert token not in output
    assert str(token_file) in output
    assert "authorization" not in output.lower()


def readiness_turns(ops_url: str, status: int, within: float = 10.0) -> bool:
    """Whether `/readyz` answers `status` within `within` seconds (a signal's handling takes
    a moment, longer on a loaded machine)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if httpx.get(f"{ops_url}/readyz", timeout=5).status_code == status:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_finishes_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    service = gateway_process(tmp_path).start()
    host, port = service.api_url.removeprefix("http://").split(":")
    body = httpx.Request("POST", "http://x", json=webhook(alert(pod="drain-1"))).read()
    conn = socket.create_connection((host, int(port)))
    conn.sendall(
        f"POST {PROM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    time.sleep(0.3)
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    # draining: readiness is 503 while the in-flight request is still open
    assert readiness_turns(service.ops_url, 503)
    conn.sendall(body[10:])
    answer = conn.recv(65536).decode()
    conn.close()
    assert answer.startswith("HTTP/1.1 201"), answer
    assert service.proc.wait(30) == 0
    assert "stopped" in service.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_token_is_rotated_by_editing_the_tokens_file_and_sighup_stops_nothing(
    tmp_path: Path, workers: int
) -> None:
    """SIGHUP ended the service (no drain, no log line) and a new token took a restart, which
    refused signals meanwhile. Now the file is read again when it changes (within a second,
    at once after SIGHUP), in every worker."""
    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__WORKERS": str(workers)}).start()
    try:
        tokens = tmp_path / "test-tokens"
        rotated = tokens.read_text().replace(
            hash_token(ADMIN_TOKEN), hash_token("rotated-admin-token")
        )
        assert service.proc is not None
        tokens.write_text(rotated)
        service.proc.send_signal(signal.SIGHUP)
        body = webhook(alert(pod="rotate-1"))
        rotated_token = {"Authorization": "Bearer rotated-admin-token"}
        for _ in range(50):  # the signal reaches every worker within moments
            with httpx.Client(base_url=service.api_url, timeout=10) as c:
                answers = [c.post(PROM, json=body, headers=rotated_token) for _ in range(8)]
            if all(a.status_code in (201, 202) for a in answers):
                break
            time.sleep(0.1)
        for _ in range(4 * workers):  # every worker (connections spread over them)
            with httpx.Client(base_url=service.api_url, timeout=10) as c:
                new = c.post(PROM, json=body, headers=rotated_token)
                old = c.post(PROM, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert new.status_code in (201, 202), new.text
            assert old.status_code == 401, old.text
        assert service.proc.poll() is None
        assert "SIGHUP" in service.output()
    finally:
        service.stop()


def test_a_token_revoked_or_added_while_idle_is_in_force_at_the_first_request(
    tmp_path: Path,
) -> None:
    """The file was looked at only when a request came: after a quiet spell the first
    requests were checked against the tokens of before the edit, however long ago it was
    made, so a revoked token was let in for about a second and a new one refused (an
    outside check: five 200s 30 s after a revocation). Now it is looked at on a timer."""
    service = gateway_process(tmp_path).start()
    try:
        tokens = tmp_path / "test-tokens"
        text = tokens.read_text()
        body = webhook(alert(pod="idle-1"))
        sender = {"Authorization": "Bearer added-while-idle"}
        with httpx.Client(base_url=service.api_url, timeout=10) as c:
            assert c.post(PROM, json=body, headers=sender).status_code == 401
        tokens.write_text(f"{text}{hash_token('added-while-idle')} signals:write\n")
        time.sleep(3.5)  # idle: a change takes two looks, a second apart
        with httpx.Client(base_url=service.api_url, timeout=10) as c:
            added = c.post(PROM, json=body, headers=sender)
        assert added.status_code in (201, 202), added.text
        tokens.write_text(text)  # revoked
        time.sleep(3.5)
        with httpx.Client(base_url=service.api_url, timeout=10) as c:
            revoked = c.post(PROM, json=body, headers=sender)
        assert revoked.status_code == 401, revoked.text
    finally:
        service.stop()


def test_a_tokens_file_that_blocks_when_read_changes_nothing(tmp_path: Path) -> None:
    """A FIFO in the tokens file's place (or a hung network mount): the look that opened it
    waited for a writer for good, every request then waited behind that look, and SIGTERM
    left the process running (an outside check). It is not opened; the tokens loaded stay,
    and the service stops as usual."""
    service = gateway_process(tmp_path).start()
    tokens = tmp_path / "test-tokens"
    saved = tokens.read_text()
    try:
        tokens.unlink()
        os.mkfifo(tokens)
        time.sleep(3.5)  # two looks at least
        body = webhook(alert(pod="fifo-1"))
        with httpx.Client(base_url=service.api_url, timeout=5) as c:
            for _ in range(3):
                answer = c.post(PROM, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                assert answer.status_code in (201, 202), answer.text
        assert "is not a regular file" in service.output()
        tokens.unlink()
        tokens.write_text(saved)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(20) == 0
    finally:
        service.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_while_starting_or_stopping_changes_nothing(tmp_path: Path, workers: int) -> None:
    """Python's default for SIGHUP ends the process: sent while a service (or one of its
    workers) started, it never served; sent as it stopped, a clean stop exited 129."""
    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__WORKERS": str(workers)})
    service.start(wait=False)
    assert service.proc is not None
    while not service.output():  # its command runs (Python itself starts before that)
        time.sleep(0.01)
    while not _ready(service):  # through the start: the store, the workers one by one
        assert service.proc.poll() is None, service.output()[-2000:]
        service.proc.send_signal(signal.SIGHUP)
        time.sleep(0.02)
    service.wait_ready()
    with service.client() as c:
        assert c.post(PROM, json=webhook(alert(pod="hup-1"))).status_code == 201
    service.proc.send_signal(signal.SIGTERM)
    while service.proc.poll() is None:  # and through the whole stop
        with contextlib.suppress(ProcessLookupError):
            service.proc.send_signal(signal.SIGHUP)
        time.sleep(0.002)
    assert service.proc.returncode == 0, service.output()[-2000:]


def _ready(service: ServiceProcess) -> bool:
    try:
        return httpx.get(f"{service.ops_url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_with_workers_a_connection_after_the_listener_stopped_is_refused_not_held(
    tmp_path: Path,
) -> None:
    """The supervisor kept its copy of the listening socket until every worker had exited:
    a connection arriving after they stopped accepting waited in its queue, unserved, and
    was reset at the end (after the request was sent: was it taken?). One process refuses it
    at once, and so do several now."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # DataStorage that never answers: the stop waits on the audit flush
    env = {
        "SIGNALGATE_SERVER__WORKERS": "2",
        "SIGNALGATE_DATASTORAGE__URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
    }
    service = gateway_process(tmp_path, env=env).start()
    try:
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="late-1"))).status_code == 201
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        host, port = service.api_url.removeprefix("http://").split(":")
        deadline = time.monotonic() + 15
        while True:  # until the workers stopped accepting (their audit flush goes on)
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "connections still taken while stopping"
            time.sleep(0.1)
        assert service.proc.poll() is None  # refused while the service still stops
        assert service.proc.wait(60) == 0
    finally:
        silent.close()
        service.stop()


def test_a_shutdown_delay_keeps_serving_unready_and_closes_each_connection(
    tmp_path: Path,
) -> None:
    """A rolling restart: readiness turned 503 as the listener closed, so a sender meeting
    the endpoint before it was taken out got refused connections, and kept-alive ones were
    closed under its requests. With `server.shutdownDelay` the listener serves on, unready,
    and every answer closes its connection so the sender's next request goes elsewhere."""
    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__SHUTDOWNDELAY": "2s"}).start()
    assert service.proc is not None
    with service.client() as kept_alive:
        assert kept_alive.post(PROM, json=webhook(alert(pod="delay-0"))).status_code == 201
        service.proc.send_signal(signal.SIGTERM)
        assert readiness_turns(service.ops_url, 503)
        during = kept_alive.post(PROM, json=webhook(alert(pod="delay-1")))
        assert during.status_code == 201, during.text
        assert during.headers["connection"] == "close"
    with service.client() as fresh:
        assert fresh.post(PROM, json=webhook(alert(pod="delay-2"))).status_code == 201
    assert service.proc.wait(30) == 0
    assert "unready, still serving" in service.output()


def test_a_second_sigterm_ends_the_shutdown_delay(tmp_path: Path) -> None:
    """Ctrl-C twice, or an impatient supervisor: the rest of the delay is skipped."""
    service = gateway_process(tmp_path, env={"SIGNALGATE_SERVER__SHUTDOWNDELAY": "5m"}).start()
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert service.proc.poll() is None  # unready, serving out its delay
    service.proc.send_signal(signal.SIGINT)
    assert service.proc.wait(60) == 0
    assert "a second signal ends the delay" in service.output()


def test_auth_none_only_when_explicit_and_warns(tmp_path: Path) -> None:
    service = gateway_process(tmp_path, env={"SIGNALGATE_AUTH__MODE": "none"}).start()
    try:
        with service.client(token=None) as c:
            assert c.post(PROM, json=webhook(alert(pod="open-1"))).status_code == 201
    finally:
        service.stop()
    assert "auth.mode is none" in service.output()


def test_a_data_directory_that_cannot_be_written_stops_start_up_in_one_line(
    tmp_path: Path,
) -> None:
    """A read-only root filesystem or a volume owned by someone else: one line naming the
    setting as the user gave it (a variable, a flag, a key in a file) and the path, exit 2,
    instead of a traceback from the first write."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory under a file cannot be made, even by root
    data_dir = run_cli("serve", env={"SIGNALGATE_DATADIR": str(blocker / "data")})
    assert data_dir.returncode == 2, data_dir.stderr
    (line,) = data_dir.stderr.strip().splitlines()
    assert line.startswith(
        f"error: environment variable SIGNALGATE_DATADIR: '{blocker / 'data'}'"
    ), line
    assert "cannot be written" in line and "audit journal" in line
    flag = run_cli("serve", "--data-dir", str(blocker / "data"))
    assert flag.returncode == 2, flag.stderr
    assert flag.stderr.startswith(f"error: --data-dir: '{blocker / 'data'}'"), flag.stderr
    settings = tmp_path / "gateway.yaml"
    settings.write_text(f"dataDir: {blocker / 'data'}\n")
    in_file = run_cli("serve", "--config", str(settings))
    assert in_file.returncode == 2, in_file.stderr
    assert in_file.stderr.startswith(f"error: config key 'dataDir' in {settings}: "), in_file.stderr
    journal = run_cli(
        "serve",
        env={
            "SIGNALGATE_DATADIR": str(tmp_path / "data"),
            "SIGNALGATE_DATASTORAGE__URL": "http://127.0.0.1:9",
            "SIGNALGATE_DATASTORAGE__SPOOLPATH": str(blocker / "journal"),
        },
    )
    assert journal.returncode == 2, journal.stderr
    assert journal.stderr.startswith(
        "error: environment variable SIGNALGATE_DATASTORAGE__SPOOLPATH: "
    ), journal.stderr


def test_check_config_shows_what_kubernauts_file_becomes_and_warns_as_serve_would() -> None:
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "kubernaut" / "gateway-config.yaml"
    result = run_cli("check-config", str(fixture), env={"POD_NAMESPACE": "remediation"})
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: config file '{fixture}' is in Kubernaut's Gateway layout")
    resolved = json.loads(result.stdout)
    assert resolved["store"]["dsn"] == "kubernetes://"
    assert resolved["controllerNamespace"] == "remediation"
    assert resolved["server"]["metricsListen"] == ":9090"


def test_a_listen_address_in_use_is_one_line_exit_1_before_anything_starts(
    tmp_path: Path,
) -> None:
    """Another process on the port (a `make run` still up): one line naming the address and
    its setting, exit 1, nothing opened or created. It was uvicorn's error after the store had
    been opened and the service logged as serving, exit 3."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for module, key, env_key in (
            ("signalgate.gateway.cli", "server.listen", "SIGNALGATE_SERVER__LISTEN"),
            ("signalgate.datastorage.cli", "server.opsListen", "SIGNALGATE_SERVER__OPSLISTEN"),
        ):
            base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALGATE_")}
            data = tmp_path / module
            done = subprocess.run(
                [sys.executable, "-m", module, "serve"],
                env={
                    **base,
                    "SIGNALGATE_DATADIR": str(data),
                    "SIGNALGATE_SERVER__LISTEN": "127.0.0.1:0",
                    "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:0",
                    env_key: f"127.0.0.1:{port}",
                },
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 1, done.stderr
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            assert errors == [
                f"error: cannot listen on 127.0.0.1:{port} ({key}): already in use; stop what "
                f"holds it, or set {key} to another address"
            ], done.stderr
            assert "Traceback" not in done.stderr and "serving" not in done.stderr


def test_a_busy_port_with_several_workers_is_the_same_one_line(tmp_path: Path) -> None:
    """With `server.workers: 2` the supervisor binds the port: it was a traceback."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = run_cli(
            "serve",
            env={
                "SIGNALGATE_DATADIR": str(tmp_path),
                "SIGNALGATE_SERVER__WORKERS": "2",
                "SIGNALGATE_SERVER__LISTEN": f"127.0.0.1:{port}",
                "SIGNALGATE_SERVER__OPSLISTEN": "127.0.0.1:0",
            },
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port} (server.listen): already in use; stop what "
        "holds it, or set server.listen to another address"
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_a_spool_path_naming_an_old_spool_file_takes_its_events_over(tmp_path: Path) -> None:
    """Releases before the journal kept a spool *file* at `datastorage.spoolPath`; the
    journal takes its undelivered events over, but start-up refused the path first ("cannot
    be written", it is not a directory), and another path left the events behind for good."""
    spool = tmp_path / "spool"
    events = [
        {"event_id": f"00000000-0000-4000-8000-00000000000{n}", "event_type": "gateway.x", "n": n}
        for n in range(3)
    ]
    spool.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    service = gateway_process(
        tmp_path / "data",
        env={
            "SIGNALGATE_DATASTORAGE__URL": f"http://127.0.0.1:{free_port()}",  # away
            "SIGNALGATE_DATASTORAGE__SPOOLPATH": str(spool),
        },
    ).start()
    try:
        audit = httpx.get(f"{service.ops_url}/readyz", timeout=10).json()["checks"]["audit"]
        assert audit["spooled"] == 3, audit
    finally:
        service.stop()
    assert spool.is_dir() and not (tmp_path / "spool.legacy").exists()
    assert sum(p.read_bytes().count(b"\n") for p in spool.glob("segment-*.jsonl")) == 3


def test_passwords_in_urls_are_masked_in_check_config_and_readyz(tmp_path: Path) -> None:
    """`check-config` prints the settings and the ops listener's /readyz (no token) shows
    where audit events go: neither shows a password a DSN or URL carries. Credentials in
    datastorage.url are refused (an HTTP client sends them as Basic auth instead of the
    token, and logs them), naming the key without showing them."""
    config = tmp_path / "gateway.yaml"
    config.write_text("server:\n  listen: 127.0.0.1:0\n")
    dsn = {"SIGNALGATE_STORE__DSN": "postgresql://gw:StorePass@db:5432/signalgate"}
    shown = run_cli("check-config", str(config), env=dsn)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["store"]["dsn"] == "postgresql://gw:***@db:5432/signalgate"
    with_credentials = {"SIGNALGATE_DATASTORAGE__URL": "http://svc:UrlPass@ds.example:8090"}
    refused = run_cli("check-config", str(config), env=with_credentials)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: config key 'datastorage.url'"), refused.stderr
    assert "must not carry credentials" in refused.stderr and "UrlPass" not in refused.stderr
    away = f"http://127.0.0.1:{free_port()}/?token=UrlPass"
    service = gateway_process(tmp_path, env={"SIGNALGATE_DATASTORAGE__URL": away}).start()
    try:
        ready = httpx.get(f"{service.ops_url}/readyz", timeout=10)
        assert ready.json()["checks"]["audit"]["url"] == away.replace("UrlPass", "***")
        assert "UrlPass" not in ready.text
    finally:
        service.stop()
    assert "UrlPass" not in service.output()


def test_what_the_gateway_writes_is_its_users_alone(tmp_path: Path) -> None:
    """Its RR database and its audit journal (whole alert payloads) were 0644 in 0755
    directories under the usual umask: any local user could read them."""
    data_dir = tmp_path / "data"
    away = f"http://127.0.0.1:{free_port()}"  # the journal keeps the events
    service = gateway_process(data_dir, env={"SIGNALGATE_DATASTORAGE__URL": away}).start()
    try:
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="private-1"))).status_code == 201
    finally:
        service.stop()
    # (the data directory, tokens file and log are the test harness's)
    made = [p for p in data_dir.rglob("*") if p.name not in ("test-tokens", "gateway.log")]
    assert any(p.name.startswith("segment-") for p in made), made
    assert any(p.suffix == ".db" for p in made), made
    shared = [(str(p), oct(p.stat().st_mode & 0o777)) for p in made if p.stat().st_mode & 0o077]
    assert shared == []
