"""The "Start run" dialog's handlers without a browser, and the one service behind it and
`POST /api/v1/runs`: who may start runs where, and what a refusal says."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import Session, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.errors import ForbiddenError, NotFoundError
from codexk8s.services import projects, repositories, run_start
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.start_run import StartRunState
from tests.conftest import run_async
from tests.web.live_context import dashboard_headers
from tests.web.test_projects_handlers import add_user, session_for

PEOPLE: dict[str, Any] = {}


def dialog_for(email: str, role: str = "user", path_key: str = "") -> StartRunState:
    if email not in PEOPLE:
        PEOPLE[email] = add_user(get_engine(), email, role)
    token = session_for(get_engine(), PEOPLE[email])
    root = State(_reflex_internal_init=True)
    root.router_data = {
        "headers": dashboard_headers(f"{SESSION_COOKIE}={token}"),
        "pathname": f"/projects/{path_key}" if path_key else "/runs",
        "query": {"project_key": path_key} if path_key else {},
    }
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> StartRunState:
        return await root.get_state(StartRunState)

    return run_async(get())


def call(state: StartRunState, name: str, *args: Any) -> list[Any]:
    async def drive() -> list[Any]:
        result = getattr(StartRunState, name).fn(state, *args)
        if inspect.isasyncgen(result):
            return [item async for item in result]
        if inspect.isawaitable(result):
            return [await result]
        return [result]

    return run_async(drive())


@pytest.fixture
def world(app_db: str) -> None:
    PEOPLE.clear()
    with session_scope(get_engine()) as session:
        for key in ("alpha", "beta"):
            projects.create_project(session=session, key=key)
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key=key,
                full_name=f"octo/{key}", webhook_secret="s",
            )  # fmt: skip


def _member(email: str, key: str, role: str) -> None:
    with session_scope(get_engine()) as session:
        projects.add_member(session=session, project_key=key, email=email, role=role)


def test_a_writer_starts_a_run_and_a_reader_gets_no_button(world: None) -> None:
    writer = dialog_for("writer@example.com")
    _member("writer@example.com", "alpha", "read_write")
    reader = dialog_for("reader@example.com")
    _member("reader@example.com", "beta", "read")
    call(reader, "load_targets")
    assert reader.projects == [] and not reader.can_start

    call(writer, "load_targets")
    assert writer.projects == ["alpha"] and writer.repositories == ["octo/alpha"]
    call(writer, "open_dialog")
    assert writer.is_open and writer.project == "alpha" and writer.repository == "octo/alpha"
    call(writer, "set_number", "#abc")
    call(writer, "start")
    assert "number of the issue" in writer.error
    call(writer, "set_number", "#42")
    call(writer, "set_stage", "plan")
    events = call(writer, "start")
    assert writer.error == "" and not writer.is_open
    with Session(get_engine()) as session:
        run = session.exec(select(AgentRun)).one()
    assert (run.issue_number, run.stage, run.agent_key) == (42, "plan", "em")
    assert any(f"/runs/{run.id}" in str(event) for event in events)

    # On a project's page the dialog starts runs there, and only where the person may.
    on_page = dialog_for("writer@example.com", path_key="alpha")
    call(on_page, "load_targets")
    assert on_page.page_project == "alpha"
    elsewhere = dialog_for("writer@example.com", path_key="beta")
    call(elsewhere, "load_targets")
    assert elsewhere.page_project == "" and elsewhere.can_start  # no button on beta's page

    # The same issue and stage again: the refusal is said in the dialog.
    call(writer, "open_dialog")
    call(writer, "set_number", "42")
    call(writer, "set_stage", "plan")
    call(writer, "start")
    assert "already active" in writer.error and writer.is_open


def test_the_service_checks_access_for_every_caller(world: None) -> None:
    engine = get_engine()
    outsider = add_user(engine, "outsider@example.com")
    reader = add_user(engine, "reader2@example.com")
    _member("reader2@example.com", "alpha", "read")
    with pytest.raises(NotFoundError):
        run_start.start_run_as(
            engine, principal=outsider, project_key="alpha", repository="octo/alpha",
            issue=1, stage="dev",
        )  # fmt: skip
    with pytest.raises(ForbiddenError):
        run_start.start_run_as(
            engine, principal=reader, project_key="alpha", repository="octo/alpha",
            issue=1, stage="dev",
        )  # fmt: skip
    with Session(engine) as session:
        assert session.exec(select(AgentRun)).all() == []
