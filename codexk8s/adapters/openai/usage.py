"""Token usage read from OpenAI Responses API answers as they stream through the model proxy.

A streamed answer (`text/event-stream`) carries its usage in the `response.completed` event;
a plain JSON answer in its `usage` field. Both are normalised to the run's four counters.
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
    """Fed the answer's bytes in order; yields the usage of every completed response."""

    def __init__(self, *, is_stream: bool) -> None:
        self.is_stream = is_stream
        self._buffer = bytearray()

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
                usage = self._completed_usage(line[5:])
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
        usage = normalise(body.get("usage")) if isinstance(body, dict) else None
        return [usage] if usage is not None else []

    @staticmethod
    def _completed_usage(data: bytes) -> dict[str, int] | None:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(event, dict) or event.get("type") != "response.completed":
            return None
        return normalise((event.get("response") or {}).get("usage"))
