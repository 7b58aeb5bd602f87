"""Run logs: stored as they arrive (so they outlive pods and processes), capped per run, and read
back in order the same way whether the lines are rows or compacted chunks.

Writers append batches with consecutive sequence numbers and move the run's position in the same
transaction, with a compare-and-set on (`log_sequence`, `log_dropped_lines`): if two replicas
ever pumped the same run, the second's batch fails the check and is dropped whole, so no line is
stored (or counted as dropped) twice and none is skipped. Past the per-run cap
(`domain.logs.LogLimits`) lines are counted, not stored: one marker line says where the log was
cut, the run's counters say how much was dropped, and the runtime cursor keeps moving.

Every reader goes through `read_lines` and `search`, which merge the run's rows with its chunks
(`db/log_chunks.py`, written by `services/log_maintenance.py`). Rows are read before chunks:
compaction moves a range from rows to chunks in one transaction, so a range moved between the two
reads is seen twice (and deduplicated by sequence), never missed. The run's storage state is read
last: retention marks a log removed before deleting anything, so a reader that still finds it
unmarked read it whole.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codexk8s.db.engine import get_engine
from codexk8s.db.log_chunks import Chunk
from codexk8s.db.models import AgentRun, RunLog, RunLogChunk, table_of
from codexk8s.domain.logs import (
    MAX_LINE_CHARS,
    TRUNCATION_STREAM,
    LogLimits,
    LogStorage,
    LogSummary,
    StoredLine,
    fit_under_cap,
    line_bytes,
    truncation_marker,
    utc,
)
from codexk8s.domain.runs import TERMINAL_STATUSES, RunStatus
from codexk8s.domain.runtime import LogLine, WorkloadHandle
from codexk8s.errors import NotFoundError
from codexk8s.services import audit, notifications

__all__ = ["MAX_LINE_CHARS", "StoredLine"]

RUNS = table_of(AgentRun)
LOGS = table_of(RunLog)
CHUNKS = table_of(RunLogChunk)
EOF_PREFIX = "eof:"
PAGE = 1000
DEFAULT_LIMITS = LogLimits()


@dataclass(frozen=True, slots=True)
class LogPosition:
    """How far a run's log has been written: the last stored sequence and the lines dropped
    after the cap. Every batch moves one or the other, so the pair is the writers' check."""

    sequence: int = 0
    dropped: int = 0


# --- writing --------------------------------------------------------------------------------------


def store_batch(
    engine: Engine,
    *,
    run_id: int,
    expected_sequence: int,
    lines: Sequence[LogLine],
    final: bool = False,
    expected_dropped: int = 0,
    limits: LogLimits = DEFAULT_LIMITS,
) -> LogPosition | None:
    """Append LINES after the position (EXPECTED_SEQUENCE, EXPECTED_DROPPED), storing what fits
    under LIMITS and counting the rest; FINAL marks the log complete. Returns the new position,
    or None when another writer moved the log first, or it is already complete (then nothing
    was written)."""
    batch = PendingBatch(
        run_id=run_id, expected=LogPosition(expected_sequence, expected_dropped), lines=lines,
        final=final,
    )  # fmt: skip
    return store_batches(engine, [batch], limits=limits)[run_id]


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """One run's lines to append after EXPECTED (see `store_batch`)."""

    run_id: int
    expected: LogPosition
    lines: Sequence[LogLine]
    final: bool = False


