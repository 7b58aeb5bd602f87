"""The internal API the agent runner calls (`/api/v1/agent/runs/{id}/...`), authenticated by the
run's own token (`Authorization: Bearer <run token>`), valid only for that run while it is active.

- `GET  brief`   what to do (prompt, model, repository, branches, credentials)
- `POST events`  progress for the run's timeline
- `POST result`  the outcome, once
- `POST documents`  which project documents the prompt received (`run_documents`)
- `GET  session`  the Codex session this run resumes (gzip; 404: start fresh)
- `PUT  session`  the session this run leaves for the next run of its lineage, once
- `*    openai/{path}`  the model proxy: forwards the OpenAI Responses API (streaming) with the
  control plane's key, so the key never reaches the run's pod or process, and meters the
  tokens (and cost) of every answer onto the run. What passes (paths, headers, the responses a
  run may read) and the key scrubbed from answers: `adapters/openai/proxy.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from codexk8s import json_input, metrics, urls
from codexk8s.adapters.openai import proxy
from codexk8s.config import get_settings
from codexk8s.domain import sessions as session_wire
from codexk8s.domain.runs import ActorType
from codexk8s.errors import CodexK8sError, MalformedInputError, PayloadTooLargeError
from codexk8s.services import agent_sessions, audit, run_brief
from codexk8s.web.http.errors import error_response, from_exception

MAX_BODY_BYTES = 1024 * 1024
# Codex sends the whole conversation with every model request; long sessions grow large.
MAX_MODEL_REQUEST_BYTES = 32 * 1024 * 1024
_NO_STORE = {"Cache-Control": "no-store"}

Handler = Callable[[Request, sa.Row[Any]], Awaitable[Response]]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body is larger than {limit} bytes")
    return bytes(body)


async def _json_body(request: Request) -> Any:
    # NUL is allowed: a command's output may hold one, and the flow event's JSON stores it escaped.
    return json_input.loads(await _read_body(request, MAX_BODY_BYTES), what="the body")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _reject_malformed(route: str, exc: MalformedInputError, run: sa.Row[Any]) -> Response:
    """Count and audit input the runner never sends, on the run's own trail; then a 400."""
    metrics.API_REQUESTS_REJECTED.labels(route, exc.reason).inc()
    audit.record_rejected_request(
        route=route, reason=exc.reason, message=str(exc),
        correlation_id=run.correlation_id, actor_type=ActorType.AGENT, actor_id=run.agent_key,
        project_id=run.project_id, run_id=run.id,
    )  # fmt: skip
    return from_exception(exc)


def _endpoint(
    methods: tuple[str, ...], handler: Handler, *, route: str
) -> Callable[[Request], Awaitable[Response]]:
    """Method check, run-token authentication, and errors mapped to their codes (ROUTE, the
    route's template, names it in the rejection count)."""

    async def endpoint(request: Request) -> Response:
        if request.method not in methods:
            allow = ", ".join(methods)
            return error_response("method_not_allowed", f"use {allow}", headers={"Allow": allow})
        try:
            run_id = int(request.path_params["run_id"])
        except ValueError:
            return error_response("not_found", "no such run")
        try:
            run = await asyncio.to_thread(
                run_brief.authenticate_run, run_id=run_id, token=_bearer(request)
            )
        except run_brief.RunTokenError as exc:
            return error_response(
                "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer", **_NO_STORE}
            )
        try:
            return await handler(request, run)
        except run_brief.RunTokenError as exc:
            return error_response(
                "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer", **_NO_STORE}
            )
        except MalformedInputError as exc:
            return await asyncio.to_thread(_reject_malformed, route, exc, run)
        except CodexK8sError as exc:
            return from_exception(exc)

    return endpoint


async def _brief(request: Request, run: sa.Row[Any]) -> Response:
    path = urls.API_AGENT_OPENAI_BASE.format(run_id=run.id)
    brief = await asyncio.to_thread(
        run_brief.build_brief, run=run, openai_path=path,
        mcp_path=urls.API_AGENT_MCP.format(run_id=run.id),
    )  # fmt: skip
    return JSONResponse(brief, headers=_NO_STORE)


async def _events(request: Request, run: sa.Row[Any]) -> Response:
    payload = await _json_body(request)
    await asyncio.to_thread(run_brief.record_progress, run=run, payload=payload)
    return JSONResponse({"recorded": True}, status_code=202, headers=_NO_STORE)


