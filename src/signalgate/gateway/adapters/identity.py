"""One validation for resource identity, used by both adapters.

The fingerprint is `[<cluster>:]<namespace>:<Kind>:<name>` and scope rules match namespaces
by pattern, so each part must be exactly what Kubernetes would accept for it: a namespace
is a DNS-1123 label (so it can hold no `:` and `c1:prod` cannot pose as cluster `c1`'s
namespace `prod`, and `Kube-System` or `kube-system\\u200b` cannot slip past a rule for
`kube-system`), a name follows its kind's rule, a kind is a Kind identifier and a cluster id
is a label value. Anything else is refused with a `PayloadError` naming the field.
"""

from __future__ import annotations

import re

from signalgate.gateway.adapters.parsing import PayloadError
from signalgate.kube.names import (
    DNS1123_LABEL_MAX,
    DNS1123_SUBDOMAIN_MAX,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_kind,
)

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

# Kinds whose names follow another rule than the DNS-1123 subdomain most kinds use
# (Kubernetes' own validation for each): a label for these ...
_LABEL_NAMED_KINDS = frozenset({"Namespace", "Service"})
# ... and a path segment (anything but `.`, `..`, `/` and `%`) for RBAC objects, whose
# names such as `system:controller:job-controller` carry colons.
_PATH_SEGMENT_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})


def _shown(value: str) -> str:
    return repr(value[:64] + ("…" if len(value) > 64 else ""))


def check_namespace(value: str, field: str) -> str:
    """A namespace: DNS-1123 label (lowercase letters, digits, `-`; at most 63)."""
    if not is_dns1123_label(value):
        raise PayloadError(
            f"{field}: {_shown(value)} is not a namespace name: expected a DNS-1123 label "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, "
            "at most 63 characters, e.g. 'payments')"
        )
    return value


def check_kind(value: str, field: str) -> str:
    """A Kind identifier: a letter, then letters and digits (e.g. `Deployment`)."""
    if not is_kind(value):
        raise PayloadError(
            f"{field}: {_shown(value)} is not a Kubernetes kind: expected a letter followed "
            "by letters and digits, at most 63 characters (e.g. 'Deployment')"
        )
    return value


def check_name(value: str, field: str, kind: str) -> str:
    """A resource name by its kind's rule (DNS-1123 subdomain for most kinds)."""
    if kind in _PATH_SEGMENT_KINDS:
        ok = (
            0 < len(value) <= DNS1123_SUBDOMAIN_MAX
            and value not in (".", "..")
            and not any(c in value for c in "/%")
            and value.isprintable()
            and value.strip() == value
        )
        rule = "a path segment (no '/', '%', and not '.' or '..'), at most 253 characters"
    elif kind in _LABEL_NAMED_KINDS:
        ok = is_dns1123_label(value)
        rule = "a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"
    else:
        ok = is_dns1123_subdomain(value)
        rule = (
            "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
        )
    if not ok:
        raise PayloadError(f"{field}: {_shown(value)} is not a valid {kind} name: expected {rule}")
    return value


def check_cluster_id(value: str, field: str) -> str:
    """A cluster id: a Kubernetes label value (letters, digits, `-`, `_`, `.`; at most 63)."""
    if len(value) > DNS1123_LABEL_MAX or _LABEL_VALUE.fullmatch(value) is None:
        raise PayloadError(
            f"{field}: {_shown(value)} is not a cluster id: expected a label value (letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit, at most "
            "63 characters, e.g. 'prod-east')"
        )
    return value
