"""The Projects page's event handlers, called directly with a session cookie (no browser): what
each caller sees, and that the server refuses member changes from those who may not make them."""

from __future__ import annotations

from datetime import timedelta

from reflex.istate.data import RouterData
from reflex.state import State
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import FlowEvent, Project, User
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.services import projects, sessions, users
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.projects import SIGNED_OUT, ProjectsState
from tests.conftest import run_async
from tests.web.live_context import dashboard_headers


def add_user(engine: Engine, email: str, role: str = "user") -> Principal:
    with session_scope(engine) as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


def session_for(engine: Engine, principal: Principal) -> str:
    with Session(engine) as session:
        user = session.get(User, principal.user_id)
    assert user is not None
    return sessions.create_session(engine, user=user, ttl=timedelta(hours=1))


def states_for(token: str | None) -> tuple[ProjectsState, AuthState]:
    """The Projects and Auth states as an event from a browser holding TOKEN would see them."""
    root = State(_reflex_internal_init=True)
    cookie = f"theme=dark; {SESSION_COOKIE}={token}" if token else "theme=dark"
    root.router_data = {"headers": dashboard_headers(cookie), "pathname": "/projects"}
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> tuple[ProjectsState, AuthState]:
        return await root.get_state(ProjectsState), await root.get_state(AuthState)

    return run_async(get())


def members(engine: Engine, key: str = "alpha") -> dict[str, str]:
    with Session(engine) as session:
        rows = projects.list_members(session=session, actor=None, project_key=key)
    return {row.email: row.role for row in rows}


def member_events(engine: Engine) -> int:
    with Session(engine) as session:
        query = select(FlowEvent).where(FlowEvent.event_type.startswith("member_"))  # type: ignore[attr-defined]
        return len(session.exec(query).all())


def setup(engine: Engine) -> dict[str, Principal]:
    people = {
        "owner": add_user(engine, "owner@example.com", "owner"),
        "lead": add_user(engine, "lead@example.com"),
        "reader": add_user(engine, "reader@example.com"),
        "newbie": add_user(engine, "newbie@example.com"),
        "outsider": add_user(engine, "outsider@example.com"),
    }
    with session_scope(engine) as session:
        projects.create_project(session=session, key="alpha", name="Alpha", slots=2)
        projects.create_project(session=session, key="beta", name="Beta", slots=1)
        projects.add_member(
            session=session, project_key="alpha", email="lead@example.com", role="admin"
        )
        projects.add_member(
            session=session, project_key="alpha", email="reader@example.com", role="read"
        )
    return people


def test_project_admin_manages_members_through_the_handlers(app_db: str) -> None:
    engine = get_engine()
    people = setup(engine)
    state, auth = states_for(session_for(engine, people["lead"]))
    run_async(ProjectsState.load_projects.fn(state))
    assert auth.is_signed_in and auth.email == "lead@example.com"
    assert [(p.key, p.name, p.slots, p.role) for p in state.projects] == [
        ("alpha", "Alpha", 2, "admin")
    ]
    assert state.selected_key == "" and state.members == []

    run_async(ProjectsState.select_project.fn(state, "alpha"))
    assert state.can_manage_members and state.selected_name == "Alpha"
    assert [(m.email, m.role) for m in state.members] == [
        ("lead@example.com", "admin"),
        ("reader@example.com", "read"),
    ]

    state.new_email, state.new_role = "newbie@example.com", "read_write"
    run_async(ProjectsState.add_member.fn(state))
    assert (
        state.member_error == ""
        and state.member_notice == "Added newbie@example.com to alpha as read_write."
    )
    assert state.new_email == "" and state.new_role == "read"
    assert ("newbie@example.com", "read_write") in [(m.email, m.role) for m in state.members]

    run_async(ProjectsState.change_member_role.fn(state, "reader@example.com", "read_write"))
    assert state.member_error == "" and members(engine)["reader@example.com"] == "read_write"

    # The last admin may not demote themselves; the database keeps them admin.
    run_async(ProjectsState.change_member_role.fn(state, "lead@example.com", "read"))
    assert "only admin" in state.member_error and members(engine)["lead@example.com"] == "admin"

    run_async(ProjectsState.remove_member.fn(state, "newbie@example.com"))
    assert state.member_error == "" and "newbie@example.com" not in members(engine)
    assert "newbie@example.com" not in [m.email for m in state.members]

    # Adding someone without an account says so, and what to do; an empty email too.
    state.new_email = "stranger@example.com"
    run_async(ProjectsState.add_member.fn(state))
    assert "stranger@example.com has no account" in state.member_error
    assert state.member_notice == "" and "stranger@example.com" not in members(engine)
    state.new_email = "  "
    run_async(ProjectsState.add_member.fn(state))
    assert state.member_error == "Enter the email of the person to add."

    # A project they cannot see cannot be selected, and its members are not shown.
    run_async(ProjectsState.select_project.fn(state, "beta"))
    assert state.selected_key == "" and state.members == []


