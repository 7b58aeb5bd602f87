"""Codex's JSON event stream (`codex exec --json`) turned into readable log lines and progress.

Everything the runner prints goes through `RunLog`, which masks the run's secrets (run token,
repository token) wherever they appear, so the run's stored logs never hold them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

MASK = "********"
OUTPUT_LINES = 12  # lines of a command's output shown in the log
MIN_SECRET_LENGTH = 8  # shorter values would mask ordinary words


class RunLog:
    """Prints log lines for the run's stored logs, with every known secret masked."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._secrets: list[str] = []

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= MIN_SECRET_LENGTH and value not in self._secrets:
            self._secrets.append(value)
            self._secrets.sort(key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def __call__(self, line: str) -> None:
        stream = self._stream or sys.stdout
        for part in self.mask(line).splitlines() or [""]:
            stream.write(part + "\n")
        stream.flush()


@dataclass(slots=True)
class Usage:
    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def add(self, raw: dict[str, Any]) -> None:
        self.input += int(raw.get("input_tokens") or 0)
        self.cached += int(raw.get("cached_input_tokens") or 0)
        self.output += int(raw.get("output_tokens") or 0)
        self.reasoning += int(raw.get("reasoning_output_tokens") or 0)

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "cached": self.cached,
            "output": self.output,
            "reasoning": self.reasoning,
        }

    def minus(self, other: Usage) -> Usage:
        """What was used beyond OTHER (never below zero)."""
        return Usage(
            input=max(0, self.input - other.input),
            cached=max(0, self.cached - other.cached),
            output=max(0, self.output - other.output),
            reasoning=max(0, self.reasoning - other.reasoning),
        )


@dataclass(slots=True)
class Progress:
    """One progress event for the control plane's timeline."""

    kind: str  # command | files | message | turn
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.extra}


@dataclass(slots=True)
class SessionRecord:
    """What one Codex session did, gathered from its events."""

    thread_id: str | None = None
    final_message: str | None = None
    usage: Usage = field(default_factory=Usage)
    commands: int = 0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    turn_failed: str | None = None
    turn_started: bool = False
    turn_completed: bool = False


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EventTranslator:
    """Feeds Codex's JSON lines one by one; prints log lines and emits progress events."""

    def __init__(self, log: RunLog, emit: Callable[[Progress], None]) -> None:
        self.log = log
        self.emit = emit
        self.record = SessionRecord()

    def feed(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.log(f"codex: {line}")
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "thread.started":
            self.record.thread_id = event.get("thread_id")
            self.log(f"codex: session {self.record.thread_id} started")
        elif kind == "turn.started":
            self.record.turn_started = True
            self.log("codex: turn started")
        elif kind == "turn.completed":
            self.record.turn_completed = True
            self.record.usage.add(event.get("usage") or {})
            usage = self.record.usage
            self.log(
                f"codex: turn completed; tokens so far: input {usage.input} (cached "
                f"{usage.cached}), output {usage.output} (reasoning {usage.reasoning})"
            )
        elif kind == "turn.failed":
            message = str((event.get("error") or {}).get("message") or "unknown error")
            self.record.turn_failed = message
            self.log(f"codex: turn failed: {message}")
        elif kind == "error":
            message = str(event.get("message") or "")
            self.record.errors.append(message)
            self.log(f"codex: {message}")
        elif kind in ("item.started", "item.updated", "item.completed"):
            self._item(kind, event.get("item") or {})

    def _item(self, kind: str, item: dict[str, Any]) -> None:
        item_type = item.get("type")
        done = kind == "item.completed"
        if item_type == "command_execution":
            command = str(item.get("command") or "")
            if kind == "item.started":
                self.log(f"$ {command}")
            elif done:
                self._command_done(command, item)
        elif item_type == "file_change" and done:
            changes = item.get("changes") or []
            described = [f"{c.get('kind', '?')} {c.get('path', '?')}" for c in changes]
            self.record.files.extend(str(c.get("path")) for c in changes if c.get("path"))
            self.log("files changed: " + (", ".join(described) or "(none)"))
            self.emit(Progress("files", _short(", ".join(described)), {"files": len(described)}))
        elif item_type == "agent_message" and done:
            text = str(item.get("text") or "")
            self.record.final_message = text
            self.log(f"agent: {text}")
            self.emit(Progress("message", _short(text, 1000)))
        elif item_type == "reasoning" and done:
            self.log(f"thinking: {_short(str(item.get('text') or ''), 200)}")
        elif item_type == "error" and done:
            self.log(f"codex warning: {item.get('message')}")
        elif item_type in ("mcp_tool_call", "web_search", "todo_list") and done:
            self.log(f"codex: {item_type} {_short(json.dumps(item), 200)}")

    def _command_done(self, command: str, item: dict[str, Any]) -> None:
        self.record.commands += 1
        exit_code = item.get("exit_code")
        output = str(item.get("aggregated_output") or "").rstrip("\n")
        lines = output.splitlines()
        for text in lines[:OUTPUT_LINES]:
            self.log(f"  | {text}")
        if len(lines) > OUTPUT_LINES:
            self.log(f"  | … {len(lines) - OUTPUT_LINES} more lines")
        self.log(f"  exit {exit_code} ({item.get('status')})")
        self.emit(Progress("command", _short(command), {"exit_code": exit_code}))
