"""Talking to a Kubernetes API server: configuration, the REST client, and what the Gateway
reads from the cluster (API discovery, owner chains, scope labels).

Nothing here is needed outside Kubernetes mode; the standalone product never imports it.
"""
