"""Kubernetes' rules for object names, checked wherever a name arrives from outside: the
Gateway's signals (a target's namespace and name) and the RR API's list cursors (an RR's
name)."""

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


def is_dns1123_label(value: str) -> bool:
    """Lowercase letters, digits and `-`, at most 63 (a namespace's name)."""
    return len(value) <= DNS1123_LABEL_MAX and _LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Labels joined by `.`, at most 253 (most objects' names, an RR's too)."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None
