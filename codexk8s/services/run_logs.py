"""Run logs: stored as they arrive (so they outlive pods and processes) and read back in order.

Writers append batches with consecutive sequence numbers and move the run's `log_sequence` and
`log_cursor` in the same transaction, with a compare-and-set on `log_sequence`: if two replicas
ever pumped the same run, the second's batch fails the check and is dropped whole, so no line is
stored twice and none is skipped. Readers ask for lines after a sequence number; the follow
iterator resumes from the last sequence it yielded, so a reconnect neither repeats nor loses lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codexk8s.db.models import AgentRun, RunLog
from codexk8s.domain.runs import RunStatus
from codexk8s.domain.runtime import LogLine
from codexk8s.errors import NotFoundError
from codexk8s.services import notifications

RUNS = AgentRun.__table__  # type: ignore[attr-defined]
LOGS = RunLog.__table__  # type: ignore[attr-defined]
EOF_PREFIX = "eof:"
MAX_LINE_CHARS = 64 * 1024  # a single gigantic line must not blow up a page or a row
PAGE = 1000


@dataclass(frozen=True, slots=True)
class StoredLine:
    sequence: int
    stream: str
    line: str
    ts: datetime


def store_batch(
    engine: Engine,
    *,
    run_id: int,
    expected_sequence: int,
    lines: Sequence[LogLine],
    final: bool = False,
) -> int | None:
    """Append LINES after EXPECTED_SEQUENCE; return the new last sequence, or None if another
    writer moved the run's log first (then nothing was written)."""
    last = expected_sequence + len(lines)
    cursor = lines[-1].cursor if lines else None
    with engine.begin() as connection:
        values: dict[str, object] = {"log_sequence": last}
        if cursor is not None or final:
            current = cursor if cursor is not None else _current_cursor(connection, run_id)
            values["log_cursor"] = (EOF_PREFIX + (current or "")) if final else cursor
        moved = connection.execute(
            RUNS.update()
            .where(RUNS.c.id == run_id, RUNS.c.log_sequence == expected_sequence)
            .values(**values)
        ).rowcount
        if not moved:
            return None
        if lines:
            connection.execute(
                LOGS.insert(),
                [
                    {
                        "run_id": run_id,
                        "sequence": expected_sequence + index + 1,
                        "stream": item.stream,
                        "line": item.line[:MAX_LINE_CHARS],
                        "ts": item.ts,
                    }
                    for index, item in enumerate(lines)
                ],
            )
            notifications.publish_on_commit(connection, [notifications.run_topic(run_id)])
    return last


def _current_cursor(connection: sa.Connection, run_id: int) -> str | None:
    return connection.execute(sa.select(RUNS.c.log_cursor).where(RUNS.c.id == run_id)).scalar()


def require_run(engine: Engine, *, run_id: int) -> None:
    with engine.connect() as connection:
        if connection.execute(sa.select(RUNS.c.id).where(RUNS.c.id == run_id)).first() is None:
            raise NotFoundError(f"no run {run_id}")


def read_lines(
    engine: Engine, *, run_id: int, after: int = 0, limit: int = PAGE
) -> list[StoredLine]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(LOGS.c.sequence, LOGS.c.stream, LOGS.c.line, LOGS.c.ts)
            .where(LOGS.c.run_id == run_id, LOGS.c.sequence > after)
            .order_by(LOGS.c.sequence)
            .limit(limit)
        ).all()
    return [StoredLine(sequence=r[0], stream=r[1], line=r[2], ts=r[3]) for r in rows]


def _is_finished(engine: Engine, run_id: int) -> bool:
    """The run ended and its log pump stored everything it will ever store."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(RUNS.c.status, RUNS.c.log_cursor, RUNS.c.runtime_handle).where(
                RUNS.c.id == run_id
            )
        ).first()
    if row is None:
        raise NotFoundError(f"no run {run_id}")
    if not RunStatus(row.status).is_terminal:
        return False
    # A run that never got a workload has no log to wait for.
    return row.runtime_handle is None or (row.log_cursor or "").startswith(EOF_PREFIX)


async def follow(
    engine: Engine, *, run_id: int, after: int = 0, poll_seconds: float = 0.25
) -> AsyncIterator[StoredLine]:
    """Yield stored lines after AFTER as they arrive, until the run ended and its log is whole."""
    position = after
    while True:
        lines = await asyncio.to_thread(read_lines, engine, run_id=run_id, after=position)
        for line in lines:
            position = line.sequence
            yield line
        if len(lines) == PAGE:
            continue
        if await asyncio.to_thread(_is_finished, engine, run_id):
            # One last read: lines stored between the read above and the check.
            for line in await asyncio.to_thread(read_lines, engine, run_id=run_id, after=position):
                position = line.sequence
                yield line
            return
        await asyncio.sleep(poll_seconds)
