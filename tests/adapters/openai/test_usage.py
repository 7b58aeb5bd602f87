"""Usage found in Responses API answers as they pass the proxy, however the bytes are cut."""

from __future__ import annotations

import json

from codexk8s.adapters.openai.usage import UsageMeter

USAGE = {
    "input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200},
    "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 100},
}  # fmt: skip
EXPECTED = {"input": 1200, "cached": 200, "output": 300, "reasoning": 100}


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


def test_stream_usage_is_found_across_chunk_boundaries() -> None:
    stream = (
        sse("response.created", {"response": {"id": "r"}})
        + sse("response.output_text.delta", {"delta": "usage: not this one"})
        + sse("response.completed", {"response": {"id": "r", "usage": USAGE}})
    )
    for size in (1, 7, 64, len(stream)):
        meter = UsageMeter(is_stream=True)
        found = []
        for start in range(0, len(stream), size):
            found += meter.feed(stream[start : start + size])
        assert found + meter.finish() == [EXPECTED], size


def test_json_answer_usage_and_garbage() -> None:
    meter = UsageMeter(is_stream=False)
    body = json.dumps({"object": "response", "usage": USAGE}).encode()
    assert meter.feed(body[:10]) == [] and meter.feed(body[10:]) == []
    assert meter.finish() == [EXPECTED]
    garbage = UsageMeter(is_stream=True)
    assert garbage.feed(b"data: {not json\n\ndata: [DONE]\n\n") == []
    negative = UsageMeter(is_stream=False)
    negative.feed(json.dumps({"usage": {"input_tokens": -5, "output_tokens": True}}).encode())
    assert negative.finish() == [{"input": 0, "cached": 0, "output": 0, "reasoning": 0}]
