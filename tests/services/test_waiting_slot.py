"""The waiting-slot policy (issue #18): a run whose agent waits for a person keeps its slot, or,
under `release`, gives it to the next run and, once answered, takes the next free slot back
before any queued run; its agent hears the answer only then, and its deadline stays paused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.domain.explanations import describe_event
from codexk8s.domain.run_requests import RequestKind
from codexk8s.domain.runs import RunStatus
from codexk8s.domain.runtime import WorkloadHandle
from codexk8s.errors import ForbiddenError, InvalidArgumentError
from codexk8s.services import agent_runs, dispatch, projects, repositories, run_requests
from codexk8s.services.run_states import RUNS, SLOTS, transition
from codexk8s.web.state.run import header_for
from tests.services.test_run_requests import events, load, person

WAIT = 60.0


@pytest.fixture
def project(app_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A project with one slot."""
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-test")
    with session_scope() as session:
        projects.create_project(session=session, key="web", slots=1)
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="web", full_name="o/r"
        )
    return "web"


def set_policy(policy: str) -> None:
    with session_scope() as session:
        run_requests.set_waiting_slot(session=session, actor=None, project_key="web", policy=policy)


def queue(issue: int) -> int:
    with session_scope() as session:
        project = projects.require_by_key(session=session, key="web")
        repository = repositories.get_by_full_name(session=session, full_name="o/r")
        assert repository is not None
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=project.id or 0,
            repository_id=repository.id, issue_number=issue, agent_key="dev", stage="dev",
            status=RunStatus.PENDING.value,
        )  # fmt: skip
        session.add(run)
        session.flush()
        return run.id or 0


def claim_and_launch() -> list[int]:
    """One dispatch cycle, every claim launched: the runs given a slot to start."""
    launched = []
    for claimed in dispatch.claim_runs(get_engine(), owner="t", callback_url="http://x"):
        handle = WorkloadHandle(runtime="local", name=claimed.spec.name)
        assert dispatch.mark_launched(get_engine(), claimed, handle)
        launched.append(claimed.run_id)
    return launched


def ask(run_id: int) -> int:
    opened = run_requests.open_request(
        get_engine(), run=load(run_id), kind=RequestKind.QUESTION, text="Which database?",
        wait_minutes=WAIT,
    )  # fmt: skip
    assert isinstance(opened, int)
    return opened


def slot_holder() -> int | None:
    with get_engine().connect() as connection:
        return connection.execute(sa.select(SLOTS.c.run_id)).scalar_one()


def badge(run_id: int) -> str:
    """What the run page says the run waits for."""
    with session_scope() as session:
        return header_for(agent_runs.get_run(session=session, run_id=run_id)).waiting_for


def finish(run_id: int) -> None:
    run = load(run_id)
    with get_engine().begin() as connection:
        assert transition(
            connection, run_id=run_id, correlation_id=run.correlation_id,
            project_id=run.project_id, from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.SUCCEEDED,
        )  # fmt: skip


def test_by_default_a_waiting_run_keeps_its_slot(project: str) -> None:
    first, second = queue(1), queue(2)
    assert claim_and_launch() == [first]
    ask(first)
    assert slot_holder() == first and load(first).slot_number == 1
    # The queued run waits: the one slot is still taken.
    assert claim_and_launch() == []
    assert load(second).status == RunStatus.PENDING.value
    assert "run_slot_released" not in events(first)


