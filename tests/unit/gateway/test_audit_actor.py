"""The actor of a signal's audit events: the external source, or — when the cluster
confirmed who sent it (Kubernetes mode) — that ServiceAccount, as Kubernaut records it."""

from __future__ import annotations

import contextvars
from datetime import UTC, datetime

import orjson

from signalgate.common.auth import authenticated_user_var
from signalgate.gateway import audit_events as ev
from signalgate.gateway.adapters.alertmanager import parse_webhook
from signalgate.gateway.adapters.parsing import Freshness
from signalgate.gateway.signal import Signal
from tests.support.services import alert, rfc3339, webhook

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def a_signal() -> Signal:
    (item,) = parse_webhook(orjson.dumps(webhook(alert(starts_at=rfc3339(NOW)))), NOW, Freshness())
    assert isinstance(item, Signal)
    return item


def test_without_a_confirmed_identity_the_actor_is_the_source() -> None:
    event = ev.build_event(ev.SIGNAL_RECEIVED, a_signal(), NOW, correlation_id="rr-1")
    assert (event["actor_type"], event["actor_id"]) == ("external", "prometheus")


def test_a_service_account_the_cluster_confirmed_is_the_actor() -> None:
    user = "system:serviceaccount:monitoring:alertmanager-main"

    def as_that_caller() -> dict[str, object]:
        authenticated_user_var.set(user)
        return ev.build_event(ev.SIGNAL_DEDUPLICATED, a_signal(), NOW, correlation_id="rr-1")

    event = contextvars.copy_context().run(as_that_caller)
    assert (event["actor_type"], event["actor_id"]) == ("authenticated-service", user)