def store_batches(
    engine: Engine, batches: Sequence[PendingBatch], *, limits: LogLimits = DEFAULT_LIMITS
) -> dict[int, LogPosition | None]:
    """`store_batch` for several runs (one batch each) in one transaction: the log pumps'
    writer stores every pump's lines together, so the commits a second do not grow with the
    number of runs writing. Each run keeps its own check; one run's lost race or finished log
    leaves the others' batches stored.

    On PostgreSQL the statements do not grow with the runs either: one SELECT locks every run's
    row, one pipelined UPDATE moves their positions, one INSERT adds every line. SQLite (one
    writer at a time anyway) takes them one by one.
    """
    if len({batch.run_id for batch in batches}) != len(batches):
        raise ValueError("one batch per run and transaction")
    ordered = sorted(batches, key=lambda b: b.run_id)  # one lock order for every writer
    results: dict[int, LogPosition | None] = {batch.run_id: None for batch in ordered}
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            locked = {
                row.id: row
                for row in connection.execute(
                    sa.select(RUNS.c.id, *_POSITION_COLUMNS)
                    .where(RUNS.c.id.in_([batch.run_id for batch in ordered]))
                    .order_by(RUNS.c.id)
                    .with_for_update(key_share=True)
                )
            }
        else:
            locked = {}
            for batch in ordered:
                row = lock_run(connection, batch.run_id, RUNS.c.id, *_POSITION_COLUMNS)
                if row is not None:
                    locked[batch.run_id] = row
        plans = [
            plan
            for batch in ordered
            if batch.run_id in locked
            and (plan := _plan(batch, locked[batch.run_id], limits)) is not None
        ]
        if not plans:
            return results
        moved = connection.execute(
            RUNS.update()
            .where(
                RUNS.c.id == sa.bindparam("run"),
                RUNS.c.log_sequence == sa.bindparam("old_sequence"),
                RUNS.c.log_dropped_lines == sa.bindparam("old_dropped"),
            )
            .values(
                log_sequence=sa.bindparam("new_sequence"),
                log_dropped_lines=sa.bindparam("new_dropped"),
                log_bytes=sa.bindparam("new_bytes"),
                log_dropped_bytes=RUNS.c.log_dropped_bytes + sa.bindparam("more_dropped_bytes"),
                log_cursor=sa.func.coalesce(
                    sa.bindparam("cursor", type_=sa.Text), RUNS.c.log_cursor
                ),
            ),
            [plan.update for plan in plans],
        ).rowcount
        if moved != len(plans):
            # The rows are locked (SQLite: the write lock is ours): only a bug gets here.
            raise RuntimeError(f"log positions moved under their lock ({moved} of {len(plans)})")
        rows = [row for plan in plans for row in plan.rows]
        if rows:
            connection.execute(LOGS.insert(), rows)
        truncated = [plan.truncation_event for plan in plans if plan.truncation_event]
        if truncated:
            audit.insert_events(connection=connection, events=truncated)
        notifications.publish_on_commit(
            connection, [notifications.run_topic(plan.run_id) for plan in plans if plan.rows]
        )
        for plan in plans:
            results[plan.run_id] = plan.position
    return results


