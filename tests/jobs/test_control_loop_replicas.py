"""Two control loops (two replicas) against one PostgreSQL: 200 runs, 3 projects, 2 slots."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine, make_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent
from codexk8s.jobs.control_loop import ControlLoop, ControlLoopTimings
from codexk8s.services import projects
from tests.jobs.fake_runtime import FakeClusterRuntime

TIMINGS = ControlLoopTimings(
    dispatch_seconds=0.05, leader_seconds=0.2, sweep_seconds=2, lease_seconds=2,
    cleanup_seconds=3600,
)  # fmt: skip


def create_runs(count: int) -> list[int]:
    keys = ["alpha", "beta", "gamma"]
    with session_scope() as session:
        ids = [projects.create_project(session=session, key=key, slots=2).id for key in keys]
        runs = [
            AgentRun(correlation_id=uuid.uuid4().hex, project_id=ids[i % 3] or 0, issue_number=i,
                     agent_key="dev", stage="dev")
            for i in range(count)
        ]  # fmt: skip
        session.add_all(runs)
        session.flush()
        return [run.id or 0 for run in runs]


def statuses() -> dict[str, int]:
    with Session(get_engine()) as session:
        rows = session.exec(
            sa.select(AgentRun.status, sa.func.count()).group_by(AgentRun.status)
        ).all()
    return {status: count for status, count in rows}


async def test_two_replicas_run_every_run_once_within_slots(
    app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Codex agents need a model key to be dispatched; the fake cluster never calls the model.
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-unused")
    get_settings.cache_clear()
    run_ids = create_runs(200)
    cluster = FakeClusterRuntime()
    replicas = [
        ControlLoop(engine=make_engine(app_db), runtime=cluster, callback_url="http://x",
                  timings=TIMINGS, owner=f"replica-{n}")
        for n in range(2)
    ]  # fmt: skip
    for replica in replicas:
        await replica.start()
    try:
        deadline = time.monotonic() + 120
        while statuses().get("succeeded", 0) < len(run_ids) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        for replica in replicas:
            await replica.stop()
            replica.engine.dispose()
    assert statuses() == {"succeeded": 200}
    assert set(cluster.created) == set(run_ids)
    assert set(cluster.created.values()) == {1}  # every run's workload created exactly once
    assert set(cluster.launch_calls.values()) == {1}  # and launched by exactly one replica
    assert dict(cluster.max_running) == {"alpha": 2, "beta": 2, "gamma": 2}
    assert sum(1 for r in replicas if r.is_leader) <= 1
    with Session(get_engine()) as session:
        owners = session.exec(
            sa.select(FlowEvent.payload).where(FlowEvent.event_type == "run_starting")
        ).all()
    claimed_by = Counter(payload["owner"] for (payload,) in owners)
    assert sum(claimed_by.values()) == 200
    assert set(claimed_by) == {"replica-0", "replica-1"}  # both replicas really dispatched
