"""Every URL of the dashboard and the HTTP API in one place."""

from __future__ import annotations

# Dashboard pages.
OVERVIEW = "/"
PROJECTS = "/projects"
RUNS = "/runs"
AGENTS = "/agents"
USERS = "/users"
AUDIT = "/audit"
SIGN_IN = "/sign-in"

# HTTP API.
HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"
API_PREFIX = "/api/v1"
WEBHOOK_GITHUB = f"{API_PREFIX}/webhooks/github"