_POSITION_COLUMNS = (
    RUNS.c.log_sequence, RUNS.c.log_dropped_lines, RUNS.c.log_bytes, RUNS.c.log_cursor,
    RUNS.c.log_storage, RUNS.c.correlation_id, RUNS.c.project_id,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Plan:
    run_id: int
    position: LogPosition
    rows: list[dict[str, object]]
    update: dict[str, object]
    truncation_event: dict[str, object] | None


def _plan(batch: PendingBatch, run: sa.Row, limits: LogLimits) -> _Plan | None:  # type: ignore[type-arg]
    """What storing BATCH does to RUN (its locked row): None when the writer is behind, or the
    log takes no more lines."""
    run_id, lines = batch.run_id, batch.lines
    expected_sequence, expected_dropped = batch.expected.sequence, batch.expected.dropped
    if (run.log_sequence, run.log_dropped_lines) != (expected_sequence, expected_dropped):
        return None
    is_complete = (run.log_cursor or "").startswith(EOF_PREFIX)
    if lines and (is_complete or run.log_storage != LogStorage.ROWS.value):
        return None
    texts = [item.line[:MAX_LINE_CHARS] for item in lines]
    outcome = fit_under_cap(
        [line_bytes(text) for text in texts], stored_lines=run.log_sequence,
        stored_bytes=run.log_bytes, is_truncated=run.log_dropped_lines > 0, limits=limits,
    )  # fmt: skip
    rows: list[dict[str, object]] = [
        {"run_id": run_id, "sequence": expected_sequence + index + 1, "stream": item.stream,
         "line": texts[index], "ts": item.ts}
        for index, item in enumerate(lines[: outcome.kept])
    ]  # fmt: skip
    added_bytes = outcome.kept_bytes
    event = None
    if outcome.dropped and run.log_dropped_lines == 0:
        marker = truncation_marker(limits)
        rows.append(
            {"run_id": run_id, "sequence": expected_sequence + len(rows) + 1,
             "stream": TRUNCATION_STREAM, "line": marker, "ts": lines[outcome.kept].ts}
        )  # fmt: skip
        added_bytes += line_bytes(marker)
        event = audit.flow_event_values(
            correlation_id=run.correlation_id, event_type="log_truncated", run_id=run_id,
            project_id=run.project_id,
            payload={"after_lines": expected_sequence + outcome.kept,
                     "max_lines": limits.max_lines, "max_bytes": limits.max_bytes},
        )  # fmt: skip
    position = LogPosition(
        sequence=expected_sequence + len(rows), dropped=expected_dropped + outcome.dropped
    )
    cursor = lines[-1].cursor if lines else None
    if batch.final:
        cursor = EOF_PREFIX + (
            cursor if cursor is not None else (run.log_cursor or "").removeprefix(EOF_PREFIX)
        )
    update = {
        "run": run_id, "old_sequence": expected_sequence, "old_dropped": expected_dropped,
        "new_sequence": position.sequence, "new_dropped": position.dropped,
        "new_bytes": run.log_bytes + added_bytes, "more_dropped_bytes": outcome.dropped_bytes,
        "cursor": cursor,
    }  # fmt: skip
    return _Plan(run_id, position, rows, update, event)


class LogWriter:
    """Stores what every log pump of this process hands it, together: each write is one
    transaction for all the runs whose lines arrived meanwhile (`store_batches`).

    A pump awaits its batch's outcome (the new position, or None when another writer moved the
    log), as with `store_batch`; the writer collects batches for WINDOW seconds after the first
    one, so with many runs streaming the commits a second stay a handful instead of one per run
    and flush. A failed transaction fails every batch in it (the pumps start again from what is
    stored).
    """

    def __init__(
        self, engine: Engine, *, limits: LogLimits = DEFAULT_LIMITS, window: float = 0.05
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.window = window
        self._pending: dict[int, tuple[PendingBatch, asyncio.Future[LogPosition | None]]] = {}
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # for tests and benchmarks

    async def store(self, batch: PendingBatch) -> LogPosition | None:
        if batch.run_id in self._pending:
            raise RuntimeError(f"run {batch.run_id} already has a batch waiting")
        future: asyncio.Future[LogPosition | None] = asyncio.get_running_loop().create_future()
        self._pending[batch.run_id] = (batch, future)
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_forever(), name="log-writer")
        return await asyncio.shield(future)

    async def _write_forever(self) -> None:
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self.window)
            self._arrived.clear()
            taken, self._pending = self._pending, {}
            if not taken:
                continue
            try:
                stored = await asyncio.to_thread(
                    store_batches, self.engine, [batch for batch, _ in taken.values()],
                    limits=self.limits,
                )  # fmt: skip
            except Exception as exc:
                for _, future in taken.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.transactions += 1
            for run_id, (_, future) in taken.items():
                if not future.done():
                    future.set_result(stored[run_id])

    async def close(self) -> None:
        """Stop writing (after the pumps stopped: a stopping pump writes what it holds first)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()


def lock_run(
    connection: Connection,
    run_id: int,
    *columns: sa.ColumnElement,  # type: ignore[type-arg]
    where: sa.ColumnElement[bool] | None = None,
) -> sa.Row | None:  # type: ignore[type-arg]
    """Read COLUMNS of RUN_ID (when it matches WHERE) and hold its row until commit, so that the
    run's log writers, compaction and retention take turns.

    PostgreSQL: FOR NO KEY UPDATE (flow events may still be inserted that point at the run).
    SQLite: a no-op UPDATE … RETURNING, so the transaction starts by taking the write lock
    (waiting for it); a read first would fail with SQLITE_BUSY when it later needs to write
    after another writer committed."""
    condition = RUNS.c.id == run_id if where is None else sa.and_(RUNS.c.id == run_id, where)
    if connection.dialect.name == "postgresql":
        query = sa.select(*columns).where(condition).with_for_update(key_share=True)
        return connection.execute(query).first()
    touch = (
        RUNS.update().where(condition).values(log_sequence=RUNS.c.log_sequence).returning(*columns)
    )
    return connection.execute(touch).first()


def log_is_complete() -> sa.ColumnElement[bool]:
    """SQL: the run ended and nothing will be added to its log any more (its pump stored the
    end, it never had a workload, or its workload was cleaned up)."""
    return sa.and_(
        RUNS.c.status.in_([status.value for status in TERMINAL_STATUSES]),
        sa.or_(
            RUNS.c.runtime_handle.is_(None),
            RUNS.c.cleaned_at.is_not(None),
            RUNS.c.log_cursor.startswith(EOF_PREFIX),
        ),
    )


@dataclass(frozen=True, slots=True)
class UnfinishedLog:
    """A run whose workload output is not fully stored yet, and where following it resumes."""

    run_id: int
    handle: WorkloadHandle
    cursor: str | None
    position: LogPosition


def unfinished_logs(engine: Engine, *, run_ids: Sequence[int] | None = None) -> list[UnfinishedLog]:
    """Runs with a workload (not cleaned up) whose log has no end marker yet: what the leader's
    log pumps follow. RUN_IDS limits the scan to those runs."""
    query = sa.select(
        RUNS.c.id,
        RUNS.c.runtime_handle,
        RUNS.c.log_cursor,
        RUNS.c.log_sequence,
        RUNS.c.log_dropped_lines,
    ).where(
        RUNS.c.runtime_handle.is_not(None),
        RUNS.c.cleaned_at.is_(None),
        sa.or_(RUNS.c.log_cursor.is_(None), ~RUNS.c.log_cursor.startswith(EOF_PREFIX)),
    )
    if run_ids is not None:
        query = query.where(RUNS.c.id.in_(run_ids))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        UnfinishedLog(
            run_id=row.id,
            handle=WorkloadHandle.from_json(row.runtime_handle),
            cursor=row.log_cursor,
            position=LogPosition(row.log_sequence, row.log_dropped_lines),
        )
        for row in rows
    ]


# --- reading --------------------------------------------------------------------------------------


def _summary(row: sa.Row) -> LogSummary:  # type: ignore[type-arg]
    return LogSummary(
        lines=int(row.log_sequence), bytes=int(row.log_bytes),
        dropped_lines=int(row.log_dropped_lines), dropped_bytes=int(row.log_dropped_bytes),
        storage=row.log_storage,
        removed_at=utc(row.log_removed_at) if row.log_removed_at is not None else None,
    )  # fmt: skip


_SUMMARY_COLUMNS = (
    RUNS.c.log_sequence, RUNS.c.log_bytes, RUNS.c.log_dropped_lines, RUNS.c.log_dropped_bytes,
    RUNS.c.log_storage, RUNS.c.log_removed_at,
)  # fmt: skip


def log_summary(engine: Engine, *, run_id: int) -> LogSummary:
    """What RUN_ID's log holds; NotFoundError when there is no such run."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(*_SUMMARY_COLUMNS).where(RUNS.c.id == run_id)).first()
    if row is None:
        raise NotFoundError(f"no run {run_id}")
    return _summary(row)


