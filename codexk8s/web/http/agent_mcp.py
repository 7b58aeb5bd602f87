"""The platform MCP server a run's agent talks to (`/api/v1/agent/runs/{id}/mcp`, streamable
HTTP, the official `mcp` SDK), authenticated like the rest of the agent API by the run's own
token and valid only for that run while it is active.

Tools (services.run_requests does the work; each call is audited on the run's trail):
- `ask(question, options?)`: a question to the people of the run's project; the call returns
  their answer (the run waits, its deadline paused).
- `request_approval(action, details?)`: returns once approved; a denial fails the run.
- `report_progress(message, share_on_github?)`: a line in the run's timeline; a shared one is
  also shown in the service comment on GitHub while the run is active.
- `past_runs(limit?)`: the project's earlier runs (status, reason, summary), read-only.
- `post_comment(body)`, `set_labels(add?, remove?)`: on the run's own issue or pull request
  only (services.run_actions), after an approval when the project's policy asks for one.

Stateless: every POST is a whole exchange, so a tool call that waits for a person holds only
its own request, and any replica can serve the next one (the answer is in the database).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

import sqlalchemy as sa
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.domain.run_requests import RequestKind, RequestStatus, Tool
from codexk8s.errors import CodexK8sError
from codexk8s.services import run_actions, run_brief, run_requests
from codexk8s.web.http.errors import error_response

SERVER_NAME = "codexk8s"
_CURRENT_RUN: contextvars.ContextVar[sa.Row[Any]] = contextvars.ContextVar("codexk8s_mcp_run")

server = MCPServer(
    SERVER_NAME,
    instructions=(
        "The codexk8s platform: ask the people of this project a question, ask approval before "
        "a risky action, report progress, read the project's earlier runs."
    ),
)


def _run() -> sa.Row[Any]:
    return _CURRENT_RUN.get()


async def _call(function: Any, /, **kwargs: Any) -> Any:
    """A service call off the event loop, its refusals turned into tool errors."""
    try:
        return await asyncio.to_thread(function, run=_run(), **kwargs)
    except CodexK8sError as exc:
        raise ToolError(str(exc)) from exc


async def _decided(opened: run_requests.Decision | int) -> run_requests.Decision:
    if isinstance(opened, run_requests.Decision):
        return opened
    return await run_requests.wait_for_decision(request_id=opened, run_id=_run().id)


def _not_answered(decision: run_requests.Decision) -> ToolError:
    if decision.status == RequestStatus.TIMED_OUT.value:
        return ToolError("Nobody answered in time: the run stops and fails (question_unanswered).")
    return ToolError("The run has ended; stop working.")


@server.tool(description="Ask the people of this project a question and wait for the answer.")
async def ask(question: str, options: list[str] | None = None) -> str:
    opened = await _call(
        run_requests.open_request, kind=RequestKind.QUESTION, text=question, options=options,
        wait_minutes=get_settings().human_wait_minutes,
    )  # fmt: skip
    decision = await _decided(opened)
    if decision.status != RequestStatus.ANSWERED.value:
        raise _not_answered(decision)
    return f"{decision.answered_by or 'A project member'} answered: {decision.answer}"


@server.tool(
    description=(
        "Ask approval before a risky action (deleting data, changing production, anything "
        "hard to undo). Take the action only if this returns approved."
    )
)
async def request_approval(action: str, details: str | None = None) -> str:
    opened = await _call(
        run_requests.open_request, kind=RequestKind.APPROVAL, text=action, details=details,
        wait_minutes=get_settings().human_wait_minutes,
    )  # fmt: skip
    decision = await _decided(opened)
    if decision.status == RequestStatus.APPROVED.value:
        who = decision.answered_by or "the project's policy"
        return f"Approved by {who}" + (f": {decision.answer}" if decision.answer else ".")
    if decision.status == RequestStatus.DENIED.value:
        note = f": {decision.answer}" if decision.answer else ""
        raise ToolError(
            f"Denied by {decision.answered_by or 'a project admin'}{note}. Do not take this "
            "action; the run stops and fails (approval_denied)."
        )
    raise _not_answered(decision)


@server.tool(
    description=(
        "Add a line about your progress to the run's timeline. Set share_on_github for a "
        "milestone the people following the issue should see (shown in the run's comment on "
        "GitHub until the next one or the end of the run); use it sparingly."
    )
)
async def report_progress(message: str, share_on_github: bool = False) -> str:
    await _call(run_requests.report_progress, message=message, share=share_on_github)
    return "Recorded and shared on GitHub." if share_on_github else "Recorded."


@server.tool(
    description=(
        "This project's earlier finished runs, newest first: stage, status, failure reason, "
        "summary. Evidence for doing better than last time."
    )
)
async def past_runs(limit: int = 10) -> str:
    found = await _call(run_requests.past_runs, limit=limit)
    return json.dumps(found)


async def _approved(tool: Tool, action: str) -> None:
    """Go ahead under TOOL's policy: at once for `none`, else once a person approved ACTION."""
    opened = await _call(
        run_requests.open_request, kind=RequestKind.APPROVAL, tool=tool, text=action[:4000],
        wait_minutes=get_settings().human_wait_minutes,
    )  # fmt: skip
    decision = await _decided(opened)
    if decision.status == RequestStatus.DENIED.value:
        raise ToolError("Denied: the run stops and fails (approval_denied).")
    if decision.status != RequestStatus.APPROVED.value:
        raise _not_answered(decision)


