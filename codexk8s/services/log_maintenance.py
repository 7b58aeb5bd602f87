"""The leader's upkeep of stored run logs: retention, then compaction, in bounded work per tick.

**Retention** removes the lines of finished runs older than their project's retention
(`log_retention_days`, else CODEXK8S_LOG_RETENTION_DAYS; unset: keep forever). A run is first
marked `removing` (one short transaction with a `log_removed` flow event; from then on readers
treat its log as removed), then its rows and chunks are deleted a bounded batch per statement,
and it ends `removed`. The run's row, timeline, usage and summary stay.

**Compaction** moves a finished run's complete log from rows (one per line, with two indexes)
into compressed chunks of about 1,000 lines (`run_log_chunks`, db/log_chunks.py). Each step is
one transaction holding the run's row lock: chunks inserted and the same rows deleted, so a
reader sees every line exactly once in one of the two (run_logs.read_lines merges them). A step
moves at most LINES_PER_STEP lines, a tick at most LINES_PER_TICK, so a backlog never holds a
long lock or a long tick; the next tick resumes where the last stopped.

Both are safe to run twice at once (a leader change): the run row lock serialises compaction
steps, marking skips rows another transaction holds, and deletes of what is gone delete nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codexk8s.db import log_chunks
from codexk8s.db.models import Project, table_of, utcnow
from codexk8s.domain.logs import LogPolicy, LogStorage, StoredLine, retention_days, utc
from codexk8s.services import audit
from codexk8s.services.run_logs import CHUNKS, LOGS, RUNS, lock_run, log_is_complete

PROJECTS = table_of(Project)
LINES_PER_STEP = 10_000  # lines moved (or rows deleted) by one compaction transaction
LINES_PER_TICK = 50_000
RUNS_PER_TICK = 100  # runs retention marks per tick
ROWS_PER_DELETE = 5_000  # rows one retention DELETE removes
CHUNKS_PER_DELETE = 50
DELETES_PER_TICK = 20  # retention DELETE statements per tick


@dataclass(slots=True)
class CompactionResult:
    lines: int = 0
    chunks: int = 0
    compacted: list[int] = field(default_factory=list)  # runs whose logs are now all chunks


@dataclass(slots=True)
class RetentionResult:
    marked: list[int] = field(default_factory=list)  # runs whose logs were marked for removal
    rows_deleted: int = 0
    chunks_deleted: int = 0
    removed: list[int] = field(default_factory=list)  # runs whose logs are now gone


# --- compaction -----------------------------------------------------------------------------------


def compaction_candidates(
    engine: Engine, *, limit: int = 20, run_ids: list[int] | None = None
) -> list[int]:
    """Finished runs whose complete logs are still rows, the longest finished first."""
    query = (
        sa.select(RUNS.c.id)
        .where(RUNS.c.log_storage == LogStorage.ROWS.value, log_is_complete())
        .order_by(RUNS.c.finished_at, RUNS.c.id)
        .limit(limit)
    )
    if run_ids is not None:
        query = query.where(RUNS.c.id.in_(run_ids))
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())


def compact_step(engine: Engine, *, run_id: int, limit: int = LINES_PER_STEP) -> tuple[int, int]:
    """Move up to LIMIT of RUN_ID's oldest rows into chunks, in one transaction; return (lines,
    chunks) moved. (0, 0) means the log is all chunks now, or was not the run's to compact."""
    with engine.begin() as connection:
        run = lock_run(
            connection, run_id, RUNS.c.id,
            where=sa.and_(RUNS.c.log_storage == LogStorage.ROWS.value, log_is_complete()),
        )  # fmt: skip
        if run is None:
            return 0, 0
        rows = connection.execute(
            sa.select(LOGS.c.sequence, LOGS.c.stream, LOGS.c.line, LOGS.c.ts)
            .where(LOGS.c.run_id == run_id)
            .order_by(LOGS.c.sequence)
            .limit(limit)
        ).all()
        chunks = log_chunks.split(
            [StoredLine(sequence=r[0], stream=r[1], line=r[2], ts=utc(r[3])) for r in rows]
        )
        if chunks:
            connection.execute(
                CHUNKS.insert(),
                [
                    {"run_id": run_id, "first_sequence": chunk[0].sequence,
                     "last_sequence": chunk[-1].sequence, "line_count": len(chunk),
                     "data": log_chunks.encode(chunk)}
                    for chunk in chunks
                ],
            )  # fmt: skip
            connection.execute(
                LOGS.delete().where(
                    LOGS.c.run_id == run_id,
                    LOGS.c.sequence.between(rows[0].sequence, rows[-1].sequence),
                )
            )
        if len(rows) < limit:
            connection.execute(
                RUNS.update().where(RUNS.c.id == run_id).values(log_storage=LogStorage.CHUNKS.value)
            )
    return len(rows), len(chunks)


def compact_logs(
    engine: Engine,
    *,
    max_lines: int = LINES_PER_TICK,
    lines_per_step: int = LINES_PER_STEP,
    run_ids: list[int] | None = None,
) -> CompactionResult:
    """One tick of compaction: finished logs into chunks, at most MAX_LINES lines."""
    result = CompactionResult()
    for run_id in compaction_candidates(engine, run_ids=run_ids):
        while result.lines < max_lines:
            step = min(lines_per_step, max_lines - result.lines)
            lines, chunks = compact_step(engine, run_id=run_id, limit=step)
            result.lines += lines
            result.chunks += chunks
            if lines < step:
                result.compacted.append(run_id)
                break
        if result.lines >= max_lines:
            break
    return result


