"""ASGI app for bench/webhook_ingest.py: the product's routes plus a minimal baseline endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine
from codexk8s.web.http.app import build_http_app
from codexk8s.web.lifespan import freeze_startup_objects

BASELINE_PATH = "/bench/baseline"
_INSERT = sa.text(
    "INSERT INTO bench_baseline (delivery_id, payload)"
    " VALUES (:delivery_id, CAST(:payload AS json))"
    " ON CONFLICT (delivery_id) DO NOTHING"
)


def _secret() -> bytes:
    secret = get_settings().github_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise RuntimeError("CODEXK8S_GITHUB_WEBHOOK_SECRET must be set for the bench server")
    return secret.get_secret_value().encode()


def _insert(delivery_id: str, body: bytes) -> None:
    with get_engine().begin() as connection:
        connection.execute(_INSERT, {"delivery_id": delivery_id, "payload": body.decode()})


async def baseline(request: Request) -> JSONResponse:
    """HMAC check plus one INSERT ... ON CONFLICT DO NOTHING: the floor for an ingest endpoint."""
    body = await request.body()
    header = request.headers.get("x-hub-signature-256", "")
    expected = "sha256=" + hmac.new(_secret(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode("ascii", "replace")):
        return JSONResponse({"error": "signature mismatch"}, status_code=401)
    delivery_id = request.headers.get("x-github-delivery") or ""
    if not delivery_id:
        return JSONResponse({"error": "missing X-GitHub-Delivery"}, status_code=400)
    await asyncio.to_thread(_insert, delivery_id, body)
    return JSONResponse({"delivery_id": delivery_id}, status_code=202)


app = Starlette(
    routes=[
        Route(BASELINE_PATH, baseline, methods=["POST"]),
        # The product app as it is served: its own routes, mounted whole.
        Mount("", app=build_http_app()),
    ]
)

# As the product's server does once it has loaded (codexk8s.web.lifespan).
freeze_startup_objects()
