"""The fingerprint: which resource a signal is about, as one stable hex string.

Both adapters call this one function, so an alert and an event about the same Pod land on
the same RemediationRequest.
"""

from __future__ import annotations

import hashlib

from signalgate.remediation.model import TargetResource

# a fingerprint as text: SHA-256 in lowercase hex (request checks and the OpenAPI document)
FINGERPRINT_PATTERN = r"^[0-9a-f]{64}$"


def fingerprint_of(target: TargetResource, cluster_id: str = "") -> str:
    """SHA-256 hex of `<namespace>:<Kind>:<name>`, prefixed by `<clusterID>:` when set."""
    key = f"{cluster_id}:{target.key}" if cluster_id else target.key
    return hashlib.sha256(key.encode()).hexdigest()