async def _result(request: Request, run: sa.Row[Any]) -> Response:
    payload = await _json_body(request)
    stored = await asyncio.to_thread(run_brief.store_result, run=run, payload=payload)
    return JSONResponse(stored, headers=_NO_STORE)


async def _documents(request: Request, run: sa.Row[Any]) -> Response:
    payload = await _json_body(request)
    recorded = await asyncio.to_thread(run_brief.record_documents, run=run, payload=payload)
    return JSONResponse(recorded, status_code=202, headers=_NO_STORE)


async def _session(request: Request, run: sa.Row[Any]) -> Response:
    if request.method == "GET":
        wanted = request.query_params.get("id")
        if wanted is not None and not wanted.isdigit():
            return error_response("invalid_argument", "`id` must be a session id")
        ref, data = await asyncio.to_thread(
            agent_sessions.load_for_resume, run=run,
            session_id=int(wanted) if wanted is not None else None,
        )  # fmt: skip
        headers = {
            **_NO_STORE,
            session_wire.ID_HEADER: str(ref.id),
            session_wire.VERSION_HEADER: str(ref.version),
            session_wire.THREAD_HEADER: ref.thread_id,
            session_wire.PATH_HEADER: ref.path,
        }
        return Response(data, media_type="application/gzip", headers=headers)
    limit = get_settings().agent_session_max_bytes
    body = await _read_body(request, limit)
    parent = request.headers.get(session_wire.PARENT_HEADER)
    if parent is not None and not parent.isdigit():
        return error_response("invalid_argument", f"{session_wire.PARENT_HEADER} must be an id")
    stored = await asyncio.to_thread(
        agent_sessions.store, run=run, body=body,
        thread_id=request.headers.get(session_wire.THREAD_HEADER),
        path=request.headers.get(session_wire.PATH_HEADER),
        parent_id=int(parent) if parent is not None else None,
    )  # fmt: skip
    return JSONResponse(stored, headers=_NO_STORE)


def _requested_model(body: bytes) -> str | None:
    try:
        model = json_input.loads(body, what="the model request", max_depth=None).get("model")
    except (MalformedInputError, AttributeError):
        return None
    return model if isinstance(model, str) else None


async def _openai(request: Request, run: sa.Row[Any]) -> Response:
    settings = get_settings()
    problem = run_brief.model_precondition(settings)
    if problem is not None:
        return error_response("failed_precondition", problem)
    path = request.path_params["path"].strip("/")
    call = proxy.match_call(request.method, path)
    if call is None:
        return error_response(
            "not_found", f"the model proxy does not forward {request.method} /{path}"
        )
    if call.response_id is not None and not await asyncio.to_thread(
        run_brief.owns_model_response, run_id=run.id, response_id=call.response_id
    ):
        return error_response(
            "not_found", f"this run created no response {call.response_id} through the proxy"
        )
    body = await _read_body(request, MAX_MODEL_REQUEST_BYTES)
    assert settings.openai_api_key is not None  # model_precondition checked it
    model = _requested_model(body) or run.model

    async def record_response_ids(response_ids: list[str]) -> None:
        await asyncio.to_thread(
            run_brief.record_model_responses, run_id=run.id, response_ids=response_ids
        )

    async def record_usage(usage: dict[str, int]) -> None:
        await asyncio.to_thread(
            run_brief.meter_model_usage, run_id=run.id, model=model, usage=usage
        )

    relay = await proxy.forward(
        call, method=request.method, base_url=settings.effective_openai_base_url,
        query=request.url.query, body=body, incoming_headers=request.headers.items(),
        api_key=settings.openai_api_key.get_secret_value(),
        organization=settings.openai_organization, project=settings.openai_project,
        record_response_ids=record_response_ids, record_usage=record_usage,
    )  # fmt: skip
    return StreamingResponse(
        relay.body, status_code=relay.status_code, headers={**relay.headers, **_NO_STORE},
        background=BackgroundTask(relay.close),
    )  # fmt: skip


agent_brief = _endpoint(("GET",), _brief, route=urls.API_AGENT_BRIEF)
agent_events = _endpoint(("POST",), _events, route=urls.API_AGENT_EVENTS)
agent_result = _endpoint(("POST",), _result, route=urls.API_AGENT_RESULT)
agent_documents = _endpoint(("POST",), _documents, route=urls.API_AGENT_DOCUMENTS)
agent_session = _endpoint(("GET", "PUT"), _session, route=urls.API_AGENT_SESSION)
agent_openai = _endpoint(("GET", "POST"), _openai, route=urls.API_AGENT_OPENAI)
