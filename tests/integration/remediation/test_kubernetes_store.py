"""Kubernetes-only behaviour of the RR store: what other writers do to the custom resources
(a controller deletes or changes an RR) and how the watch-fed cache follows it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from e2ecov.kubeapi import KubeAPIServer
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.remediation.kubernetes import GENERATION_LABEL, KubernetesStore, rr_name
from signalgate.remediation.model import StatusPatch
from signalgate.remediation.store import Decision, ListQuery, TooLarge
from tests.integration.remediation.rrcases import fingerprint, later, make_rr


@pytest.fixture
async def kube_store(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> AsyncIterator[KubernetesStore]:
    client = KubeClient(config_from_dsn(kube_apiserver.url))
    store = KubernetesStore(client, kube_namespace)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await client.close()


def path(namespace: str, name: str = "") -> str:
    base = f"/apis/kubernaut.ai/v1alpha1/namespaces/{namespace}/remediationrequests"
    return f"{base}/{name}" if name else base


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "never became true"
        await asyncio.sleep(0.05)


def set_phase_by_hand(api: KubeAPIServer, namespace: str, name: str, phase: str) -> None:
    """What a controller (or a person) does behind the store's back: the RR's phase set
    through the status subresource."""
    status, obj = api.request("GET", path(namespace, name))
    assert status == 200, obj
    obj.setdefault("status", {})["overallPhase"] = phase
    status, body = api.request("PUT", path(namespace, name) + "/status", obj)
    assert status == 200, body


async def test_a_deleted_generation_is_never_created_again(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    first = (await kube_store.record_firing(make_rr(), later(0))).rr
    fp = fingerprint("web-1")
    assert first.name == rr_name(fp, 1)
    await kube_store.update_status(first.name, StatusPatch(overall_phase="Completed"))
    status, _ = kube_apiserver.request("DELETE", path(kube_namespace, first.name))
    assert status == 200

    async def gone() -> bool:
        return (
            await kube_store.get(first.name) is None
            and not (await kube_store.list(ListQuery(fingerprint=fp))).items
        )

    await eventually(gone)
    second = await kube_store.record_firing(make_rr(at=later(5)), later(5))
    assert second.decision is Decision.CREATED
    assert second.rr.name == rr_name(fp, 2)


async def test_rrs_written_by_others_are_seen_through_the_watch(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    # another writer (e.g. an older Gateway, or a person) creates an RR with no status
    candidate = make_rr("other-1")
    document = candidate.to_json()
    document["metadata"] = {
        "name": "rr-made-by-hand",
        "namespace": kube_namespace,
        "labels": {"app.kubernetes.io/managed-by": "someone-else", GENERATION_LABEL: "7"},
    }
    document.pop("status")
    status, body = kube_apiserver.request("POST", path(kube_namespace), document)
    assert status == 201, body

    async def listed() -> bool:
        page = await kube_store.list(ListQuery(fingerprint=candidate.fingerprint))
        return [rr.name for rr in page.items] == ["rr-made-by-hand"]

    await eventually(listed)
    # no status yet: it reads as a Pending RR seen once, and the next signal is its duplicate
    dup = await kube_store.record_firing(make_rr("other-1", at=later(1)), later(1))
    assert dup.decision is Decision.DUPLICATE and dup.rr.name == "rr-made-by-hand"
    assert dup.rr.overall_phase == "Pending"

    # a controller finishes it behind the store's back: the next signal opens generation 8
    set_phase_by_hand(kube_apiserver, kube_namespace, "rr-made-by-hand", "Completed")
    fresh = await kube_store.record_firing(make_rr("other-1", at=later(2)), later(2))
    assert fresh.decision is Decision.CREATED
    assert fresh.rr.name == rr_name(candidate.fingerprint, 8)


async def test_a_generation_label_too_long_to_follow_is_read_as_none(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """A hand-edited generation of 63 nines (a valid label value): the next generation's
    label would be 64 characters, which the API server refuses, so every later signal of the
    fingerprint was a 500 (an outside check). It is read as no generation."""
    candidate = make_rr("long-gen")
    document = candidate.to_json()
    document["metadata"] = {
        "name": "rr-long-generation",
        "namespace": kube_namespace,
        "labels": {GENERATION_LABEL: "9" * 63},
    }
    document["status"] = {"overallPhase": "Completed"}
    status, body = kube_apiserver.request("POST", path(kube_namespace), document)
    assert status == 201, body
    set_phase_by_hand(kube_apiserver, kube_namespace, "rr-long-generation", "Completed")

    async def listed() -> bool:
        page = await kube_store.list(ListQuery(fingerprint=candidate.fingerprint))
        return [rr.overall_phase for rr in page.items] == ["Completed"]

    await eventually(listed)
    fresh = await kube_store.record_firing(make_rr("long-gen", at=later(1)), later(1))
    assert fresh.decision is Decision.CREATED
    assert fresh.rr.name == rr_name(candidate.fingerprint, 1)


async def test_a_name_held_by_another_fingerprints_object_is_passed_over(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """Names are worked out from the fingerprint: an object created under the name of a
    fingerprint's generation 1, holding another fingerprint, made every signal of it a 503
    for good (an outside check). That generation is passed over."""
    squatter = make_rr("someone-else")
    wanted = make_rr("wanted")
    document = squatter.to_json()
    document["metadata"] = {"name": rr_name(wanted.fingerprint, 1), "namespace": kube_namespace}
    document.pop("status")
    status, body = kube_apiserver.request("POST", path(kube_namespace), document)
    assert status == 201, body
    first = await kube_store.record_firing(wanted, later(1))
    assert first.decision is Decision.CREATED
    assert first.rr.name == rr_name(wanted.fingerprint, 2)
    again = await kube_store.record_firing(make_rr("wanted", at=later(2)), later(2))
    assert again.decision is Decision.DUPLICATE and again.rr.name == first.rr.name


async def test_the_gateway_counts_but_leaves_the_phase_to_kubernauts_orchestrator(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """Kubernaut's orchestrator starts an RR (start time, timeouts, its audit event) when it
    finds no `overallPhase`: the Gateway counts in `status.deduplication` and never writes
    the phase, however many duplicates come before the orchestrator does."""
    created = (await kube_store.record_firing(make_rr("orch-1"), later(0))).rr
    _, stored = kube_apiserver.request("GET", path(kube_namespace, created.name))
    assert "status" not in stored  # created without one: it reads as Pending, seen once
    assert (created.overall_phase, created.deduplication.occurrence_count) == ("Pending", 1)
    # a consumer that sets Pending itself, through the status API, gets it written
    asked = (await kube_store.record_firing(make_rr("orch-2"), later(0))).rr
    await kube_store.update_status(asked.name, StatusPatch(overall_phase="Pending"))
    _, written = kube_apiserver.request("GET", path(kube_namespace, asked.name))
    assert written["status"]["overallPhase"] == "Pending"
    for n in (1, 2):
        dup = await kube_store.record_firing(make_rr("orch-1", at=later(n)), later(n))
        assert dup.decision is Decision.DUPLICATE and dup.rr.overall_phase == "Pending"
    _, stored = kube_apiserver.request("GET", path(kube_namespace, created.name))
    assert stored["status"]["deduplication"]["occurrenceCount"] == 3
    assert "overallPhase" not in stored["status"]
    # the orchestrator sets the phase: later duplicates keep it
    set_phase_by_hand(kube_apiserver, kube_namespace, created.name, "Processing")

    async def processing() -> bool:
        rr = await kube_store.get(created.name)
        return rr is not None and rr.overall_phase == "Processing"

    await eventually(processing)
    dup = await kube_store.record_firing(make_rr("orch-1", at=later(3)), later(3))
    assert dup.decision is Decision.DUPLICATE
    _, stored = kube_apiserver.request("GET", path(kube_namespace, created.name))
    assert stored["status"]["overallPhase"] == "Processing"
    assert stored["status"]["deduplication"]["occurrenceCount"] == 4


async def test_an_rr_created_while_the_cache_is_relisted_stays_the_one_active_rr(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """After a watch break the cache is relisted. An RR this store created while the LIST
    answer was on its way was dropped from the cache (its generation still counted), and
    the next signal created the next generation beside it: two active RRs for one target (an
    outside check, under API server restarts). Only the order of one create against one LIST
    is arranged here; both go to the real API server."""
    client = kube_store.client
    real_request = client.request
    created: list[str] = []

    async def list_answered_then_create(method: str, path: str, **kwargs: Any) -> Any:
        answer = await real_request(method, path, **kwargs)
        if method == "GET" and not kwargs.get("params") and not created:
            created.append((await kube_store.record_firing(make_rr("relist-1"), later(0))).rr.name)
        return answer

    client.request = list_answered_then_create  # type: ignore[method-assign]
    try:
        await kube_store._relist()  # what the watch does after any break (410, restart, stall)
    finally:
        client.request = real_request  # type: ignore[method-assign]
    fp = fingerprint("relist-1")
    assert created == [rr_name(fp, 1)]
    again = await kube_store.record_firing(make_rr("relist-1", at=later(1)), later(1))
    assert again.decision is Decision.DUPLICATE and again.rr.name == created[0]
    status, listed = kube_apiserver.request("GET", path(kube_namespace))
    assert status == 200
    mine = [i["metadata"]["name"] for i in listed["items"] if i["spec"]["signalFingerprint"] == fp]
    assert mine == created


async def test_a_later_generation_is_decided_on_the_api_servers_answer(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """Only generation 1's name makes two creates collide: a store whose cache misses the
    active RR of a fingerprint it has seen before (the cache lags, or lost it) asks the API
    server before it creates the next generation."""
    first = (await kube_store.record_firing(make_rr("gen-1"), later(0))).rr
    kube_store._forget(first.name)  # the cache lost it; the API server still holds it
    again = await kube_store.record_firing(make_rr("gen-1", at=later(1)), later(1))
    assert again.decision is Decision.DUPLICATE and again.rr.name == first.name


async def test_a_list_is_the_watched_cache_not_a_read_of_the_whole_namespace(
    kube_store: KubernetesStore,
) -> None:
    """Every page read the whole namespace from the API server: 6.7 s and 450 MB per page at
    10,000 RRs (an outside check). While the watch runs, a list is answered from its cache,
    which holds this store's own writes at once; a fingerprint's list stays a (small)
    consistent read."""
    names = [
        (await kube_store.record_firing(make_rr(f"page-{n}", at=later(n)), later(n))).rr.name
        for n in range(5)
    ]
    client = kube_store.client
    real_request = client.request
    asked: list[str] = []

    async def counted(method: str, path: str, **kwargs: Any) -> Any:
        asked.append(f"{method} {path} {kwargs.get('params')}")
        return await real_request(method, path, **kwargs)

    client.request = counted  # type: ignore[method-assign]
    try:
        first = await kube_store.list(ListQuery(limit=3))
        rest = await kube_store.list(ListQuery(limit=3, cursor=first.next_cursor))
        assert asked == []
        assert [rr.name for rr in [*first.items, *rest.items]][:5] == names[::-1]
        one = await kube_store.list(ListQuery(fingerprint=fingerprint("page-2")))
        assert [rr.name for rr in one.items] == [names[2]] and len(asked) == 1
    finally:
        client.request = real_request  # type: ignore[method-assign]


async def test_after_the_api_server_was_unreachable_lists_read_it_not_the_cache(
    kube_store: KubernetesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled connection is no broken watch until its read times out (minutes): the cache
    answered lists 200, stale, meanwhile. A call that found the API server unreachable (a
    readiness probe's ping, every few seconds) makes lists read it for a while."""
    import signalgate.remediation.kubernetes as kubernetes_module
    from signalgate.kube.client import KubeUnavailable
    from signalgate.remediation.store import StoreUnavailable

    client = kube_store.client
    real_request = client.request
    asked: list[str] = []

    async def stalled_once(method: str, path: str, **kwargs: Any) -> Any:
        asked.append(method)
        if len(asked) == 1:
            raise KubeUnavailable(0, "Timeout", "GET: timed out")
        return await real_request(method, path, **kwargs)

    client.request = stalled_once  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreUnavailable):
            await kube_store.ping()
        await kube_store.list(ListQuery())
        assert len(asked) == 2  # the list went to the API server
        monkeypatch.setattr(kubernetes_module, "CACHE_DOUBTED_FOR", 0.0)
        await kube_store.list(ListQuery())
        assert len(asked) == 2  # trusted again: the cache's
    finally:
        client.request = real_request  # type: ignore[method-assign]


