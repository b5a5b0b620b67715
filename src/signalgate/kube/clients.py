"""The API clients a service holds: one per distinct configuration (the Gateway's store and
its auth usually share one), made on first use, closed with the service.

Creating one imports nothing heavy and opens no connection, so a service that is not in
Kubernetes mode can hold an unused `KubeClients` at no cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signalgate.kube.client import KubeClient


class KubeClients:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._made: dict[str, KubeClient] = {}

    def __call__(self, dsn: str, key: str) -> KubeClient:
        """The client for `dsn` (`kubernetes://` or `kubernetes:///path/to/kubeconfig`), the
        value of the setting `key` (named when it cannot be used)."""
        if dsn not in self._made:
            from signalgate.kube.client import KubeClient
            from signalgate.kube.config import config_from_dsn

            self._made[dsn] = KubeClient(config_from_dsn(dsn, key), timeout=self.timeout)
        return self._made[dsn]

    async def close(self) -> None:
        made, self._made = self._made, {}
        for client in made.values():
            await client.close()
