"""The model proxy's wire rules: paths, headers, and the key scrubbed from streamed answers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexk8s.adapters.openai.proxy import (
    REDACTED,
    ProxiedCall,
    SecretScrubber,
    match_call,
    request_headers,
)

KEY = "sk-live-0123456789abcdefABCDEF"


def scrub_in_pieces(text: bytes, cuts: list[int], secrets: list[str]) -> tuple[bytes, list[bytes]]:
    scrubber = SecretScrubber(secrets)
    bounds = [0, *sorted(cuts), len(text)]
    sent = [scrubber.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    return b"".join(sent) + scrubber.finish(), sent


def test_a_key_split_at_every_point_is_still_scrubbed() -> None:
    text = f'data: {{"error": "bad key {KEY}", "again": "{KEY}"}}\n\n'.encode()
    expected = text.replace(KEY.encode(), REDACTED)
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1, 7):
            whole, sent = scrub_in_pieces(text, [first, second], [KEY])
            assert whole == expected
            assert all(KEY.encode() not in piece for piece in sent)
            # Nor could a reader join the pieces into the key.
            assert KEY.encode() not in b"".join(sent)


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_stream_comes_out_whole_without_the_key(noise: bytes, cuts: list[int]) -> None:
    text = noise[:150] + KEY.encode() + noise[150:] + KEY.encode()[:10]
    whole, _ = scrub_in_pieces(text, [c % (len(text) + 1) for c in cuts], [KEY])
    assert whole == text.replace(KEY.encode(), REDACTED)
    assert KEY.encode() not in whole


def test_event_ends_are_not_held_back() -> None:
    scrubber = SecretScrubber([KEY])
    event = b'event: response.output_text.delta\ndata: {"delta": "hi"}\n\n'
    assert scrubber.feed(event) == event
    # Only an end that begins the key waits for the next chunk.
    assert scrubber.feed(b"data: sk-li") == b"data: "
    assert scrubber.feed(b"ving\n\n") == b"sk-living\n\n"
    assert scrubber.finish() == b""


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "responses", ProxiedCall("responses")),
        ("POST", "responses/compact", ProxiedCall("responses/compact")),
        ("GET", "responses/resp_abc-1", ProxiedCall("responses/resp_abc-1", "resp_abc-1")),
        ("GET", "responses/resp_1/input_items", ProxiedCall("responses/resp_1/input_items",
                                                             "resp_1")),
        ("POST", "responses/resp_1/cancel", ProxiedCall("responses/resp_1/cancel", "resp_1")),
        ("GET", "models", ProxiedCall("models")),
        ("GET", "models/gpt-4.1-mini", ProxiedCall("models/gpt-4.1-mini")),
        ("GET", "responses", None),
        ("POST", "responses/resp_1", None),
        ("GET", "responses/%2e%2e/organization", None),
        ("GET", "responses/../organization", None),
        ("GET", "responses/..", None),
        ("GET", "models/..", None),
        ("GET", "models/.hidden", None),
        ("GET", "models/a/b", None),
        ("GET", "files", None),
        ("GET", "responses/resp_1\\..\\x", None),
        ("GET", "", None),
    ],
)  # fmt: skip
def test_only_the_model_routes_match(method: str, path: str, expected: ProxiedCall | None) -> None:
    assert match_call(method, path) == expected


def test_request_headers_are_an_allow_list_with_billing_from_configuration() -> None:
    incoming = [
        ("Authorization", "Bearer run-token"), ("OpenAI-Organization", "org-run"),
        ("OpenAI-Project", "proj-run"), ("Cookie", "a=b"), ("ChatGPT-Account-ID", "acct"),
        ("Content-Type", "application/json"), ("originator", "codex_exec"),
        ("x-codex-turn-state", "t"), ("X-Stainless-Lang", "python"), ("Host", "evil"),
    ]  # fmt: skip
    assert request_headers(incoming, api_key=KEY, organization=None, project=None) == {
        "authorization": f"Bearer {KEY}", "content-type": "application/json",
        "originator": "codex_exec", "x-codex-turn-state": "t", "x-stainless-lang": "python",
    }  # fmt: skip
    configured = request_headers(incoming, api_key=KEY, organization="org-ops", project="p-ops")
    assert configured["openai-organization"] == "org-ops"
    assert configured["openai-project"] == "p-ops"