async def test_a_read_handled_after_the_watch_saw_a_deletion_does_not_bring_it_back(
    kube_store: KubernetesStore, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    """A GET or list answered before the RR was deleted but handled after the watch's
    DELETED put it back in the cache, listed for good (an outside check, by holding one
    answer back)."""
    rr = (await kube_store.record_firing(make_rr("ghost-1"), later(0))).rr
    status, _ = kube_apiserver.request("DELETE", path(kube_namespace, rr.name))
    assert status == 200

    async def listed() -> set[str]:
        return {item.name for item in (await kube_store.list(ListQuery())).items}

    async def gone() -> bool:
        return rr.name not in await listed()

    await eventually(gone)
    kube_store._remember(rr)  # the late answer: the RR as it was before its deletion
    assert rr.name not in await listed()


@pytest.mark.parametrize(
    ("char", "count", "refusal"),
    [
        # 1.2 MB as the API server writes it (each '<' as \u003c), twice: over its gRPC
        # client's 2 MiB bound on a message to etcd (a 500)
        ("<", 200_000, "larger than max"),
        # 1.6 MB: over etcd's 1.5 MiB bound on a request (a 500 too)
        ("a", 800_000, "request is too large"),
        # 3.2 MB: over the API server's own 3 MiB bound on a request body (413)
        ("a", 1_600_000, "Request entity too large"),
    ],
    ids=["grpc-message", "etcd-request", "apiserver-body"],
)
async def test_an_rr_too_large_for_the_api_server_is_refused_as_too_large_not_unavailable(
    kube_store: KubernetesStore, char: str, count: int, refusal: str
) -> None:
    """The API server refusing an RR for its size is the same on every retry: `TooLarge`
    (the signal's own problem, a `StoreRefused`), naming the RR's size as written there, not
    `StoreUnavailable` (a 503, retried for ever: an outside check's alert of 200,000 '<')."""
    text = char * count
    candidate = make_rr("huge-1", payload=text)
    candidate = replace(candidate, spec={**candidate.spec, "signalAnnotations": {"d": text}})
    with pytest.raises(TooLarge) as refused:
        await kube_store.record_firing(candidate, later(0))
    message = str(refused.value)
    assert refusal in message
    # the text twice, as written there, and the rest of the RR
    shown = re.search(r"is ([0-9,]+) bytes as the Kubernetes API server writes it", message)
    assert shown is not None, message
    size = 2 * count * (6 if char == "<" else 1)
    assert size < int(shown[1].replace(",", "")) < size + 4096
    # nothing was stored: a signal of the same resource with a normal payload is new
    fine = await kube_store.record_firing(make_rr("huge-1"), later(1))
    assert fine.decision is Decision.CREATED
