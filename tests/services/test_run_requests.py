"""Questions and approval requests of runs (services.run_requests): who may answer under which
policy, what an answer does to the run (its deadline, a denial, a question left unanswered), and
what the tools refuse."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, utcnow
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.run_requests import RequestKind
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import ConflictError, ForbiddenError, InvalidArgumentError, NotFoundError
from codexk8s.services import notifications, projects, reconcile, run_requests, users
from codexk8s.services.run_states import RUNS, transition
from tests.conftest import link_member

WAIT = 60.0


def person(login: str, project: str | None = "web", role: str = "read_write") -> Principal:
    if project is not None:
        email = link_member(project, login, role=role)
    else:
        email = f"{login}@users.example.test"
        with session_scope() as session:
            users.add_user(session=session, email=email)
    with session_scope() as session:
        user = users.require_by_email(session=session, email=email)
        return Principal(user_id=user.id or 0, platform_role=PlatformRole(user.role))


def running_run(project: str = "web", **values: Any) -> sa.Row[Any]:
    with session_scope() as session:
        found = projects.get_by_key(session=session, key=project)
        if found is None:
            found = projects.create_project(session=session, key=project, slots=1)
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=found.id or 0, issue_number=7,
            agent_key="dev", stage="dev", status=RunStatus.RUNNING.value,
            deadline_at=utcnow() + timedelta(minutes=30), **values,
        )  # fmt: skip
        session.add(run)
        session.flush()
        run_id = run.id
    return load(run_id or 0)


def load(run_id: int) -> sa.Row[Any]:
    with get_engine().connect() as connection:
        return connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()


def events(run_id: int) -> list[str]:
    with get_engine().connect() as connection:
        return list(
            connection.execute(
                sa.text("SELECT event_type FROM flow_events WHERE run_id = :r ORDER BY id"),
                {"r": run_id},
            ).scalars()
        )


def ask(run: sa.Row[Any], text: str = "Which database?", **extra: Any) -> int:
    opened = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.QUESTION, text=text, wait_minutes=WAIT, **extra
    )
    assert isinstance(opened, int)
    return opened


def test_an_answered_question_resumes_the_run_and_moves_its_deadline_by_the_wait(
    app_db: str,
) -> None:
    run = running_run()
    member = person("writer")
    request_id = ask(run, options=["PostgreSQL", "SQLite"])
    waiting = load(run.id)
    assert waiting.waiting_since is not None
    assert run_requests.check_request(get_engine(), request_id=request_id) is None
    (pending,) = run_requests.pending_requests_for(member)
    assert (pending.id, pending.options, pending.project_key) == (
        request_id, ("PostgreSQL", "SQLite"), "web",
    )  # fmt: skip

    decision = run_requests.answer_request(
        get_engine(), principal=member, request_id=request_id, answer="PostgreSQL"
    )
    assert (decision.status, decision.answer) == ("answered", "PostgreSQL")
    resumed = load(run.id)
    assert resumed.waiting_since is None and resumed.deadline_at > run.deadline_at
    assert run_requests.check_request(get_engine(), request_id=request_id) == decision
    assert run_requests.pending_requests_for(member) == []
    assert events(run.id)[-3:] == ["tool_called", "run_request_opened", "run_request_answered"]
    # Answered once: a second answer changes nothing.
    with pytest.raises(ConflictError, match="already answered"):
        run_requests.answer_request(
            get_engine(), principal=member, request_id=request_id, answer="SQLite"
        )


def test_who_may_answer_follows_the_policy(app_db: str) -> None:
    run = running_run()
    writer, reader, admin = (
        person("writer"),
        person("reader", role="read"),
        person("boss", role="admin"),
    )
    outsider = person("outsider", project=None)
    approval = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.APPROVAL, text="Drop the users table",
        details="a migration", wait_minutes=WAIT,
    )  # fmt: skip
    assert isinstance(approval, int)  # request_approval: owner by default
    with pytest.raises(NotFoundError):
        run_requests.answer_request(
            get_engine(), principal=outsider, request_id=approval, approve=True
        )
    for someone in (reader, writer):
        with pytest.raises(ForbiddenError, match="project admin"):
            run_requests.answer_request(
                get_engine(), principal=someone, request_id=approval, approve=True
            )
    assert [p.id for p in run_requests.pending_requests_for(writer)] == []
    assert [p.id for p in run_requests.pending_requests_for(admin)] == [approval]
    with pytest.raises(InvalidArgumentError, match="approve or deny"):
        run_requests.answer_request(
            get_engine(), principal=admin, request_id=approval, answer="looks fine"
        )
    decision = run_requests.answer_request(
        get_engine(), principal=admin, request_id=approval, answer="approve looks fine"
    )
    assert (decision.status, decision.answer, decision.is_approved) == (
        "approved", "looks fine", True,
    )  # fmt: skip
    # A decision without a note (the Inbox's approve button with nothing typed).
    second = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.APPROVAL, text="Rename a column",
        wait_minutes=WAIT,
    )  # fmt: skip
    assert isinstance(second, int)
    quiet = run_requests.answer_request(
        get_engine(), principal=admin, request_id=second, approve=True
    )
    assert (quiet.status, quiet.answer) == ("approved", None)


def test_a_policy_none_approval_goes_through_without_waiting(app_db: str) -> None:
    run = running_run()
    admin = person("boss", role="admin")
    with session_scope() as session:
        run_requests.set_tool_policy(
            session=session, actor=admin, project_key="web", tool="request_approval",
            policy="none",
        )  # fmt: skip
    decided = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.APPROVAL, text="Push", wait_minutes=WAIT
    )
    assert isinstance(decided, run_requests.Decision) and decided.is_approved
    assert load(run.id).waiting_since is None
    assert events(run.id)[-2:] == ["tool_called", "run_request_approved"]


def test_a_denial_stops_the_run_and_it_fails_with_the_reason(app_db: str) -> None:
    run = running_run()
    admin = person("boss", role="admin")
    request_id = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.APPROVAL, text="Delete prod", wait_minutes=WAIT
    )
    assert isinstance(request_id, int)
    decision = run_requests.answer_request(
        get_engine(), principal=admin, request_id=request_id, answer="deny not today"
    )
    assert not decision.is_approved and decision.answer == "not today"
    stopped = load(run.id)
    assert stopped.cancel_reason == "approval_denied"
    assert "denied 'Delete prod': not today" in stopped.status_message


def test_an_unanswered_question_times_out_into_a_failure_reason(app_db: str) -> None:
    run = running_run()
    opened = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.QUESTION, text="Anyone?", wait_minutes=0.0001
    )
    assert isinstance(opened, int)
    decision = run_requests.check_request(get_engine(), request_id=opened)
    while decision is None:
        decision = run_requests.check_request(get_engine(), request_id=opened)
    assert decision.status == "timed_out" and not decision.is_approved
    stopped = load(run.id)
    assert (stopped.cancel_reason, stopped.waiting_since) == ("question_unanswered", None)
    assert "nobody answered 'Anyone?' in time" in stopped.status_message


def test_a_waiting_run_is_not_stopped_by_its_deadline(app_db: str) -> None:
    run = running_run()
    with get_engine().begin() as connection:
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == run.id)
            .values(deadline_at=utcnow() - timedelta(hours=1))
        )
    ask(run)
    assert reconcile.request_deadline_cancellations(get_engine()) == []


def test_an_ended_run_asks_nothing_and_its_open_questions_leave_the_inbox(app_db: str) -> None:
    run = running_run()
    member = person("writer")
    request_id = ask(run)
    with get_engine().begin() as connection:
        assert transition(
            connection, run_id=run.id, correlation_id=run.correlation_id,
            project_id=run.project_id, from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.CANCELED, reason="canceled",
        )  # fmt: skip
    assert run_requests.pending_requests_for(member) == []
    decision = run_requests.check_request(get_engine(), request_id=request_id)
    assert decision is not None and decision.status == "canceled"
    with pytest.raises(ConflictError, match="ended"):
        ask(load(run.id))


def test_bad_tool_input_is_refused_and_changes_nothing(app_db: str) -> None:
    run = running_run()
    before = events(run.id)
    for bad in ({"text": ""}, {"text": "x" * 5000}, {"text": "ok", "options": "a"},
                {"text": "ok", "options": [1, 2]}):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            run_requests.open_request(
                get_engine(), run=run, kind=RequestKind.QUESTION, wait_minutes=WAIT, **bad
            )
    assert events(run.id) == before and load(run.id).waiting_since is None
    first = ask(run)
    assert ask(run) == first  # the same call again waits on the same question
    with pytest.raises(ConflictError, match="still waiting"):
        ask(run, "A second question at once")


async def test_a_call_retried_after_its_answer_hears_it_instead_of_asking_again(
    app_db: str,
) -> None:
    """The control plane restarted while the agent waited; the answer came meanwhile; the
    agent's MCP client sends the same call again: it gets that answer, nobody is asked twice.
    Once the agent has heard an answer, the same question again is a new question."""
    run = running_run()
    member = person("writer")
    first = ask(run)
    run_requests.answer_request(get_engine(), principal=member, request_id=first, answer="Yes")
    assert ask(load(run.id)) == first  # the first call's HTTP request was cut: not delivered
    decision = await run_requests.wait_for_decision(get_engine(), request_id=first)
    assert decision.answer == "Yes" and run_requests.pending_requests_for(member) == []
    again = ask(load(run.id))
    assert again != first and len(run_requests.pending_requests_for(member)) == 1


def test_past_runs_are_the_projects_own(app_db: str) -> None:
    run = running_run()
    other_project = running_run("elsewhere", summary="secret elsewhere")
    earlier = running_run(summary="Added a login page")
    for finished in (other_project, earlier):
        with get_engine().begin() as connection:
            transition(
                connection, run_id=finished.id, correlation_id=finished.correlation_id,
                project_id=finished.project_id, from_statuses=[RunStatus.RUNNING],
                to_status=RunStatus.FAILED, reason="exit_code", message="tests failed",
            )  # fmt: skip
    found = run_requests.past_runs(get_engine(), run=run, limit=10)
    assert [(r["run_id"], r["status"], r["summary"]) for r in found] == [
        (earlier.id, "failed", "Added a login page")
    ]
    with pytest.raises(InvalidArgumentError):
        run_requests.past_runs(get_engine(), run=run, limit=500)


def test_policies_are_set_by_project_admins_within_what_each_tool_allows(app_db: str) -> None:
    running_run()
    admin, writer = person("boss", role="admin"), person("writer")
    with session_scope() as session, pytest.raises(ForbiddenError):
        run_requests.set_tool_policy(
            session=session, actor=writer, project_key="web", tool="ask", policy="owner"
        )
    with session_scope() as session, pytest.raises(InvalidArgumentError, match="cannot"):
        run_requests.set_tool_policy(
            session=session, actor=admin, project_key="web", tool="ask", policy="none"
        )
    with session_scope() as session, pytest.raises(InvalidArgumentError):
        run_requests.set_tool_policy(
            session=session, actor=admin, project_key="web", tool="rm_rf", policy="none"
        )
    with session_scope() as session:
        changed = run_requests.set_tool_policy(
            session=session, actor=admin, project_key="web", tool="ask", policy="owner"
        )
    assert changed["ask"] == "owner"
    with session_scope() as session:
        assert run_requests.tool_policies(session=session, actor=writer, project_key="web") == {
            "ask": "owner", "request_approval": "owner", "report_progress": "none",
            "past_runs": "none", "post_comment": "none", "set_labels": "none",
        }  # fmt: skip


async def test_a_waiting_call_is_woken_by_the_answer_not_by_polling(app_db: str) -> None:
    """With the notification hub running in its loop, the waiting tool call reads its row once,
    then sleeps until the run's topic changes: the answer (committed on another thread, as on
    another replica) wakes it at once, though its safety poll is a minute away."""
    run = running_run()
    member = person("writer")
    request_id = ask(run)
    reads = 0
    real_check = run_requests.check_request

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return real_check(*args, **kwargs)

    hub = notifications.Hub()
    async with hub.running():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(notifications, "_hub", hub)
            patch.setattr(run_requests, "check_request", counted)
            waiter = asyncio.create_task(
                run_requests.wait_for_decision(
                    get_engine(), request_id=request_id, run_id=run.id, watched_poll_seconds=60
                )
            )
            await asyncio.sleep(1.0)
            assert not waiter.done() and reads == 1
            started = time.monotonic()
            await asyncio.to_thread(
                run_requests.answer_request, get_engine(), principal=member,
                request_id=request_id, answer="PostgreSQL",
            )  # fmt: skip
            decision = await asyncio.wait_for(waiter, timeout=5)
    assert decision.answer == "PostgreSQL" and time.monotonic() - started < 2
    assert reads == 2
