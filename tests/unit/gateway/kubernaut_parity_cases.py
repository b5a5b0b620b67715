"""The case table: for each of Kubernaut's target-selection rules, the input, Kubernaut's answer
and ours. Kubernaut's answer is written out by hand from its source (the file is named per
case, as it sits in Kubernaut's repository); the test computes the fingerprint Kubernaut's
formula gives for that answer and checks ours equals it.

`kubernaut` is `(cluster, namespace, Kind, name)`: the resource Kubernaut fingerprints, with
no owner resolution (standalone). A case with `ours` set is a deliberate difference: `ours`
says what we answer instead (`"400 <field>"`, `"rejected"`, `"namespace <ns>"`: the
target placed in that namespace, or `"cluster <id>"`: in that cluster), and the README
lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROM = "Kubernaut pkg/gateway/adapters/prometheus_adapter.go"
REGISTRY = "Kubernaut pkg/gateway/adapters/resource_registry.go"
EVENTS = "Kubernaut pkg/gateway/adapters/kubernetes_event_adapter.go"
FINGERPRINT = "Kubernaut pkg/gateway/types/fingerprint.go"


@dataclass(frozen=True)
class AlertCase:
    id: str
    rule: str
    source: str
    labels: dict[str, str]
    kubernaut: tuple[str, str, str, str] | None
    common: dict[str, str] = field(default_factory=dict)
    ours: str = ""  # empty: same as Kubernaut


@dataclass(frozen=True)
class EventCase:
    id: str
    rule: str
    source: str
    involved: dict[str, str]
    kubernaut: tuple[str, str, str, str] | None
    ours: str = ""
    key: str = "involvedObject"


ALERTS: tuple[AlertCase, ...] = (
    AlertCase(
        "pod-alone",
        "a `pod` label names the Pod; fingerprint sha256(namespace:Kind:name)",
        FINGERPRINT,
        {"namespace": "prod", "pod": "api-1"},
        ("", "prod", "Pod", "api-1"),
    ),
    AlertCase(
        "deployment-over-pod",
        "tier 1 (Deployment) beats tier 3 (Pod): kube-state-metrics' `pod` is the exporter",
        REGISTRY,
        {"namespace": "prod", "pod": "ksm-abc", "deployment": "web"},
        ("", "prod", "Deployment", "web"),
    ),
    AlertCase(
        "daemonset-and-deployment",
        "two tier-1 kinds: the kind name breaks the tie (DaemonSet < Deployment)",
        PROM,
        {"namespace": "prod", "deployment": "web", "daemonset": "agent"},
        ("", "prod", "DaemonSet", "agent"),
    ),
    AlertCase(
        "cronjob-over-statefulset",
        "tier 1 tie broken by kind name (CronJob < StatefulSet)",
        PROM,
        {"namespace": "prod", "statefulset": "db", "cronjob": "backup"},
        ("", "prod", "CronJob", "backup"),
    ),
    AlertCase(
        "pod-and-node",
        "Pod and Node are both tier 3: Node wins by kind name",
        PROM,
        {"namespace": "prod", "pod": "api-1", "node": "worker-1"},
        ("", "prod", "Node", "worker-1"),
    ),
    AlertCase(
        "replicaset-over-pod",
        "tier 2 (every kind not in tiers 1 and 3) beats tier 3",
        REGISTRY,
        {"namespace": "prod", "pod": "ksm-abc", "replicaset": "web-7f8"},
        ("", "prod", "ReplicaSet", "web-7f8"),
    ),
    AlertCase(
        "hpa-and-pdb",
        "two tier-2 kinds: kind name (HorizontalPodAutoscaler < PodDisruptionBudget)",
        PROM,
        {"namespace": "prod", "poddisruptionbudget": "web-pdb", "horizontalpodautoscaler": "web"},
        ("", "prod", "HorizontalPodAutoscaler", "web"),
    ),
    AlertCase(
        "any-builtin-kind",
        "any kind discovery lists is a candidate (configmap → ConfigMap, tier 2)",
        REGISTRY,
        {"namespace": "prod", "pod": "api-1", "configmap": "settings"},
        ("", "prod", "ConfigMap", "settings"),
    ),
    AlertCase(
        "reserved-labels",
        "job, service, instance, endpoint, container, namespace never name a target",
        PROM,
        {
            "namespace": "prod",
            "job": "ksm",
            "service": "ksm",
            "instance": "ksm-1",
            "endpoint": "http",
            "container": "app",
            "pod": "api-1",
        },
        ("", "prod", "Pod", "api-1"),
    ),
    AlertCase(
        "dotted-value-not-a-candidate",
        "a label value with dots (or capitals, '_') is not a candidate name: the Deployment"
        " would win over the Pod",
        PROM,
        {"namespace": "prod", "pod": "api-1", "deployment": "web.v2"},
        ("", "prod", "Pod", "api-1"),
    ),
    AlertCase(
        "dotted-node-name",
        "a node named by its host name (EKS: ip-10-0-0-1.ec2.internal): Kubernaut finds no"
        " candidate (dots excluded) and names Unknown/unknown, which its RR creation refuses;"
        " we take a Node's name as Kubernetes does, a DNS-1123 subdomain",
        PROM,
        {"node": "ip-10-0-0-1.ec2.internal"},
        ("", "", "Unknown", "unknown"),
        ours="target Node ip-10-0-0-1.ec2.internal",
    ),
    AlertCase(
        "node-without-namespace",
        "no namespace label, cluster-scoped kind: empty namespace",
        PROM,
        {"node": "worker-1"},
        ("", "", "Node", "worker-1"),
    ),
    AlertCase(
        "node-with-namespace",
        "a namespace label is kept whatever the kind (Node from a namespaced exporter)",
        PROM,
        {"namespace": "monitoring", "node": "worker-1"},
        ("", "monitoring", "Node", "worker-1"),
    ),
    AlertCase(
        "pod-without-namespace",
        "no namespace label, namespaced kind: `default`",
        PROM,
        {"pod": "api-1"},
        ("", "default", "Pod", "api-1"),
    ),
    AlertCase(
        "exported-namespace-first",
        "exported_namespace (federated Prometheus) before namespace",
        PROM,
        {"namespace": "monitoring", "exported_namespace": "prod", "pod": "api-1"},
        ("", "prod", "Pod", "api-1"),
    ),
    AlertCase(
        "cluster-from-common-labels",
        "cluster = commonLabels.cluster; sha256(cluster:namespace:Kind:name)",
        FINGERPRINT,
        {"namespace": "prod", "pod": "api-1", "cluster": "eu-1"},
        ("eu-1", "prod", "Pod", "api-1"),
        common={"cluster": "eu-1"},
    ),
    AlertCase(
        "cluster-only-on-the-alert",
        "a cluster label on the alert but not in commonLabels names no cluster (Kubernaut); "
        "ours names it: a group of two clusters' alerts has no common cluster",
        PROM,
        {"namespace": "prod", "pod": "api-1", "cluster": "eu-1"},
        ("", "prod", "Pod", "api-1"),
        ours="cluster eu-1",
    ),
    AlertCase(
        "cluster-on-the-alert-not-a-label-value",
        "the alert's own cluster label is checked as commonLabels.cluster is",
        PROM,
        {"namespace": "prod", "pod": "api-1", "cluster": "c1:prod"},
        ("", "prod", "Pod", "api-1"),
        ours="400 alerts[0].labels.cluster",
    ),
    AlertCase(
        "target-from-alert-labels-only",
        "the target comes from the alert's own labels, never commonLabels",
        PROM,
        {"namespace": "prod", "pod": "api-1"},
        ("", "prod", "Pod", "api-1"),
        common={"deployment": "web"},
    ),
    AlertCase(
        "no-target",
        "no candidate: Kubernaut's adapter names Unknown/unknown, which its RR creation"
        " refuses (older releases opened that RR); we reject the alert alone",
        PROM,
        {"namespace": "prod", "job": "ksm"},
        ("", "prod", "Unknown", "unknown"),
        ours="rejected",
    ),
    AlertCase(
        "namespace-not-a-label",
        "an invalid namespace label is ignored by Kubernaut (→ default); we refuse it",
        PROM,
        {"namespace": "Kube-System", "pod": "api-1"},
        ("", "default", "Pod", "api-1"),
        ours="400 alerts[0].labels.namespace",
    ),
    AlertCase(
        "invalid-exported-namespace-beside-a-valid-namespace",
        "Kubernaut skips an invalid exported_namespace and takes namespace; we refuse it: "
        "namespace is then the scraper's (monitoring), not the target's",
        PROM,
        {"namespace": "prod", "exported_namespace": "Prod", "pod": "api-1"},
        ("", "prod", "Pod", "api-1"),
        ours="400 alerts[0].labels.exported_namespace",
    ),
    AlertCase(
        "namespace-longer-than-a-label",
        "Kubernaut's name check allows 253 characters (a DNS subdomain); a namespace is a "
        "DNS-1123 label, at most 63",
        PROM,
        {"namespace": "n" * 64, "pod": "api-1"},
        ("", "n" * 64, "Pod", "api-1"),
        ours="400 alerts[0].labels.namespace",
    ),
    AlertCase(
        "namespace-with-zero-width-space",
        "`kube-system\\u200b` is not a namespace: it must not pass for kube-system or default",
        PROM,
        {"namespace": "kube-system\u200b", "pod": "api-1"},
        ("", "default", "Pod", "api-1"),
        ours="400 alerts[0].labels.namespace",
    ),
    AlertCase(
        "cluster-not-a-label-value",
        "a cluster id with ':' would make the fingerprint input ambiguous",
        FINGERPRINT,
        {"namespace": "prod", "pod": "api-1", "cluster": "c1:prod"},
        ("c1:prod", "prod", "Pod", "api-1"),
        common={"cluster": "c1:prod"},
        ours="400 commonLabels.cluster",
    ),
)

EVENTS_CASES: tuple[EventCase, ...] = (
    EventCase(
        "pod-event",
        "the target is involvedObject; fingerprint sha256(namespace:Kind:name)",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "prod"},
        ("", "prod", "Pod", "api-1"),
    ),
    EventCase(
        "deployment-event-without-namespace",
        "involvedObject.namespace is kept verbatim: none stays none",
        EVENTS,
        {"kind": "Deployment", "name": "web"},
        ("", "", "Deployment", "web"),
        # where an alert's target goes, so both share a fingerprint and the scope applies
        ours="namespace default",
    ),
    EventCase(
        "node-event",
        "a cluster-scoped object has no namespace",
        EVENTS,
        {"kind": "Node", "name": "worker-1"},
        ("", "", "Node", "worker-1"),
    ),
    EventCase(
        "node-event-with-namespace",
        "a namespace given for a Node is kept, as for alerts",
        EVENTS,
        {"kind": "Node", "name": "worker-1", "namespace": "monitoring"},
        ("", "monitoring", "Node", "worker-1"),
    ),
    EventCase(
        "custom-kind",
        "any kind is accepted",
        EVENTS,
        {"kind": "BuildConfig", "name": "frontend", "namespace": "ci"},
        ("", "ci", "BuildConfig", "frontend"),
    ),
    EventCase(
        "regarding",
        "events.k8s.io/v1 `regarding`: Kubernaut reads involvedObject only (missing → 400)",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "prod"},
        None,
        ours="same fingerprint as involvedObject",
        key="regarding",
    ),
    EventCase(
        "keys-in-another-case",
        "Go's encoding/json matches `Kind`, `Name` to the fields `kind`, `name` (any case)",
        EVENTS,
        {"Kind": "Pod", "Name": "api-1", "Namespace": "prod"},
        ("", "prod", "Pod", "api-1"),
        ours="400 involvedObject.kind: required .*'Kind' is not 'kind'",
    ),
    EventCase(
        "namespace-with-colon",
        "`c1:prod` is not a namespace: it would collide with cluster c1's namespace prod",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "c1:prod"},
        ("", "c1:prod", "Pod", "api-1"),
        ours="400 involvedObject.namespace",
    ),
    EventCase(
        "namespace-with-capitals",
        "`Kube-System` must not slip past unmanagedNamespaces: [kube-system]",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "Kube-System"},
        ("", "Kube-System", "Pod", "api-1"),
        ours="400 involvedObject.namespace",
    ),
    EventCase(
        "namespace-with-space",
        "`kube-system ` (trailing space) is not a namespace",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "kube-system "},
        ("", "kube-system ", "Pod", "api-1"),
        ours="400 involvedObject.namespace",
    ),
    EventCase(
        "traversal-namespace",
        "`../../kube-system` is not a namespace",
        EVENTS,
        {"kind": "Pod", "name": "api-1", "namespace": "../../kube-system"},
        ("", "../../kube-system", "Pod", "api-1"),
        ours="400 involvedObject.namespace",
    ),
    EventCase(
        "name-with-newline",
        "a name must follow its kind's rule (DNS-1123 subdomain for a Pod)",
        EVENTS,
        {"kind": "Pod", "name": "api-1\nx", "namespace": "prod"},
        ("", "prod", "Pod", "api-1\nx"),
        ours="400 involvedObject.name",
    ),
    EventCase(
        "kind-not-an-identifier",
        "a kind must be a Kind identifier",
        EVENTS,
        {"kind": "Pod'; DROP TABLE", "name": "api-1", "namespace": "prod"},
        ("", "prod", "Pod'; DROP TABLE", "api-1"),
        ours="400 involvedObject.kind",
    ),
    EventCase(
        "rbac-name-with-colon",
        "RBAC names are path segments: `system:controller:job-controller` is valid",
        EVENTS,
        {"kind": "ClusterRole", "name": "system:controller:job-controller"},
        ("", "", "ClusterRole", "system:controller:job-controller"),
    ),
)
