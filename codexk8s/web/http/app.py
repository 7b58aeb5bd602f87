"""The Starlette app mounted in front of Reflex (through `rx.App(api_transformer=...)`)."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from codexk8s import metrics as _metrics  # noqa: F401  (registers the codexk8s_* metrics)
from codexk8s import urls
from codexk8s.web.http import agent_api, agent_mcp, api, auth, health, webhooks

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


# Headers every reverse proxy and ingress controller adds; Prometheus scraping the pod sends none.
_PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format of the default registry (see codexk8s.metrics).

    Each Reflex worker process answers with its own counters: multiprocess mode is not set up,
    so with several workers a scrape sees one of them. The scrape reads runs and slots from the
    database, hence the thread. Unauthenticated, like the probes, so it answers only requests
    that reach the pod directly: one that came through the ingress (or any proxy) gets 404.
    """
    if any(header in request.headers for header in _PROXY_HEADERS):
        return Response("Not Found", status_code=404, media_type="text/plain")
    body = await asyncio.to_thread(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def build_http_app() -> Starlette:
    """Build the routes once per process; Reflex mounts itself under them."""
    return Starlette(
        routes=[
            Route(urls.HEALTHZ, health.healthz, methods=["GET", "HEAD"]),
            Route(urls.READYZ, health.readyz, methods=["GET", "HEAD"]),
            Route(urls.METRICS, metrics_endpoint, methods=["GET", "HEAD"]),
            # Every method reaches the handler: a partial (method) mismatch would otherwise fall
            # through to the Reflex mount instead of answering 405.
            Route(urls.WEBHOOK_GITHUB, webhooks.github_webhook, methods=ALL_METHODS),
            Route(urls.API_ME, auth.me, methods=ALL_METHODS),
            Route(urls.API_PROJECTS, api.projects_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUNS, api.runs_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN, api.run_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN_EVENTS, api.run_events_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN_LOGS, api.run_logs_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN_LOG_TEXT, api.run_log_text_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN_CANCEL, api.run_cancel_endpoint, methods=ALL_METHODS),
            Route(urls.API_RUN_RERUN, api.run_rerun_endpoint, methods=ALL_METHODS),
            Route(urls.API_REQUESTS, api.requests_endpoint, methods=ALL_METHODS),
            Route(urls.API_REQUEST_ANSWER, api.request_answer_endpoint, methods=ALL_METHODS),
            Route(urls.API_AGENT_BRIEF, agent_api.agent_brief, methods=ALL_METHODS),
            Route(urls.API_AGENT_EVENTS, agent_api.agent_events, methods=ALL_METHODS),
            Route(urls.API_AGENT_RESULT, agent_api.agent_result, methods=ALL_METHODS),
            Route(urls.API_AGENT_DOCUMENTS, agent_api.agent_documents, methods=ALL_METHODS),
            Route(urls.API_AGENT_SESSION, agent_api.agent_session, methods=ALL_METHODS),
            Route(urls.API_AGENT_OPENAI, agent_api.agent_openai, methods=ALL_METHODS),
            Route(urls.API_AGENT_MCP, agent_mcp.agent_mcp, methods=ALL_METHODS),
            Route(urls.AUTH_GITHUB_LOGIN, auth.github_login, methods=["GET"]),
            Route(urls.AUTH_GITHUB_CALLBACK, auth.github_callback, methods=["GET"]),
            Route(urls.AUTH_LOGOUT, auth.logout, methods=ALL_METHODS),
            Route(urls.AUTH_LINK, auth.signin_link, methods=["GET"]),
        ]
    )
