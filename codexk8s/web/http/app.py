"""The Starlette app mounted in front of Reflex (through `rx.App(api_transformer=...)`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from codexk8s.web import routes
from codexk8s.web.http import api, auth, health, webhooks

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def build_http_app() -> Starlette:
    """Build the routes once per process; Reflex mounts itself under them."""
    return Starlette(
        routes=[
            Route(routes.HEALTHZ, health.healthz, methods=["GET", "HEAD"]),
            Route(routes.READYZ, health.readyz, methods=["GET", "HEAD"]),
            # Every method reaches the handler: a partial (method) mismatch would otherwise fall
            # through to the Reflex mount instead of answering 405.
            Route(routes.WEBHOOK_GITHUB, webhooks.github_webhook, methods=ALL_METHODS),
            Route(routes.API_ME, auth.me, methods=ALL_METHODS),
            Route(routes.API_PROJECTS, api.projects_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUNS, api.runs_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUN, api.run_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUN_EVENTS, api.run_events_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUN_LOGS, api.run_logs_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUN_CANCEL, api.run_cancel_endpoint, methods=ALL_METHODS),
            Route(routes.API_RUN_RERUN, api.run_rerun_endpoint, methods=ALL_METHODS),
            Route(routes.AUTH_GITHUB_LOGIN, auth.github_login, methods=["GET"]),
            Route(routes.AUTH_GITHUB_CALLBACK, auth.github_callback, methods=["GET"]),
            Route(routes.AUTH_LOGOUT, auth.logout, methods=["GET", "POST"]),
            Route(routes.AUTH_LINK, auth.signin_link, methods=["GET"]),
        ]
    )
