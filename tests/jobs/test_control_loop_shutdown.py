"""Stopping the control loop strands nothing: an in-flight dispatch records its launch, the
replica's slot leases are handed back, and the next control loop adopts the live run at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.db.engine import get_engine
from codexk8s.db.models import Slot
from codexk8s.domain.runtime import WorkloadHandle, WorkloadSpec
from codexk8s.jobs.control_loop import ControlLoop
from codexk8s.services import run_control
from tests.jobs.test_control_loop_local import (
    FAST,
    make_control_loop,
    project,  # noqa: F401  (fixture)
    run,
    set_command,
    trigger,
    until,
    until_status,
)


def slot_of(run_id: int) -> Slot | None:
    with Session(get_engine()) as session:
        return session.exec(select(Slot).where(Slot.run_id == run_id)).first()


class SlowLaunch(LocalRuntime):
    """A runtime whose launch takes a while, so a shutdown can arrive in the middle of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, poll_interval=0.05, kill_grace_seconds=1)
        self.launching = asyncio.Event()

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        self.launching.set()
        await asyncio.sleep(1.0)
        return await super().launch(spec)


async def _cancel_and_settle(run_id: int, root: Path) -> None:
    control_loop = make_control_loop(root)
    await control_loop.start()
    try:
        await asyncio.to_thread(run_control.cancel_run, get_engine(), run_id=run_id, actor_id="t")
        await until_status(run_id, "canceled", "failed", "succeeded")
    finally:
        await control_loop.stop()


@pytest.mark.usefixtures("project")
async def test_stop_hands_back_leases_and_the_next_control_loop_adopts(tmp_path: Path) -> None:
    set_command("import time; print('up', flush=True); time.sleep(60)")
    run_id = trigger(301)
    first = make_control_loop(tmp_path / "runs")
    await first.start()
    try:
        await until_status(run_id, "running")
        await until(lambda: (slot_of(run_id) or Slot()).lease_owner == first.owner, what="lease")
    finally:
        await first.stop()
    slot = slot_of(run_id)
    assert slot is not None and slot.state == "leased"
    assert slot.lease_owner is None
    assert slot.lease_until is not None and slot.lease_until <= datetime.now(UTC)
    assert run(run_id).status == "running"  # the workload was not touched

    second = make_control_loop(tmp_path / "runs")
    await second.start()
    try:
        # Adopted at the next lease cycle, not after the lease TTL.
        await until(
            lambda: (slot_of(run_id) or Slot()).lease_owner == second.owner,
            limit=5 * FAST.lease_seconds,
            what="the next control loop to adopt the lease",
        )
        assert run(run_id).status == "running"
    finally:
        await second.stop()
    await _cancel_and_settle(run_id, tmp_path / "runs")


@pytest.mark.usefixtures("project")
async def test_stop_waits_for_a_launch_in_flight(tmp_path: Path) -> None:
    set_command("import time; time.sleep(60)")
    run_id = trigger(302)
    runtime = SlowLaunch(tmp_path / "runs")
    control_loop = ControlLoop(
        engine=get_engine(), runtime=runtime, callback_url="http://127.0.0.1:1", timings=FAST
    )
    await control_loop.start()
    await asyncio.wait_for(runtime.launching.wait(), timeout=30)
    assert run(run_id).status == "starting"
    await control_loop.stop()
    # The launch that had begun was recorded before the control loop let go of its lease.
    stopped = run(run_id)
    assert stopped.status == "running" and stopped.runtime_handle is not None
    assert (slot_of(run_id) or Slot()).lease_owner is None
    await _cancel_and_settle(run_id, tmp_path / "runs")
