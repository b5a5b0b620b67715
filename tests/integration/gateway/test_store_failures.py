"""PostgreSQL stops under a running Gateway, then comes back: 503 + Retry-After, recovery."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from e2ecov.recipes import PostgresServer
from tests.support.services import ServiceProcess, alert, gateway_process, webhook

PROM = "/api/v1/signals/prometheus"
pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_outage_gives_503_and_recovers_without_restart(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    service: ServiceProcess = gateway_process(
        tmp_path, env={"SIGNALGATE_STORE__DSN": private_postgres.url}
    ).start()
    try:
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="out-1"))).status_code == 201
            private_postgres.stop()

            down = c.post(PROM, json=webhook(alert(pod="out-1")))
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"].isdigit()
            assert down.json()["type"] == "https://kubernaut.ai/problems/service-unavailable"
            assert c.get("/api/v1/remediation-requests").status_code == 503
            ready = httpx.get(f"{service.ops_url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["checks"]["store"] == "unavailable"
            assert httpx.get(f"{service.ops_url}/healthz").status_code == 200

            private_postgres.start()
            wait_for(lambda: httpx.get(f"{service.ops_url}/readyz", timeout=10).status_code == 200)
            back = c.post(PROM, json=webhook(alert(pod="out-1")))
            assert back.status_code == 202, back.text
            assert back.json()["metadata"]["count"] == 2
        assert service.proc is not None and service.proc.poll() is None
    finally:
        service.stop()


@pytest.mark.parametrize("known", [True, False], ids=["duplicate", "new"])
def test_store_that_hangs_past_the_deadline_gives_504(
    tmp_path: Path, private_postgres: PostgresServer, known: bool
) -> None:
    """A duplicate of a remembered RR (one bump) and a new signal (a group-commit batch)
    alike: the caller gets 504 and its statement is cancelled in the database, so the
    retry after the hang is counted as if the timed-out attempt never happened."""
    import asyncio

    import asyncpg

    service = _one_second_deadline(tmp_path, private_postgres)
    pod = "hang-dup" if known else "hang-new"

    async def scenario() -> tuple[httpx.Response, float]:
        if known:
            with service.client() as c:
                assert c.post(PROM, json=webhook(alert(pod=pod))).status_code == 201
        blocker = await asyncpg.connect(private_postgres.url)
        try:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE remediation_requests IN ACCESS EXCLUSIVE MODE")
            async with httpx.AsyncClient(headers=service.client().headers, timeout=30) as c:
                started = time.monotonic()
                answer = await c.post(service.api_url + PROM, json=webhook(alert(pod=pod)))
                elapsed = time.monotonic() - started
            await transaction.rollback()
        finally:
            await blocker.close()
        return answer, elapsed

    try:
        response, elapsed = asyncio.run(scenario())
        assert response.status_code == 504, response.text
        assert response.json()["type"] == "https://kubernaut.ai/problems/gateway-timeout"
        assert elapsed < 10
        time.sleep(0.5)  # a statement not cancelled would go through once the lock is gone
        with service.client() as c:  # the lock is gone: the same signal goes through
            again = c.post(PROM, json=webhook(alert(pod=pod)))
            # the timed-out attempt was cancelled in the database too: it did not count
            if known:
                assert again.status_code == 202, again.text
                assert again.json()["metadata"]["count"] == 2
            else:  # created now: the timed-out insert is not there to be a duplicate of
                assert again.status_code == 201, again.text
    finally:
        service.stop()


def _one_second_deadline(tmp_path: Path, postgres: PostgresServer) -> ServiceProcess:
    """A Gateway on `postgres` whose signals are decided within 1 s (else 504)."""
    return gateway_process(
        tmp_path,
        env={
            "SIGNALGATE_STORE__DSN": postgres.url,
            "SIGNALGATE_SERVER__PROCESSINGTIMEOUT": "1s",
        },
    ).start()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_the_sqlite_process_killed_gives_503_then_a_new_one_serves(tmp_path: Path) -> None:
    """The SQLite store's child process dies (SIGKILL): the Gateway answers 503, never 500,
    starts a new child with the next request, and keeps every RR already acknowledged; once
    the Gateway has stopped, no child is left."""
    import os
    import signal

    service = gateway_process(tmp_path).start()
    assert service.proc is not None
    try:
        (child,) = _children(service.proc.pid)
        assert "sqlite-store" in Path(f"/proc/{child}/cmdline").read_text()
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="kept-1"))).status_code == 201
            assert c.post(PROM, json=webhook(alert(pod="kept-1"))).status_code == 202
            os.kill(child, signal.SIGKILL)
            answers = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                answer = c.post(PROM, json=webhook(alert(pod="kept-1")))
                answers.append(answer.status_code)
                if answer.status_code == 202:
                    break
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"].isdigit()
                time.sleep(0.1)
            assert answers[-1] == 202, answers
            # the two acknowledged before the kill, and this one: nothing lost, nothing twice
            assert answer.json()["metadata"]["count"] == 3
            assert httpx.get(f"{service.ops_url}/readyz", timeout=10).status_code == 200
        (replacement,) = _children(service.proc.pid)
        assert replacement != child
    finally:
        service.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(replacement, 0)


def test_a_store_that_answers_but_refuses_writes_makes_the_gateway_unready(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    """A store whose ping answers while every write fails (a read-only standby after a
    failover here; a full disk under SQLite in an outside check): signals were 503 while
    `/readyz` said `"store": "ok"`, so no load balancer took the replica out."""
    service: ServiceProcess = gateway_process(
        tmp_path, env={"SIGNALGATE_STORE__DSN": private_postgres.url}
    ).start()

    def read_only(on: bool) -> None:
        database = private_postgres.database
        value = "on" if on else "off"
        private_postgres.execute(  # (this session is read-only too once it is on)
            f"BEGIN READ WRITE; ALTER DATABASE {database} "
            f"SET default_transaction_read_only = {value}; COMMIT"
        )
        if on:  # the pool's sessions reconnect with the setting
            private_postgres.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )
        # (reset, nothing ends them: the Gateway's read-only sessions must go by themselves)

    def readyz() -> httpx.Response:
        return httpx.get(f"{service.ops_url}/readyz", timeout=10)

    try:
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="ro-1"))).status_code == 201
            read_only(True)
            refused = [c.post(PROM, json=webhook(alert(pod=f"ro-{i}"))) for i in range(2, 5)]
            assert refused[-1].status_code == 503, refused[-1].text
            assert readyz().status_code == 503
            store = readyz().json()["checks"]["store"]
            assert store.startswith("writes failing:") and "read-only" in store, store
            read_only(False)
            # each read-only session is dropped at its first refusal: the ones the pool
            # still holds may refuse a signal each, then every signal is stored again (the
            # sessions stayed read-only for good: an outside check)
            wait_for(lambda: c.post(PROM, json=webhook(alert(pod="ro-9"))).status_code == 201, 30)
            for pod in range(10, 30):
                assert c.post(PROM, json=webhook(alert(pod=f"ro-{pod}"))).status_code == 201
            wait_for(lambda: readyz().status_code == 200)
            assert readyz().json()["checks"]["store"] == "ok"
    finally:
        service.stop()


def test_the_retry_of_a_webhook_cut_by_its_deadline_counts_each_alert_once(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    """A webhook whose last alert waits on a locked row past the deadline: 504, with the
    alerts before it already decided. Alertmanager sends the same body again. Those alerts
    were counted again on each retry (occurrenceCount 2, 3, …), and a webhook too large to
    decide within the deadline spent every retry on its first alerts and never reached the
    last ones (an outside check, Kubernetes mode). The retry now answers the alerts decided
    before as they were, and decides only the rest."""
    import asyncio

    import asyncpg

    service = _one_second_deadline(tmp_path, private_postgres)
    try:
        with service.client() as c:
            held = c.post(PROM, json=webhook(alert(pod="held-1")))
            assert held.status_code == 201, held.text
            body = webhook(*(alert(pod=f"new-{i}") for i in range(20)), alert(pod="held-1"))

            async def first_attempt() -> httpx.Response:
                blocker = await asyncpg.connect(private_postgres.url)
                try:
                    async with blocker.transaction():
                        await blocker.execute(
                            "SELECT 1 FROM remediation_requests WHERE name = $1 FOR UPDATE",
                            held.json()["remediationRequestName"],
                        )
                        return await asyncio.to_thread(c.post, PROM, json=body)
                finally:
                    await blocker.close()

            cut = asyncio.run(first_attempt())
            assert cut.status_code == 504, cut.text
            retried = c.post(PROM, json=body)
            assert retried.status_code == 207, retried.text
            summary = retried.json()["summary"]
            assert (summary["created"], summary["deduplicated"]) == (20, 1), summary
            listed = c.get("/api/v1/remediation-requests", params={"limit": "100"}).json()
            counts = {
                rr["spec"]["targetResource"]["name"]: rr["status"]["deduplication"][
                    "occurrenceCount"
                ]
                for rr in listed["items"]
            }
            assert counts == {**{f"new-{i}": 1 for i in range(20)}, "held-1": 2}, counts
            # a later notification with the same body is a new occurrence of each
            again = c.post(PROM, json=body)
            assert again.json()["summary"]["deduplicated"] == 21, again.text
    finally:
        service.stop()


def test_a_paused_store_under_a_large_webhook_leaves_no_unretrieved_error(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    """PostgreSQL paused (SIGSTOP: a hung host) while a 5,000-alert webhook of new RRs is
    decided: the webhook is answered 5xx at its deadline, and the batch statements its
    alerts gave up on, cancelled, end in StoreUnavailable once the connection's release
    times out. That error was set on each gone caller's future and logged "Future exception
    was never retrieved", once per alert in flight (an outside check: 16 lines)."""
    import os
    import signal

    service = _one_second_deadline(tmp_path, private_postgres)
    body = webhook(*(alert(pod=f"paused-{i}") for i in range(5000)))
    assert private_postgres.pid is not None
    try:
        with service.client() as c:
            assert c.post(PROM, json=webhook(alert(pod="warm-1"))).status_code == 201
            paused = _tree(private_postgres.pid)
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            try:
                answer = c.post(PROM, json=body)
                assert answer.status_code in (503, 504), answer.text
                # the cancelled statements end: the pool waits 5 s (acquireTimeout) to release
                # each connection of a cancelled query, then gives up on it
                time.sleep(7)
            finally:
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
            wait_for(lambda: httpx.get(f"{service.ops_url}/readyz", timeout=10).status_code == 200)
            assert c.post(PROM, json=webhook(alert(pod="warm-2"))).status_code == 201
    finally:
        service.stop()  # (a full collection at exit reports what is left)
    unretrieved = [line for line in service.output().splitlines() if "never retrieved" in line]
    assert unretrieved == [], f"{len(unretrieved)} lines, the first: {unretrieved[0][:600]}"


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    return [pid, *(p for child in _children(pid) for p in _tree(child))]
