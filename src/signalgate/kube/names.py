"""Kubernetes' rules for object names and kinds, checked wherever one arrives from outside:
the Gateway's signals (a target's kind, namespace and name), the API server's discovery
documents (a kind, a group) and the RR API's list cursors (an RR's name)."""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

_LABEL_TEXT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL = re.compile(_LABEL_TEXT)
# a DNS-1123 label or nothing, as a JSON Schema pattern (with `"maxLength": 63`): the
# OpenAPI document's form of `is_dns1123_label` for a field that may be left empty
OPTIONAL_DNS1123_LABEL_PATTERN = f"^({_LABEL_TEXT})?$"
_SUBDOMAIN_TEXT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_SUBDOMAIN = re.compile(_SUBDOMAIN_TEXT)
# `is_dns1123_subdomain` as a JSON Schema pattern (with `"maxLength": 253`)
DNS1123_SUBDOMAIN_PATTERN = f"^{_SUBDOMAIN_TEXT}$"
# a kind as the API machinery names one (`Pod`, `HorizontalPodAutoscaler`, `Widget`)
_KIND_TEXT = r"[A-Za-z][A-Za-z0-9]{0,62}"
_KIND = re.compile(_KIND_TEXT)
# `is_kind` as a JSON Schema pattern
KIND_PATTERN = f"^{_KIND_TEXT}$"


def is_dns1123_label(value: str) -> bool:
    """Lowercase letters, digits and `-`, at most 63 (a namespace's name)."""
    return len(value) <= DNS1123_LABEL_MAX and _LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Labels joined by `.`, at most 253 (most objects' names, an RR's too)."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None


def is_kind(value: str) -> bool:
    """A letter, then letters and digits, at most 63 (`Deployment`, `HorizontalPodAutoscaler`)."""
    return _KIND.fullmatch(value) is not None
