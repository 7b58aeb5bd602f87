"""The staff JSON API under /api/v1 (DESIGN §9, §11): projects, runs, events, logs, start,
cancel, rerun.

Every route authenticates (bearer API token or session cookie), then asks `is_allowed` with the
caller's role on the project concerned. A project (or run) the caller may not see answers 404,
so its existence does not leak; one they see but may not change answers 403. A state-changing
request authenticated by the session cookie must come from our own origin (`Origin`, else
`Referer`), since browsers attach the cookie to cross-site POSTs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from codexk8s import json_input, metrics, urls
from codexk8s.config import get_settings
from codexk8s.domain.authorization import Action, Principal
from codexk8s.domain.runs import ActorType
from codexk8s.errors import (
    CodexK8sError,
    InvalidArgumentError,
    MalformedInputError,
    NotFoundError,
    UnauthorizedError,
)
from codexk8s.services import (
    agent_runs,
    audit,
    projects,
    run_access,
    run_control,
    run_logs,
    run_requests,
    run_start,
)  # fmt: skip
from codexk8s.services.transactions import in_transaction
from codexk8s.web import origins
from codexk8s.web.http.auth import current_principal
from codexk8s.web.http.errors import error_response, from_exception

# A follow stream ends after this long; the client reconnects with Last-Event-ID.
FOLLOW_SECONDS = 600.0
FOLLOW_POLL_SECONDS = 0.25
# How often an open stream checks again that its reader may still read it (credentials still
# valid, user enabled, still a member): losing access ends the stream within this time.
ACCESS_RECHECK_SECONDS = 5.0
_NO_STORE = {"Cache-Control": "no-store"}

Handler = Callable[[Request, Principal], Awaitable[Response]]


# --- plumbing -------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_jsonable(body), status_code=status, headers=_NO_STORE)


def _record(row: Any) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(row))


def _refuse_nul_parameters(request: Request) -> None:
    """PostgreSQL text cannot hold NUL: a query parameter with one is refused before any query."""
    for name, value in request.query_params.multi_items():
        json_input.refuse_nul(name, "a query parameter's name")
        json_input.refuse_nul(value, f"query parameter {name}")


def _reject_malformed(route: str, exc: MalformedInputError, principal: Principal) -> Response:
    """Count and audit input no client of ours sends, then answer it like any bad argument."""
    metrics.API_REQUESTS_REJECTED.labels(route, exc.reason).inc()
    audit.record_rejected_request(
        route=route, reason=exc.reason, message=str(exc),
        correlation_id=f"user-{principal.user_id}", actor_type=ActorType.HUMAN,
        actor_id=str(principal.user_id),
    )  # fmt: skip
    return from_exception(exc)


def _endpoint(
    handlers: dict[str, Handler], *, route: str
) -> Callable[[Request], Awaitable[Response]]:
    """One route (ROUTE, its template): method dispatch (405 otherwise), authentication, the
    cross-site check for cookie-authenticated writes, and errors mapped to their codes."""
    if "GET" in handlers:
        handlers = {**handlers, "HEAD": handlers["GET"]}
    allow = ", ".join(method for method in handlers if method != "HEAD")

    async def endpoint(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            return error_response("method_not_allowed", f"use {allow}", headers={"Allow": allow})
        principal = await current_principal(request)
        if principal is None:
            return error_response(
                "unauthorized",
                "sign in, or send an API token as `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer", **_NO_STORE},
            )
        if request.method not in ("GET", "HEAD") and "authorization" not in request.headers:
            problem = origins.cross_site_problem(request.headers, get_settings())
            if problem is not None:
                return error_response("forbidden", problem, headers=_NO_STORE)
        try:
            _refuse_nul_parameters(request)
            return await handler(request, principal)
        except MalformedInputError as exc:
            return await asyncio.to_thread(_reject_malformed, route, exc, principal)
        except CodexK8sError as exc:
            return from_exception(exc)

    return endpoint


def _run_id(request: Request) -> int:
    text = request.path_params["run_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise NotFoundError(f"no run {text!r}")
    return int(text)


def _query_int(request: Request, name: str, default: int | None = None) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidArgumentError(f"{name} must be a non-negative integer")
    return int(text)


def _get_run(run_id: int) -> agent_runs.RunDetail:
    return in_transaction(agent_runs.get_run, run_id=run_id)


# --- projects -------------------------------------------------------------------------------------


async def list_projects(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/projects`: the projects the caller may see, with their role on each."""

    views = await asyncio.to_thread(
        in_transaction, agent_runs.visible_projects, principal=principal
    )
    return _json({"projects": [_record(view) for view in views]})


