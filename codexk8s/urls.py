"""Every URL of the dashboard and the HTTP API in one place (the agent runner and services build
links from it too, so it lives outside the web package)."""

from __future__ import annotations

# Dashboard pages.
OVERVIEW = "/"
PROJECTS = "/projects"
RUNS = "/runs"
RUN = "/runs/[run_id]"  # `run_page(run_id)` builds one
AGENTS = "/agents"
USERS = "/users"
AUDIT = "/audit"
INBOX = "/inbox"
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
API_RUN_LOG_TEXT = f"{API_RUN}/logs.txt"  # the whole log, as a download
API_RUN_CANCEL = f"{API_RUN}/cancel"
API_RUN_RERUN = f"{API_RUN}/rerun"

# Internal API of the agent runner (authenticated by the run's token).
API_REQUESTS = f"{API_PREFIX}/requests"  # the inbox: questions and approvals waiting for people
API_REQUEST_ANSWER = f"{API_PREFIX}/requests/{{request_id}}/answer"
API_AGENT_RUN = f"{API_PREFIX}/agent/runs/{{run_id}}"
API_AGENT_BRIEF = f"{API_AGENT_RUN}/brief"
API_AGENT_EVENTS = f"{API_AGENT_RUN}/events"
API_AGENT_RESULT = f"{API_AGENT_RUN}/result"
API_AGENT_DOCUMENTS = f"{API_AGENT_RUN}/documents"
API_AGENT_SESSION = f"{API_AGENT_RUN}/session"
API_AGENT_MCP = f"{API_AGENT_RUN}/mcp"  # the platform MCP server (streamable HTTP)
API_AGENT_OPENAI_BASE = f"{API_AGENT_RUN}/openai"  # the model provider base URL a run uses
API_AGENT_OPENAI = f"{API_AGENT_OPENAI_BASE}/{{path:path}}"

# Sign-in.
AUTH_GITHUB_LOGIN = "/auth/github/login"
AUTH_GITHUB_CALLBACK = "/auth/github/callback"
AUTH_LOGOUT = "/auth/logout"
AUTH_LINK = "/auth/link/{token}"  # `AUTH_LINK.format(token=...)` builds one

# A project's own page (`/projects/<key>`).
PROJECT = "/projects/[project_key]"


def run_page(run_id: int) -> str:
    """The dashboard URL of one run."""
    return RUN.replace("[run_id]", str(run_id))
