"""GitHub webhook wire format: signature verification and body decoding.

GitHub signs the raw request body with HMAC-SHA256 and sends `X-Hub-Signature-256:
sha256=<hex>`. The body is either JSON or, when the hook's content type is
`application/x-www-form-urlencoded`, a form whose `payload` field holds the JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from codexk8s import json_input
from codexk8s.errors import MalformedInputError

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB and drops larger ones.
SIGNATURE_PREFIX = "sha256="


class WebhookFormatError(ValueError):
    """The request is not a well-formed GitHub webhook; the message says what is wrong."""


def sign(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub would send for this body."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of `X-Hub-Signature-256`; a missing or malformed header never matches."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = sign(secret, body)
    # compare_digest over equal-length ASCII; a different length is simply unequal.
    return hmac.compare_digest(expected.encode(), header.strip().encode("ascii", "replace"))


def decode_payload(body: bytes, content_type: str | None) -> tuple[dict[str, Any], str]:
    """The payload from either content type GitHub uses, and its JSON text as sent (stored as is,
    so the hot path need not serialise it again)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=100)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookFormatError(f"form body is not valid: {exc}") from None
        values = form.get("payload")
        if not values:
            raise WebhookFormatError("form body has no `payload` field")
        raw: str | bytes = values[0]
    elif media_type in ("application/json", "") or media_type.endswith("+json"):
        raw = body
    else:
        raise WebhookFormatError(
            f"unsupported content type {media_type!r}: use application/json or "
            "application/x-www-form-urlencoded"
        )
    try:
        # No depth walk on the hot path: the decoder's own recursion limit bounds the nesting.
        payload = json_input.loads(raw, what="payload", max_depth=None)
    except MalformedInputError as exc:
        raise WebhookFormatError(str(exc)) from None
    if not isinstance(payload, dict):
        raise WebhookFormatError("payload must be a JSON object")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:  # JSON in UTF-16/32, which json.loads also reads
            raw = json.dumps(payload)
    return payload, raw


def repository_full_name(payload: dict[str, Any]) -> str | None:
    repository = payload.get("repository")
    if isinstance(repository, dict):
        name = repository.get("full_name")
        if isinstance(name, str) and name:
            return name
    return None