# --- runs -----------------------------------------------------------------------------------------


async def list_runs(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/runs?project=&status=&limit=&cursor=`: newest first, one keyset page."""
    params = request.query_params
    project_key = params.get("project") or None
    status = params.get("status") or None
    limit = _query_int(request, "limit", 50)
    assert limit is not None
    cursor_text = params.get("cursor")
    before = agent_runs.Cursor.decode(cursor_text) if cursor_text else None

    def load(*, session: Session) -> tuple[list[agent_runs.RunRow], agent_runs.Cursor | None]:
        project_ids: list[int] | None = None
        if project_key is not None:
            project = projects.authorize(
                session=session, actor=principal, project_key=project_key,
                action=Action.VIEW_PROJECT,
            )  # fmt: skip
            assert project.id is not None
            project_ids = [project.id]
        elif not principal.is_platform_admin:
            visible = agent_runs.visible_projects(session=session, principal=principal)
            project_ids = [view.id for view in visible]
        return agent_runs.list_page(
            session=session, project_ids=project_ids, status=status, limit=limit, before=before
        )

    rows, next_cursor = await asyncio.to_thread(in_transaction, load)
    return _json(
        {
            "runs": [_record(row) for row in rows],
            "next_cursor": next_cursor.encode() if next_cursor else None,
        }
    )


async def start_run(request: Request, principal: Principal) -> Response:
    """`POST /api/v1/runs` {project, repository, issue, stage, model?, reasoning_effort?}."""
    body = json_input.loads(await request.body(), what="the body", allow_nul=False)
    if not isinstance(body, dict):
        raise InvalidArgumentError("the body must be a JSON object")
    unknown = set(body) - {"project", "repository", "issue", "stage", "model", "reasoning_effort"}
    if unknown:
        raise InvalidArgumentError(f"unknown fields: {', '.join(sorted(unknown))}")
    for name in ("project", "repository", "stage"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidArgumentError(f"{name} is required and must be a string")
    project_key: str = body["project"]

    def start() -> agent_runs.RunDetail:
        run_id = run_start.start_run_as(
            principal=principal, project_key=project_key,
            repository=body["repository"], issue=body.get("issue"), stage=body["stage"],
            model=body.get("model"), reasoning_effort=body.get("reasoning_effort"),
        )  # fmt: skip
        return _get_run(run_id)

    run = await asyncio.to_thread(start)
    return _json({"run": _record(run)}, status=201)


async def get_run(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/runs/{id}`."""
    run_id = _run_id(request)

    def load() -> agent_runs.RunDetail:
        in_transaction(
            run_access.require_run, actor=principal, run_id=run_id, action=Action.VIEW_PROJECT
        )
        return _get_run(run_id)

    return _json({"run": _record(await asyncio.to_thread(load))})


async def run_events(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/runs/{id}/events`: its flow events in order."""
    run_id = _run_id(request)

    def load() -> list[audit.EventRow]:
        in_transaction(
            run_access.require_run, actor=principal, run_id=run_id, action=Action.VIEW_PROJECT
        )
        return in_transaction(audit.list_run_events, run_id=run_id)

    return _json({"events": [_record(event) for event in await asyncio.to_thread(load)]})


async def cancel_run(request: Request, principal: Principal) -> Response:
    """`POST /api/v1/runs/{id}/cancel`: 200 when canceled at once, 202 when asked to stop."""
    run_id = _run_id(request)

    outcome = await asyncio.to_thread(run_control.cancel_run, run_id=run_id, actor=principal)
    return _json(
        {"id": outcome.run_id, "status": outcome.status, "is_immediate": outcome.is_immediate},
        status=200 if outcome.is_immediate else 202,
    )


async def rerun(request: Request, principal: Principal) -> Response:
    """`POST /api/v1/runs/{id}/rerun`: 201 with the new run's id."""
    run_id = _run_id(request)

    new_id = await asyncio.to_thread(run_control.rerun, run_id=run_id, actor=principal)
    return _json({"id": new_id, "rerun_of": run_id}, status=201)


# --- logs -----------------------------------------------------------------------------------------


def _line(line: run_logs.StoredLine) -> dict[str, Any]:
    return {
        "sequence": line.sequence,
        "stream": line.stream,
        "line": line.line,
        "ts": line.ts.isoformat(),
    }


async def run_log(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/runs/{id}/logs?since=N[&follow=1]`: stored lines after N, as one JSON page or,
    with follow, as server-sent events (`Last-Event-ID` wins over `since`)."""
    run_id = _run_id(request)
    since = _query_int(request, "since", 0)
    assert since is not None
    is_follow = request.query_params.get("follow", "") in ("1", "true")
    if is_follow and request.headers.get("last-event-id"):
        last = request.headers["last-event-id"].strip()
        if not last.isascii() or not last.isdigit() or len(last) > 18:
            raise InvalidArgumentError("Last-Event-ID must be a log sequence number")
        since = int(last)
    await asyncio.to_thread(
        in_transaction, run_access.require_run, actor=principal, run_id=run_id,
        action=Action.VIEW_PROJECT,
    )  # fmt: skip
    if not is_follow:
        lines = await asyncio.to_thread(run_logs.read_lines, run_id=run_id, after=since)
        return _json(
            {
                "lines": [_line(line) for line in lines],
                "next": lines[-1].sequence if lines else since,
            }
        )

    async def access_lost() -> CodexK8sError | None:
        """Why the reader may no longer read the run (signed out, token revoked, user disabled,
        membership gone), or None. The request's own credentials are resolved again."""
        current = await current_principal(request)
        if current is None:
            return UnauthorizedError("your session or API token is no longer valid")
        try:
            await asyncio.to_thread(
                in_transaction, run_access.require_run, actor=current, run_id=run_id,
                action=Action.VIEW_PROJECT,
            )  # fmt: skip
        except CodexK8sError as exc:
            return exc
        return None

    return StreamingResponse(
        _log_events(run_id, since, access_lost),
        media_type="text/event-stream",
        headers={**_NO_STORE, "X-Accel-Buffering": "no"},
    )


async def _log_events(
    run_id: int, since: int, access_lost: Callable[[], Awaitable[CodexK8sError | None]]
) -> AsyncIterator[str]:
    """SSE frames for the lines after SINCE; `event: end` once the run ended and its log is
    whole. Bounded to FOLLOW_SECONDS: the stream then just stops and the client resumes. Every
    ACCESS_RECHECK_SECONDS the reader's access is checked again; once it is lost the stream says
    why (`event: denied`, the usual error body) and ends."""
    lines = run_logs.follow(run_id=run_id, after=since, poll_seconds=FOLLOW_POLL_SECONDS)
    now = time.monotonic()
    deadline, recheck_at = now + FOLLOW_SECONDS, now + ACCESS_RECHECK_SECONDS
    # One pending read, never cancelled by a timeout: cancelling would close the generator.
    pending: asyncio.Future[run_logs.StoredLine] | None = None
    metrics.LIVE_VIEWERS.inc()  # until this stream ends or its client goes away
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if now >= recheck_at:
                recheck_at = now + ACCESS_RECHECK_SECONDS
                denied = await access_lost()
                if denied is not None:
                    body = {"error": denied.code, "message": str(denied)}
                    yield f"event: denied\ndata: {json.dumps(body)}\n\n"
                    return
            if pending is None:
                pending = asyncio.ensure_future(anext(lines))
            done, _ = await asyncio.wait({pending}, timeout=min(deadline, recheck_at) - now)
            if not done:
                continue
            read, pending = pending, None
            try:
                line = read.result()
            except StopAsyncIteration:
                yield "event: end\ndata: {}\n\n"
                return
            yield f"id: {line.sequence}\ndata: {json.dumps(_line(line))}\n\n"
    finally:
        metrics.LIVE_VIEWERS.dec()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await lines.aclose()


async def run_log_text(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/runs/{id}/logs.txt`: the whole stored log as plain text, streamed a page at a
    time (a 100,000-line log is never held in memory), offered as a download."""
    run_id = _run_id(request)
    await asyncio.to_thread(
        in_transaction, run_access.require_run, actor=principal, run_id=run_id,
        action=Action.VIEW_PROJECT,
    )  # fmt: skip
    return StreamingResponse(
        _log_text(run_id),
        media_type="text/plain; charset=utf-8",
        headers={
            **_NO_STORE,
            "Content-Disposition": f'attachment; filename="run-{run_id}.log"',
        },
    )


async def _log_text(run_id: int) -> AsyncIterator[str]:
    pages = run_logs.iter_text(run_id=run_id)
    while (page := await asyncio.to_thread(next, pages, None)) is not None:
        yield page


async def list_requests(request: Request, principal: Principal) -> Response:
    """`GET /api/v1/requests`: the questions and approvals waiting for the caller, across the
    projects they may answer for (the inbox)."""
    found = await asyncio.to_thread(run_requests.pending_requests_for, principal)
    return _json({"requests": [_record(row) for row in found]})


async def answer_request(request: Request, principal: Principal) -> Response:
    """`POST /api/v1/requests/{id}/answer` {answer?, approve?}: the caller's answer; the run
    waiting on it resumes."""
    text = request.path_params["request_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise NotFoundError(f"no request {text!r}")
    body = json_input.loads(await request.body(), what="the body", allow_nul=False)
    if not isinstance(body, dict) or set(body) - {"answer", "approve"}:
        raise InvalidArgumentError("the body must be {answer?, approve?}")
    approve = body.get("approve")
    if approve is not None and not isinstance(approve, bool):
        raise InvalidArgumentError("`approve` must be true or false")
    decision = await asyncio.to_thread(
        run_requests.answer_request, principal=principal,
        request_id=int(text), answer=body.get("answer"), approve=approve, via="api",
    )  # fmt: skip
    return _json({"request": _record(decision)})


# --- the routes' endpoints ------------------------------------------------------------------------

projects_endpoint = _endpoint({"GET": list_projects}, route=urls.API_PROJECTS)
runs_endpoint = _endpoint({"GET": list_runs, "POST": start_run}, route=urls.API_RUNS)
run_endpoint = _endpoint({"GET": get_run}, route=urls.API_RUN)
run_events_endpoint = _endpoint({"GET": run_events}, route=urls.API_RUN_EVENTS)
run_logs_endpoint = _endpoint({"GET": run_log}, route=urls.API_RUN_LOGS)
run_log_text_endpoint = _endpoint({"GET": run_log_text}, route=urls.API_RUN_LOG_TEXT)
run_cancel_endpoint = _endpoint({"POST": cancel_run}, route=urls.API_RUN_CANCEL)
run_rerun_endpoint = _endpoint({"POST": rerun}, route=urls.API_RUN_RERUN)
requests_endpoint = _endpoint({"GET": list_requests}, route=urls.API_REQUESTS)
request_answer_endpoint = _endpoint({"POST": answer_request}, route=urls.API_REQUEST_ANSWER)
