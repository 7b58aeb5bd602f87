"""The control loop end to end on PostgreSQL with the local runtime: webhook → run → process →
logs → final state, plus cancel, timeout, slots and restarts of the control plane."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, Slot
from codexk8s.errors import ConflictError
from codexk8s.jobs.control_loop import ControlLoop, ControlLoopTimings
from codexk8s.services import (
    agents,
    notifications,
    projects,
    repositories,
    run_control,
    run_logs,
)
from tests.conftest import link_member
from tests.conftest import trigger as signed_trigger

SECRET = "engine-secret"
FAST = ControlLoopTimings(
    dispatch_seconds=0.1, leader_seconds=0.2, sweep_seconds=1, lease_seconds=1,
    cleanup_seconds=3600, cancel_grace_seconds=2,
)  # fmt: skip


@pytest.fixture
def project(app_db: str) -> str:
    with session_scope() as session:
        projects.create_project(session=session, key="web", slots=2)
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="web",
            full_name="Codertocat/Hello-World", webhook_secret=SECRET,
        )  # fmt: skip
    link_member("web")
    return "web"


def set_command(code: str, *, role: str = "dev", timeout_minutes: float | None = None) -> None:
    with session_scope() as session:
        agents.set_agent(
            session=session, key=role, command=f"{sys.executable} -c {shlex.quote(code)}",
            timeout_minutes=timeout_minutes, engine="process",
        )  # fmt: skip


def trigger(number: int, label: str = "run:dev") -> int:
    return signed_trigger(number, secret=SECRET, labels=[label], added=label)


def run(run_id: int) -> AgentRun:
    with Session(get_engine()) as session:
        found = session.get(AgentRun, run_id)
        assert found is not None
        return found


async def until(predicate: Any, limit: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def until_status(run_id: int, *statuses: str, limit: float = 30) -> AgentRun:
    await until(lambda: run(run_id).status in statuses, limit, f"run {run_id} to be {statuses}")
    return run(run_id)


def lines(run_id: int) -> list[str]:
    return [line.line for line in run_logs.read_lines(get_engine(), run_id=run_id)]


def event_types(run_id: int) -> list[str]:
    with Session(get_engine()) as session:
        return list(
            session.exec(
                select(FlowEvent.event_type)
                .where(FlowEvent.run_id == run_id)
                .order_by(FlowEvent.id)
            ).all()
        )


def make_control_loop(root: Path) -> ControlLoop:
    return ControlLoop(
        engine=get_engine(), runtime=LocalRuntime(root, poll_interval=0.05, kill_grace_seconds=1),
        callback_url="http://127.0.0.1:1", timings=FAST,
    )  # fmt: skip


@pytest.fixture
async def control_loop(project: str, tmp_path: Path) -> AsyncIterator[ControlLoop]:
    started = make_control_loop(tmp_path / "runs")
    await started.start()
    yield started
    await started.stop()


async def test_webhook_to_succeeded_with_logs_stored(control_loop: ControlLoop) -> None:
    set_command(
        "import os, sys\nprint('hello from', os.environ['CODEXK8S_RUN_ID'])\n"
        "print('warn', file=sys.stderr)\nprint('bye')"
    )
    run_id = trigger(1)
    done = await until_status(run_id, "succeeded", "failed")
    assert (done.status, done.status_reason, done.status_message) == ("succeeded", None, None)
    assert done.started_at and done.finished_at and done.slot_number in (1, 2)
    assert done.runtime_handle and done.runtime_handle["runtime"] == "local"
    await until(
        lambda: (run(run_id).log_cursor or "").startswith("eof:"), what="log pump to finish"
    )
    stored = run_logs.read_lines(get_engine(), run_id=run_id)
    assert [line.sequence for line in stored] == [1, 2, 3]
    assert sorted(line.line for line in stored) == sorted([f"hello from {run_id}", "bye", "warn"])
    assert {line.stream for line in stored if line.line == "warn"} == {"stderr"}
    assert event_types(run_id) == ["run_created", "run_starting", "run_running", "run_succeeded"]
    with Session(get_engine()) as session:
        assert all(slot.state == "free" for slot in session.exec(select(Slot)).all())


async def test_failing_command_fails_with_its_exit_code(control_loop: ControlLoop) -> None:
    set_command("print('about to fail'); raise SystemExit(2)")
    run_id = trigger(2)
    done = await until_status(run_id, "succeeded", "failed")
    assert (done.status, done.status_reason, done.status_message) == (
        "failed",
        "exit_code",
        "exited with code 2",
    )


async def test_cancel_mid_run_reaches_the_process(control_loop: ControlLoop) -> None:
    set_command("import time\nprint('ready', flush=True)\ntime.sleep(60)")
    run_id = trigger(3)
    await until(lambda: lines(run_id) == ["ready"], what="the run to print")
    outcome = await asyncio.to_thread(
        run_control.cancel_run, get_engine(), run_id=run_id, actor_id="ada"
    )
    assert not outcome.is_immediate
    done = await until_status(run_id, "canceled", "failed", "succeeded", limit=20)
    assert (done.status, done.status_reason) == ("canceled", "canceled_by_user")
    pid = int(done.runtime_handle["details"]["pid"])  # type: ignore[index]
    await until(lambda: not _alive(pid), limit=5, what="the process group to exit")
    assert "run_cancel_requested" in event_types(run_id) and "run_cancel_sent" in event_types(
        run_id
    )


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_pending_cancel_is_immediate(project: str) -> None:
    run_id = trigger(4)
    outcome = await asyncio.to_thread(run_control.cancel_run, get_engine(), run_id=run_id)
    assert outcome.is_immediate and run(run_id).status == "canceled"


async def test_timeout_ends_the_run(control_loop: ControlLoop) -> None:
    set_command("import time\nprint('working', flush=True)\ntime.sleep(60)", timeout_minutes=0.05)
    run_id = trigger(5)
    done = await until_status(run_id, "failed", "succeeded", "canceled", limit=30)
    assert (done.status, done.status_reason) == ("failed", "timeout")


async def test_slots_bound_concurrency_per_project(project: str, tmp_path: Path) -> None:
    with session_scope() as session:
        session.execute(sa.delete(Slot).where(Slot.number == 2))
    marker = tmp_path / "overlap"
    set_command(
        "import os, time\n"
        f"path = {str(marker)!r}\n"
        "open(path, 'a').write('+')\ntime.sleep(0.4)\nopen(path, 'a').write('-')"
    )
    first, second = trigger(6), trigger(7)
    started = make_control_loop(tmp_path / "runs")
    await started.start()
    try:
        await until_status(first, "succeeded")
        await until_status(second, "succeeded")
    finally:
        await started.stop()
    assert marker.read_text() == "+-+-"  # never two at once with one slot
    assert run(first).started_at < run(second).started_at  # type: ignore[operator]


async def test_restart_mid_run_adopts_and_stores_each_line_once(
    project: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    set_command(
        f"open({str(starts)!r}, 'a').write('x')\n"
        "import time\nprint('a', flush=True)\ntime.sleep(2)\nprint('b', flush=True)"
    )
    run_id = trigger(8)
    first = make_control_loop(tmp_path / "runs")
    await first.start()
    await until(lambda: lines(run_id) == ["a"], what="first line")
    await first.stop()  # the control plane goes away; the process keeps running

    second = make_control_loop(tmp_path / "runs")
    await second.start()
    try:
        done = await until_status(run_id, "succeeded", "failed")
        await until(lambda: (run(run_id).log_cursor or "").startswith("eof:"), what="log pump")
    finally:
        await second.stop()
    assert done.status == "succeeded"
    assert lines(run_id) == ["a", "b"]
    assert starts.read_text() == "x"  # launched exactly once


async def test_restart_after_the_process_vanished_is_runtime_lost(
    project: str, tmp_path: Path
) -> None:
    set_command("import time\nprint('up', flush=True)\ntime.sleep(60)")
    run_id = trigger(9)
    first = make_control_loop(tmp_path / "runs")
    await first.start()
    await until(lambda: lines(run_id) == ["up"], what="the run to start")
    await first.stop()
    os.killpg(int(run(run_id).runtime_handle["details"]["pid"]), signal.SIGKILL)  # type: ignore[index]

    second = make_control_loop(tmp_path / "runs")
    await second.start()
    try:
        done = await until_status(run_id, "failed", "succeeded", limit=20)
    finally:
        await second.stop()
    assert (done.status, done.status_reason) == ("failed", "runtime_lost")


async def test_rerun_starts_a_new_attempt(control_loop: ControlLoop) -> None:
    set_command("raise SystemExit(1)")
    run_id = trigger(10)
    await until_status(run_id, "failed")
    set_command("print('second time lucky')")
    new_id = await asyncio.to_thread(run_control.rerun, get_engine(), run_id=run_id, actor_id="ada")
    done = await until_status(new_id, "succeeded", "failed")
    assert done.status == "succeeded" and done.attempt == 2 and done.parent_run_id == run_id
    await until(lambda: lines(new_id) == ["second time lucky"], what="rerun log")


async def test_rerun_refuses_while_another_run_of_the_target_is_active(project: str) -> None:
    first = trigger(11)
    await asyncio.to_thread(run_control.cancel_run, get_engine(), run_id=first)
    second = trigger(11)  # a new trigger for the same issue and stage, still pending
    with pytest.raises(ConflictError, match=f"run {second} is already active"):
        await asyncio.to_thread(run_control.rerun, get_engine(), run_id=first)


async def test_a_new_run_is_dispatched_at_once_not_at_the_next_tick(
    project: str, tmp_path: Path
) -> None:
    """With the dispatch timer at a minute, a labelled issue still starts within a second: the
    change it publishes nudges the dispatcher (this replica's or, through the transport, any)."""
    slow = ControlLoop(
        engine=get_engine(), runtime=LocalRuntime(tmp_path / "runs", poll_interval=0.05),
        callback_url="http://127.0.0.1:1",
        timings=ControlLoopTimings(dispatch_seconds=60, leader_seconds=60, sweep_seconds=60,
                              lease_seconds=60, cleanup_seconds=3600),
    )  # fmt: skip
    set_command("print('nudged')")
    async with notifications.get_hub().running():
        await slow.start()
        try:
            await asyncio.sleep(0.3)  # the start-up cycles are done; the timer waits a minute
            started = time.monotonic()
            run_id = trigger(31)
            await until_status(run_id, "running", "succeeded", limit=5)
            assert time.monotonic() - started < 2
        finally:
            await slow.stop()
