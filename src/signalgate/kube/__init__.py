"""Talking to a Kubernetes API server: configuration, the REST client, and what the Gateway
reads from the cluster (API discovery, owner chains, scope labels).

Only Kubernetes mode talks to a cluster; standalone, nothing here makes a request.
"""
