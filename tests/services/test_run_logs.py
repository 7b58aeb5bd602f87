"""Storing run logs under the per-run cap, and searching them, on PostgreSQL and SQLite: the
marker line, the counts on the run, the cursor that keeps moving, writers that lost the race."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.models import FlowEvent, RunLog
from codexk8s.domain.logs import MAX_LINE_CHARS, LogLimits, line_bytes, truncation_marker
from codexk8s.domain.runtime import LogLine
from codexk8s.services import run_logs
from tests.log_examples import (
    NO_CAP,
    START,
    current_position,
    example_lines,
    make_run,
    run_row,
    write,
)

CAP = LogLimits(max_lines=25, max_bytes=10**9)


def texts(engine: Engine, run_id: int) -> list[str]:
    return [line.line for line in run_logs.read_lines(engine, run_id=run_id, limit=10_000)]


def test_the_cap_keeps_a_prefix_adds_one_marker_and_counts_the_rest(log_db: Engine) -> None:
    run_id = make_run(log_db)
    lines = example_lines(60)
    position = write(log_db, run_id, lines[:20], batch=7, final=False, limits=CAP)
    assert position == run_logs.LogPosition(20, 0)
    # This batch crosses the cap: 5 stored, the marker, 15 counted.
    position = write(log_db, run_id, lines[20:40], final=False, limits=CAP)
    assert position == run_logs.LogPosition(26, 15)
    # Past the cap nothing more is stored, but the cursor moves and the count grows.
    position = write(log_db, run_id, lines[40:], batch=6, limits=CAP)
    assert position == run_logs.LogPosition(26, 35)

    stored = run_logs.read_lines(log_db, run_id=run_id)
    assert [line.line for line in stored[:25]] == [
        line.line[:MAX_LINE_CHARS] for line in lines[:25]
    ]
    marker = stored[25]
    assert (marker.sequence, marker.stream, marker.line) == (26, "stderr", truncation_marker(CAP))
    assert marker.ts == lines[25].ts  # where the cut happened
    run = run_row(log_db, run_id)
    assert run.log_cursor == "eof:60"  # the runtime cursor reached the last line read
    assert run.log_dropped_lines == 35
    # Dropped bytes are what the lines would have cost stored (cut at MAX_LINE_CHARS).
    assert run.log_dropped_bytes == sum(
        line_bytes(line.line[:MAX_LINE_CHARS]) for line in lines[25:]
    )
    assert run.log_bytes == sum(
        line_bytes(line.line[:MAX_LINE_CHARS]) for line in lines[:25]
    ) + line_bytes(truncation_marker(CAP))
    summary = run_logs.log_summary(log_db, run_id=run_id)
    assert (summary.lines, summary.dropped_lines, summary.is_truncated) == (26, 35, True)
    with Session(log_db) as session:
        events = session.exec(
            select(FlowEvent.event_type, FlowEvent.payload).where(FlowEvent.run_id == run_id)
        ).all()
    assert events == [("log_truncated", {"after_lines": 25, "max_lines": 25, "max_bytes": 10**9})]


def test_the_byte_cap_cuts_at_the_line_that_does_not_fit(log_db: Engine) -> None:
    run_id = make_run(log_db)
    lines = [LogLine("stdout", f"{n:04d}" + "b" * 95, START, str(n)) for n in range(1, 11)]
    limits = LogLimits(max_lines=1000, max_bytes=450)  # four 100-byte lines fit (99 + newline)
    position = write(log_db, run_id, lines, batch=3, limits=limits)
    assert position == run_logs.LogPosition(5, 6)
    assert texts(log_db, run_id)[:4] == [line.line for line in lines[:4]]
    assert texts(log_db, run_id)[4] == truncation_marker(limits)
    assert run_row(log_db, run_id).log_dropped_bytes == 6 * 100


def test_a_writer_behind_the_position_stores_and_counts_nothing(log_db: Engine) -> None:
    """Two replicas' pumps (a leader change) start from the same position: the second's batch
    fails the check whether it would store lines or only count them."""
    run_id = make_run(log_db)
    lines = example_lines(40)
    write(log_db, run_id, lines[:25], final=False, limits=CAP)
    stale = current_position(log_db, run_id)
    assert write(log_db, run_id, lines[25:30], final=False, limits=CAP) == (
        run_logs.LogPosition(26, 5)
    )
    for batch in (lines[25:30], lines[25:40], []):
        again = run_logs.store_batch(
            log_db, run_id=run_id, expected_sequence=stale.sequence,
            expected_dropped=stale.dropped, lines=batch, limits=CAP,
        )  # fmt: skip
        assert again is None
    run = run_row(log_db, run_id)
    assert (run.log_sequence, run.log_dropped_lines, run.log_cursor) == (26, 5, "30")
    # Past the cap the sequence stands still; a stale writer that only checked it would pass.
    behind = run_logs.store_batch(
        log_db, run_id=run_id, expected_sequence=26, expected_dropped=0, lines=lines[30:31],
        limits=CAP,
    )  # fmt: skip
    assert behind is None and run_row(log_db, run_id).log_dropped_lines == 5


def test_a_restarted_writer_resumes_from_the_stored_position_still_capped(log_db: Engine) -> None:
    run_id = make_run(log_db)
    lines = example_lines(50)
    write(log_db, run_id, lines[:30], final=False, limits=CAP)
    # "Restart": a new pump reads the position and cursor from the run row, and goes on.
    resumed = current_position(log_db, run_id)
    assert run_row(log_db, run_id).log_cursor == "30"
    assert resumed == run_logs.LogPosition(26, 5)
    write(log_db, run_id, lines[30:], limits=CAP)
    run = run_row(log_db, run_id)
    assert (run.log_sequence, run.log_dropped_lines, run.log_cursor) == (26, 25, "eof:50")
    with Session(log_db) as session:
        assert session.exec(select(sa.func.count()).select_from(RunLog)).one() == 26


def test_a_complete_log_takes_no_more_lines(log_db: Engine) -> None:
    run_id = make_run(log_db)
    position = write(log_db, run_id, example_lines(3))
    late = run_logs.store_batch(
        log_db, run_id=run_id, expected_sequence=position.sequence, lines=example_lines(1, first=4)
    )
    assert late is None and len(texts(log_db, run_id)) == 3


def test_concurrent_writers_of_one_run_store_each_batch_once(app_db: str) -> None:
    from codexk8s.db.engine import get_engine

    engine = get_engine()
    run_id = make_run(engine)
    lines = example_lines(30)
    outcomes: list[run_logs.LogPosition | None] = []
    barrier = threading.Barrier(4)

    def writer() -> None:
        barrier.wait()
        outcomes.append(
            run_logs.store_batch(engine, run_id=run_id, expected_sequence=0, lines=lines,
                                 limits=CAP)
        )  # fmt: skip

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=lambda o: o is None) == [run_logs.LogPosition(26, 5)] + [None] * 3
    assert run_row(engine, run_id).log_dropped_lines == 5
    assert len(texts(engine, run_id)) == 26


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("mixed case", "mixed"),  # ASCII letters match whatever their case
        ("ZÜRICH", []),  # non-ASCII letters match only as written
        ("zürich", "zurich"),
        ("100%", "zurich"),  # LIKE's wildcards are plain characters
        ("done_ok", "zurich"),
        ("_ok", "zurich"),
        ("\\ back\\", "backslash"),
        ("東京 ✓", "zurich"),
    ],
)
def test_search_ignores_ascii_case_only_and_treats_wildcards_literally(
    log_db: Engine, needle: str, expected: str | list[int]
) -> None:
    run_id = make_run(log_db)
    lines = example_lines(60)
    write(log_db, run_id, lines, limits=NO_CAP)
    stored = run_logs.read_lines(log_db, run_id=run_id)
    groups = {
        "mixed": [s.sequence for s in stored if "MiXeD CaSe" in s.line],
        "zurich": [s.sequence for s in stored if "Zürich" in s.line],
        "backslash": [s.sequence for s in stored if "\\ back\\slash" in s.line],
    }
    want = groups[expected] if isinstance(expected, str) else expected
    assert run_logs.matching_sequences(log_db, run_id=run_id, needle=needle) == want
    hit = run_logs.search(log_db, run_id=run_id, needle=needle)
    got = (hit.sequence, hit.index, hit.count) if hit else None
    assert got == ((want[0], 1, len(want)) if want else None)


def test_batches_of_many_runs_go_in_one_transaction_and_a_stale_one_spoils_nothing(
    log_db: Engine,
) -> None:
    runs = [make_run(log_db) for _ in range(4)]
    lines = example_lines(10)
    write(log_db, runs[3], lines[:3], final=False, limits=NO_CAP)  # runs[3] is at 3, not 0
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sa.event.listen(log_db, "before_cursor_execute", count)
    try:
        stored = run_logs.store_batches(
            log_db,
            [
                run_logs.PendingBatch(run_id=run_id, expected=run_logs.LogPosition(), lines=lines)
                for run_id in runs
            ],
            limits=NO_CAP,
        )
    finally:
        sa.event.remove(log_db, "before_cursor_execute", count)
    assert [stored[run_id] for run_id in runs[:3]] == [run_logs.LogPosition(10, 0)] * 3
    assert stored[runs[3]] is None  # its writer was behind: nothing of it stored twice
    for run_id in runs[:3]:
        assert texts(log_db, run_id) == [line.line for line in lines]
    assert texts(log_db, runs[3]) == [line.line for line in lines[:3]]
    inserts = [s for s in statements if s.startswith("INSERT INTO run_logs")]
    assert len(inserts) == 1  # every run's lines in one statement
    with pytest.raises(ValueError, match="one batch per run"):
        run_logs.store_batches(
            log_db,
            [run_logs.PendingBatch(run_id=runs[0], expected=run_logs.LogPosition(10, 0), lines=[])]
            * 2,
        )


async def test_the_log_writer_stores_concurrent_pumps_in_few_transactions(
    log_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = run_logs.LogWriter(log_db, limits=NO_CAP, window=0.05)
    runs = [make_run(log_db) for _ in range(20)]
    lines = example_lines(5)
    try:
        stored = await asyncio.gather(
            *(
                writer.store(
                    run_logs.PendingBatch(
                        run_id=run_id, expected=run_logs.LogPosition(), lines=lines
                    )
                )
                for run_id in runs
            )
        )
        assert stored == [run_logs.LogPosition(5, 0)] * 20
        assert writer.transactions == 1  # twenty pumps, one commit
        for run_id in runs:
            assert texts(log_db, run_id) == [line.line for line in lines]
        # A stale pump gets None, as from store_batch; a failing write fails its batches.
        again = run_logs.PendingBatch(run_id=runs[0], expected=run_logs.LogPosition(), lines=lines)
        assert await writer.store(again) is None

        def database_gone(*_: object, **__: object) -> None:
            raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

        monkeypatch.setattr(run_logs, "store_batches", database_gone)
        later = run_logs.PendingBatch(
            run_id=runs[1], expected=run_logs.LogPosition(5, 0), lines=lines
        )
        with pytest.raises(sa.exc.OperationalError):
            await writer.store(later)
    finally:
        await writer.close()