def test_released_slot_goes_to_the_next_run_and_comes_back_first_when_answered(
    project: str,
) -> None:
    set_policy("release")
    asker, next_run, later = queue(1), queue(2), queue(3)
    assert claim_and_launch() == [asker]
    deadline = load(asker).deadline_at
    request_id = ask(asker)
    waiting = load(asker)
    assert waiting.slot_number is None and waiting.slot_released_at is not None
    assert slot_holder() is None
    # The freed slot starts the next queued run.
    assert claim_and_launch() == [next_run]
    member = person("writer")
    run_requests.answer_request(
        get_engine(), principal=member, request_id=request_id, answer="PostgreSQL"
    )
    # Answered, but without a slot the agent does not hear it yet; the deadline stays paused.
    assert run_requests.check_request(get_engine(), request_id=request_id) is None
    still = load(asker)
    assert still.waiting_since is not None and still.deadline_at == deadline
    assert claim_and_launch() == []
    assert badge(asker) == "a free slot" and badge(next_run) == "a person"
    # When the slot frees, the answered run takes it back before the older queued run.
    finish(next_run)
    assert claim_and_launch() == []
    resumed = load(asker)
    assert (resumed.slot_number, resumed.slot_released_at, resumed.waiting_since) == (
        1, None, None,
    )  # fmt: skip
    assert resumed.deadline_at > deadline
    assert slot_holder() == asker and load(later).status == RunStatus.PENDING.value
    decision = run_requests.check_request(get_engine(), request_id=request_id)
    assert decision is not None and decision.answer == "PostgreSQL"
    assert [e for e in events(asker) if e.startswith("run_slot")] == [
        "run_slot_released", "run_slot_taken_back",
    ]  # fmt: skip
    # Once it ends, the queued run starts.
    finish(asker)
    assert claim_and_launch() == [later]


def test_a_denied_run_that_released_its_slot_is_not_given_one_back(project: str) -> None:
    set_policy("release")
    asker = queue(1)
    assert claim_and_launch() == [asker]
    approval = run_requests.open_request(
        get_engine(), run=load(asker), kind=RequestKind.APPROVAL, text="Drop the users table",
        wait_minutes=WAIT,
    )  # fmt: skip
    assert isinstance(approval, int) and load(asker).slot_number is None
    boss = person("boss", role="admin")
    run_requests.answer_request(get_engine(), principal=boss, request_id=approval, approve=False)
    decision = run_requests.check_request(get_engine(), request_id=approval)
    assert decision is not None and decision.status == "denied"
    assert load(asker).cancel_requested_at is not None
    later = queue(2)
    assert claim_and_launch() == [later]


def test_a_run_not_yet_launched_keeps_its_slot_even_under_release(project: str) -> None:
    """A starting run's slot is its lease's to settle (adopt or requeue): it is not given away."""
    set_policy("release")
    asker = queue(1)
    (claimed,) = dispatch.claim_runs(get_engine(), owner="t", callback_url="http://x")
    with get_engine().begin() as connection:
        connection.execute(RUNS.update().where(RUNS.c.id == asker).values(status="running"))
    ask(claimed.run_id)
    assert slot_holder() == asker and load(asker).slot_released_at is None


def test_the_policy_is_a_project_admin_setting_and_audited(project: str) -> None:
    writer = person("writer")
    with session_scope() as session, pytest.raises(ForbiddenError):
        run_requests.set_waiting_slot(
            session=session, actor=writer, project_key="web", policy="release"
        )
    with session_scope() as session, pytest.raises(InvalidArgumentError, match="keep, release"):
        run_requests.set_waiting_slot(session=session, actor=None, project_key="web", policy="x")
    admin = person("boss", role="admin")
    with session_scope() as session:
        assert projects.get_settings(
            session=session, actor=admin, project_key="web"
        ).waiting_slot == ("keep")
        run_requests.set_waiting_slot(
            session=session, actor=admin, project_key="web", policy="release"
        )
    with session_scope() as session:
        settings = projects.get_settings(session=session, actor=admin, project_key="web")
    assert settings.waiting_slot == "release"
    with get_engine().connect() as connection:
        payloads: list[Any] = list(
            connection.execute(
                sa.text("SELECT payload FROM flow_events WHERE event_type = 'waiting_slot_changed'")
            ).scalars()
        )
    assert len(payloads) == 1


def test_the_timeline_says_what_happened_to_the_slot() -> None:
    released = describe_event("run_slot_released", {"slot": 2})
    back = describe_event("run_slot_taken_back", {"slot": 1, "waited_seconds": 3.5})
    assert released.title == "Slot given to the next run while waiting" and "slot 2" in (
        released.detail
    )
    assert back.title == "Slot taken back, agent resumes" and "slot 1" in back.detail
