"""With Kubernaut's own CRD installed (tests/fixtures/kubernaut), the Gateway's RRs are
accepted, and status written the way Kubernaut's controllers write it is read correctly."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from e2ecov.kubeapi import KubeAPIServer
from signalgate.kube.client import KubeClient
from signalgate.kube.config import config_from_dsn
from signalgate.remediation.kubernetes import KubernetesStore
from signalgate.remediation.store import ListQuery, StoreUnavailable
from tests.conftest import REPO, kube_testenv_bin
from tests.support.kube import kube_gateway
from tests.support.services import ServiceProcess, alert, webhook

KUBERNAUT_CRD = REPO / "tests" / "fixtures" / "kubernaut" / "kubernaut.ai_remediationrequests.yaml"
PROM = "/api/v1/signals/prometheus"
NAMESPACE = "kubernaut-system"


@pytest.fixture(scope="module")
def kubernaut_apiserver() -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[KUBERNAUT_CRD]).start()
    try:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def gateway(
    kubernaut_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with kube_gateway(
        kubernaut_apiserver,
        NAMESPACE,
        tmp_path_factory.mktemp("gw"),
        auth="static",
        env={"SIGNALGATE_SCOPE__SOURCE": "settings"},
    ).start() as service:
        yield service


def rr_path(name: str = "") -> str:
    base = f"/apis/kubernaut.ai/v1alpha1/namespaces/{NAMESPACE}/remediationrequests"
    return f"{base}/{name}" if name else base


def as_a_controller(server: KubeAPIServer, name: str, **status: Any) -> dict[str, Any]:
    """Write status the way Kubernaut's orchestrator does: the whole object, its
    resourceVersion, Kubernaut's own status fields beside ours."""
    code, obj = server.request("GET", rr_path(name))
    assert code == 200, obj
    obj.setdefault("status", {}).update(status)
    code, written = server.request("PUT", rr_path(name) + "/status", obj)
    assert code == 200, written
    return written


def test_the_gateways_rr_is_accepted_by_kubernauts_crd(
    gateway: ServiceProcess, kubernaut_apiserver: KubeAPIServer
) -> None:
    with gateway.client() as c:
        created = c.post(PROM, json=webhook(alert(pod="crd-1", cluster="eu-1")))
        assert created.status_code == 201, created.text
        name = created.json()["remediationRequestName"]
        assert c.post(PROM, json=webhook(alert(pod="crd-1", cluster="eu-1"))).status_code == 202
        resolved = c.post(
            PROM,
            json=webhook(alert(pod="crd-1", cluster="eu-1", status="resolved"), status="resolved"),
        )
        assert resolved.status_code == 202
    code, stored = kubernaut_apiserver.request("GET", rr_path(name))
    assert code == 200
    assert stored["spec"]["signalFingerprint"] == created.json()["fingerprint"]
    assert stored["spec"]["clusterID"] == "eu-1"
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gateway-service"
    assert "kubernaut.ai/created-at" in stored["metadata"]["annotations"]
    status = stored["status"]
    assert "overallPhase" not in status  # Kubernaut's orchestrator sets the first phase
    assert status["deduplication"]["occurrenceCount"] == 2
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"]) == ("SignalResolved", "True")
    # the field selector Kubernaut's CRD declares finds it
    selector = f"?fieldSelector=spec.signalFingerprint%3D{stored['spec']['signalFingerprint']}"
    code, listed = kubernaut_apiserver.request("GET", rr_path() + selector)
    assert code == 200 and [i["metadata"]["name"] for i in listed["items"]] == [name]


def test_a_count_edited_to_the_int32_limit_stays_one_kubernaut_can_read(
    gateway: ServiceProcess, kubernaut_apiserver: KubeAPIServer
) -> None:
    """`occurrenceCount` edited by hand to Kubernaut's int32 limit: the next duplicate
    wrote 2147483648, which the API server stores (it does not check an integer's format)
    and Kubernaut's controllers (an int32 in Go) cannot decode. The count stays at the
    limit; the duplicate is still answered and its time recorded."""
    with gateway.client() as c:
        created = c.post(PROM, json=webhook(alert(pod="count-1")))
        assert created.status_code == 201, created.text
        name = created.json()["remediationRequestName"]
        limit = 2**31 - 1
        as_a_controller(
            kubernaut_apiserver,
            name,
            deduplication={
                "firstSeenAt": "2026-01-01T00:00:00Z",
                "lastSeenAt": "2026-01-01T00:00:00Z",
                "occurrenceCount": limit - 1,
            },
        )
        for _ in range(3):
            answer = c.post(PROM, json=webhook(alert(pod="count-1")))
            assert answer.status_code == 202, answer.text
    code, stored = kubernaut_apiserver.request("GET", rr_path(name))
    assert code == 200
    assert stored["status"]["deduplication"]["occurrenceCount"] == limit
    assert stored["status"]["deduplication"]["lastSeenAt"] > "2026-01-02"


