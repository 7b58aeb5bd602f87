"""GitHub webhook wire format: signatures and both body encodings."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest

from codexk8s.adapters.github.webhooks import (
    WebhookFormatError,
    decode_payload,
    repository_full_name,
    sign,
    signature_matches,
)

BODY = b'{"action":"labeled","repository":{"full_name":"Octo/Repo"}}'


def test_sign_matches_githubs_documented_example() -> None:
    # The example from GitHub's "Validating webhook deliveries" documentation.
    assert (
        sign("It's a Secret to Everybody", b"Hello, World!")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_signature_matches_only_the_right_secret_and_body() -> None:
    header = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert signature_matches("s3cret", BODY, header)
    assert not signature_matches("other", BODY, header)
    assert not signature_matches("s3cret", BODY + b" ", header)


@pytest.mark.parametrize(
    "header",
    [None, "", "sha1=abc", "sha256=", "sha256=zz", "sha256=" + "0" * 64, "garbage", "sha256=é"],
)
def test_malformed_signatures_never_match(header: str | None) -> None:
    assert not signature_matches("s3cret", BODY, header)


def test_decode_json_and_form() -> None:
    assert decode_payload(BODY, "application/json")[0]["action"] == "labeled"
    assert decode_payload(BODY, "application/json; charset=utf-8")[0]["action"] == "labeled"
    form = urlencode({"payload": BODY.decode()}).encode()
    assert decode_payload(form, "application/x-www-form-urlencoded")[0] == json.loads(BODY)


def test_the_payload_text_is_the_json_as_sent() -> None:
    assert decode_payload(BODY, "application/json")[1] == BODY.decode()
    form = urlencode({"payload": BODY.decode()}).encode()
    assert decode_payload(form, "application/x-www-form-urlencoded")[1] == BODY.decode()
    # JSON in UTF-16, which json.loads reads too, is stored re-serialised as text.
    payload, text = decode_payload(BODY.decode().encode("utf-16"), "application/json")
    assert json.loads(text) == payload == json.loads(BODY)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{not json", "application/json", "payload is not valid JSON"),
        (b"[1, 2]", "application/json", "payload must be a JSON object"),
        (b"\xff\xfe", "application/json", "payload is not valid JSON"),
        (b"other=1", "application/x-www-form-urlencoded", "no `payload` field"),
        (b"payload=%7Bbad", "application/x-www-form-urlencoded", "payload is not valid JSON"),
        (BODY, "text/plain", "unsupported content type 'text/plain'"),
    ],
)
def test_decode_errors_say_what_is_wrong(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(WebhookFormatError, match=message.replace("(", r"\(")):
        decode_payload(body, content_type)


def test_repository_full_name() -> None:
    assert repository_full_name({"repository": {"full_name": "Octo/Repo"}}) == "Octo/Repo"
    assert repository_full_name({"repository": "nope"}) is None
    assert repository_full_name({}) is None
