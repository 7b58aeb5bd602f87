"""A loopback OpenAI Responses API server that the real `codex` binary can talk to.

It speaks the documented streaming wire protocol (`POST /v1/responses` with `stream: true`
answered as server-sent events: `response.created`, `response.output_item.added/done`,
`response.completed` with `usage`). The conversation is scripted and stateless, so retries and
reconnects behave like the real service:

- a request whose input holds no output of `command` after its last user message (the prompt;
  in a resumed session the history comes before it) is answered with one function call to the
  shell tool Codex offered (`exec_command` / `shell_command` / `shell`) running `command`;
- a request that already carries that call's output is answered with the final message.

`explore` makes it behave like a model that first reads what it needs: each of those commands is
called (one per request) before `command`, unless a call of it is anywhere in the input already —
in a resumed session the earlier reads are in the history. With `usage_from_size` the usage of an
answer is estimated from the request itself (4 bytes of JSON per token for input and output, the
longest prefix shared with an earlier request as cached input, as prompt caching does) instead of
the fixed `usage`, so that runs of different shapes can be compared.

`mcp_calls` makes it call tools of the platform MCP server first, one per request, in order:
(tool, arguments) pairs, each called once per conversation, as Codex offers them (in the
`mcp__<server>` namespace).

`fail_statuses` makes the next requests fail with those HTTP statuses first (429 with
`Retry-After`, 500, ...); `always_fail` makes every request fail. Every request is recorded
(path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SHELL_TOOLS = ("exec_command", "shell_command", "shell")


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ScriptedResponses:
    """The script and the record of one fake OpenAI server."""

    command: str = "printf 'hello from codex\\n' > HELLO.md"
    final_message: str = "Added HELLO.md with a greeting."
    api_key: str = "sk-test-upstream-key"
    usage: dict[str, Any] = field(
        default_factory=lambda: {
            "input_tokens": 1200,
            "input_tokens_details": {"cached_tokens": 200},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 100},
            "total_tokens": 1500,
        }
    )
    fail_statuses: list[int] = field(default_factory=list)
    always_fail: int | None = None
    explore: tuple[str, ...] = ()
    mcp_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    mcp_server: str = "codexk8s"
    usage_from_size: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: list[str] = field(default_factory=list)

    def forget_cache(self) -> None:
        """Start the estimate's prompt cache afresh (a run hours after the last one finds it
        cold)."""
        with self._lock:
            self._seen.clear()

    def usage_of(self, body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        if not self.usage_from_size:
            return self.usage
        text = json.dumps(
            [body.get("instructions"), body.get("tools"), body.get("input")], sort_keys=True
        )
        with self._lock:
            shared = max((_common_prefix(text, earlier) for earlier in self._seen), default=0)
            self._seen.append(text)
        output = len(json.dumps(item)) // 4
        return {
            "input_tokens": len(text) // 4,
            "input_tokens_details": {"cached_tokens": shared // 4},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": len(text) // 4 + output,
        }

    def next_failure(self) -> int | None:
        with self._lock:
            if self.always_fail is not None:
                return self.always_fail
            return self.fail_statuses.pop(0) if self.fail_statuses else None


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


def _shell_call(body: dict[str, Any], command: str) -> dict[str, Any]:
    offered = {tool.get("name") for tool in body.get("tools") or [] if isinstance(tool, dict)}
    name = next((tool for tool in SHELL_TOOLS if tool in offered), "shell")
    if name == "exec_command":
        arguments: dict[str, Any] = {"cmd": command}
    elif name == "shell_command":
        arguments = {"command": command}
    else:
        arguments = {"command": ["bash", "-lc", command]}
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex[:12]}",
        "call_id": f"call_{uuid.uuid4().hex[:12]}",
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def _message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _common_prefix(a: str, b: str) -> int:
    length = min(len(a), len(b))
    index = 0
    while index < length and a[index] == b[index]:
        index += 1
    return index


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in body.get("input") or [] if isinstance(item, dict)]


def _since_prompt(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The input items after the last user message (the prompt of this turn)."""
    items = _items(body)
    last_user = max(
        (i for i, item in enumerate(items) if item.get("type") == "message"
         and item.get("role") == "user"),
        default=-1,
    )  # fmt: skip
    return items[last_user + 1 :]


