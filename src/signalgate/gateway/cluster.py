"""What the Gateway reads from the cluster in Kubernetes mode: which kinds exist (API
discovery), whose controller a resource belongs to (owner chains), and whether it is in
Kubernaut's management scope (the `kubernaut.ai/managed` label).

- **Discovery** lists every served kind with its `apiVersion`, plural and scope, once at
  start and then every `DISCOVERY_REFRESH` seconds, so alert labels can name any kind the
  cluster serves (custom resources included) and `targetResource.apiVersion` is the
  cluster's. A failed refresh keeps the last good answer and is counted; a group answering
  no discovery document (`discovery.py` reads them) is left out, its last kinds kept.
- **Owner chain**: from the signal's resource, follow the controller owner reference up to
  five hops (Pod → ReplicaSet → Deployment, Job → CronJob, Pod → StatefulSet/DaemonSet);
  the fingerprint is that of the top owner, so every pod of a workload opens one RR. A
  missing object stops the walk where it is (a deleted pod's alert is still about that pod).
- **Scope**: the label on the resource decides (`true`/`false`), else the label on its
  namespace, else unmanaged — Kubernaut's rule.

Reads are metadata-only (`PartialObjectMetadata`: no pod specs or secrets cross the wire) and
cached for `kubernetes.metadataTtl` (≤ 30 s), bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signalgate.common.logging import SampledLog
from signalgate.common.tasks import cancel_and_wait
from signalgate.common.ttlcache import TTLCache
from signalgate.gateway.adapters.identity import check_kind, check_name
from signalgate.gateway.adapters.parsing import PayloadError
from signalgate.gateway.discovery import (
    API_VERSION,
    Resource,
    discovery_path,
    preferred_versions,
    resources_of,
)
from signalgate.gateway.kinds import BUILTIN_KINDS, KindInfo, StaticKindCatalog
from signalgate.gateway.scope import Rejection
from signalgate.kube.client import KubeClient, KubeError, KubeNotFound, KubeUnavailable
from signalgate.kube.settings import KubernetesSettings
from signalgate.remediation.model import TargetResource

log = logging.getLogger(__name__)
# refused reads, one line per kind refused (and status) an interval, with a count: with the
# Gateway's reading RBAC revoked, each pod named by a signal wrote a line of its own
refusals_log = SampledLog(log)

MANAGED_LABEL = "kubernaut.ai/managed"
MAX_OWNER_DEPTH = 5
DISCOVERY_REFRESH = 300.0
METADATA_CACHE_SIZE = 10_000
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
PARTIAL_METADATA_LIST = PARTIAL_METADATA.replace(
    "PartialObjectMetadata", "PartialObjectMetadataList"
)


class ScopeUnreadable(KubeError):
    """The `kubernaut.ai/managed` label that decides a signal's scope cannot be read: the
    API server refuses this Gateway's reading of the resource (or its namespace). Its
    RBAC needs granting; until then nothing can be decided about the signal."""


class DiscoveredKinds:
    """A `KindCatalog` from the cluster's API discovery; built-in kinds until the first
    discovery answers."""

    def __init__(self) -> None:
        self._catalog = StaticKindCatalog(BUILTIN_KINDS)
        self._resources: dict[str, Resource] = {}

    def kind_for_label(self, label_key: str) -> str | None:
        return self._catalog.kind_for_label(label_key)

    def lookup(self, kind: str) -> KindInfo | None:
        return self._catalog.lookup(kind)

    @property
    def custom_label_keys(self) -> tuple[str, ...]:
        """None configured: discovery knows every kind the cluster serves."""
        return ()

    def resource(self, kind: str, api_version: str = "") -> Resource | None:
        found = self._resources.get(kind)
        if found is not None and api_version and found.api_version != api_version:
            # the event named another version of the kind; the path takes the named one
            return Resource(kind, api_version, found.plural, found.namespaced)
        return found

    def replace(self, resources: list[tuple[Resource, str]]) -> None:
        """Install a new discovery answer: (resource, singular name) in discovery order."""
        infos = [
            KindInfo(r.kind, r.api_version, r.namespaced, singular) for r, singular in resources
        ]
        self._catalog = StaticKindCatalog(infos)
        by_kind: dict[str, Resource] = {}
        for resource, _ in resources:
            by_kind.setdefault(resource.kind, resource)
        self._resources = by_kind

    def __len__(self) -> int:
        return len(self._resources)


@dataclass(frozen=True)
class Refused:
    """The API server refused this Gateway's reading of an object (403 …): remembered in
    the metadata cache like an answer, for as long, so a refused read is not asked again
    on every signal, and handed to whoever asked, who decides what it means (the owner
    walk stops; the scope check fails closed, `ScopeUnreadable`)."""

    resource: Resource
    error: KubeError

    def unreadable(self, kind: str, namespace: str, name: str) -> ScopeUnreadable:
        """The refusal as the scope check reports it, naming the RBAC to grant."""
        where = f"{namespace}/{name}" if namespace else name
        group = self.resource.api_version.rpartition("/")[0]
        return ScopeUnreadable(
            self.error.status,
            self.error.reason,
            f"the Gateway may not read {kind} {where}, whose {MANAGED_LABEL} label decides "
            f"whether it is managed ({self.error.message}); grant its ServiceAccount get on "
            f"{self.resource.plural} in the API group {group or 'core'}",
        )


class ClusterView:
    """Discovery, owner chains and scope labels from one API server."""

    def __init__(
        self,
        client: KubeClient,
        settings: KubernetesSettings,
        *,
        refresh_every: float = DISCOVERY_REFRESH,
    ) -> None:
        self.client = client
        self.kinds = DiscoveredKinds()
        self._metadata_ttl = settings.metadata_ttl
        # per object path: its metadata, None (not found), or the API server's refusal
        self._metadata: TTLCache[dict[str, Any] | Refused | None] = TTLCache(METADATA_CACHE_SIZE)
        # per Service: the first pod it selects, as `{"name": …}`, or None
        self._service_pods: TTLCache[dict[str, Any] | None] = TTLCache(METADATA_CACHE_SIZE)
        # metrics hooks: (kind, "success" | "failed"), and a failed discovery refresh
        self.on_owner_resolution: Callable[[str, str], None] = lambda kind, outcome: None
        self.on_discovery_error: Callable[[], None] = lambda: None
        # seconds between discovery refreshes (tests make it short; not a setting)
        self._refresh_every = refresh_every
        self._refresher: asyncio.Task[None] | None = None
        # the last discovery's answer by group version, for a group that stops answering
        self._discovered: dict[str, list[tuple[Resource, str]]] = {}

    async def start(self) -> None:
        """First discovery (the Gateway does not start blind), then refresh in the
        background."""
        await self.discover()
        self._refresher = asyncio.create_task(self._refresh(), name="kube-discovery")

    async def close(self) -> None:
        task, self._refresher = self._refresher, None
        await cancel_and_wait(task)

    async def _refresh(self) -> None:
        """Discover again every `refresh_every` seconds, for as long as the Gateway runs. A
        refresh that fails for any reason is logged, counted and tried again at the next
        tick, with the last kinds kept: one exception that escaped here ended the task for
        good, silently, and the Gateway knew no new kind until restarted (an outside check).
        An error that is no `KubeError` is a bug, logged with its traceback."""
        while True:
            await asyncio.sleep(self._refresh_every)
            try:
                await self.discover()
            except KubeError as exc:
                self.on_discovery_error()
                log.warning("API discovery refresh failed", extra={"error": str(exc)})
            except Exception:
                self.on_discovery_error()
                log.exception("API discovery refresh failed unexpectedly; the last kinds kept")

    # --- discovery ------------------------------------------------------------------------

    async def discover(self) -> None:
        """Every served kind, from the core group and each group's preferred version. A
        group version that does not answer (an aggregated API whose backend is down, as
        metrics-server often is; a group removed meanwhile) or answers what is no discovery
        document (`DiscoveryMalformed`) is left out with a warning and counted, as kubectl
        leaves it out, and its kinds from the last discovery are kept: one such group
        stopped the Gateway at start (`scope.source: cluster`), and made every refresh fail
        whole (an outside check). A group whose entry in the group list names no version
        (`GroupList.unreadable`) is left out the same way; one such entry failed the whole
        discovery. The core group and the group list must answer."""
        groups = preferred_versions(await self.client.request("GET", "/apis"))
        versions = ["v1", *groups.versions]
        answers = await asyncio.gather(
            *(self._resources_of(v) for v in versions), return_exceptions=True
        )
        found: dict[str, list[tuple[Resource, str]]] = {}
        for group, why in groups.unreadable:
            # an entry of the group list that names no version: that group alone left out,
            # the kinds it had in the last discovery kept (by its name, when it has one)
            kept_versions = [
                version
                for version in self._discovered
                if group and version.rpartition("/")[0] == group and version not in versions
            ]
            kinds_kept = sum(len(self._discovered[version]) for version in kept_versions)
            log.warning(
                "API discovery: a group in the group list names no version; it is left out "
                "until it does (its kinds of the last discovery kept)",
                extra={"group": group or "(unnamed)", "error": why, "kept": kinds_kept},
            )
            self.on_discovery_error()
            for version in kept_versions:
                found[version] = self._discovered[version]
        for version, answer in zip(versions, answers, strict=True):
            if isinstance(answer, Exception) and version != "v1":
                kept = self._discovered.get(version)
                log.log(
                    logging.WARNING if isinstance(answer, KubeError) else logging.ERROR,
                    "API discovery: a group version did not answer, or answered no discovery "
                    "document; its kinds are left out until it does (those of the last "
                    "discovery kept)",
                    extra={"groupVersion": version, "error": str(answer), "kept": len(kept or ())},
                )
                self.on_discovery_error()
                if kept is not None:
                    found[version] = kept
            elif isinstance(answer, BaseException):
                raise answer
            else:
                found[version] = answer
        self._discovered = found
        self.kinds.replace([item for answer in found.values() for item in answer])

    async def _resources_of(self, group_version: str) -> list[tuple[Resource, str]]:
        # a body that is no JSON (an aggregated API's HTML page with a 200) is the client's
        # `KubeUnavailable` (`NotJSON`): that group left out like one that does not answer
        document = await self.client.request("GET", discovery_path(group_version))
        return resources_of(group_version, document)

    # --- metadata -------------------------------------------------------------------------

    async def metadata(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object's metadata; None if it does not exist, its kind is not served, or the
        API server refuses this Gateway's reading of it (the owner walk stops there)."""
        found = await self._read(kind, namespace, name)
        return None if isinstance(found, Refused) else found

    async def _labels_deciding_scope(
        self, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object's labels, for the scope check; `ScopeUnreadable` when the API server
        refuses reading it, since a label that cannot be read decides nothing: taken as
        absent, a resource opted out (`false`) in a managed namespace had RRs opened for
        it (an outside check, a custom resource kind under deploy/'s RBAC)."""
        found = await self._read(kind, namespace, name)
        if isinstance(found, Refused):
            raise found.unreadable(kind, namespace, name)
        return (found or {}).get("labels")

    async def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | Refused | None:
        """The one read of an object's metadata, cached for `metadataTtl`: its metadata,
        None (not found, or a kind not served), or the API server's refusal (`Refused`)."""
        resource = self.kinds.resource(kind)
        if resource is None:
            return None
        path = resource.path(namespace, name)
        hit, cached = self._metadata.get(path)
        if hit:
            return cached
        found: dict[str, Any] | Refused | None
        try:
            obj = await self.client.request("GET", path, accept=PARTIAL_METADATA)
        except KubeUnavailable:
            raise
        except KubeNotFound:
            found = None
        except KubeError as exc:
            # e.g. RBAC does not let the Gateway read this kind
            refusals_log.log(
                logging.WARNING,
                ("metadata", resource.api_version, resource.plural, exc.status),
                "cannot read metadata",
                {"path": path, "error": str(exc)},
            )
            found = Refused(resource, exc)
        else:
            found = dict(obj.get("metadata") or {})
        self._metadata.put(path, found, self._metadata_ttl)
        return found

    async def existing(
        self, target: TargetResource, others: tuple[TargetResource, ...]
    ) -> TargetResource:
        """The first of `target` and then `others` (the alert's other candidate targets, best
        first) that exists in the cluster, as Kubernaut picks; `target` when none does."""
        if not others:
            return target
        for candidate in (target, *others):
            if await self.metadata(candidate.kind, candidate.namespace, candidate.name):
                return candidate
        return target

    async def top_owner(self, target: TargetResource) -> TargetResource:
        """The top controller owner of `target` (itself when it has none)."""
        try:
            top = await self._walk(target)
        except KubeUnavailable:
            self.on_owner_resolution(target.kind, "failed")
            raise
        self.on_owner_resolution(target.kind, "success")
        return top

    async def _walk(self, target: TargetResource) -> TargetResource:
        current = target
        if target.kind == "Service":
            # a Service is about the workload behind it: its first pod by name, as Kubernaut
            pod = await self._service_pod(target)
            if pod is None:
                return target
            current = pod
        for _ in range(MAX_OWNER_DEPTH):
            meta = await self.metadata(current.kind, current.namespace, current.name)
            if meta is None:
                break
            owner = next(
                (ref for ref in meta.get("ownerReferences") or () if ref.get("controller")),
                None,
            )
            if owner is None:
                break
            found = self._owner(owner, current)
            if found is None:
                break
            current = found
        if current == target and not target.api_version:
            info = self.kinds.lookup(target.kind)
            if info is not None:
                return TargetResource(target.kind, target.name, target.namespace, info.api_version)
        return current

    def _owner(self, owner: dict[str, Any], dependent: TargetResource) -> TargetResource | None:
        """The controller `owner` of `dependent` as a target; None when its kind, name or
        apiVersion is no Kubernetes identifier. The API server does not check those fields
        and anyone who may create a Pod can write them: a name such as
        `../../../api/v1/namespaces/<managed>` read another object's labels for the scope
        check, and became an RR's target. The walk ends at the dependent instead."""
        kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
        api_version = str(owner.get("apiVersion") or "")
        try:
            check_kind(kind, "ownerReferences.kind")
            check_name(name, "ownerReferences.name", kind)
        except PayloadError as exc:
            log.warning(
                "an owner reference that is no Kubernetes object: its dependent is the target",
                extra={"dependent": f"{dependent.namespace}/{dependent.kind}/{dependent.name}",
                       "error": str(exc)},
            )  # fmt: skip
            return None
        info = self.kinds.lookup(kind)
        if dependent.namespace and info is not None and not info.namespaced:
            # a cluster-scoped controller of a namespaced object (a Pod "owned" by a
            # Namespace): the way out of the dependent's namespace, to an RR about a managed
            # object it has no say over. Controllers run in their dependents' namespace.
            log.warning(
                "a cluster-scoped owner of a namespaced object: its dependent is the target",
                extra={"dependent": f"{dependent.namespace}/{dependent.kind}/{dependent.name}",
                       "owner": f"{kind}/{name}"},
            )  # fmt: skip
            return None
        if not API_VERSION.fullmatch(api_version):
            api_version = info.api_version if info else ""
        return TargetResource(
            kind=kind,
            name=name,
            # owners live in their dependent's namespace (or none, a cluster-scoped one's)
            namespace=dependent.namespace if info is None or info.namespaced else "",
            api_version=api_version,
        )

    async def _service_pod(self, service: TargetResource) -> TargetResource | None:
        """The first pod (by name) the Service selects; None without a selector or pods."""
        key = f"{service.namespace}/{service.name}"
        hit, found = self._service_pods.get(key)
        if not hit:
            found = await self._first_selected_pod(service)
            self._service_pods.put(key, found, self._metadata_ttl)
        return (
            None if found is None else TargetResource("Pod", found["name"], service.namespace, "v1")
        )

    async def _first_selected_pod(self, service: TargetResource) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        try:
            svc = await self.client.request(
                "GET", f"/api/v1/namespaces/{service.namespace}/services/{service.name}"
            )
            selector = (svc.get("spec") or {}).get("selector") or {}
            if selector:
                pods = await self.client.request(
                    "GET",
                    f"/api/v1/namespaces/{service.namespace}/pods",
                    params={
                        "labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                    },
                    accept=PARTIAL_METADATA_LIST,
                )
                names = sorted(str(item["metadata"]["name"]) for item in pods.get("items") or ())
                if names:
                    found = {"name": names[0]}
        except KubeUnavailable:
            raise
        except KubeError as exc:
            refusals_log.log(
                logging.WARNING,
                ("service-pods", exc.status),
                "cannot resolve a Service to its pods",
                {"service": f"{service.namespace}/{service.name}", "error": str(exc)},
            )
        return found

    async def check_scope(self, target: TargetResource) -> Rejection | None:
        """None when managed; else the rejection Kubernaut gives, with its kubectl action.
        `ScopeUnreadable` when a label that would decide cannot be read."""
        labels = await self._labels_deciding_scope(target.kind, target.namespace, target.name)
        decided = _managed(labels)
        if decided is None and target.namespace:
            decided = _managed(await self._labels_deciding_scope("Namespace", "", target.namespace))
        if decided:
            return None
        return unmanaged_rejection(target)


def _managed(labels: Any) -> bool | None:
    value = (labels or {}).get(MANAGED_LABEL)
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def unmanaged_rejection(target: TargetResource) -> Rejection:
    """Kubernaut's rejection for a resource outside its scope, word for word in shape."""
    if target.namespace:
        resource = target.key
        action = (
            f"To manage this resource, add the label: kubectl label -n {target.namespace} "
            f"{target.kind.lower()} {target.name} {MANAGED_LABEL}=true"
        )
    else:
        resource = f"{target.kind}:{target.name}"
        action = (
            f"To manage this resource, add the label: kubectl label {target.kind.lower()} "
            f"{target.name} {MANAGED_LABEL}=true"
        )
    return Rejection(
        "unmanaged_resource",
        f"Resource {resource} is not in Kubernaut's management scope",
        resource,
        action,
        summary=f"Signal rejected: resource {resource} is not managed by Kubernaut",
    )
