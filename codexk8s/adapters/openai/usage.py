"""Token usage (and response ids) read from OpenAI Responses API answers as they stream through
the model proxy.

A streamed answer (`text/event-stream`) carries its usage in the `response.completed` event;
a plain JSON answer in its `usage` field. Both are normalised to the run's four counters. The id
of a created response comes in `response.created` (or the JSON answer's `id`): the proxy lets a
run read only the responses it created.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line cannot be an event we need: drop it
MAX_JSON_BYTES = 16 * 1024 * 1024


def normalise(raw: Any) -> dict[str, int] | None:
    """The Responses API `usage` object as {input, cached, output, reasoning}."""
    if not isinstance(raw, dict):
        return None

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return {
        "input": count(raw.get("input_tokens")),
        "cached": count((raw.get("input_tokens_details") or {}).get("cached_tokens")),
        "output": count(raw.get("output_tokens")),
        "reasoning": count((raw.get("output_tokens_details") or {}).get("reasoning_tokens")),
    }


class UsageMeter:
    """Fed the answer's bytes in order; yields the usage of every completed response and collects
    the ids of the responses the answer names (`response_ids`, in order, each once)."""

    def __init__(self, *, is_stream: bool) -> None:
        self.is_stream = is_stream
        self.response_ids: list[str] = []
        self._buffer = bytearray()

    def _saw_response(self, response: Any) -> None:
        found = response.get("id") if isinstance(response, dict) else None
        if isinstance(found, str) and found and found not in self.response_ids:
            self.response_ids.append(found)

    def feed(self, chunk: bytes) -> list[dict[str, int]]:
        self._buffer += chunk
        if not self.is_stream:
            if len(self._buffer) > MAX_JSON_BYTES:
                self._buffer.clear()
            return []
        found = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            if line.startswith(b"data:"):
                usage = self._read_event(line[5:])
                if usage is not None:
                    found.append(usage)
        if len(self._buffer) > MAX_LINE_BYTES:
            self._buffer.clear()
        return found

    def finish(self) -> list[dict[str, int]]:
        """Usage of a plain JSON answer (nothing for streams: their events were already fed)."""
        if self.is_stream or not self._buffer:
            return []
        try:
            body = json.loads(bytes(self._buffer))
        except (ValueError, RecursionError):
            return []
        if not isinstance(body, dict):
            return []
        self._saw_response(body)
        usage = normalise(body.get("usage"))
        return [usage] if usage is not None else []

    def _read_event(self, data: bytes) -> dict[str, int] | None:
        """Note the response an event names; the usage of a `response.completed` event."""
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return None
        response = event.get("response")
        if event["type"].startswith("response."):
            self._saw_response(response)
        if event["type"] != "response.completed" or not isinstance(response, dict):
            return None
        return normalise(response.get("usage"))
