"""codexk8s: a webhook-driven control plane that runs AI coding agents on Kubernetes."""

__version__ = "0.1.0"