def test_status_written_in_kubernauts_layout_is_read(
    gateway: ServiceProcess, kubernaut_apiserver: KubeAPIServer
) -> None:
    with gateway.client() as c:
        name = c.post(PROM, json=webhook(alert(pod="review-1"))).json()["remediationRequestName"]
        as_a_controller(
            kubernaut_apiserver,
            name,
            overallPhase="Failed",
            completionStatus={
                "outcome": "ManualReviewRequired",
                "requiresManualReview": True,
                "failurePhase": "WorkflowExecution",
            },
            phaseProgress={"processingStartTime": "2026-11-30T10:00:00Z"},
        )
        # a terminal RR awaiting manual review suppresses new ones: the signal is its duplicate
        suppressed = c.post(PROM, json=webhook(alert(pod="review-1")))
        assert suppressed.status_code == 202, suppressed.text
        assert suppressed.json()["remediationRequestName"] == name
        rr = c.get(f"/api/v1/remediation-requests/{name}").json()
        assert rr["status"]["completionStatus"]["outcome"] == "ManualReviewRequired"
        # the controller's own fields survive the Gateway's status write
        assert rr["status"]["completionStatus"]["failurePhase"] == "WorkflowExecution"
        assert rr["status"]["phaseProgress"] == {"processingStartTime": "2026-11-30T10:00:00Z"}

        cool = c.post(PROM, json=webhook(alert(pod="cool-1"))).json()["remediationRequestName"]
        until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        as_a_controller(
            kubernaut_apiserver,
            cool,
            overallPhase="Completed",
            completionStatus={"outcome": "Remediated"},
            routingStatus={"nextAllowedExecution": until, "consecutiveFailureCount": 1},
        )
        held = c.post(PROM, json=webhook(alert(pod="cool-1")))
        assert held.status_code == 202 and held.json()["remediationRequestName"] == cool
        routing = c.get(f"/api/v1/remediation-requests/{cool}").json()["status"]["routingStatus"]
        assert routing["consecutiveFailureCount"] == 1
        # the same instant (written back with microseconds, as every time signalgate writes)
        assert datetime.fromisoformat(routing["nextAllowedExecution"]) == datetime.fromisoformat(
            until
        )


