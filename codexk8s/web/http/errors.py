"""One error shape for every HTTP answer: {"error": code, "message": text}."""

from __future__ import annotations

from starlette.responses import JSONResponse

from codexk8s.errors import HTTP_STATUS, CodexK8sError


def error_response(
    code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message}, status_code=HTTP_STATUS.get(code, 500), headers=headers
    )


def from_exception(exc: CodexK8sError) -> JSONResponse:
    return error_response(exc.code, str(exc))
