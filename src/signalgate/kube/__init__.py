"""Talking to a Kubernetes API server: configuration and the REST client, used by the RR
store's Kubernetes backend, both services' `kubernetes` auth mode and the Gateway's view of
the cluster (`signalgate.gateway.cluster`: discovery, owner chains, scope labels — a Gateway
decision, so it lives with the Gateway, above this package). `names` holds Kubernetes'
rules for object names, which the Gateway's signals and the RR API's cursors are held to.

Only Kubernetes mode talks to a cluster; standalone, nothing here makes a request.
"""