async def _target(tool: Tool, number: int | None, repository: str | None) -> run_actions.Target:
    return await _call(
        run_actions.target, tool=tool.value, number=number, repository=repository,
        settings=get_settings(), box=get_secret_box(),
    )  # fmt: skip


@server.tool(description="Comment on this run's own issue or pull request.")
async def post_comment(body: str, issue: int | None = None, repository: str | None = None) -> str:
    place = await _target(Tool.POST_COMMENT, issue, repository)
    try:
        text = run_actions.check_comment(body)
    except CodexK8sError as exc:
        raise ToolError(str(exc)) from exc
    await _approved(Tool.POST_COMMENT, f"Comment on #{place.number}: {text}")
    try:
        url = await run_actions.post_comment(
            run=_run(), place=place, body=text, settings=get_settings()
        )
    except CodexK8sError as exc:
        raise ToolError(str(exc)) from exc
    return f"Commented: {url}"


@server.tool(
    description=(
        "Add or remove labels on this run's own issue or pull request (not codexk8s's own "
        "run:, need:, state: or mode: labels)."
    )
)
async def set_labels(
    add: list[str] | None = None, remove: list[str] | None = None, issue: int | None = None,
    repository: str | None = None,
) -> str:  # fmt: skip
    place = await _target(Tool.SET_LABELS, issue, repository)
    adding, removing = await _call(run_actions.check_labels_of, add=add, remove=remove)
    await _approved(Tool.SET_LABELS, f"Labels on #{place.number}: add {adding}, remove {removing}")
    try:
        await run_actions.set_labels(
            run=_run(), place=place, add=adding, remove=removing,
            settings=get_settings(),
        )  # fmt: skip
    except CodexK8sError as exc:
        raise ToolError(str(exc)) from exc
    return "Labels set."


class AgentMcpEndpoint:
    """The ASGI endpoint: the run token checked first (401 otherwise, audited on that run),
    then one stateless MCP exchange with the run in context."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("path_params", {}).get("run_id", "")
        if not str(raw).isdigit():
            await error_response("not_found", "no such run")(scope, receive, send)
            return
        run_id = int(raw)
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        try:
            run = await asyncio.to_thread(run_brief.authenticate_run, run_id=run_id, token=bearer)
        except run_brief.RunTokenError as exc:
            await asyncio.to_thread(
                run_requests.record_refused_call, run_id=run_id, reason=str(exc)
            )
            response = error_response(
                "unauthorized", str(exc),
                headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        _CURRENT_RUN.set(run)
        manager = StreamableHTTPSessionManager(
            app=server._lowlevel_server,
            stateless=True,
            json_response=True,
            # The run token is the whole authentication; no browser reaches this route.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        async with manager.run():
            await manager.handle_request(scope, receive, send)


agent_mcp = AgentMcpEndpoint()