def test_the_status_patch_writes_kubernauts_layout(
    gateway: ServiceProcess, kubernaut_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    with gateway.client() as c:
        name = c.post(PROM, json=webhook(alert(pod="patch-1"))).json()["remediationRequestName"]
        answer = c.patch(
            f"/api/v1/remediation-requests/{name}/status",
            json={
                "overallPhase": "Completed",
                "completionStatus": {"outcome": "Remediated"},
                "message": "restarted",
            },
        )
        assert answer.status_code == 200, answer.text
    code, stored = kubernaut_apiserver.request("GET", rr_path(name))
    assert code == 200
    assert stored["status"]["overallPhase"] == "Completed"
    assert stored["status"]["completionStatus"] == {"outcome": "Remediated"}
    assert stored["status"]["message"] == "restarted"


def test_rrs_other_writers_dated_their_own_way_are_read(
    gateway: ServiceProcess, kubernaut_apiserver: KubeAPIServer
) -> None:
    """An RR someone annotated by hand (`kubectl annotate`, a free-text annotation), a
    cool-down written in RFC 3339's lowercase form and times past Python's range in UTC,
    which the API server accepts as date-times: all are read. One unreadable RR broke the
    watch for good (its relist raised too, and the watch task ended while /readyz stayed
    200), every RR list and that RR's GET were a 500, and every signal of its fingerprint
    too (an outside check)."""
    with gateway.client() as c:
        name = c.post(PROM, json=webhook(alert(pod="hand-1"))).json()["remediationRequestName"]
        code, annotated = kubernaut_apiserver.request(
            "PATCH",
            rr_path(name),
            {"metadata": {"annotations": {"kubernaut.ai/created-at": "yesterday"}}},
            content_type="application/merge-patch+json",
        )
        assert code == 200, annotated
        until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dt%H:%M:%Sz")
        as_a_controller(
            kubernaut_apiserver,
            name,
            overallPhase="Completed",
            completionStatus={"outcome": "Remediated"},
            routingStatus={"nextAllowedExecution": until},
            # instants the API server takes that are past Python's range in UTC
            deduplication={
                "firstSeenAt": "0001-01-01T00:00:00+01:00",
                "lastSeenAt": "9999-12-31T23:59:59-01:00",
                "occurrenceCount": 1,
            },
        )
        listed = c.get("/api/v1/remediation-requests")
        assert listed.status_code == 200, listed.text
        assert name in {rr["metadata"]["name"] for rr in listed.json()["items"]}
        got = c.get(f"/api/v1/remediation-requests/{name}")
        assert got.status_code == 200, got.text
        # the cool-down holds: the next signal is its duplicate
        held = c.post(PROM, json=webhook(alert(pod="hand-1")))
        assert held.status_code == 202, held.text
        assert held.json()["remediationRequestName"] == name
    assert "RR watch broke" not in gateway.output()


def test_a_crd_without_selectable_fields_still_opens_the_next_rr(tmp_path: Path) -> None:
    """Kubernaut's CRD as an API server before 1.31 keeps it (it drops `selectableFields`,
    as older CRDs of Kubernaut's lack them): RRs of a fingerprint cannot be selected by
    `spec.signalFingerprint`. The next RR after one ended, and every later duplicate, are
    decided all the same (the namespace listed and filtered, as Kubernaut falls back); the
    signal after a completed RR was a 500 for good (an outside check)."""
    documents = [d for d in yaml.safe_load_all(KUBERNAUT_CRD.read_text()) if d]
    for document in documents:
        for version in document["spec"]["versions"]:
            version.pop("selectableFields", None)
    crd = tmp_path / "crd-without-selectable-fields.yaml"
    crd.write_text(yaml.safe_dump_all(documents))
    server = KubeAPIServer(bin_dir=kube_testenv_bin(), crds=[crd]).start()
    try:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        with kube_gateway(
            server,
            NAMESPACE,
            tmp_path / "gw",
            auth="static",
            env={"SIGNALGATE_SCOPE__SOURCE": "settings"},
        ).start() as gw:
            with gw.client() as c:
                first = c.post(PROM, json=webhook(alert(pod="again-1")))
                assert first.status_code == 201, first.text
                name = first.json()["remediationRequestName"]
                as_a_controller(server, name, overallPhase="Completed")
                second = c.post(PROM, json=webhook(alert(pod="again-1")))
                assert second.status_code == 201, second.text
                assert second.json()["remediationRequestName"] != name
                third = c.post(PROM, json=webhook(alert(pod="again-1")))
                assert third.status_code == 202, third.text
                fingerprint = first.json()["fingerprint"]
                listed = c.get("/api/v1/remediation-requests", params={"fingerprint": fingerprint})
                assert listed.status_code == 200, listed.text
                assert len(listed.json()["items"]) == 2
            assert "offers no spec.signalFingerprint field selector" in gw.output()
    finally:
        server.cleanup()


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    resources: [{group: kubernaut.ai, resources: [remediationrequests]}]
  - level: None
"""


def selector_lists(audit_log: Path) -> list[int]:
    """The answers (status codes), in order, to every list of RRs by fingerprint field
    selector the API server audited."""
    codes = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("verb") == "list" and "fieldSelector=spec.signalFingerprint" in unquote(
            event.get("requestURI", "")
        ):
            codes.append(int(event["responseStatus"]["code"]))
    return codes


async def test_the_field_selector_is_used_again_once_the_crd_offers_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kubernaut's CRD without `selectableFields` (as an API server before 1.31 keeps it):
    a fingerprint's RRs are read by listing the namespace. Once the CRD offers the selector
    (Kubernaut's CRD applied again, the API server upgraded), the store finds it and reads
    by it again, saying so once. Before, the fallback held until the Gateway restarted: the
    whole namespace listed for every fresh read, for good (an outside check). The API
    server's audit log shows which lists it was asked."""
    documents = [d for d in yaml.safe_load_all(KUBERNAUT_CRD.read_text()) if d]
    bare = copy.deepcopy(documents)
    for document in bare:
        for version in document["spec"]["versions"]:
            version.pop("selectableFields", None)
    crd = tmp_path / "crd-without-selectable-fields.yaml"
    crd.write_text(yaml.safe_dump_all(bare))
    policy, audit_log = tmp_path / "audit-policy.yaml", tmp_path / "audit.log"
    policy.write_text(AUDIT_POLICY)
    server = KubeAPIServer(
        bin_dir=kube_testenv_bin(),
        crds=[crd],
        extra_args=[f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}"],
    ).start()
    client = KubeClient(config_from_dsn(server.url))
    store = KubernetesStore(client, NAMESPACE, reselect_after=0.5)
    caplog.set_level(logging.INFO, logger="signalgate.remediation.kubernetes")
    fingerprint = "f" * 64
    try:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        await store.open()
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.6
        while loop.time() < until:  # reads over three intervals: each tries the selector once
            assert (await store.list(ListQuery(fingerprint=fingerprint))).items == []
            await asyncio.sleep(0.1)
        refused = selector_lists(audit_log)
        assert refused and set(refused) == {400}, refused
        assert 2 <= len(refused) <= 5, refused  # tried again per interval, not per read
        for document in documents:  # Kubernaut's CRD as it is, with selectableFields
            server.apply(document)
        deadline = loop.time() + 30
        while 200 not in selector_lists(audit_log):
            assert loop.time() < deadline, "the field selector was never used again"
            with contextlib.suppress(StoreUnavailable):  # 429 while its storage reinitialises
                await store.list(ListQuery(fingerprint=fingerprint))
            await asyncio.sleep(0.1)
        answered = selector_lists(audit_log)
        for _ in range(5):  # and kept: every read by the selector, each answered
            await store.list(ListQuery(fingerprint=fingerprint))
        assert selector_lists(audit_log)[len(answered) :] == [200] * 5
        said = [r.getMessage() for r in caplog.records]
        assert sum("offers no spec.signalFingerprint field selector" in m for m in said) == 1
        assert sum("field selector again" in m for m in said) == 1
    finally:
        await store.close()
        await client.close()
        server.cleanup()
