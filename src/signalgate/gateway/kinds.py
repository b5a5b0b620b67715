"""Which resource kinds exist: their label key, `apiVersion` and whether they are namespaced.

The alert adapter needs this to turn a label such as `deployment="web"` into a target, to
fill `targetResource.apiVersion`, and to decide whether a target without a namespace label
lives in `default` or in none. Kubernaut asks the cluster's API discovery; standalone, we use
the kinds every Kubernetes API server serves (`BUILTIN_KINDS`) plus the custom resource kinds
named in the `kinds.extra` setting. `KindCatalog` is the seam: a discovery-backed catalog
can be passed to the adapters instead of `StaticKindCatalog` without touching them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import Field

from signalgate.common.config import Section, matching


@dataclass(frozen=True)
class KindInfo:
    """One kind as API discovery describes it."""

    kind: str
    api_version: str  # "v1", "apps/v1", "route.openshift.io/v1"
    namespaced: bool
    singular: str = ""  # the label key that names it; empty → the lowercase kind

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Discovery's singular name and the lowercase kind (Kubernaut maps both)."""
        singular = self.singular or self.kind.lower()
        lower = self.kind.lower()
        return (singular,) if singular == lower else (singular, lower)


class KindCatalog(Protocol):
    """What the adapters ask about kinds; implemented statically here, by discovery later."""

    def kind_for_label(self, label_key: str) -> str | None:
        """The kind a label key names (`deployment` → `Deployment`), or None."""
        ...

    def lookup(self, kind: str) -> KindInfo | None:
        """The kind's description, or None for a kind the catalog does not know."""
        ...

    @property
    def custom_label_keys(self) -> tuple[str, ...]:
        """The label keys of the configured custom kinds (`kinds.extra`), for messages."""
        ...


def _kinds(api_version: str, namespaced: bool, *names: str) -> tuple[KindInfo, ...]:
    return tuple(KindInfo(name, api_version, namespaced) for name in names)


# What a Kubernetes 1.31 API server serves without extensions, in discovery order (the core
# group first): when two groups serve one kind (Event), the first one listed wins, as in
# Kubernaut's registry. Subresources and review-only kinds that never name a live object are
# included anyway: an alert label that happens to match them matches them in Kubernaut too.
BUILTIN_KINDS: tuple[KindInfo, ...] = (
    *_kinds(
        "v1",
        True,
        "Binding",
        "ConfigMap",
        "Endpoints",
        "Event",
        "LimitRange",
        "PersistentVolumeClaim",
        "Pod",
        "PodTemplate",
        "ReplicationController",
        "ResourceQuota",
        "Secret",
        "ServiceAccount",
        "Service",
    ),
    *_kinds("v1", False, "ComponentStatus", "Namespace", "Node", "PersistentVolume"),
    *_kinds(
        "admissionregistration.k8s.io/v1",
        False,
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    ),
    *_kinds("apiextensions.k8s.io/v1", False, "CustomResourceDefinition"),
    *_kinds("apiregistration.k8s.io/v1", False, "APIService"),
    *_kinds(
        "apps/v1",
        True,
        "ControllerRevision",
        "DaemonSet",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
    ),
    *_kinds("authentication.k8s.io/v1", False, "SelfSubjectReview", "TokenReview"),
    *_kinds("authorization.k8s.io/v1", True, "LocalSubjectAccessReview"),
    *_kinds(
        "authorization.k8s.io/v1",
        False,
        "SelfSubjectAccessReview",
        "SelfSubjectRulesReview",
        "SubjectAccessReview",
    ),
    *_kinds("autoscaling/v2", True, "HorizontalPodAutoscaler"),
    *_kinds("batch/v1", True, "CronJob", "Job"),
    *_kinds("certificates.k8s.io/v1", False, "CertificateSigningRequest"),
    *_kinds("coordination.k8s.io/v1", True, "Lease"),
    *_kinds("discovery.k8s.io/v1", True, "EndpointSlice"),
    *_kinds("events.k8s.io/v1", True, "Event"),
    *_kinds("flowcontrol.apiserver.k8s.io/v1", False, "FlowSchema", "PriorityLevelConfiguration"),
    *_kinds("networking.k8s.io/v1", False, "IngressClass"),
    *_kinds("networking.k8s.io/v1", True, "Ingress", "NetworkPolicy"),
    *_kinds("node.k8s.io/v1", False, "RuntimeClass"),
    *_kinds("policy/v1", True, "PodDisruptionBudget"),
    *_kinds("rbac.authorization.k8s.io/v1", False, "ClusterRole", "ClusterRoleBinding"),
    *_kinds("rbac.authorization.k8s.io/v1", True, "Role", "RoleBinding"),
    *_kinds("scheduling.k8s.io/v1", False, "PriorityClass"),
    *_kinds("storage.k8s.io/v1", False, "CSIDriver", "CSINode", "StorageClass", "VolumeAttachment"),
    *_kinds("storage.k8s.io/v1", True, "CSIStorageCapacity"),
)