def test_read_member_is_refused_on_the_server(app_db: str) -> None:
    engine = get_engine()
    people = setup(engine)
    before, events_before = members(engine), member_events(engine)

    state, _ = states_for(session_for(engine, people["reader"]))
    run_async(ProjectsState.load_projects.fn(state))
    assert [(p.key, p.role) for p in state.projects] == [("alpha", "read")]
    run_async(ProjectsState.select_project.fn(state, "alpha"))
    # A read member sees who else is on the project, without the controls.
    assert not state.can_manage_members and len(state.members) == 2

    # Calling the handlers anyway (as a crafted event would) changes nothing.
    state.new_email, state.new_role = "newbie@example.com", "admin"
    run_async(ProjectsState.add_member.fn(state))
    assert "for its admins" in state.member_error
    for call in (
        lambda: ProjectsState.change_member_role.fn(state, "reader@example.com", "admin"),
        lambda: ProjectsState.change_member_role.fn(state, "lead@example.com", "read"),
        lambda: ProjectsState.remove_member.fn(state, "lead@example.com"),
    ):
        state.member_error = ""
        run_async(call())
        assert "for its admins" in state.member_error and state.member_notice == ""
    assert members(engine) == before and member_events(engine) == events_before

    # Nor can an outsider reach a project by setting its key: it does not exist for them.
    state, _ = states_for(session_for(engine, people["outsider"]))
    run_async(ProjectsState.load_projects.fn(state))
    assert state.projects == []
    state.selected_key = "alpha"
    run_async(ProjectsState.remove_member.fn(state, "lead@example.com"))
    assert state.member_error == "no project with key 'alpha'" and state.members == []
    assert members(engine) == before and member_events(engine) == events_before


def test_platform_admin_sees_every_project_and_signed_out_sees_nothing(app_db: str) -> None:
    engine = get_engine()
    people = setup(engine)
    state, _ = states_for(session_for(engine, people["owner"]))
    run_async(ProjectsState.load_projects.fn(state))
    assert [(p.key, p.role, p.can_manage_members) for p in state.projects] == [
        ("alpha", None, True),
        ("beta", None, True),
    ]
    run_async(ProjectsState.select_project.fn(state, "alpha"))
    run_async(ProjectsState.remove_member.fn(state, "lead@example.com"))
    assert state.member_error == "" and "lead@example.com" not in members(engine)

    for token in (None, "not-a-session"):
        state, auth = states_for(token)
        state.selected_key = "alpha"
        run_async(ProjectsState.load_projects.fn(state))
        assert not auth.is_signed_in and auth.is_resolved
        assert state.projects == [] and state.members == [] and state.error == SIGNED_OUT
        state.selected_key = "alpha"
        run_async(ProjectsState.remove_member.fn(state, "reader@example.com"))
        assert state.error == SIGNED_OUT and "reader@example.com" in members(engine)


def project_keys(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(p.key for p in session.exec(select(Project)).all())


def test_only_platform_admins_create_projects_from_the_page(app_db: str) -> None:
    engine = get_engine()
    people = setup(engine)
    state, _ = states_for(session_for(engine, people["owner"]))
    run_async(ProjectsState.load_projects.fn(state))
    run_async(
        ProjectsState.create_project.fn(state, {"key": "web-shop", "name": "Shop", "slots": "3"})
    )
    assert state.error == "" and state.notice == "Created project web-shop."
    assert state.selected_key == "web-shop" and "web-shop" in [p.key for p in state.projects]
    with Session(engine) as session:
        created = projects.require_by_key(session=session, key="web-shop")
        assert (created.name, created.settings["slots"]) == ("Shop", 3)
        (event,) = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "project_created",
                                    FlowEvent.project_id == created.id)
        ).all()  # fmt: skip
        assert event.actor_id == "owner@example.com"
    # Bad input and duplicates are refused with a message and change nothing.
    for form, message in [
        ({"key": "web-shop"}, "already exists"),
        ({"key": "Bad Key!"}, "key"),
        ({"key": "other", "slots": "many"}, "slots must be a whole number"),
        ({"key": "other", "slots": "99"}, "slots must be between 1 and 64"),
    ]:
        run_async(ProjectsState.create_project.fn(state, form))
        assert message in state.error, (form, state.error)
    assert project_keys(engine) == ["alpha", "beta", "web-shop"]
    # A project admin who is not a platform admin is refused by the service.
    state, _ = states_for(session_for(engine, people["lead"]))
    run_async(ProjectsState.create_project.fn(state, {"key": "sneaky"}))
    assert state.error == "creating projects is for platform admins"
    assert project_keys(engine) == ["alpha", "beta", "web-shop"]


def test_project_admin_sets_a_members_learning_mode(app_db: str) -> None:
    engine = get_engine()
    people = setup(engine)
    state, _ = states_for(session_for(engine, people["lead"]))
    run_async(ProjectsState.load_projects.fn(state))
    run_async(ProjectsState.select_project.fn(state, "alpha"))
    assert {m.email: m.learning_mode for m in state.members}["reader@example.com"] == "default"
    run_async(ProjectsState.change_member_learning.fn(state, "reader@example.com", "on"))
    assert state.member_error == "" and "reader@example.com" in state.member_notice
    assert {m.email: m.learning_mode for m in state.members}["reader@example.com"] == "on"
    run_async(ProjectsState.change_member_learning.fn(state, "reader@example.com", "maybe"))
    assert state.member_error == "The learning mode must be on, off or default."

    # A read member may not change it, not even their own.
    state, _ = states_for(session_for(engine, people["reader"]))
    run_async(ProjectsState.load_projects.fn(state))
    run_async(ProjectsState.select_project.fn(state, "alpha"))
    run_async(ProjectsState.change_member_learning.fn(state, "reader@example.com", "off"))
    assert "admins" in state.member_error
    with Session(engine) as session:
        rows = projects.list_members(session=session, actor=None, project_key="alpha")
    assert {m.email: m.learning_mode for m in rows}["reader@example.com"] == "on"
