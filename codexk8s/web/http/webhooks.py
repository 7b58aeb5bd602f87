"""`POST /api/v1/webhooks/github`: read the request within GitHub's limits, then hand it to
the ingest service. The answer is sent once the delivery and its runs are committed."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from codexk8s import metrics
from codexk8s.adapters.github.webhooks import MAX_BODY_BYTES
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.errors import (
    CodexK8sError,
    InvalidArgumentError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnavailableError,
)
from codexk8s.logging_config import bound_contextvars
from codexk8s.services import webhook_ingest
from codexk8s.web.http.errors import error_response, from_exception

log = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


# Rejections by the error the ingest service raised (see codexk8s_webhooks_rejected_total).
_REJECTION_REASONS: tuple[tuple[type[CodexK8sError], str], ...] = (
    (UnauthorizedError, "signature"),
    (InvalidArgumentError, "bad_request"),
    (PayloadTooLargeError, "too_large"),
    (UnavailableError, "no_secret"),
)


def _rejection_reason(exc: CodexK8sError) -> str:
    return next((reason for kind, reason in _REJECTION_REASONS if isinstance(exc, kind)), "other")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BodyTooLarge
    return bytes(body)


def _rejection_request(request: Request, body: bytes = b"") -> webhook_ingest.WebhookRequest:
    return webhook_ingest.WebhookRequest(
        delivery_id=request.headers.get("x-github-delivery"),
        event=request.headers.get("x-github-event"),
        signature=request.headers.get("x-hub-signature-256"),
        content_type=request.headers.get("content-type"),
        body=body,
        remote=request.client.host if request.client else None,
    )


async def github_webhook(request: Request) -> JSONResponse:
    # Every line logged while handling this delivery (ingest thread included) names it.
    # Header values are the sender's: cut to the lengths ingest accepts before logging them.
    with bound_contextvars(
        delivery_id=(request.headers.get("x-github-delivery") or "")[:100] or None,
        github_event=(request.headers.get("x-github-event") or "")[:64] or None,
    ):
        response = await _github_webhook(request)
        log.info("webhook answered", extra={"status_code": response.status_code})
        return response


async def _github_webhook(request: Request) -> JSONResponse:
    if request.method != "POST":
        return error_response(
            "method_not_allowed", "use POST for GitHub webhooks", headers={"Allow": "POST"}
        )
    try:
        body = await _read_body(request)
    except _BodyTooLarge:
        metrics.WEBHOOKS_REJECTED.labels("too_large").inc()
        message = f"payload exceeds GitHub's limit of {MAX_BODY_BYTES // (1024 * 1024)} MiB"
        await asyncio.to_thread(
            webhook_ingest.record_rejection,
            _rejection_request(request),
            "request_rejected",
            message,
        )
        # Not reading the rest: close the connection instead of draining a huge body.
        return error_response("payload_too_large", message, headers={"Connection": "close"})
    except ClientDisconnect:
        metrics.WEBHOOKS_REJECTED.labels("bad_request").inc()
        return error_response("invalid_argument", "client disconnected before the body ended")
    try:
        settings = get_settings()
        secret = settings.github_webhook_secret
        with metrics.WEBHOOK_INGEST_SECONDS.time():
            outcome = await asyncio.to_thread(
                webhook_ingest.ingest_github_delivery,
                box=get_secret_box(),
                global_secret=secret.get_secret_value() if secret else None,
                request=_rejection_request(request, body),
            )
    except CodexK8sError as exc:
        metrics.WEBHOOKS_REJECTED.labels(_rejection_reason(exc)).inc()
        return from_exception(exc)
    # Labelled only once the signature is verified: unsigned requests cannot invent event names.
    metrics.WEBHOOKS_RECEIVED.labels(outcome.event).inc()
    if outcome.replay_of is not None:
        metrics.WEBHOOKS_REPLAYED.labels(outcome.event).inc()
        return JSONResponse(
            {"duplicate": True, "delivery_id": outcome.delivery_id, "replay_of": outcome.replay_of}
        )
    if outcome.is_duplicate:
        metrics.WEBHOOKS_DUPLICATE.labels(outcome.event).inc()
        return JSONResponse({"duplicate": True, "delivery_id": outcome.delivery_id})
    answer = {
        "delivery_id": outcome.delivery_id,
        "event": outcome.event,
        "action": outcome.action,
        "runs": outcome.runs,
        "canceled": outcome.canceled,
        "cancel_requested": outcome.cancel_requested,
        "ignored": outcome.ignored,
    }
    return JSONResponse(answer, status_code=200 if outcome.is_ping else 202)
