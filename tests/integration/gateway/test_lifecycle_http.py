"""The RR lifecycle through HTTP only, on each store backend (docs/gateway.md, The decision)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.services import ServiceProcess, alert, webhook

PROM = "/api/v1/signals/prometheus"
RRS = "/api/v1/remediation-requests"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}


def fire(c: httpx.Client, pod: str, status: str = "firing") -> httpx.Response:
    return c.post(PROM, json=webhook(alert(pod=pod, status=status), status=status))


def patch(c: httpx.Client, name: str, **status: object) -> httpx.Response:
    return c.patch(f"{RRS}/{name}/status", json=status, headers=MERGE_PATCH)


def signal_resolved(rr: dict[str, Any]) -> str | None:
    """The status of the RR's SignalResolved condition, if it has one."""
    for condition in rr["status"].get("conditions", []):
        if condition["type"] == "SignalResolved":
            return str(condition["status"])
    return None


def test_create_duplicate_complete_then_new(any_gateway: ServiceProcess) -> None:
    with any_gateway.client() as c:
        first = fire(c, "life-1")
        assert first.status_code == 201
        name = first.json()["remediationRequestName"]
        dup = fire(c, "life-1")
        assert dup.status_code == 202 and dup.json()["metadata"]["count"] == 2
        rr = c.get(f"{RRS}/{name}").json()
        assert rr["status"]["deduplication"]["occurrenceCount"] == 2

        done = patch(
            c,
            name,
            overallPhase="Completed",
            completionStatus={"outcome": "Remediated"},
            message="ok",
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"]["overallPhase"] == "Completed"
        assert done.json()["status"]["deduplication"]["occurrenceCount"] == 2

        again = fire(c, "life-1")
        assert again.status_code == 201
        assert again.json()["remediationRequestName"] != name
        fingerprint = again.json()["fingerprint"]
        listed = c.get(RRS, params={"fingerprint": fingerprint}).json()["items"]
        assert [item["metadata"]["name"] for item in listed] == [
            again.json()["remediationRequestName"],
            name,
        ]
        active = c.get(RRS, params={"fingerprint": fingerprint, "active": "true"}).json()
        assert len(active["items"]) == 1


def test_every_active_phase_deduplicates_every_terminal_one_reopens(
    any_gateway: ServiceProcess,
) -> None:
    with any_gateway.client() as c:
        name = fire(c, "phase-1").json()["remediationRequestName"]
        for phase in ("Processing", "Analyzing", "AwaitingApproval", "Verifying", "Blocked"):
            assert patch(c, name, overallPhase=phase).status_code == 200
            assert fire(c, "phase-1").status_code == 202, phase
        for phase in ("Failed", "Cancelled", "TimedOut", "Skipped"):
            assert patch(c, name, overallPhase=phase).status_code == 200
            reopened = fire(c, "phase-1")
            assert reopened.status_code == 201, phase
            name = reopened.json()["remediationRequestName"]


def test_manual_review_and_cooldown_suppress(any_gateway: ServiceProcess) -> None:
    with any_gateway.client() as c:
        name = fire(c, "review-1").json()["remediationRequestName"]
        patch(c, name, overallPhase="Failed", completionStatus={"outcome": "ManualReviewRequired"})
        suppressed = fire(c, "review-1")
        assert suppressed.status_code == 202
        assert suppressed.json()["remediationRequestName"] == name
        # not "an active remediation": it has ended, and says why it still holds the signal
        assert suppressed.json()["message"] == (
            "duplicate of a finished remediation awaiting manual review"
        )

        cool = fire(c, "cool-1").json()["remediationRequestName"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        patch(c, cool, overallPhase="Completed", routingStatus={"nextAllowedExecution": later})
        held = fire(c, "cool-1")
        assert held.status_code == 202 and held.json()["remediationRequestName"] == cool
        assert held.json()["message"].startswith(
            "duplicate of a finished remediation in its cool-down until "
        )
        # the cool-down ends: clear it and the next signal opens a new remediation
        patch(c, cool, routingStatus={"nextAllowedExecution": None})
        assert fire(c, "cool-1").status_code == 201


def test_resolved_notices(any_gateway: ServiceProcess) -> None:
    with any_gateway.client() as c:
        nothing = fire(c, "res-1", status="resolved")
        assert nothing.status_code == 200 and nothing.json()["status"] == "ignored"
        assert c.get(RRS).json()["items"] == []

        name = fire(c, "res-1").json()["remediationRequestName"]
        resolved = fire(c, "res-1", status="resolved")
        assert resolved.status_code == 202 and resolved.json()["status"] == "resolved"
        rr = c.get(f"{RRS}/{name}").json()
        assert signal_resolved(rr) == "True"
        assert rr["status"]["deduplication"]["occurrenceCount"] == 1

        back = fire(c, "res-1")
        assert back.status_code == 202
        assert signal_resolved(c.get(f"{RRS}/{name}").json()) == "False"

        patch(c, name, overallPhase="Completed")
        late = fire(c, "res-1", status="resolved")
        assert late.status_code == 200 and late.json()["status"] == "ignored"
        assert len(c.get(RRS).json()["items"]) == 1


def test_status_patch_rules(any_gateway: ServiceProcess) -> None:
    with any_gateway.client() as c:
        old = fire(c, "patch-1").json()["remediationRequestName"]
        patch(c, old, overallPhase="Completed")
        new = fire(c, "patch-1").json()["remediationRequestName"]
        conflict = patch(c, old, overallPhase="Processing")
        assert conflict.status_code == 409
        assert conflict.json()["type"] == "https://kubernaut.ai/problems/conflict"

        for body, field in (
            ({"deduplication": {"occurrenceCount": 9}}, "deduplication"),
            ({"spec": {}}, "spec"),
            ({"overallPhase": 5}, "overallPhase"),
            ({"overallPhase": "Done"}, "overallPhase"),
            ({"outcome": "Remediated"}, "outcome"),
            ({"completionStatus": {"outcome": "Fixed"}}, "completionStatus.outcome"),
            ({"completionStatus": {"failurePhase": "Approval"}}, "completionStatus.failurePhase"),
            ({"routingStatus": {"nextAllowedExecution": "soon"}}, "nextAllowedExecution"),
            ({"routingStatus": "soon"}, "routingStatus"),
            ({"conditions": []}, "conditions"),
        ):
            bad = c.patch(f"{RRS}/{new}/status", json=body)
            assert bad.status_code == 400 and field in bad.json()["detail"], bad.text
        assert patch(c, "rr-missing", overallPhase="Completed").status_code == 404
        missing = c.get(f"{RRS}/rr-missing")  # the detail was the bare name
        assert missing.status_code == 404
        assert missing.json()["detail"] == "RemediationRequest 'rr-missing' not found"
        wrong_type = c.patch(
            f"{RRS}/{new}/status", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415

        # an unknown phase is refused and names the allowed values; the RR stays as it was
        done = patch(c, new, overallPhase="Done")
        assert "Completed" in done.json()["detail"] and "Pending" in done.json()["detail"]
        assert c.get(f"{RRS}/{new}").json()["status"]["overallPhase"] == "Pending"

        cleared = patch(c, new, message="working", completionStatus={"outcome": "Inconclusive"})
        assert cleared.json()["status"]["message"] == "working"
        cleared = patch(c, new, message=None)
        assert "message" not in cleared.json()["status"]
        assert cleared.json()["status"]["completionStatus"] == {"outcome": "Inconclusive"}
        cleared = patch(c, new, completionStatus=None)
        assert "completionStatus" not in cleared.json()["status"]


def test_list_filters_and_pagination(any_gateway: ServiceProcess) -> None:
    with any_gateway.client() as c:
        names = [fire(c, f"page-{i}").json()["remediationRequestName"] for i in range(7)]
        c.post(PROM, json=webhook(alert(pod="other-ns", namespace="staging")))
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", "namespace": "prod"} | ({"cursor": cursor} if cursor else {})
            page = c.get(RRS, params=params).json()
            seen += [item["metadata"]["name"] for item in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == list(reversed(names))
        staging = c.get(RRS, params={"namespace": "staging"}).json()["items"]
        assert len(staging) == 1
        patch(c, names[0], overallPhase="Executing")
        executing = c.get(RRS, params={"phase": "Executing"}).json()["items"]
        assert [i["metadata"]["name"] for i in executing] == [names[0]]
        assert c.get(RRS, params={"active": "false"}).json()["items"] == []
        for params, field in (
            ({"limit": "0"}, "limit"),
            ({"limit": "501"}, "limit"),
            ({"active": "yes"}, "active"),
            ({"cursor": "!!!"}, "cursor"),
            ({"fingerprint": "abc"}, "fingerprint"),
            ({"colour": "red"}, "colour"),
        ):
            bad = c.get(RRS, params=params)
            assert bad.status_code == 400 and field in bad.json()["detail"], (params, bad.text)
