"""Run logs for the tests (the database of either kind is conftest's `log_db`): runs to write to,
and lines that reach every corner of storage (ANSI colours, non-ASCII text, empty and over-long
lines, stderr, characters that mean something to LIKE, equal timestamps and microseconds)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.db.engine import session_scope
from codexk8s.db.models import AgentRun
from codexk8s.domain.logs import LogLimits
from codexk8s.domain.runtime import LogLine
from codexk8s.services import projects, run_logs

START = datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=UTC)
NO_CAP = LogLimits(max_lines=10**9, max_bytes=10**12)


def make_run(
    engine: Engine,
    *,
    project_key: str = "logs",
    status: str = "succeeded",
    finished_at: datetime | None = START,
    has_workload: bool = True,
    tokens_input: int = 0,
    summary: str | None = None,
) -> int:
    """A run of PROJECT_KEY (created when missing); with HAS_WORKLOAD its log is complete only
    once a final batch is stored, as with a real workload."""
    with session_scope(engine) as session:
        project = projects.get_by_key(session=session, key=project_key)
        if project is None:
            project = projects.create_project(session=session, key=project_key)
        run = AgentRun(
            correlation_id=f"run-{uuid.uuid4().hex[:12]}", project_id=project.id or 0,
            agent_key="dev", stage="dev", status=status, created_at=START - timedelta(hours=1),
            started_at=START - timedelta(hours=1),
            finished_at=finished_at if status in ("succeeded", "failed", "canceled") else None,
            runtime_handle={"runtime": "local", "name": "w"} if has_workload else None,
            tokens_input=tokens_input, summary=summary,
        )  # fmt: skip
        session.add(run)
        session.flush()
        return run.id or 0


def example_lines(count: int, *, first: int = 1) -> list[LogLine]:
    """COUNT varied lines numbered from FIRST; their cursors are their numbers."""
    lines = []
    for n in range(first, first + count):
        kind = n % 11
        if kind == 0:
            text = f"\x1b[1;31merror\x1b[0m in step {n}: Zürich → 東京 ✓ 100% done_ok"
        elif kind == 1:
            text = ""
        elif kind == 2:
            text = f"\x1b[32mPASS\x1b[0m tests/test_{n % 7}.py::test_case[{n}] \\ back\\slash"
        elif kind == 3:
            text = "x" * (n % 500) + f" wide {n}"
        elif kind == 4:
            text = f"\tindented\twith\ttabs {n}  trailing  "
        elif kind == 5 and n % 50 == 0:
            text = "long " + "y" * 70_000  # cut at MAX_LINE_CHARS when stored
        else:
            text = f"$ make build # step {n} of a run that writes MiXeD CaSe text"
        stamp = START + timedelta(microseconds=n * 1237 if n % 3 else (n - 1) * 1237)
        lines.append(
            LogLine(stream="stderr" if n % 7 == 0 else "stdout", line=text, ts=stamp, cursor=str(n))
        )
    return lines


def write(
    engine: Engine,
    run_id: int,
    lines: Sequence[LogLine],
    *,
    batch: int = 500,
    final: bool = True,
    limits: LogLimits = NO_CAP,
) -> run_logs.LogPosition:
    """Store LINES as the pump would (batches from the run's current position), then the end."""
    position = current_position(engine, run_id)
    for start in range(0, len(lines), batch):
        stored = run_logs.store_batch(
            engine, run_id=run_id, expected_sequence=position.sequence,
            expected_dropped=position.dropped, lines=lines[start : start + batch], limits=limits,
        )  # fmt: skip
        assert stored is not None
        position = stored
    if final:
        stored = run_logs.store_batch(
            engine, run_id=run_id, expected_sequence=position.sequence,
            expected_dropped=position.dropped, lines=[], final=True, limits=limits,
        )  # fmt: skip
        assert stored is not None
    return position


def current_position(engine: Engine, run_id: int) -> run_logs.LogPosition:
    with Session(engine) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        return run_logs.LogPosition(run.log_sequence, run.log_dropped_lines)


def run_row(engine: Engine, run_id: int) -> AgentRun:
    with Session(engine) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        return run
