"""The `kubernetes` settings section, shared by the Gateway and DataStorage: how to reach the
API server, and how long the answers it gives about tokens, owners and scope are kept."""

from __future__ import annotations

from pydantic import Field, field_validator

from signalgate.common.config import DnsLabel, Duration, Section


class KubernetesSettings(Section):
    # kubernetes:// — the pod's own ServiceAccount; kubernetes:///path/to/kubeconfig — a file
    config: str = "kubernetes://"
    # namespace of the Services that RBAC rules name (gateway-service, data-storage-service);
    # the Gateway uses its controllerNamespace instead
    namespace: DnsLabel = "kubernaut-system"
    # TokenReview audiences; empty: the API server's own
    audiences: list[str] = Field(default_factory=list)
    # how long an allowed token is trusted without asking again (≤ 60 s), a refused one
    cache_ttl: Duration = Field(30.0, gt=0, le=60)
    deny_cache_ttl: Duration = Field(5.0, gt=0, le=60)
    cache_size: int = Field(10_000, ge=1, le=1_000_000)
    # owner references and scope labels read from the cluster are kept this long (≤ 30 s)
    metadata_ttl: Duration = Field(15.0, gt=0, le=30)
    timeout: Duration = Field(5.0, gt=0)

    @field_validator("config")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith("kubernetes://"):
            raise ValueError(
                "must be kubernetes:// (in-cluster) or kubernetes:///path/to/kubeconfig"
            )
        return value
