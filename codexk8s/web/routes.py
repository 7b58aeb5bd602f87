"""Every URL of the dashboard and the HTTP API in one place."""

from __future__ import annotations

# Dashboard pages.
OVERVIEW = "/"
PROJECTS = "/projects"
RUNS = "/runs"
RUN = "/runs/[run_id]"  # the run page; a row links to f"/runs/{id}"
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
API_ME = f"{API_PREFIX}/me"
API_PROJECTS = f"{API_PREFIX}/projects"
API_RUNS = f"{API_PREFIX}/runs"
API_RUN = f"{API_PREFIX}/runs/{{run_id}}"  # `API_RUN.format(run_id=...)` builds one
API_RUN_EVENTS = f"{API_RUN}/events"
API_RUN_LOGS = f"{API_RUN}/logs"
API_RUN_CANCEL = f"{API_RUN}/cancel"
API_RUN_RERUN = f"{API_RUN}/rerun"

# Sign-in.
AUTH_GITHUB_LOGIN = "/auth/github/login"
AUTH_GITHUB_CALLBACK = "/auth/github/callback"
AUTH_LOGOUT = "/auth/logout"
AUTH_LINK = "/auth/link/{token}"  # `AUTH_LINK.format(token=...)` builds one
