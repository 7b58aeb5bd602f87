"""Run logs: stored as they arrive (so they outlive pods and processes) and read back in order.

Writers append batches with consecutive sequence numbers and move the run's `log_sequence` and
`log_cursor` in the same transaction, with a compare-and-set on `log_sequence`: if two replicas
ever pumped the same run, the second's batch fails the check and is dropped whole, so no line is
stored twice and none is skipped. Readers ask for lines after a sequence number; the follow
iterator resumes from the last sequence it yielded, so a reconnect neither repeats nor loses lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
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


def log_length(engine: Engine, *, run_id: int) -> int:
    """The sequence of the run's last stored line (its lines are numbered 1..N without gaps)."""
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(RUNS.c.log_sequence).where(RUNS.c.id == run_id)
        ).scalar()
    if found is None:
        raise NotFoundError(f"no run {run_id}")
    return int(found)


def _contains(needle: str) -> sa.ColumnElement[bool]:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return LOGS.c.line.ilike(f"%{escaped}%", escape="\\")


@dataclass(frozen=True, slots=True)
class SearchHit:
    """Where a search landed: the matching line, its rank among the matches, and their count."""

    sequence: int
    index: int  # 1-based
    count: int


def search(
    engine: Engine, *, run_id: int, needle: str, from_sequence: int = 0, backwards: bool = False
) -> SearchHit | None:
    """The first line after FROM_SEQUENCE containing NEEDLE (case-insensitive), or with BACKWARDS
    the last one before it; wraps around the log. None when no line matches.

    Runs in the database over the whole stored log (one scan of the run's lines), so the page
    never holds more than a window.
    """
    if not needle:
        return None
    sequence = LOGS.c.sequence
    if backwards:
        near = sa.func.max(sequence).filter(sequence < from_sequence)
        wrap = sa.func.max(sequence)
        before = sa.func.count().filter(sequence < from_sequence)
    else:
        near = sa.func.min(sequence).filter(sequence > from_sequence)
        wrap = sa.func.min(sequence)
        before = sa.func.count().filter(sequence <= from_sequence)
    with engine.connect() as connection:
        total, near_hit, wrap_hit, counted = connection.execute(
            sa.select(sa.func.count(), near, wrap, before).where(
                LOGS.c.run_id == run_id, _contains(needle)
            )
        ).one()
    if not total:
        return None
    if near_hit is not None:
        # Forward: the matches up to FROM_SEQUENCE come first; backward: the hit is the last
        # of those before FROM_SEQUENCE.
        index = counted + 1 if not backwards else counted
        return SearchHit(sequence=int(near_hit), index=int(index), count=int(total))
    return SearchHit(
        sequence=int(wrap_hit), index=1 if not backwards else int(total), count=int(total)
    )


def iter_text(engine: Engine, *, run_id: int, page: int = 5000) -> Iterator[str]:
    """The whole stored log as text, a page of lines at a time (for downloads)."""
    position = 0
    while True:
        lines = read_lines(engine, run_id=run_id, after=position, limit=page)
        if not lines:
            return
        position = lines[-1].sequence
        yield "".join(f"{line.line}\n" for line in lines)
