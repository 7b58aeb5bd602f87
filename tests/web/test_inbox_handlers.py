"""The Inbox's handlers with a session cookie: each person sees what they may answer, answers
resume the run, an approval is decided, and a refused answer says why in words."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.domain.run_requests import RequestKind
from codexk8s.services import projects, run_requests
from codexk8s.services.run_states import RUNS
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.live import INBOX, InboxLive, tokens_for
from codexk8s.web.state.inbox import InboxState
from tests.conftest import run_async
from tests.web.live_context import call_handler, dashboard_state
from tests.web.test_projects_handlers import add_user, session_for


def inbox_state(token: str) -> InboxState:
    return dashboard_state(InboxState, f"{SESSION_COOKIE}={token}", "/inbox")


def call(state: InboxState, handler: str, *args: object) -> None:
    run_async(getattr(InboxState, handler).fn(state, *args))


def ask(kind: RequestKind, text: str) -> int:
    with session_scope() as session:
        project = projects.require_by_key(session=session, key="alpha")
        run = AgentRun(correlation_id=uuid.uuid4().hex, project_id=project.id or 0,
                       agent_key="dev", stage="dev", status="running", issue_number=5)  # fmt: skip
        session.add(run)
        session.flush()
        run_id = run.id
    with get_engine().connect() as connection:
        row = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    opened = run_requests.open_request(
        get_engine(), run=row, kind=kind, text=text, options=None, wait_minutes=30
    )
    assert isinstance(opened, int)
    return opened


def test_the_inbox_shows_and_answers_what_each_person_may_answer(app_db: str) -> None:
    engine = get_engine()
    writer = add_user(engine, "writer@example.com")
    boss = add_user(engine, "boss@example.com")
    add_user(engine, "stranger@example.com")
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha")
        projects.add_member(session=session, project_key="alpha", email="writer@example.com",
                            role="read_write")  # fmt: skip
        projects.add_member(session=session, project_key="alpha", email="boss@example.com",
                            role="admin")  # fmt: skip
    question = ask(RequestKind.QUESTION, "Which port?")
    approval = ask(RequestKind.APPROVAL, "Drop a table")

    writer_view = inbox_state(session_for(engine, writer))
    call(writer_view, "load_inbox")
    assert [(i.id, i.is_approval, i.who) for i in writer_view.items] == [
        (question, False, "members with write access")
    ]
    assert writer_view.count == 1 and writer_view.items[0].issue == "#5"

    boss_view = inbox_state(session_for(engine, boss))
    call_handler(boss_view, InboxState.refresh.fn, 0)  # the badge's live trigger
    assert boss_view.count == 2

    call(writer_view, "answer", {"request_id": str(question), "answer": "8080"})
    assert writer_view.notice == "Answered: the run goes on." and writer_view.items == []
    call(writer_view, "answer", {"request_id": str(question), "answer": "again"})
    assert writer_view.error == f"request {question} is already answered"

    call(boss_view, "decide", {"request_id": str(approval), "decision": "maybe"})
    assert boss_view.error == "Choose approve or deny."
    call(boss_view, "decide", {"request_id": str(approval), "decision": "deny", "note": "no"})
    assert boss_view.notice == "Denied: the run stops and fails with your reason."
    assert boss_view.count == 0
    decision = run_requests.check_request(engine, request_id=approval)
    assert decision is not None and (decision.status, decision.answer) == ("denied", "no")

    third = ask(RequestKind.APPROVAL, "Rename a column")
    call(boss_view, "decide", {"request_id": str(third), "decision": "approve", "note": ""})
    assert boss_view.notice == "Approved: the run goes on." and boss_view.error == ""

    stranger = inbox_state(session_for(engine, add_user(engine, "other@example.com")))
    call(stranger, "load_inbox")
    assert stranger.items == []


def test_any_project_change_moves_the_inbox() -> None:
    assert (InboxLive, INBOX) in tokens_for("project-3")
    assert (InboxLive, INBOX) not in tokens_for("run-3")
