"""signalgate: the auto-remediation front door for Kubernetes."""
