"""Manual run starts on PostgreSQL: validation, the shared one-active-run rule, the flow event."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent
from codexk8s.errors import ConflictError, InvalidArgumentError, NotFoundError
from codexk8s.services import projects, repositories, users
from codexk8s.services.run_start import start_run


@pytest.fixture
def project(app_db: str) -> str:
    with session_scope() as session:
        project = projects.create_project(session=session, key="alpha")
        project.settings = {**project.settings, "default_model": "gpt-default"}
        session.add(project)
        projects.create_project(session=session, key="beta")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="alpha", full_name="Acme/App"
        )
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="beta", full_name="acme/other"
        )
    return "alpha"


def runs() -> list[AgentRun]:
    with Session(get_engine()) as session:
        return list(session.exec(select(AgentRun).order_by(AgentRun.id)).all())


def test_start_creates_a_pending_run_and_a_human_event(project: str) -> None:
    run_id = start_run(
        get_engine(), project_key="alpha", repository="acme/APP", issue=7, stage="dev",
        actor_id="42",
    )  # fmt: skip
    (run,) = runs()
    assert run.id == run_id
    assert (run.status, run.stage, run.agent_key, run.issue_number, run.pr_number) == (
        "pending", "dev", "dev", 7, None,
    )  # fmt: skip
    assert run.model == "gpt-default"  # the project's default when none is given
    assert run.trigger_label is None and run.delivery_id is None
    with Session(get_engine()) as session:
        (event,) = session.exec(select(FlowEvent).where(FlowEvent.run_id == run_id)).all()
    assert (event.event_type, event.actor_type, event.actor_id) == ("run_created", "human", "42")
    assert event.correlation_id == run.correlation_id
    assert event.payload["manual"] is True and event.payload["number"] == 7


def test_review_is_a_reviewer_run_on_the_pull_request(project: str) -> None:
    start_run(
        get_engine(), project_key="alpha", repository="acme/app", issue=9, stage="review",
        model="gpt-x", reasoning_effort="high",
    )  # fmt: skip
    (run,) = runs()
    assert (run.stage, run.agent_key, run.pr_number, run.model, run.reasoning_effort) == (
        "review", "reviewer", 9, "gpt-x", "high",
    )  # fmt: skip


def test_one_active_run_per_issue_and_stage(project: str) -> None:
    start_run(get_engine(), project_key="alpha", repository="acme/app", issue=1, stage="dev")
    with pytest.raises(ConflictError, match="already active"):
        start_run(get_engine(), project_key="alpha", repository="acme/app", issue=1, stage="dev")
    # Another stage, or another issue, is a different run.
    start_run(get_engine(), project_key="alpha", repository="acme/app", issue=1, stage="plan")
    start_run(get_engine(), project_key="alpha", repository="acme/app", issue=2, stage="dev")
    assert len(runs()) == 3
    # Once the first one ended, a new one may start.
    with session_scope() as session:
        first = session.exec(select(AgentRun).order_by(AgentRun.id)).first()
        assert first is not None
        first.status = "failed"
        session.add(first)
    start_run(get_engine(), project_key="alpha", repository="acme/app", issue=1, stage="dev")
    assert len(runs()) == 4


def test_concurrent_starts_make_one_run(project: str) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            start_run(get_engine(), project_key="alpha", repository="acme/app", issue=5, stage="qa")
            outcomes.append("created")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert len(runs()) == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stage": "nope"}, InvalidArgumentError),
        ({"issue": 0}, InvalidArgumentError),
        ({"issue": True}, InvalidArgumentError),
        ({"issue": "3"}, InvalidArgumentError),
        ({"repository": "not-a-repo"}, InvalidArgumentError),
        ({"repository": "acme/other"}, InvalidArgumentError),  # attached to another project
        ({"repository": "acme/unknown"}, InvalidArgumentError),
        ({"project_key": "missing"}, NotFoundError),
        ({"model": "bad model!"}, InvalidArgumentError),
        ({"reasoning_effort": "extreme"}, InvalidArgumentError),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    project: str, kwargs: dict[str, object], error: type[Exception]
) -> None:
    arguments: dict[str, object] = {
        "project_key": "alpha", "repository": "acme/app", "issue": 3, "stage": "dev", **kwargs,
    }  # fmt: skip
    with pytest.raises(error):
        start_run(get_engine(), **arguments)  # type: ignore[arg-type]
    assert runs() == []


def test_learning_mode_is_the_projects_default_unless_the_member_set_their_own(
    project: str,
) -> None:
    with session_scope() as session:
        users.add_user(session=session, email="learner@example.com")
        users.add_user(session=session, email="plain@example.com")
        for email in ("learner@example.com", "plain@example.com"):
            projects.add_member(
                session=session, project_key="alpha", email=email, role="read_write"
            )
        alpha = projects.require_by_key(session=session, key="alpha")
        alpha.settings = {**alpha.settings, "learning_mode_default": False}
        learner = users.require_by_email(session=session, email="learner@example.com")
        plain = users.require_by_email(session=session, email="plain@example.com")
        projects.set_member_learning_mode(
            session=session, actor=None, project_key="alpha", email="learner@example.com",
            learning_mode=True,
        )  # fmt: skip
        learner_id, plain_id = str(learner.id), str(plain.id)

    def start(issue: int, actor_id: str | None) -> bool:
        run_id = start_run(
            get_engine(), project_key="alpha", repository="acme/app", issue=issue, stage="dev",
            actor_id=actor_id,
        )  # fmt: skip
        with Session(get_engine()) as session:
            run = session.get(AgentRun, run_id)
            assert run is not None
            return run.learning_mode

    assert start(1, learner_id) is True  # the member's own setting
    assert start(2, plain_id) is False  # no setting of their own: the project's default
    assert start(3, None) is False
    with session_scope() as session:
        projects.set_member_learning_mode(
            session=session, actor=None, project_key="alpha", email="learner@example.com",
            learning_mode=None,
        )  # fmt: skip
        alpha = projects.require_by_key(session=session, key="alpha")
        alpha.settings = {**alpha.settings, "learning_mode_default": True}
    assert start(4, learner_id) is True  # back to the default, which is now on
    with Session(get_engine()) as session:
        changes = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "member_learning_mode_changed")
        ).all()
    assert [(e.payload["from"], e.payload["to"]) for e in changes] == [(None, True), (True, None)]
