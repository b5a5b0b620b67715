"""DataStorage's own promise under crashes, driven by direct clients (no Gateway relay).

    python bench/ds_crash.py [--seed 1] [--queue redis|file|tmpfs] [--seconds 60]

Starts a durable PostgreSQL, a Redis (`--queue redis`) and one DataStorage (system binaries,
e2ecov recipes; `tmpfs` puts the file queue on a 768 KiB tmpfs that fills, and needs root to
mount it). Four clients post batches of 1 to 80 events (shared and own correlation ids,
children of earlier events of the batch or of acknowledged ones, a few invalid items, a
few children of parents that never exist, and acknowledged batches sent again), each
recording every event id answered 201 or 202. Meanwhile, at random: kill -9 of DataStorage
(also just after PostgreSQL comes back, mid-replay), SIGTERM, PostgreSQL fast and immediate
restarts and stops of seconds, Redis kill -9, and `replay-dlq` beside the server. It ends
with an outage, DataStorage killed, killed again mid-drain, and `replay-dlq` alone.

Then it checks: every acknowledged event stored exactly once with its fields (but those
whose parent never existed, and their children: in the dead store, listed by
`dead-letters`), every query of a correlation id newest first, `verify-all` valid, a valid
batch never refused, `requeue-dead` counting what it requeued. Exit 1 naming each finding.

PostgreSQL runs with its production durability (`PostgresServer(durable=True)`): the tests'
non-durable cluster (synchronous_commit off) loses its last commits on an immediate
restart, and with them events DataStorage answered 201 — the database's loss, not
DataStorage's (seen: 82 of them in one run).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2ecov.recipes import PostgresServer, RedisServer
from tests.integration.datastorage.dstools import ADMIN_TOKEN, datastorage_process
from tests.support.event_bodies import event_body
from tests.support.services import ServiceProcess

BATCH = "/api/v1/audit/events/batch"
CLI = [sys.executable, "-m", "signalgate.datastorage.cli"]
FIELDS = ("correlation_id", "event_type", "event_data", "parent_event_id", "event_outcome")


class Attack:
    def __init__(self, seed: int, queue: str, work: Path) -> None:
        self.rng = random.Random(seed)
        self.seed, self.queue, self.work = seed, queue, work
        self.acked: dict[str, dict[str, Any]] = {}  # event id -> its body
        self.orphans: set[str] = set()  # acknowledged events whose parent never exists
        self.tainted: set[str] = set()  # those and their descendants: never stored
        self.findings: list[str] = []
        self.stats: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop_clients = threading.Event()
        self.stop_chaos = threading.Event()
        self.pg = PostgresServer(durable=True).start()
        self.redis = RedisServer().start() if queue == "redis" else None
        env = {
            "SIGNALGATE_STORE__DSN": self.pg.create_database("audit"),
            "SIGNALGATE_STORE__AUTOMIGRATE": "true",
            "SIGNALGATE_STORE__TIMEOUT": "3s",
            "SIGNALGATE_DLQ__POLLINTERVAL": "200ms",
            "SIGNALGATE_DLQ__BACKOFF": "0.5s,1s,2s",
            "SIGNALGATE_DLQ__REPLAYBATCH": str(self.rng.choice([50, 500])),
        }
        if self.redis is not None:
            env["SIGNALGATE_DLQ__REDISURL"] = self.redis.url
        else:
            env["SIGNALGATE_DLQ__MAXBYTES"] = str(self.rng.choice([400_000, 3_000_000]))
        if queue == "tmpfs":
            mount = work / "mnt"
            mount.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=768k", "tmpfs", mount], check=True)
            env["SIGNALGATE_DLQ__PATH"] = str(mount / "audit-dlq.jsonl")
        self.ds: ServiceProcess = datastorage_process(work / "ds", env=env).start()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*CLI, *args], env=self.ds.env, capture_output=True, text=True)
        print(f"  {args[0]}: exit {done.returncode}: {done.stdout.strip()[-300:]}", flush=True)
        return done

    def count(self, what: str) -> None:
        with self.lock:
            self.stats[what] += 1

    def client(self, number: int) -> None:
        rng = random.Random(self.seed * 100 + number)
        shared = [f"rr-shared-{self.seed}-{i}" for i in range(5)]
        own = [f"rr-c{number}-{self.seed}-{i}" for i in range(4)]
        mine: dict[str, list[str]] = {}  # correlation id -> this client's acknowledged ids
        sent: list[list[dict[str, Any]]] = []
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.ds.api_url, timeout=10.0, headers=headers) as http:
            while not self.stop_clients.is_set():
                if sent and rng.random() < 0.08:
                    again = rng.choice(sent)
                    refusable = any(body["event_id"] in self.tainted for body in again)
                    self.send_again(http, again, refusable)
                    continue
                batch, invalid, orphan = self.batch(rng, shared, own, mine)
                if self.post(http, batch, refusable=invalid or orphan):
                    sent.append(batch)
                    with self.lock:
                        self.acked.update((body["event_id"], body) for body in batch)
                        if orphan:
                            self.orphans.add(batch[-1]["event_id"])
                        self.tainted.update(
                            body["event_id"]
                            for body in batch
                            if body["event_id"] in self.orphans
                            or body.get("parent_event_id") in self.tainted
                        )
                    for body in batch:
                        mine.setdefault(body["correlation_id"], []).append(body["event_id"])

    def batch(
        self, rng: random.Random, shared: list[str], own: list[str], mine: dict[str, list[str]]
    ) -> tuple[list[dict[str, Any]], bool, bool]:
        size = rng.choice([1, 1, 2, 5, 10, 30, 80])
        batch: list[dict[str, Any]] = []
        for i in range(size):
            correlation_id = rng.choice(shared + own)
            data = {"i": i, "x": rng.random(), "s": "ü" * rng.randint(0, 40)}
            body = event_body(correlation_id, event_data=data)
            if correlation_id in own and rng.random() < 0.3:
                earlier = [b["event_id"] for b in batch if b["correlation_id"] == correlation_id]
                acked = [i for i in mine.get(correlation_id, [])[-5:] if i not in self.tainted]
                if parents := earlier + acked:
                    body["parent_event_id"] = rng.choice(parents)
            batch.append(body)
        invalid = rng.random() < 0.05
        if invalid:
            batch[rng.randrange(size)]["event_outcome"] = "bogus"
        orphan = not invalid and rng.random() < 0.03
        if orphan:  # 400 while the database answers, 202 (then buried) while it is down
            batch[-1].update(correlation_id=own[0], parent_event_id=str(uuid.uuid4()))
        return batch, invalid, orphan

    def post(self, http: httpx.Client, batch: list[dict[str, Any]], refusable: bool) -> bool:
        """Sent until 201 or 202 (True) or a refusal, up to 8 times (a writer's retries)."""
        for _ in range(8):
            try:
                answer = http.post(BATCH, json=batch)
            except httpx.HTTPError as exc:
                self.count(type(exc).__name__)
                time.sleep(0.3)
                continue
            self.count(str(answer.status_code))
            if answer.status_code in (201, 202):
                return True
            if answer.status_code in (400, 409):
                if not refusable:
                    self.findings.append(f"a valid batch refused: {answer.text[:300]}")
                return False
            time.sleep(0.3)
        return False

    def send_again(self, http: httpx.Client, batch: list[dict[str, Any]], refusable: bool) -> None:
        try:
            answer = http.post(BATCH, json=batch)
        except httpx.HTTPError:
            return
        self.count(f"again {answer.status_code}")
        if answer.status_code in (400, 409) and not refusable:
            self.findings.append(f"an acknowledged batch sent again refused: {answer.text[:300]}")

    def restart(self, sig: int = signal.SIGKILL) -> None:
        proc = self.ds.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(60)
            if sig == signal.SIGTERM and proc.returncode != 0:
                self.findings.append(f"DataStorage exited {proc.returncode} on SIGTERM")
        for _ in range(5):
            try:
                self.ds.start(timeout=40)
                return
            except RuntimeError as exc:
                print(f"  restart: {str(exc)[:200]}", flush=True)
                if self.ds.proc is not None and self.ds.proc.poll() is None:
                    return  # running, not ready (the database and the queue both down)
                time.sleep(1)

    def pg_down(self, sig: int = signal.SIGINT) -> None:
        assert self.pg.process is not None
        if self.pg.process.poll() is None:
            self.pg.process.send_signal(sig)
            self.pg.process.wait(30)

    def chaos(self) -> None:
        actions = ["ds_kill", "ds_term", "pg_fast", "pg_immediate", "pg_stop", "ds_kill_replay"]
        actions += ["cli_replay"] + ["redis_kill"] * 2 * (self.redis is not None)
        while not self.stop_chaos.wait(self.rng.uniform(0.5, 3.0)):
            action = self.rng.choice(actions)
            print(time.strftime("%H:%M:%S"), action, flush=True)
            if action == "ds_kill":
                self.restart()
            elif action == "ds_term":
                self.restart(signal.SIGTERM)
            elif action in ("pg_fast", "pg_immediate"):
                self.pg_down(signal.SIGINT if action == "pg_fast" else signal.SIGQUIT)
                self.pg.start()
            elif action in ("pg_stop", "ds_kill_replay", "cli_replay"):
                self.pg_down()
                time.sleep(self.rng.uniform(2, 6))
                self.pg.start()
                if action == "ds_kill_replay":
                    time.sleep(self.rng.uniform(0.05, 0.6))
                    self.restart()
                elif action == "cli_replay":
                    self.cli("replay-dlq")
            elif action == "redis_kill":
                assert self.redis is not None and self.redis.process is not None
                self.redis.process.kill()
                self.redis.process.wait()
                time.sleep(self.rng.uniform(0.1, 2))
                self.redis.start()

    def run(self, seconds: float) -> None:
        clients = [threading.Thread(target=self.client, args=(n,)) for n in range(4)]
        chaos = threading.Thread(target=self.chaos)
        for thread in [*clients, chaos]:
            thread.start()
        time.sleep(seconds)
        self.stop_chaos.set()
        chaos.join()
        # the end: an outage queues the last writes; DataStorage killed, killed again while
        # it drains, and the queue replayed by the command alone
        if self.redis is not None:
            self.redis.start()
        if self.ds.proc is None or self.ds.proc.poll() is not None:
            self.restart()
        self.pg.start()
        self.pg_down()
        time.sleep(3)
        self.stop_clients.set()
        for thread in clients:
            thread.join()
        assert self.ds.proc is not None
        self.ds.proc.kill()
        self.ds.proc.wait()
        self.pg.start()
        print("answers:", dict(self.stats), "acknowledged:", len(self.acked), flush=True)
        for _ in range(self.rng.choice([0, 3])):
            self.ds.start(wait=False)
            time.sleep(self.rng.uniform(6, 12))  # started, and replaying
            assert self.ds.proc is not None
            self.ds.proc.kill()
            self.ds.proc.wait()
            print("  killed while draining", flush=True)
        self.cli("replay-dlq")
        self.restart(signal.SIGTERM)
        # what is left (children waiting out their attempts) replayed or buried by the server
        deadline = time.monotonic() + 120
        while self.depth() and time.monotonic() < deadline:
            time.sleep(0.5)

    def depth(self) -> float:
        metrics = httpx.get(f"{self.ds.ops_url}/metrics", timeout=10).text.splitlines()
        return sum(float(ln.split()[-1]) for ln in metrics if ln.startswith("audit_dlq_depth "))

    def check(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.ds.api_url, timeout=30.0, headers=headers) as http:
            stored = list(self.all_events(http))
            times = Counter(event["event_id"] for event in stored)
            by_id = {event["event_id"]: event for event in stored}
            lost = [i for i in self.acked if i not in by_id]
            twice = [i for i, n in times.items() if n > 1]
            changed = [
                (i, key)
                for i, body in self.acked.items()
                if i in by_id
                for key in FIELDS
                if by_id[i].get(key) != body.get(key)
            ]
            for correlation_id in {body["correlation_id"] for body in self.acked.values()}:
                page = http.get(
                    "/api/v1/audit/events", params={"correlation_id": correlation_id, "limit": 1000}
                ).json()
                stamps = [event["event_timestamp"] for event in page["data"]]
                if stamps != sorted(stamps, reverse=True):
                    self.findings.append(f"the query of {correlation_id} is out of order")
        dead = [
            line for line in self.cli("dead-letters").stdout.splitlines() if '"event_id"' in line
        ]
        # the orphans and their descendants, each in the dead store (once per letter: a
        # retry of a batch queued while the first try's answer was lost is a second one)
        dead_ids = {json.loads(line)["event_id"] for line in dead}
        if set(lost) - dead_ids:
            self.findings.append(f"{len(set(lost) - dead_ids)} acknowledged events lost")
        if set(lost) - self.tainted:
            self.findings.append(f"{len(set(lost) - self.tainted)} lost, parents existing")
        if dead_ids - set(lost):
            self.findings.append(f"{len(dead_ids - set(lost))} dead letters of stored events")
        if twice:
            self.findings.append(f"{len(twice)} events stored twice, e.g. {twice[:3]}")
        if changed:
            self.findings.append(f"{len(changed)} fields changed, e.g. {changed[:3]}")
        if self.cli("verify-all").returncode != 0:
            self.findings.append("verify-all: a chain does not verify")
        if dead and f"requeued {len(dead)} dead" not in self.cli("requeue-dead").stdout:
            self.findings.append("requeue-dead did not requeue every dead letter")
        print(f"stored {len(stored)}, acknowledged and not stored {len(lost)} (dead)", flush=True)

    @staticmethod
    def all_events(http: httpx.Client) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = http.get("/api/v1/audit/events", params={"limit": 1000, "offset": offset})
            yield from page.json()["data"]
            if not page.json()["pagination"]["has_more"]:
                return
            offset += 1000

    def close(self) -> None:
        self.ds.stop()
        self.pg.cleanup()
        if self.redis is not None:
            self.redis.cleanup()
        if self.queue == "tmpfs":
            subprocess.run(["umount", self.work / "mnt"])


@contextmanager
def directory() -> Iterator[Path]:
    """A work directory, removed unless the run failed (DataStorage's log is in `ds/`)."""
    path = Path(tempfile.mkdtemp(prefix="ds-crash-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queue", choices=["redis", "file", "tmpfs"], default="redis")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with directory() as work:
        attack = Attack(args.seed, args.queue, work)
        try:
            attack.run(args.seconds)
            attack.check()
        finally:
            attack.close()
        if attack.findings:  # the directory is kept
            raise SystemExit(report(attack, work))
    return report(attack, work)


def report(attack: Attack, work: Path) -> int:
    if attack.findings:
        print(f"kept: {work}")
    for finding in attack.findings:
        print("FINDING:", finding)
    print("no findings" if not attack.findings else f"{len(attack.findings)} finding(s)")
    return 1 if attack.findings else 0


if __name__ == "__main__":
    sys.exit(main())