# --- retention ------------------------------------------------------------------------------------


def _expired(connection: Connection, default_days: int | None, now: datetime) -> sa.ColumnElement:  # type: ignore[type-arg]
    """SQL: the run's log is older than its project's retention (None: nothing is)."""
    by_days: dict[int, list[int]] = defaultdict(list)
    for project_id, settings in connection.execute(sa.select(PROJECTS.c.id, PROJECTS.c.settings)):
        days = retention_days((settings or {}).get("log_retention_days"), default_days)
        if days is not None:
            by_days[days].append(project_id)
    if not by_days:
        return sa.false()
    return sa.or_(
        *(
            sa.and_(
                RUNS.c.project_id.in_(project_ids),
                RUNS.c.finished_at < now - timedelta(days=days),
            )
            for days, project_ids in sorted(by_days.items())
        )
    )


def mark_expired(
    engine: Engine, *, default_days: int | None, now: datetime | None = None,
    limit: int = RUNS_PER_TICK,
) -> list[int]:  # fmt: skip
    """Mark up to LIMIT finished runs whose logs outlived their retention as `removing`, each
    with a `log_removed` flow event; return their ids."""
    now = now or utcnow()
    kept = RUNS.c.log_storage.in_([LogStorage.ROWS.value, LogStorage.CHUNKS.value])
    with engine.connect() as connection:  # a read before the write transaction (SQLite)
        expired = _expired(connection, default_days, now)
    with engine.begin() as connection:
        oldest = (
            sa.select(RUNS.c.id)
            .where(kept, log_is_complete(), expired)
            .order_by(RUNS.c.finished_at, RUNS.c.id)
            .limit(limit)
        )
        if connection.dialect.name == "postgresql":
            oldest = oldest.with_for_update(key_share=True, skip_locked=True)
        # One statement (the write lock first on SQLite); KEPT again in the outer WHERE, so a
        # run another marker got to first is skipped.
        runs = connection.execute(
            RUNS.update()
            .where(RUNS.c.id.in_(oldest.scalar_subquery()), kept)
            .values(log_storage=LogStorage.REMOVING.value, log_removed_at=now)
            .returning(RUNS.c.id, RUNS.c.correlation_id, RUNS.c.project_id, RUNS.c.log_sequence)
        ).all()
        if not runs:
            return []
        runs.sort(key=lambda run: run.id)
        audit.insert_events(
            connection=connection,
            events=[
                audit.flow_event_values(
                    correlation_id=run.correlation_id, event_type="log_removed", run_id=run.id,
                    project_id=run.project_id, payload={"lines": run.log_sequence},
                )
                for run in runs
            ],
        )  # fmt: skip
    return [run.id for run in runs]


def _delete_some(engine: Engine, table: sa.Table, run_id: int, limit: int) -> int:
    order = table.c.sequence if table is LOGS else table.c.first_sequence
    with engine.begin() as connection:
        oldest = sa.select(table.c.id).where(table.c.run_id == run_id).order_by(order).limit(limit)
        return int(connection.execute(table.delete().where(table.c.id.in_(oldest))).rowcount)


def purge_removed(
    engine: Engine,
    *,
    max_statements: int = DELETES_PER_TICK,
    rows_per_delete: int = ROWS_PER_DELETE,
    chunks_per_delete: int = CHUNKS_PER_DELETE,
) -> RetentionResult:
    """Delete the rows and chunks of logs marked `removing`, one bounded DELETE per statement
    and at most MAX_STATEMENTS of them; a log with nothing left becomes `removed`."""
    result = RetentionResult()
    with engine.connect() as connection:
        run_ids = list(
            connection.execute(
                sa.select(RUNS.c.id)
                .where(RUNS.c.log_storage == LogStorage.REMOVING.value)
                .order_by(RUNS.c.id)
                .limit(RUNS_PER_TICK)
            ).scalars()
        )
    statements = 0
    for run_id in run_ids:
        for table, per_delete in ((LOGS, rows_per_delete), (CHUNKS, chunks_per_delete)):
            deleted = per_delete
            while deleted == per_delete and statements < max_statements:
                deleted = _delete_some(engine, table, run_id, per_delete)
                statements += 1
                if table is LOGS:
                    result.rows_deleted += deleted
                else:
                    result.chunks_deleted += deleted
            if deleted == per_delete:  # out of statements with more to delete: next tick
                return result
        with engine.begin() as connection:
            connection.execute(
                RUNS.update()
                .where(RUNS.c.id == run_id, RUNS.c.log_storage == LogStorage.REMOVING.value)
                .values(log_storage=LogStorage.REMOVED.value)
            )
        result.removed.append(run_id)
    return result


def apply_retention(
    engine: Engine, *, default_days: int | None, now: datetime | None = None
) -> RetentionResult:
    """One tick of retention: mark what expired, then delete a bounded part of what is marked."""
    marked = mark_expired(engine, default_days=default_days, now=now)
    result = purge_removed(engine)
    result.marked = marked
    return result


def maintain(engine: Engine, *, policy: LogPolicy) -> tuple[RetentionResult, CompactionResult]:
    """The leader's log job: retention first (what it removes need not be compacted)."""
    return (
        apply_retention(engine, default_days=policy.retention_days),
        compact_logs(engine),
    )