class StaticKindCatalog:
    """A fixed list of kinds; the first kind listed for a label key or kind name wins."""

    def __init__(self, kinds: Iterable[KindInfo], custom: Iterable[KindInfo] = ()) -> None:
        self.custom_label_keys = tuple(key for info in custom for key in info.label_keys)
        self._by_kind: dict[str, KindInfo] = {}
        self._by_label: dict[str, str] = {}
        for info in kinds:
            self._by_kind.setdefault(info.kind, info)
            for key in info.label_keys:
                self._by_label.setdefault(key, info.kind)

    @classmethod
    def with_extra(cls, extra: Iterable[KindInfo] = ()) -> StaticKindCatalog:
        """The built-in kinds, then the configured custom resource kinds (`kinds.extra`)."""
        extra = tuple(extra)
        return cls((*BUILTIN_KINDS, *extra), custom=extra)

    def kind_for_label(self, label_key: str) -> str | None:
        return self._by_label.get(label_key)

    def lookup(self, kind: str) -> KindInfo | None:
        return self._by_kind.get(kind)


DEFAULT_CATALOG = StaticKindCatalog.with_extra()


class ExtraKind(Section):
    """A custom resource kind alerts may name (`kinds.extra` items)."""

    kind: Annotated[
        str,
        matching(
            r"[A-Za-z][A-Za-z0-9]{0,62}",
            "a kind (a letter, then letters or digits, at most 63; e.g. BuildConfig)",
        ),
    ]
    api_version: Annotated[
        str,
        matching(
            r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9a-z]+",
            "an apiVersion (group/version or version; e.g. build.openshift.io/v1)",
        ),
    ]
    namespaced: bool = True
    # the label key that names it; empty → the lowercase kind
    singular: Annotated[
        str,
        matching(
            r"([a-z0-9]([-a-z0-9]*[a-z0-9])?)?",
            "a label key (lowercase letters, digits and '-'; e.g. buildconfig) or empty",
        ),
    ] = ""


class KindSettings(Section):
    """`kinds.extra`: custom resource kinds beyond Kubernetes' own (Kubernaut discovers them;
    standalone they are listed here), e.g. `{kind: BuildConfig, apiVersion:
    build.openshift.io/v1}`."""

    extra: list[ExtraKind] = Field(default_factory=list)

    def catalog(self) -> StaticKindCatalog:
        return StaticKindCatalog.with_extra(
            KindInfo(item.kind, item.api_version, item.namespaced, item.singular)
            for item in self.extra
        )


def is_namespaced(catalog: KindCatalog, kind: str) -> bool:
    """Unknown kinds count as namespaced, as in Kubernaut: a namespace is never dropped on a
    guess."""
    info = catalog.lookup(kind)
    return True if info is None else info.namespaced
