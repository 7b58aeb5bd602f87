"""Kubernetes runtime: manifests, launch, watch, log streaming."""
