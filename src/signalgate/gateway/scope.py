"""Which targets the Gateway manages (docs/gateway.md, Scope; standalone mode).

A rejection carries the `action` that would change the answer, so the person reading the
audit trail or the webhook response knows what to edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from signalgate.gateway.signal import Signal

OPT_OUT_LABEL = "kubernaut_managed"


@dataclass(frozen=True)
class Rejection:
    reason: str  # unmanaged_resource | no_target_resource
    message: str
    resource: str
    action: str
    # the answer's top-level `message`, where Kubernaut words it apart from the rejection's
    summary: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "status": "rejected",
            "reason": self.reason,
            "message": self.message,
            "resource": self.resource,
            "action": self.action,
        }


class StandaloneScope:
    """Namespace globs from the settings; unmanaged wins over managed; `*` matches the
    empty namespace of cluster-scoped targets too."""

    def __init__(self, managed: Sequence[str], unmanaged: Sequence[str]) -> None:
        self._managed = tuple(managed)
        self._unmanaged = tuple(unmanaged)

    def check(self, signal: Signal) -> Rejection | None:
        target = signal.target
        assert target is not None  # callers reject target-less signals first
        resource = f"{target.namespace}/{target.kind}/{target.name}".lstrip("/")
        if signal.labels.get(OPT_OUT_LABEL) == "false":
            return Rejection(
                "unmanaged_resource",
                f'alert opted out with the label {OPT_OUT_LABEL}="false"',
                resource,
                f'remove the label {OPT_OUT_LABEL}="false" from the alerting rule',
            )
        namespace = target.namespace
        shown = namespace or "(cluster-scoped)"
        for pattern in self._unmanaged:
            if fnmatchcase(namespace, pattern):
                return Rejection(
                    "unmanaged_resource",
                    f"namespace {shown} matches scope.unmanagedNamespaces pattern {pattern!r}",
                    resource,
                    f"remove {pattern!r} from scope.unmanagedNamespaces",
                )
        if any(fnmatchcase(namespace, pattern) for pattern in self._managed):
            return None
        return Rejection(
            "unmanaged_resource",
            f"namespace {shown} matches no scope.managedNamespaces pattern",
            resource,
            f"add {namespace or '*'!r} to scope.managedNamespaces",
        )


def no_target_rejection(signal: Signal) -> Rejection:
    if signal.unusable_targets:
        named = ", ".join(signal.unusable_targets)
        return Rejection(
            "no_target_resource",
            f"signal {signal.signal_name!r} names no target resource: {named} is not a "
            "resource name (lowercase letters, digits and '-', starting and ending with a "
            "letter or digit; a node's name may hold '.' too)",
            "",
            f"fix the label value ({named}) in the alerting rule",
        )
    return Rejection(
        "no_target_resource",
        f"signal {signal.signal_name!r} names no target resource: set one of the labels "
        f"{signal.target_hint} to the resource's name",
        "",
        f"add one of the labels {signal.target_hint} to the alerting rule",
    )
