"""Project members: who may list, add, re-role and remove them, the last-admin rule, events."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.models import FlowEvent
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import (
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
)
from codexk8s.services import projects, users

KEY = "alpha"


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def add_user(engine: Engine, email: str, role: str = "user") -> Principal:
    with session_scope(engine) as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


def members(engine: Engine, key: str = KEY) -> dict[str, str]:
    with Session(engine) as session:
        rows = projects.list_members(session=session, actor=None, project_key=key)
    return {row.email: row.role for row in rows}


def events(engine: Engine, event_type: str) -> list[FlowEvent]:
    with Session(engine) as session:
        query = select(FlowEvent).where(FlowEvent.event_type == event_type)
        return list(session.exec(query.order_by(FlowEvent.id)).all())  # type: ignore[arg-type]


@pytest.fixture
def people(engine: Engine) -> dict[str, Principal]:
    """Project alpha with one member per project role, plus an outsider, an admin, an owner,
    and a target user who is not a member yet; project beta with nobody."""
    people = {
        "owner": add_user(engine, "owner@example.com", "owner"),
        "platform_admin": add_user(engine, "padmin@example.com", "admin"),
        "project_admin": add_user(engine, "padm@example.com"),
        "read_write": add_user(engine, "rw@example.com"),
        "read": add_user(engine, "read@example.com"),
        "outsider": add_user(engine, "out@example.com"),
        "target": add_user(engine, "target@example.com"),
    }
    with session_scope(engine) as session:
        projects.create_project(session=session, key=KEY, name="Alpha", slots=3)
        projects.create_project(session=session, key="beta", slots=1)
        for email, role in (
            ("padm@example.com", "admin"),
            ("rw@example.com", "read_write"),
            ("read@example.com", "read"),
        ):
            projects.add_member(session=session, project_key=KEY, email=email, role=role)
    return people


# Expected outcome per caller: None means allowed.
LIST = {
    "outsider": NotFoundError,
    "read": None,
    "read_write": None,
    "project_admin": None,
    "platform_admin": None,
    "owner": None,
}
CHANGE = {
    "outsider": NotFoundError,
    "read": ForbiddenError,
    "read_write": ForbiddenError,
    "project_admin": None,
    "platform_admin": None,
    "owner": None,
}


@pytest.mark.parametrize("caller", sorted(LIST))
def test_list_members(engine: Engine, people: dict[str, Principal], caller: str) -> None:
    with Session(engine) as session:
        call = lambda: projects.list_members(  # noqa: E731
            session=session, actor=people[caller], project_key=KEY
        )
        if LIST[caller] is not None:
            with pytest.raises(LIST[caller]):
                call()
            return
        rows = call()
    assert [(row.email, row.role) for row in rows] == [
        ("padm@example.com", "admin"),
        ("read@example.com", "read"),
        ("rw@example.com", "read_write"),
    ]
    assert rows[0].user_id == people["project_admin"].user_id


def _add(session: Session, actor: Principal) -> None:
    projects.add_member(
        session=session, actor=actor, actor_id="x", project_key=KEY,
        email="target@example.com", role="read",
    )  # fmt: skip


def _set(session: Session, actor: Principal) -> None:
    projects.set_member_role(
        session=session, actor=actor, actor_id="x", project_key=KEY,
        email="rw@example.com", role="admin",
    )  # fmt: skip


def _remove(session: Session, actor: Principal) -> None:
    projects.remove_member(
        session=session, actor=actor, actor_id="x", project_key=KEY, email="rw@example.com"
    )


EXPECTED_AFTER = {
    "add": {"target@example.com": "read", "rw@example.com": "read_write"},
    "set": {"rw@example.com": "admin"},
    "remove": {},
}
BEFORE = {"padm@example.com": "admin", "read@example.com": "read", "rw@example.com": "read_write"}
CHANGES: dict[str, tuple[Callable[[Session, Principal], None], str]] = {
    "add": (_add, "member_added"),
    "set": (_set, "member_role_changed"),
    "remove": (_remove, "member_removed"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("caller", sorted(CHANGE))
def test_member_changes_role_matrix(
    engine: Engine, people: dict[str, Principal], caller: str, change: str
) -> None:
    work, event_type = CHANGES[change]
    before_events = len(events(engine, event_type))
    expected_error = CHANGE[caller]
    if expected_error is not None:
        with pytest.raises(expected_error), session_scope(engine) as session:
            work(session, people[caller])
        assert members(engine) == BEFORE
        assert len(events(engine, event_type)) == before_events
        return
    with session_scope(engine) as session:
        work(session, people[caller])
    expected = {k: v for k, v in BEFORE.items() if k != "rw@example.com"}
    expected.update(EXPECTED_AFTER[change])
    assert members(engine) == expected
    new_events = events(engine, event_type)[before_events:]
    assert len(new_events) == 1 and new_events[0].actor_id == "x"


def test_outsider_cannot_tell_a_hidden_project_from_a_missing_one(
    engine: Engine, people: dict[str, Principal]
) -> None:
    outsider = people["outsider"]
    with Session(engine) as session:
        for key in (KEY, "no-such-project"):
            with pytest.raises(NotFoundError) as caught:
                projects.list_members(session=session, actor=outsider, project_key=key)
            assert str(caught.value) == f"no project with key {key!r}"


def test_disabled_platform_admin_is_refused(engine: Engine, people: dict[str, Principal]) -> None:
    disabled = Principal(
        user_id=people["platform_admin"].user_id, platform_role=PlatformRole.ADMIN,
        is_disabled=True,
    )  # fmt: skip
    with pytest.raises(NotFoundError), Session(engine) as session:
        _add(session, disabled)


def test_events_record_what_changed(engine: Engine, people: dict[str, Principal]) -> None:
    admin = people["project_admin"]
    with session_scope(engine) as session:
        _add(session, admin)
        projects.set_member_role(
            session=session, actor=admin, actor_id="padm@example.com", project_key=KEY,
            email="target@example.com", role="read_write",
        )  # fmt: skip
        # The same role again changes nothing and records nothing.
        projects.set_member_role(
            session=session, actor=admin, project_key=KEY, email="target@example.com",
            role="read_write",
        )  # fmt: skip
        removed = projects.remove_member(
            session=session, actor=admin, actor_id="padm@example.com", project_key=KEY,
            email="target@example.com",
        )  # fmt: skip
    assert removed.role == "read_write"
    [added] = [
        e for e in events(engine, "member_added") if e.payload["email"] == "target@example.com"
    ]
    assert added.payload == {"email": "target@example.com", "role": "read"}
    [changed] = events(engine, "member_role_changed")
    assert changed.payload == {"email": "target@example.com", "from": "read", "to": "read_write"}
    assert changed.actor_id == "padm@example.com" and changed.project_id == added.project_id
    [gone] = events(engine, "member_removed")
    assert gone.payload == {"email": "target@example.com", "role": "read_write"}
    assert "target@example.com" not in members(engine)


def test_last_admin_stays_unless_a_platform_admin_acts(
    engine: Engine, people: dict[str, Principal]
) -> None:
    admin = people["project_admin"]
    for work in (
        lambda s: projects.set_member_role(
            session=s, actor=admin, project_key=KEY, email="padm@example.com", role="read"
        ),
        lambda s: projects.remove_member(
            session=s, actor=admin, project_key=KEY, email="padm@example.com"
        ),
    ):
        with pytest.raises(PreconditionError, match="only admin"), session_scope(engine) as s:
            work(s)
    assert members(engine)["padm@example.com"] == "admin"
    assert events(engine, "member_role_changed") == events(engine, "member_removed") == []

    # With a second admin, a project admin may step down.
    with session_scope(engine) as session:
        _set(session, admin)
        projects.set_member_role(
            session=session, actor=admin, project_key=KEY, email="padm@example.com", role="read"
        )
    assert members(engine)["padm@example.com"] == "read"

    # rw@ is now the only admin; a platform admin may still remove them (and owns the outcome).
    rw = Principal(user_id=people["read_write"].user_id, platform_role=PlatformRole.USER)
    with pytest.raises(PreconditionError), session_scope(engine) as session:
        _remove(session, rw)
    with session_scope(engine) as session:
        _remove(session, people["platform_admin"])
    assert "admin" not in members(engine).values()


def test_operator_at_the_command_line_is_not_checked(
    engine: Engine, people: dict[str, Principal]
) -> None:
    with session_scope(engine) as session:
        projects.add_member(
            session=session, project_key="beta", email="out@example.com", role="admin"
        )
        projects.remove_member(
            session=session, actor=None, project_key="beta", email="out@example.com"
        )
        projects.add_member(
            session=session, project_key="beta", email="out@example.com", role="read"
        )
    assert members(engine, "beta") == {"out@example.com": "read"}


def test_bad_input(engine: Engine, people: dict[str, Principal]) -> None:
    admin = people["project_admin"]
    with Session(engine) as session:
        with pytest.raises(InvalidArgumentError):
            projects.set_member_role(
                session=session, actor=admin, project_key=KEY, email="rw@example.com", role="god"
            )
        with pytest.raises(NotFoundError, match="not a member"):
            projects.remove_member(
                session=session, actor=admin, project_key=KEY, email="out@example.com"
            )
        with pytest.raises(NotFoundError, match="no user"):
            projects.add_member(
                session=session, actor=admin, project_key=KEY, email="nobody@example.com",
                role="read",
            )  # fmt: skip
        with pytest.raises(ConflictError):
            projects.add_member(
                session=session, actor=admin, project_key=KEY, email="rw@example.com", role="read"
            )


def test_visible_projects_with_the_callers_role(
    engine: Engine, people: dict[str, Principal]
) -> None:
    with Session(engine) as session:
        mine = projects.list_visible_projects(session=session, actor=people["read"])
        everything = projects.list_visible_projects(session=session, actor=people["owner"])
        admin_view = projects.list_visible_projects(session=session, actor=people["project_admin"])
        nothing = projects.list_visible_projects(session=session, actor=people["outsider"])
    [alpha] = mine
    assert (alpha.key, alpha.name, alpha.slots, alpha.role) == (KEY, "Alpha", 3, "read")
    assert not alpha.can_manage_members
    assert admin_view[0].can_manage_members and admin_view[0].role == "admin"
    assert [(p.key, p.role, p.can_manage_members) for p in everything] == [
        (KEY, None, True),
        ("beta", None, True),
    ]
    assert nothing == []
