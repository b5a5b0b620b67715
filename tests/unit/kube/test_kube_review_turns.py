"""How `auth.mode: kubernetes` spends the API server's reviews when tokens flood in: a
scripted API server (an object answering `request` as the API server would, no network), so
the number of reviews in flight can be counted and held.

The same behaviour against a real kube-apiserver: tests/integration/kubernetes/test_kube_auth.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from signalgate.common.problems import Problem
from signalgate.kube.auth import UNKNOWN_REVIEWS, KubernetesAuth, gateway_access
from signalgate.kube.client import KubeClient
from signalgate.kube.settings import KubernetesSettings

GOOD = "Bearer the-senders-token"


class ScriptedApiServer:
    """Accepts one token, refuses every other; TokenReviews wait for `release` when held."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.reviews: list[str] = []

    async def request(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/subjectaccessreviews"):
            return {"status": {"allowed": True}}
        token = body["spec"]["token"]
        self.reviews.append(token)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        if token != GOOD.removeprefix("Bearer "):
            return {"status": {"authenticated": False}}
        return {"status": {"authenticated": True, "user": {"username": "alertmanager"}}}


def kube_auth(api: ScriptedApiServer, **settings: Any) -> KubernetesAuth:
    return KubernetesAuth(
        cast(KubeClient, api),
        gateway_access("kubernaut-system"),
        KubernetesSettings(**settings),
    )


async def refused(auth: KubernetesAuth, token: str) -> int:
    with pytest.raises(Problem) as caught:
        await auth.authorize(f"Bearer {token}", "signals:write")
    return caught.value.status


async def test_invented_tokens_are_reviewed_a_few_at_a_time() -> None:
    api = ScriptedApiServer()
    api.release.clear()
    auth = kube_auth(api)
    flood = [asyncio.create_task(refused(auth, f"guess-{n}")) for n in range(5 * UNKNOWN_REVIEWS)]
    await asyncio.sleep(0.05)
    assert api.in_flight == UNKNOWN_REVIEWS  # the rest wait in the Gateway, not the cluster
    api.release.set()
    assert set(await asyncio.gather(*flood)) == {401}
    assert api.most_in_flight == UNKNOWN_REVIEWS
    assert len(api.reviews) == 5 * UNKNOWN_REVIEWS  # each was still asked about, once


async def test_a_token_accepted_before_is_reviewed_again_past_the_queue() -> None:
    api = ScriptedApiServer()
    auth = kube_auth(api, cache_ttl=0.01)
    await auth.authorize(GOOD, "signals:write")
    await asyncio.sleep(0.02)  # its approval ran out
    api.release.clear()
    flood = [asyncio.create_task(refused(auth, f"guess-{n}")) for n in range(3 * UNKNOWN_REVIEWS)]
    await asyncio.sleep(0.05)
    sender = asyncio.create_task(auth.authorize(GOOD, "signals:write"))
    await asyncio.sleep(0.05)
    # every turn is taken by a guess, and the sender's review is at the API server anyway
    assert api.in_flight == UNKNOWN_REVIEWS + 1
    assert api.reviews[-1] == GOOD.removeprefix("Bearer ")
    api.release.set()
    assert (await sender).name == "alertmanager"
    await asyncio.gather(*flood)


async def test_refusals_do_not_push_an_approval_out_of_the_cache() -> None:
    api = ScriptedApiServer()
    auth = kube_auth(api, cache_size=4)
    await auth.authorize(GOOD, "signals:write")
    for n in range(20):
        assert await refused(auth, f"guess-{n}") == 401
    before = len(api.reviews)
    await auth.authorize(GOOD, "signals:write")
    assert len(api.reviews) == before  # answered from the cache
    assert await refused(auth, "guess-19") == 401
    assert len(api.reviews) == before  # the latest refusal is cached too
