"""Adapters to the outside world: GitHub, Kubernetes, local processes, OpenAI."""
