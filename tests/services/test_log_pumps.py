"""The log pumps past the per-run cap, on PostgreSQL: a prefix and one marker stored, the rest
counted, the runtime cursor moving to the end (nothing read twice), also across a dropped
stream, a restart and two replicas pumping the same run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.db.engine import get_engine, make_engine
from codexk8s.db.models import AgentRun, RunLog
from codexk8s.domain.logs import LogLimits, LogPolicy, truncation_marker
from codexk8s.domain.runtime import LogLine, WorkloadHandle
from codexk8s.services import run_logs
from codexk8s.services.log_pumps import LogPumps
from tests.log_examples import make_run

HANDLE = WorkloadHandle(runtime="chatty", name="w")
CAP = LogPolicy(limits=LogLimits(max_lines=100, max_bytes=10**9))
TOTAL = 1_234


class ChattyRuntime:
    """One workload that printed TOTAL lines; its stream resumes after a cursor (a line number)
    and, while DROP_AFTER is set, breaks off there like a dropped connection."""

    name = "chatty"

    def __init__(self, *, drop_after: int | None = None) -> None:
        self.drop_after = drop_after
        self.read: list[int] = []  # every line number any stream handed out

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        for n in range(int(after or 0) + 1, TOTAL + 1):
            if self.drop_after is not None and n > self.drop_after:
                self.drop_after = None
                raise ConnectionError("stream dropped")
            self.read.append(n)
            yield LogLine("stdout", f"line {n}", datetime.now(UTC), str(n))
            if n % 100 == 0:
                await asyncio.sleep(0)  # let other tasks (another pump) in


def running_run() -> int:
    run_id = make_run(get_engine(), status="running")
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        run.runtime_handle = HANDLE.to_json()
        session.add(run)
        session.commit()
    return run_id


def state(run_id: int) -> tuple[int, int, str | None, int]:
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        rows = session.exec(
            select(sa.func.count()).select_from(RunLog).where(RunLog.run_id == run_id)
        ).one()
        return run.log_sequence, run.log_dropped_lines, run.log_cursor, rows


async def until_log_complete(run_id: int, pumps: LogPumps, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not (state(run_id)[2] or "").startswith(run_logs.EOF_PREFIX):
        assert time.monotonic() < deadline, f"log of run {run_id} not complete: {state(run_id)}"
        await pumps.follow_all()  # finds pumps that stopped and starts them again
        await asyncio.sleep(0.05)


def check_capped(run_id: int) -> None:
    assert state(run_id) == (101, TOTAL - 100, f"eof:{TOTAL}", 101)
    summary = run_logs.log_summary(get_engine(), run_id=run_id)
    assert summary.dropped_bytes == sum(len(f"line {n}\n") for n in range(101, TOTAL + 1))
    lines = run_logs.read_lines(get_engine(), run_id=run_id)
    assert [line.line for line in lines[:100]] == [f"line {n}" for n in range(1, 101)]
    assert lines[100].line == truncation_marker(CAP.limits)


async def test_a_pump_past_the_cap_stores_a_prefix_and_counts_the_rest(app_db: str) -> None:
    run_id = running_run()
    runtime = ChattyRuntime()
    pumps = LogPumps(get_engine(), runtime, limits=CAP.limits)  # type: ignore[arg-type]
    try:
        await until_log_complete(run_id, pumps)
    finally:
        await pumps.stop()
    check_capped(run_id)
    assert runtime.read == list(range(1, TOTAL + 1))  # every line read once, none again


async def test_a_dropped_stream_and_a_restart_resume_after_the_cursor(app_db: str) -> None:
    run_id = running_run()
    runtime = ChattyRuntime(drop_after=700)
    first = LogPumps(get_engine(), runtime, limits=CAP.limits)  # type: ignore[arg-type]
    try:
        await first.follow_all()
        deadline = time.monotonic() + 30
        while state(run_id)[2] != "700":  # the pump stored what it had and stopped
            assert time.monotonic() < deadline, state(run_id)
            await asyncio.sleep(0.05)
    finally:
        await first.stop()  # the replica goes away mid-log
    assert state(run_id)[:2] == (101, 600)
    second = LogPumps(get_engine(), runtime, limits=CAP.limits)  # type: ignore[arg-type]
    try:
        await until_log_complete(run_id, second)
    finally:
        await second.stop()
    check_capped(run_id)
    assert runtime.read == list(range(1, TOTAL + 1))


@pytest.mark.parametrize("replicas", [2, 3])
async def test_replicas_pumping_one_run_at_once_store_and_count_it_once(
    app_db: str, replicas: int
) -> None:
    """A leader change can leave the old leader's pump running while the new one starts. Here
    they start past the cap, where the sequence no longer moves: only the dropped count tells
    a stale pump from a current one."""
    run_id = running_run()
    runtime = ChattyRuntime()
    early = [LogLine("stdout", f"line {n}", datetime.now(UTC), str(n)) for n in range(1, 151)]
    stored = run_logs.store_batch(
        get_engine(), run_id=run_id, expected_sequence=0, lines=early, limits=CAP.limits
    )
    assert stored == run_logs.LogPosition(101, 50)
    replicas_pumps = [
        LogPumps(make_engine(app_db), runtime, limits=CAP.limits)  # type: ignore[arg-type]
        for _ in range(replicas)
    ]
    try:
        await asyncio.gather(*(p.pump(run_id, HANDLE, "150", stored) for p in replicas_pumps))
        # The pumps that lost stopped early; whoever pumps next resumes from what is stored.
        await until_log_complete(run_id, replicas_pumps[0])
    finally:
        for pumps in replicas_pumps:
            await pumps.stop()
            pumps.engine.dispose()
    check_capped(run_id)


class SteadyRuntime(ChattyRuntime):
    """One workload printing a line every 20 ms, without end."""

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        n = int(after or 0)
        while True:
            n += 1
            yield LogLine("stdout", f"line {n}", datetime.now(UTC), str(n))
            await asyncio.sleep(0.02)


async def test_a_steady_stream_is_stored_within_the_batch_time(app_db: str) -> None:
    """A line every 20 ms never leaves the pump 0.2 s without a new line: the batch is due
    0.2 s after its first line all the same, not after 500 lines (ten seconds here)."""
    run_id = running_run()
    pumps = LogPumps(get_engine(), SteadyRuntime())  # type: ignore[arg-type]
    try:
        await pumps.follow_all()
        started = time.monotonic()
        while state(run_id)[0] == 0:
            assert time.monotonic() - started < 1.5, "nothing stored after 1.5 s of lines"
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        stored = state(run_id)[0]
        assert 25 <= stored <= 80  # about a second and a half of lines, in batches of ~10
    finally:
        await pumps.stop()
