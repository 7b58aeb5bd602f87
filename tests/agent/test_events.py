"""Codex's JSON events to log lines and progress, with secrets masked (pure, no processes)."""

from __future__ import annotations

import io
import json

from codexk8s.agent.events import MASK, EventTranslator, Progress, RunLog

# Captured from `codex exec --json` 0.163.0 against tests/codex_server.py.
STREAM = [
    {"type": "thread.started", "thread_id": "t-1"},
    {"type": "turn.started"},
    {"type": "item.started", "item": {"id": "item_1", "type": "command_execution",
                                      "command": "/bin/bash -lc 'make test'", "exit_code": None,
                                      "status": "in_progress"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution",
                                        "command": "/bin/bash -lc 'make test'",
                                        "aggregated_output": "ok\nsecret-value-12345 leaked\n",
                                        "exit_code": 2, "status": "failed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "file_change",
                                        "status": "completed",
                                        "changes": [{"path": "a.py", "kind": "update"},
                                                    {"path": "b.py", "kind": "add"}]}},
    {"type": "item.completed", "item": {"id": "item_3", "type": "agent_message",
                                        "text": "Fixed it."}},
    {"type": "turn.completed", "usage": {"input_tokens": 2400, "cached_input_tokens": 400,
                                         "output_tokens": 600, "reasoning_output_tokens": 200}},
]  # fmt: skip


def test_events_become_log_lines_progress_and_a_record() -> None:
    out = io.StringIO()
    log = RunLog(out)
    log.add_secret("secret-value-12345")
    log.add_secret("short")  # too short to mask safely: ignored
    progress: list[Progress] = []
    translator = EventTranslator(log, progress.append)
    for event in STREAM:
        translator.feed(json.dumps(event) + "\n")
    translator.feed("not json at all\n")
    lines = out.getvalue().splitlines()
    assert "$ /bin/bash -lc 'make test'" in lines
    assert "  | ok" in lines and f"  | {MASK} leaked" in lines
    assert "  exit 2 (failed)" in lines
    assert "files changed: update a.py, add b.py" in lines
    assert "agent: Fixed it." in lines
    assert "codex: not json at all" in lines
    assert "secret-value-12345" not in out.getvalue()
    assert [(p.kind, p.extra) for p in progress] == [
        ("command", {"exit_code": 2}), ("files", {"files": 2}), ("message", {}),
    ]  # fmt: skip
    record = translator.record
    assert record.final_message == "Fixed it." and record.commands == 1
    assert record.files == ["a.py", "b.py"] and record.turn_completed
    assert record.usage.as_dict() == {"input": 2400, "cached": 400, "output": 600, "reasoning": 200}


def test_a_failed_turn_is_recorded() -> None:
    translator = EventTranslator(RunLog(io.StringIO()), lambda _p: None)
    translator.feed(json.dumps({"type": "error", "message": "Reconnecting... 1/4"}))
    translator.feed(json.dumps({"type": "turn.failed", "error": {"message": "boom"}}))
    assert translator.record.turn_failed == "boom"
    assert translator.record.errors == ["Reconnecting... 1/4"]
