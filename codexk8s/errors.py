"""Specific error types raised by services; the HTTP layer, the UI and the CLI map them once."""

from __future__ import annotations


class CodexK8sError(Exception):
    """Base class. `code` is the stable machine-readable name used by the API."""

    code = "internal"


class InvalidArgumentError(CodexK8sError):
    code = "invalid_argument"


class MalformedInputError(InvalidArgumentError):
    """Input no client of ours sends: not JSON, nested too deeply, a NUL byte. Answered 400 like
    any bad argument, and also audited and counted (`reason`), since it is likely a probe."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnauthorizedError(CodexK8sError):
    code = "unauthorized"


class ForbiddenError(CodexK8sError):
    code = "forbidden"


class NotFoundError(CodexK8sError):
    code = "not_found"


class ConflictError(CodexK8sError):
    code = "conflict"


class PreconditionError(CodexK8sError):
    code = "failed_precondition"


class PayloadTooLargeError(CodexK8sError):
    code = "payload_too_large"


class UnavailableError(CodexK8sError):
    """The service is not configured or not able to take the request right now."""

    code = "unavailable"


HTTP_STATUS: dict[str, int] = {
    "invalid_argument": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "failed_precondition": 422,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unavailable": 503,
    "internal": 500,
}