def _is_removed(connection: Connection, run_id: int) -> bool:
    storage = connection.execute(sa.select(RUNS.c.log_storage).where(RUNS.c.id == run_id)).scalar()
    return storage is not None and LogStorage(storage).is_removed


def read_lines(
    engine: Engine | None = None, *, run_id: int, after: int = 0, limit: int = PAGE
) -> list[StoredLine]:
    """Up to LIMIT lines after sequence AFTER, in order, from rows and chunks alike (none once
    retention removed the log)."""
    engine = engine or get_engine()
    if limit <= 0:
        return []
    first, last = after + 1, after + limit
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(LOGS.c.sequence, LOGS.c.stream, LOGS.c.line, LOGS.c.ts)
            .where(LOGS.c.run_id == run_id, LOGS.c.sequence.between(first, last))
            .order_by(LOGS.c.sequence)
        ).all()
        found = {
            r[0]: StoredLine(sequence=r[0], stream=r[1], line=r[2], ts=utc(r[3])) for r in rows
        }
        if len(found) < limit:  # sequences have no gaps: a full window needs no chunk
            for chunk in connection.execute(
                sa.select(CHUNKS.c.first_sequence, CHUNKS.c.data)
                .where(
                    CHUNKS.c.run_id == run_id,
                    CHUNKS.c.last_sequence >= first,
                    CHUNKS.c.first_sequence <= last,
                )
                .order_by(CHUNKS.c.first_sequence)
            ):
                for line in Chunk(chunk.first_sequence, chunk.data).lines(first, last):
                    found.setdefault(line.sequence, line)
        if _is_removed(connection, run_id):
            return []
    return [found[sequence] for sequence in sorted(found)]


