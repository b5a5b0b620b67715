"""`auth.mode: kubernetes`: ServiceAccount tokens, checked by the cluster itself.

A bearer token goes to the API server's TokenReview (who is this?), then a
SubjectAccessReview asks whether that user may do what the route needs, phrased as Kubernaut
phrases it, so Kubernaut's own RBAC works unchanged: sending signals is `create` on
`services/gateway-service` in the controller namespace (Kubernaut's `gateway-signal-source`
ClusterRole), reading audit is `get` and writing it `create` on
`services/data-storage-service`; reading RRs is `get` + `list` on `remediationrequests`,
patching their status `update` on `remediationrequests/status`.

Answers are cached by the token's SHA-256 (never the token): an allowed answer for up to
`cacheTtl` (≤ 60 s, so a revoked binding stops working within a minute), a refusal for
`denyCacheTtl`. Approvals and refusals are kept apart, each at most `cacheSize` entries, so
a flood of invented tokens pushes out only other refusals, never the answer a real sender's
token got. Concurrent checks of one token share one review. When the API server cannot
answer, the caller gets 503 with Retry-After: never an open door.

Tokens the cluster never accepted (in the last `KNOWN_FOR`) are reviewed at most
`UNKNOWN_REVIEWS` at a time; the rest wait their turn (their number is bounded by the
listener's connection bound). A flood of invented tokens thus costs the API server a few
reviews at once, not one per connection, and a token accepted before is reviewed again at
once, past the queue, when its cached answer runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from signalgate.common.auth import Principal, authenticated_user_var, bearer_token, unauthorized
from signalgate.common.logging import SampledLog
from signalgate.common.problems import Problem, service_unavailable
from signalgate.common.ttlcache import TTLCache
from signalgate.kube.client import KubeClient, KubeError, KubeUnauthorized, KubeUnavailable
from signalgate.kube.settings import KubernetesSettings

log = logging.getLogger(__name__)
# each request whose token cannot be checked meets these: one line per kind and interval
sampled = SampledLog(log)

RETRY_AFTER = 5
# TokenReviews in flight at once for tokens not accepted lately (an attacker's guesses)
UNKNOWN_REVIEWS = 8
# how long a token the cluster accepted counts as known (reviewed past the queue)
KNOWN_FOR = 3600.0
T = TypeVar("T")


@dataclass(frozen=True)
class Access:
    """One SubjectAccessReview question: may the user `verb` this resource?"""

    verb: str
    resource: str
    namespace: str
    group: str = ""
    name: str = ""
    subresource: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"verb": self.verb, "resource": self.resource, "namespace": self.namespace}
        for key, value in (
            ("group", self.group),
            ("name", self.name),
            ("subresource", self.subresource),
        ):
            if value:
                out[key] = value
        return out


def gateway_access(namespace: str) -> dict[str, tuple[Access, ...]]:
    """The Gateway's scopes as Kubernaut's RBAC asks them."""
    rrs = {"resource": "remediationrequests", "group": "kubernaut.ai", "namespace": namespace}
    return {
        "signals:write": (Access("create", "services", namespace, name="gateway-service"),),
        "remediations:read": (Access("get", **rrs), Access("list", **rrs)),
        "remediations:write": (Access("update", subresource="status", **rrs),),
    }


def datastorage_access(namespace: str) -> dict[str, tuple[Access, ...]]:
    """DataStorage's scopes as Kubernaut's DataStorage asks them (reads `get`, writes
    `create`, both on its Service)."""
    service = {"resource": "services", "namespace": namespace, "name": "data-storage-service"}
    return {
        "audit:read": (Access("get", **service),),
        "audit:write": (Access("create", **service),),
    }


@dataclass(frozen=True)
class _Review:
    """A review this service asks the API server for: its kind, and where it is created
    (the resource, in the API group, that this service's RBAC must grant `create` on)."""

    kind: str
    group: str
    resource: str

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/v1/{self.resource}"


_TOKEN_REVIEW = _Review("TokenReview", "authentication.k8s.io", "tokenreviews")
_ACCESS_REVIEW = _Review("SubjectAccessReview", "authorization.k8s.io", "subjectaccessreviews")


@dataclass(frozen=True)
class _User:
    name: str
    uid: str
    groups: tuple[str, ...]
    extra: Mapping[str, Sequence[str]]


class KubernetesAuth:
    """`Authenticator` backed by TokenReview and SubjectAccessReview."""

    def __init__(
        self,
        client: KubeClient,
        access: Mapping[str, Sequence[Access]],
        settings: KubernetesSettings,
    ) -> None:
        self.client = client
        self.access = dict(access)
        self.settings = settings
        self._users: TTLCache[_User] = TTLCache(settings.cache_size)
        self._refused: TTLCache[bool] = TTLCache(settings.cache_size)
        self._known: TTLCache[bool] = TTLCache(settings.cache_size)
        self._unknown_reviews = asyncio.Semaphore(UNKNOWN_REVIEWS)
        self._decisions: TTLCache[bool] = TTLCache(settings.cache_size)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        # metrics hook: the API server refused this service a review ("TokenReview" or
        # "SubjectAccessReview"), i.e. its own RBAC lacks `create` on that review kind
        self.on_review_refused: Callable[[str], None] = lambda review: None

    async def authorize(self, authorization: str | None, scope: str) -> Principal:
        token = bearer_token(authorization)
        key = hashlib.sha256(token.encode()).digest()
        user = await self._user(token, key)
        if user is None:
            raise unauthorized("the token was not accepted by the cluster")
        needed = self._access_for(scope)
        allowed = await self._decision(user, key, scope)
        if not allowed:
            asked = " and ".join(f"{a.verb} {_resource(a)}" for a in needed)
            raise Problem(
                403, "forbidden", f"{user.name} may not {asked} in namespace {needed[0].namespace}"
            )
        authenticated_user_var.set(user.name)
        return Principal(user.name, frozenset({scope}))

    def _access_for(self, scope: str) -> Sequence[Access]:
        found = self.access.get(scope)
        if found is None:
            # a narrower scope (audit:write:gateway) asks what its family asks
            family = ":".join(scope.split(":")[:2])
            found = self.access.get(family)
        if not found:
            raise Problem(403, "forbidden", f"no Kubernetes access rule for scope '{scope}'")
        return found

    async def _user(self, token: str, key: bytes) -> _User | None:
        """Who the token is, or None when the cluster refused it (each answer cached)."""
        hit, user = self._users.get(key)
        if hit:
            return user
        if self._refused.get(key)[0]:
            return None
        user = await self._shared(key, lambda: self._review_in_turn(token, key))
        if user is None:
            self._refused.put(key, True, self.settings.deny_cache_ttl)
        else:
            self._users.put(key, user, self.settings.cache_ttl)
            self._known.put(key, True, KNOWN_FOR)
        return user

    async def _review_in_turn(self, token: str, key: bytes) -> _User | None:
        """A token accepted lately is reviewed at once; any other waits for one of the
        `UNKNOWN_REVIEWS` turns."""
        if self._known.get(key)[0]:
            return await self._review(token)
        async with self._unknown_reviews:
            return await self._review(token)

    async def _decision(self, user: _User, key: bytes, scope: str) -> bool:
        hit, allowed = self._decisions.get((key, scope))
        if hit:
            return bool(allowed)
        allowed = await self._shared((key, scope), lambda: self._decide(user, scope))
        ttl = self.settings.cache_ttl if allowed else self.settings.deny_cache_ttl
        self._decisions.put((key, scope), allowed, ttl)
        return allowed

    async def _shared(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """One review per key at a time: concurrent requests with one token share it."""
        pending = self._inflight.get(key)
        if pending is not None:
            return cast(T, await asyncio.shield(pending))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(value)
        finally:
            self._inflight.pop(key, None)
        return value

    async def _review(self, token: str) -> _User | None:
        spec: dict[str, Any] = {"token": token}
        if self.settings.audiences:
            spec["audiences"] = list(self.settings.audiences)
        answer = await self._ask(_TOKEN_REVIEW, spec)
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        return _User(
            str(user.get("username", "")),
            str(user.get("uid", "")),
            tuple(user.get("groups") or ()),
            dict(user.get("extra") or {}),
        )

    async def _decide(self, user: _User, scope: str) -> bool:
        for access in self._access_for(scope):
            spec: dict[str, Any] = {
                "user": user.name,
                "groups": list(user.groups),
                "resourceAttributes": access.to_json(),
            }
            if user.uid:
                spec["uid"] = user.uid
            if user.extra:
                spec["extra"] = {k: list(v) for k, v in user.extra.items()}
            answer = await self._ask(_ACCESS_REVIEW, spec)
            if not (answer.get("status") or {}).get("allowed"):
                return False
        return True

    async def _ask(self, review: _Review, spec: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": f"{review.group}/v1",
            "kind": review.kind,
            "spec": spec,
        }
        try:
            return await self.client.request("POST", review.path, body=body)
        except KubeUnauthorized as exc:
            # this service's own token, not the caller's: the caller cannot fix it
            sampled.log(
                logging.ERROR,
                "own token refused",
                "the Kubernetes API server does not accept this service's own token "
                "(its ServiceAccount deleted, or the token revoked or expired)",
                {"error": str(exc)},
            )
            raise service_unavailable(
                "cannot check the token: the Kubernetes API server does not accept this "
                "service's own token; retry later",
                RETRY_AFTER,
            ) from exc
        except KubeUnavailable as exc:
            sampled.log(
                logging.WARNING,
                "unavailable",
                "Kubernetes API unavailable for auth",
                {"error": str(exc)},
            )
            raise service_unavailable(
                "cannot check the token: the Kubernetes API server is unreachable; retry later",
                RETRY_AFTER,
            ) from exc
        except KubeError as exc:
            # this service's own ServiceAccount may not create the review (a deployment
            # bug): every authenticated request is a 503 until it is granted, so it is
            # counted and logged at ERROR (once per interval and review) naming the grant
            grant = (
                f"grant this service's ServiceAccount create on {review.resource} in the API "
                f"group {review.group} (the ClusterRole system:auth-delegator has it; "
                "deploy/kubernaut/rbac.yaml grants it)"
            )
            self.on_review_refused(review.kind)
            sampled.log(
                logging.ERROR,
                ("review refused", review.kind),
                f"the Kubernetes API server refused this service a {review.kind}: no caller "
                f"can be authenticated until it may; {grant}",
                {"error": str(exc), "review": review.kind},
            )
            raise service_unavailable(
                f"cannot check the token: the Kubernetes API server refused this service "
                f"a {review.kind} ({exc.status} {exc.reason}); {grant}",
                RETRY_AFTER,
            ) from exc


def _resource(access: Access) -> str:
    resource = f"{access.resource}/{access.subresource}" if access.subresource else access.resource
    return f"{resource}/{access.name}" if access.name else resource
