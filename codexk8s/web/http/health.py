"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from codexk8s.services import health


async def healthz(_request: Request) -> JSONResponse:
    """The process is alive and serving requests."""
    return JSONResponse({"status": "ok"})


async def readyz(_request: Request) -> JSONResponse:
    """The database is reachable, the schema is at the head migration, and the replica is not
    shutting down (readiness fails first on SIGTERM, so traffic moves away before the socket
    closes)."""
    if health.is_draining():
        return JSONResponse({"status": "unavailable", "reason": "shutting down"}, status_code=503)
    problem = await asyncio.to_thread(health.readiness_problem)
    if problem is not None:
        return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
    return JSONResponse({"status": "ready"})
