"""Dispatch's choice of the next pending run (PostgreSQL): discussion turns of one issue answer
one after the other."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.domain.runtime import WorkloadHandle
from codexk8s.services import agents, dispatch, projects, repositories


@pytest.fixture
def project_id(app_db: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-test")
    with session_scope() as session:
        project = projects.create_project(session=session, key="web", slots=3)
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="web", full_name="o/r"
        )
        assert project.id is not None
        return project.id


def add_run(project_id: int, *, issue: int, mode: str, status: str, stage: str) -> int:
    with session_scope() as session:
        repository = repositories.get_by_full_name(session=session, full_name="o/r")
        assert repository is not None
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=project_id,
            repository_id=repository.id, issue_number=issue, agent_key="pm", stage=stage,
            mode=mode, status=status,
        )  # fmt: skip
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def claim() -> list[int]:
    return [c.run_id for c in dispatch.claim_runs(get_engine(), owner="t", callback_url="http://x")]


def test_a_discussion_turn_waits_for_the_running_turn_of_its_issue(project_id: int) -> None:
    running = add_run(project_id, issue=1, mode="discussion", status="running", stage="discussion")
    queued = add_run(project_id, issue=1, mode="discussion", status="pending", stage="discussion")
    # Not held back: work on the same issue, and a turn on another issue.
    work = add_run(project_id, issue=1, mode="work", status="pending", stage="dev")
    other = add_run(project_id, issue=2, mode="discussion", status="pending", stage="discussion")
    assert sorted(claim()) == sorted([work, other])
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun).where(AgentRun.id == running).values(status="succeeded")
        )
    assert claim() == [queued]
    with Session(get_engine()) as session:
        assert session.exec(select(AgentRun.status).where(AgentRun.id == queued)).one() == (
            "starting"
        )


@pytest.mark.parametrize("engine", ["codex", "process"])
def test_only_the_agent_runner_is_given_time_to_wait_for_people(
    project_id: int, engine: str
) -> None:
    """The agent runner has the platform MCP tools that wait for a person: its runtime timer
    allows for one wait limit beyond the timeout, and the run records it (the control plane then
    enforces the paused deadline itself). A process agent has no such tools: its timer is its
    timeout."""
    with session_scope() as session:
        if engine == "process":
            agents.set_agent(session=session, key="pm", engine="process", command="true")
        agents.set_agent(session=session, key="pm", timeout_minutes=10)
    run_id = add_run(project_id, issue=1, mode="work", status="pending", stage="plan")
    (claimed,) = dispatch.claim_runs(get_engine(), owner="t", callback_url="http://x")
    allowance = round(get_settings().human_wait_minutes * 60) if engine == "codex" else 0
    assert claimed.run_id == run_id and claimed.spec.timeout_seconds == 600
    assert claimed.spec.wait_allowance_seconds == allowance
    assert claimed.spec.limit_seconds == 600 + allowance
    handle = WorkloadHandle(runtime="local", name=claimed.spec.name)
    assert dispatch.mark_launched(get_engine(), claimed, handle)
    with Session(get_engine()) as session:
        run = session.exec(select(AgentRun).where(AgentRun.id == run_id)).one()
    assert run.wait_allowance_seconds == allowance and run.deadline_at is not None
