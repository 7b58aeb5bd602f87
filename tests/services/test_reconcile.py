"""Lease expiry, deadline backstop and cleanup on PostgreSQL, with the local runtime."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, Slot, utcnow
from codexk8s.domain.runtime import (
    WorkloadDeferredError,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)
from codexk8s.services import agents, dispatch, projects, reconcile


@pytest.fixture
def runtime(app_db: str, tmp_path: Path) -> LocalRuntime:
    with session_scope() as session:
        project = projects.create_project(session=session, key="web", slots=1)
        session.add(AgentRun(correlation_id=uuid.uuid4().hex, project_id=project.id or 0,
                             issue_number=1, agent_key="dev", stage="dev"))  # fmt: skip
        agents.set_agent(
            session=session,
            key="dev",
            command=f"{sys.executable} -c 'import time; time.sleep(1)'",
            engine="process",
        )
    return LocalRuntime(tmp_path / "runs", poll_interval=0.05)


def the_run() -> AgentRun:
    with Session(get_engine()) as session:
        return session.exec(select(AgentRun)).one()


def the_slot() -> Slot:
    with Session(get_engine()) as session:
        return session.exec(select(Slot)).one()


def expire_lease() -> None:
    with session_scope() as session:
        session.execute(sa.update(Slot).values(lease_until=utcnow() - timedelta(seconds=1)))


async def test_claimed_but_never_launched_is_requeued(runtime: LocalRuntime) -> None:
    (claim,) = dispatch.claim_runs(get_engine(), owner="dead-replica", callback_url="http://x")
    assert the_run().status == "starting" and the_slot().state == "leased"
    expire_lease()
    result = await reconcile.expire_leases(engine=get_engine(), runtime=runtime, owner="me")
    run = the_run()
    assert result.requeued == [claim.run_id]
    assert (run.status, run.status_reason, run.attempt, run.slot_number) == (
        "pending",
        "lease_expired",
        2,
        None,
    )
    assert the_slot().state == "free" and the_slot().run_id is None
    # The next dispatch claims it again.
    (again,) = dispatch.claim_runs(get_engine(), owner="me", callback_url="http://x")
    assert again.run_id == claim.run_id


async def test_claimed_and_launched_but_not_recorded_is_adopted(runtime: LocalRuntime) -> None:
    (claim,) = dispatch.claim_runs(get_engine(), owner="dead-replica", callback_url="http://x")
    await runtime.launch(claim.spec)  # the replica died right after this
    expire_lease()
    result = await reconcile.expire_leases(engine=get_engine(), runtime=runtime, owner="me")
    run = the_run()
    assert result.alive == [claim.run_id] and result.requeued == []
    assert run.status == "running" and run.runtime_handle is not None
    slot = the_slot()
    assert slot.state == "leased" and slot.lease_owner == "me" and slot.lease_until > utcnow()


async def test_overdue_runs_are_asked_to_stop_with_reason_timeout(runtime: LocalRuntime) -> None:
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).values(
                status="running", deadline_at=utcnow() - timedelta(minutes=5)
            )
        )
    (run_id,) = reconcile.request_deadline_cancellations(get_engine())
    run = the_run()
    assert run.id == run_id and run.cancel_reason == "timeout" and run.cancel_requested_at
    assert reconcile.request_deadline_cancellations(get_engine()) == []  # asked once


@pytest.mark.parametrize("allowance", [0, 600])
async def test_a_run_whose_timer_allows_for_waiting_is_stopped_at_its_deadline(
    runtime: LocalRuntime, allowance: int
) -> None:
    """The runtime's own timer fires at the deadline unless it allows for waiting for people;
    then the control plane's deadline is the only one on time, so it has no grace."""
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).values(
                status="running", deadline_at=utcnow() - timedelta(seconds=5),
                wait_allowance_seconds=allowance,
            )
        )  # fmt: skip
    stopped = reconcile.request_deadline_cancellations(get_engine())
    assert stopped == ([the_run().id] if allowance else [])
    if not allowance:  # the backstop, once the grace has passed too
        with session_scope() as session:
            session.execute(
                sa.update(AgentRun).values(
                    deadline_at=utcnow() - timedelta(seconds=reconcile.DEADLINE_GRACE_SECONDS + 1)
                )
            )
        assert reconcile.request_deadline_cancellations(get_engine()) == [the_run().id]
    assert the_run().cancel_reason == "timeout"