def _is_finished(engine: Engine, run_id: int) -> bool:
    """The run ended and its log pump stored everything it will ever store."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(
                RUNS.c.status, RUNS.c.log_cursor, RUNS.c.runtime_handle, RUNS.c.cleaned_at
            ).where(RUNS.c.id == run_id)
        ).first()
    if row is None:
        raise NotFoundError(f"no run {run_id}")
    if not RunStatus(row.status).is_terminal:
        return False
    # A run that never got a workload, or whose workload is gone, has no log to wait for.
    return (
        row.runtime_handle is None
        or row.cleaned_at is not None
        or (row.log_cursor or "").startswith(EOF_PREFIX)
    )


async def follow(
    engine: Engine | None = None, *, run_id: int, after: int = 0, poll_seconds: float = 0.25
) -> AsyncIterator[StoredLine]:
    """Yield stored lines after AFTER as they arrive, until the run ended and its log is whole."""
    engine = engine or get_engine()
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


def sequence_at(engine: Engine | None = None, *, run_id: int, at: datetime) -> int:
    """The first line written at or after AT (the last line when none was), by a binary search
    over `read_lines`, so rows and chunks answer alike; 0 for an empty or removed log. Lines are
    stored in the order they were written, so their timestamps do not go back."""
    engine = engine or get_engine()
    low, high = 1, log_length(engine, run_id=run_id)
    if high == 0:
        return 0
    answer = high
    while low <= high:
        middle = (low + high) // 2
        found = read_lines(engine, run_id=run_id, after=middle - 1, limit=1)
        if not found:
            return 0
        if found[0].ts >= at:
            answer, high = middle, middle - 1
        else:
            low = middle + 1
    return answer


# --- search ---------------------------------------------------------------------------------------


def fold(text: str) -> bytes:
    """TEXT as the search compares it: UTF-8 with ASCII letters lower-cased (and nothing else,
    so rows and chunks, PostgreSQL and SQLite, whatever their locale, agree)."""
    return text.encode("utf-8", "surrogatepass").lower()


def _contains(folded: bytes, dialect: str) -> sa.ColumnElement[bool]:
    needle = folded.decode("utf-8", "surrogatepass")
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    if dialect == "postgresql":
        # lower() under the C collation folds ASCII letters only, like bytes.lower().
        return sa.func.lower(LOGS.c.line.collate("C")).like(pattern, escape="\\")
    # SQLite's LIKE ignores the case of ASCII letters only.
    return LOGS.c.line.like(pattern, escape="\\")


@dataclass(frozen=True, slots=True)
class SearchHit:
    """Where a search landed: the matching line, its rank among the matches, and their count."""

    sequence: int
    index: int  # 1-based
    count: int


def matching_sequences(engine: Engine, *, run_id: int, needle: str) -> list[int]:
    """The sequences of every line containing NEEDLE (ignoring ASCII case), in order."""
    folded = fold(needle)
    if not folded:
        return []
    with engine.connect() as connection:
        hits = set(
            connection.execute(
                sa.select(LOGS.c.sequence).where(
                    LOGS.c.run_id == run_id, _contains(folded, engine.dialect.name)
                )
            ).scalars()
        )
        for chunk in connection.execute(
            sa.select(CHUNKS.c.first_sequence, CHUNKS.c.data).where(CHUNKS.c.run_id == run_id)
        ):
            hits.update(Chunk(chunk.first_sequence, chunk.data).matching(folded))
        if _is_removed(connection, run_id):
            return []
    return sorted(hits)


def search(
    engine: Engine | None = None,
    *,
    run_id: int,
    needle: str,
    from_sequence: int = 0,
    backwards: bool = False,
) -> SearchHit | None:
    """The first line after FROM_SEQUENCE containing NEEDLE (ignoring ASCII case), or with
    BACKWARDS the last one before it; wraps around the log. None when no line matches.

    Runs over the whole stored log (rows in SQL, chunks in this process), so the page never
    holds more than a window.
    """
    engine = engine or get_engine()
    hits = matching_sequences(engine, run_id=run_id, needle=needle)
    if not hits:
        return None
    count = len(hits)
    if backwards:
        before = bisect_left(hits, from_sequence)  # matches before FROM_SEQUENCE
        if before:
            return SearchHit(sequence=hits[before - 1], index=before, count=count)
        return SearchHit(sequence=hits[-1], index=count, count=count)
    upto = bisect_right(hits, from_sequence)  # matches up to FROM_SEQUENCE come first
    if upto < count:
        return SearchHit(sequence=hits[upto], index=upto + 1, count=count)
    return SearchHit(sequence=hits[0], index=1, count=count)


def iter_text(engine: Engine | None = None, *, run_id: int, page: int = 5000) -> Iterator[str]:
    """The whole stored log as text, a page of lines at a time (for downloads)."""
    engine = engine or get_engine()
    position = 0
    while True:
        lines = read_lines(engine, run_id=run_id, after=position, limit=page)
        if not lines:
            return
        position = lines[-1].sequence
        yield "".join(f"{line.line}\n" for line in lines)
