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
`denyCacheTtl`; the cache holds at most `cacheSize` entries. Concurrent checks of one token
share one review. When the API server cannot answer, the caller gets 503 with Retry-After:
never an open door.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from signalgate.common.auth import Principal, authenticated_user_var, bearer_token, unauthorized
from signalgate.common.problems import Problem, service_unavailable
from signalgate.common.ttlcache import TTLCache
from signalgate.kube.client import KubeClient, KubeError, KubeUnavailable
from signalgate.kube.settings import KubernetesSettings

log = logging.getLogger(__name__)

RETRY_AFTER = 5
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
        self._users: TTLCache[_User | None] = TTLCache(settings.cache_size)
        self._decisions: TTLCache[bool] = TTLCache(settings.cache_size)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}

    async def authorize(self, authorization: str | None, scope: str) -> Principal:
        token = bearer_token(authorization)
        key = hashlib.sha256(token.encode()).digest()
        user = await self._shared(self._users, key, lambda: self._review(token))
        if user is None:
            raise unauthorized("the token was not accepted by the cluster")
        needed = self._access_for(scope)
        allowed = await self._shared(
            self._decisions, (key, scope), lambda: self._decide(user, scope)
        )
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

    async def _shared(
        self, cache: TTLCache[T], key: Hashable, compute: Callable[[], Awaitable[T]]
    ) -> T:
        """The cached answer, else one review per key at a time: concurrent requests with
        one token share it. A yes is kept `cacheTtl`, a no `denyCacheTtl`."""
        hit, cached = cache.get(key)
        if hit:
            return cast(T, cached)
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
        ttl = self.settings.cache_ttl if value else self.settings.deny_cache_ttl
        cache.put(key, value, ttl)
        return value

    async def _review(self, token: str) -> _User | None:
        spec: dict[str, Any] = {"token": token}
        if self.settings.audiences:
            spec["audiences"] = list(self.settings.audiences)
        answer = await self._ask(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
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
            answer = await self._ask(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                },
            )
            if not (answer.get("status") or {}).get("allowed"):
                return False
        return True

    async def _ask(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.client.request("POST", path, body=body)
        except KubeUnavailable as exc:
            log.warning("Kubernetes API unavailable for auth", extra={"error": str(exc)})
            raise service_unavailable(
                "cannot check the token: the Kubernetes API server is unreachable; retry later",
                RETRY_AFTER,
            ) from exc
        except KubeError as exc:
            # e.g. the Gateway's own ServiceAccount may not create reviews: a deployment bug
            log.error("Kubernetes refused an auth review", extra={"error": str(exc)})
            raise service_unavailable(
                "cannot check the token: the Kubernetes API server refused the review "
                "(does this service's ServiceAccount have the system:auth-delegator role?)",
                RETRY_AFTER,
            ) from exc


def _resource(access: Access) -> str:
    resource = f"{access.resource}/{access.subresource}" if access.subresource else access.resource
    return f"{resource}/{access.name}" if access.name else resource