def _runs(item: dict[str, Any], command: str) -> bool:
    """Whether ITEM is a shell call running COMMAND (as `_shell_call` spells it)."""
    if item.get("type") != "function_call":
        return False
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except ValueError:
        return False
    called = (
        arguments.get("cmd") or arguments.get("command") if isinstance(arguments, dict) else None
    )
    if isinstance(called, list):
        called = called[-1] if called else None
    return called == command


def _did_the_work(body: dict[str, Any], command: str) -> bool:
    """Whether this turn already ran COMMAND and got its output."""
    turn = _since_prompt(body)
    calls = {item.get("call_id") for item in turn if _runs(item, command)}
    return any(item.get("type") == "function_call_output" and item.get("call_id") in calls
               for item in turn)  # fmt: skip


def _called(body: dict[str, Any], command: str) -> bool:
    return any(_runs(item, command) for item in _items(body))


def _mcp_call(namespace: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex[:12]}",
        "call_id": f"call_{uuid.uuid4().hex[:12]}",
        "name": tool,
        "namespace": namespace,
        "arguments": json.dumps(arguments, sort_keys=True),
        "status": "completed",
    }


def _mcp_called(body: dict[str, Any], tool: str, arguments: dict[str, Any]) -> bool:
    wanted = json.dumps(arguments, sort_keys=True)
    return any(
        item.get("type") == "function_call"
        and item.get("name") in (tool, f"mcp__codexk8s__{tool}")
        and item.get("arguments") == wanted
        for item in _items(body)
    )


def mcp_outputs(script: ScriptedResponses) -> list[str]:
    """The outputs of the platform tool calls, as Codex sent them back to the model."""
    calls: set[str] = set()
    outputs: dict[str, str] = {}
    for request in script.requests:
        for item in _items(request.body):
            if item.get("type") == "function_call" and item.get("namespace"):
                calls.add(str(item.get("call_id")))
            elif item.get("type") == "function_call_output" and item.get("call_id") in calls:
                output = item.get("output")
                outputs[str(item["call_id"])] = (
                    output if isinstance(output, str) else json.dumps(output)
                )
    return list(outputs.values())


def _next_item(script: ScriptedResponses, body: dict[str, Any]) -> dict[str, Any]:
    for tool, arguments in script.mcp_calls:
        if not _mcp_called(body, tool, arguments):
            return _mcp_call(f"mcp__{script.mcp_server}", tool, arguments)
    for command in script.explore:
        if not _called(body, command):
            return _shell_call(body, command)
    if _did_the_work(body, script.command):
        return _message(script.final_message)
    return _shell_call(body, script.command)


def build_app(script: ScriptedResponses) -> Starlette:
    async def responses(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        script.requests.append(
            RecordedRequest(path=request.url.path, headers=dict(request.headers), body=body)
        )
        if request.headers.get("authorization") != f"Bearer {script.api_key}":
            return JSONResponse(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                           "code": "invalid_api_key"}},
                status_code=401,
            )  # fmt: skip
        failure = script.next_failure()
        if failure is not None:
            headers = {"retry-after": "0"} if failure == 429 else {}
            return JSONResponse(
                {"error": {"message": f"scripted failure {failure}", "type": "server_error"}},
                status_code=failure,
                headers=headers,
            )
        item = _next_item(script, body)
        response_id = f"resp_{uuid.uuid4().hex[:12]}"
        base = {"id": response_id, "object": "response", "model": body.get("model")}

        async def events() -> AsyncIterator[bytes]:
            yield _sse("response.created", {"response": {**base, "status": "in_progress"}})
            yield _sse("response.output_item.added", {"output_index": 0, "item": item})
            yield _sse("response.output_item.done", {"output_index": 0, "item": item})
            yield _sse(
                "response.completed",
                {"response": {**base, "status": "completed", "output": [item],
                              "usage": script.usage_of(body, item)}},
            )  # fmt: skip

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(
        routes=[
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