async def test_cleanup_waits_for_the_ttl_and_the_lineage(runtime: LocalRuntime) -> None:
    (claim,) = dispatch.claim_runs(get_engine(), owner="me", callback_url="http://x")
    handle = await runtime.launch(claim.spec)
    dispatch.mark_launched(get_engine(), claim, handle)
    deadline = time.monotonic() + 20
    while (await runtime.status(handle, claim.run_id)).phase is not WorkloadPhase.SUCCEEDED:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    reconcile.apply_workload_status(get_engine(), await runtime.status(handle, claim.run_id))
    assert the_run().status == "succeeded"

    assert await reconcile.cleanup_runtimes(engine=get_engine(), runtime=runtime) == []  # too new
    with session_scope() as session:
        session.execute(sa.update(AgentRun).values(finished_at=utcnow() - timedelta(hours=25)))
        # A newer run of the same lineage keeps the (shared) leftovers alive.
        first = the_run()
        session.add(
            AgentRun(correlation_id="newer", project_id=first.project_id, issue_number=1,
                     agent_key="dev", stage="dev", lineage=first.lineage)
        )  # fmt: skip
    assert await reconcile.cleanup_runtimes(engine=get_engine(), runtime=runtime) == []
    with session_scope() as session:
        session.execute(sa.delete(AgentRun).where(AgentRun.correlation_id == "newer"))
    cleaned = await reconcile.cleanup_runtimes(engine=get_engine(), runtime=runtime)
    assert cleaned == [claim.run_id]
    assert the_run().cleaned_at is not None
    assert not await asyncio.to_thread(Path(handle.details["workdir"]).exists)


class DeferringRuntime(LocalRuntime):
    """A local runtime whose first launch meets a lineage namespace still being deleted."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, poll_interval=0.05)
        self.deferrals = 1

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        if self.deferrals:
            self.deferrals -= 1
            raise WorkloadDeferredError(
                "namespace x is still being deleted", retry_after_seconds=30
            )
        return await super().launch(spec)


async def test_a_deferred_launch_requeues_the_run_frees_its_slot_and_waits(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    deferring = DeferringRuntime(tmp_path / "deferring")
    result = await dispatch.dispatch_pending_runs(
        engine=get_engine(), runtime=deferring, owner="me", callback_url="http://x"
    )
    run = the_run()
    assert result.deferred == [run.id] and result.failed == []
    assert (run.status, run.status_reason, run.slot_number) == ("pending", "launch_deferred", None)
    assert run.status_message == "namespace x is still being deleted"
    assert run.dispatch_after is not None and run.dispatch_after > utcnow() + timedelta(seconds=20)
    assert the_slot().state == "free"
    # Not claimed again before its time, then claimed as usual.
    assert dispatch.claim_runs(get_engine(), owner="me", callback_url="http://x") == []
    with session_scope() as session:
        session.execute(sa.update(AgentRun).values(dispatch_after=utcnow() - timedelta(seconds=1)))
    result = await dispatch.dispatch_pending_runs(
        engine=get_engine(), runtime=deferring, owner="me", callback_url="http://x"
    )
    assert result.launched == [run.id]
    assert the_run().status == "running"


async def test_a_workload_missing_from_a_stale_list_is_read_before_it_counts_as_lost(
    runtime: LocalRuntime,
) -> None:
    (claim,) = dispatch.claim_runs(get_engine(), owner="me", callback_url="http://x")
    handle = await runtime.launch(claim.spec)
    dispatch.mark_launched(get_engine(), claim, handle)

    class StaleList(LocalRuntime):
        async def list_workloads(self) -> list[WorkloadStatus]:
            return []  # a cache that has not seen the new workload yet

    stale = StaleList(runtime.root, poll_interval=0.05)
    result = await reconcile.reconcile_runs(engine=get_engine(), runtime=stale)
    assert result.alive == [claim.run_id] and result.applied == {}
    assert the_run().status == "running"


async def test_leftovers_no_run_accounts_for_are_swept_after_the_ttl(
    runtime: LocalRuntime,
) -> None:
    """A launch whose handle was never stored (the run was cancelled while its launch was
    retried, a crash) leaves a work folder that only listing the runtime finds."""
    (claim,) = dispatch.claim_runs(get_engine(), owner="me", callback_url="http://x")
    handle = await runtime.launch(claim.spec)  # never recorded: the replica crashed here
    deadline = time.monotonic() + 20
    while (await runtime.status(handle, claim.run_id)).phase is not WorkloadPhase.SUCCEEDED:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    workdir = Path(handle.details["workdir"])
    day = timedelta(hours=24)

    async def sweep() -> list[WorkloadHandle]:
        return await reconcile.sweep_leftovers(engine=get_engine(), runtime=runtime, older_than=day)

    assert await sweep() == []  # too new
    assert (
        await reconcile.sweep_leftovers(
            engine=get_engine(), runtime=runtime, older_than=timedelta(0)
        )
        == []
    )  # the run is still active (starting)
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).values(
                status="canceled", finished_at=utcnow() - timedelta(hours=25)
            )
        )
    state = workdir / "state.json"
    old = json.loads(state.read_text())
    old["launched_at"] = time.time() - 25 * 3600
    state.write_text(json.dumps(old))
    (removed,) = await sweep()
    assert removed.name == handle.name
    assert not await asyncio.to_thread(workdir.exists)
    assert await sweep() == []
