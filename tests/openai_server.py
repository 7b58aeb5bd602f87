"""A loopback stand-in for the OpenAI API calls the control plane makes around runs.

Speaks the documented wire format: `GET /v1/models/{model}` answers the model object or a 404
`model_not_found` error; `POST /v1/responses` (non-streaming) answers a completed Response whose
output is one assistant message with the scripted text, and a `usage` block. Requests need
`Authorization: Bearer <API_KEY>` (401 `invalid_api_key` otherwise) and are recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import serve_in_thread

API_KEY = "sk-test-fake-openai-key"


@dataclass
class FakeOpenAI:
    models: set[str] = field(default_factory=lambda: {"gpt-test"})
    # Texts the next /v1/responses calls answer with, in order (the last one repeats).
    replies: list[str] = field(default_factory=lambda: ["ok"])
    usage: dict[str, int] = field(
        default_factory=lambda: {"input": 120, "cached": 20, "output": 80, "reasoning": 30}
    )
    base_url: str = ""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def _error(self, status: int, message: str, code: str, kind: str) -> Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status)

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {API_KEY}"

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        self.requests.append(("GET", request.url.path, None))
        if not self._authorized(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key",
                               "invalid_request_error")  # fmt: skip
        if name not in self.models:
            return self._error(
                404, f"The model `{name}` does not exist or you do not have access to it.",
                "model_not_found", "invalid_request_error",
            )  # fmt: skip
        return JSONResponse(
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "codexk8s-tests"}
        )

    async def responses(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(("POST", request.url.path, body))
        if not self._authorized(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key",
                               "invalid_request_error")  # fmt: skip
        if body.get("model") not in self.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist.",
                               "model_not_found", "invalid_request_error")  # fmt: skip
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        usage = self.usage
        return JSONResponse(
            {
                "id": f"resp_{len(self.requests)}", "object": "response",
                "created_at": int(time.time()), "status": "completed", "model": body["model"],
                "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "metadata": {},
                "output": [
                    {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]}
                ],
                "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto",
                "tools": [], "top_p": 1.0,
                "usage": {
                    "input_tokens": usage["input"],
                    "input_tokens_details": {"cached_tokens": usage["cached"]},
                    "output_tokens": usage["output"],
                    "output_tokens_details": {"reasoning_tokens": usage["reasoning"]},
                    "total_tokens": usage["input"] + usage["output"],
                },
            }
        )  # fmt: skip

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models/{model:path}", self.model, methods=["GET"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
            ]
        )


@contextmanager
def running_openai(fake: FakeOpenAI | None = None) -> Iterator[FakeOpenAI]:
    fake = fake or FakeOpenAI()
    with serve_in_thread(fake.app()) as base_url:
        fake.base_url = f"{base_url}/v1"
        yield fake
