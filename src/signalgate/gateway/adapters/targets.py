"""Which resource an alert is about, chosen from its labels exactly as Kubernaut chooses.

Every label of the alert (its own labels, not `commonLabels`) whose key names a known kind
(`deployment`, `pod`, `buildconfig` for a configured custom kind, ...) and whose value could
be a resource name is a candidate. Candidates are ordered by tier, then by kind name
(byte order), then by label key so the order never depends on dict order:

- tier 1, controllers: Deployment, StatefulSet, DaemonSet, CronJob, DeploymentConfig;
- tier 2, everything else (ReplicaSet, HorizontalPodAutoscaler, custom kinds, ...);
- tier 3, leaves: Pod and Node — a kube-state-metrics alert about a Deployment carries the
  exporter's `pod` label, and a pod alert carrying its node's name gives Node (`N` < `P`).

Prometheus' scrape labels (`job`, `service`, `instance`, `endpoint`, `container`) and the
`namespace` label never name a target. Standalone, the first candidate is the target; in
Kubernetes mode the caller may walk `candidates` and keep the first that exists, as Kubernaut
does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from signalgate.gateway.kinds import KindCatalog
from signalgate.kube.names import is_dns1123_subdomain

TIER1_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "CronJob", "DeploymentConfig"})
TIER3_KINDS = frozenset({"Pod", "Node"})
RESERVED_LABELS = frozenset({"job", "service", "instance", "endpoint", "container", "namespace"})
# A label value that could be a resource name (Kubernaut's own test, dots excluded) ...
CANDIDATE_VALUE = re.compile(r"[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?")
# ... but for a Node, a DNS-1123 subdomain, dots included: node names are host names
# (`ip-10-0-1-2.ec2.internal` on EKS, FQDNs on premises), and without the dots every node
# alert of such a cluster was rejected while an Event about the same Node opened an RR.
DOTTED_NAME_KINDS = frozenset({"Node"})


@dataclass(frozen=True, order=True)
class Candidate:
    tier: int
    kind: str
    label: str
    name: str


def tier_of(kind: str) -> int:
    if kind in TIER1_KINDS:
        return 1
    if kind in TIER3_KINDS:
        return 3
    return 2


def candidates(labels: Mapping[str, str], catalog: KindCatalog) -> list[Candidate]:
    """Every label naming a possible target, best first."""
    found = [
        Candidate(tier_of(kind), kind, key, value)
        for key, value, kind in _naming_kinds(labels, catalog)
        if could_name(kind, value)
    ]
    found.sort()
    return found


def unusable(labels: Mapping[str, str], catalog: KindCatalog) -> tuple[str, ...]:
    """The labels naming a kind whose value cannot be a resource name (`pod: "Api_1"`), as
    `key='value'`: skipped as candidates, and named when that leaves the alert without a
    target, so its sender learns what to fix."""
    return tuple(
        f"{key}={value[:63]!r}"
        for key, value, kind in _naming_kinds(labels, catalog)
        if not could_name(kind, value)
    )


def could_name(kind: str, value: str) -> bool:
    """Whether a label's `value` could be the name of a `kind` object."""
    if kind in DOTTED_NAME_KINDS:
        return is_dns1123_subdomain(value)
    return CANDIDATE_VALUE.fullmatch(value) is not None


def _naming_kinds(
    labels: Mapping[str, str], catalog: KindCatalog
) -> Iterator[tuple[str, str, str]]:
    """(key, value, kind) for each non-empty label whose key names a kind."""
    for key, value in labels.items():
        if not value or key in RESERVED_LABELS:
            continue
        kind = catalog.kind_for_label(key)
        if kind is not None:
            yield key, value, kind
