"""Managing users: listing, roles, disabling (and what disabling does to sessions)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.models import FlowEvent, User
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import ForbiddenError, InvalidArgumentError, NotFoundError, PreconditionError
from codexk8s.services import sessions, users

TTL = timedelta(hours=1)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def add(engine: Engine, email: str, role: str = "user") -> Principal:
    with session_scope(engine) as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


def events(engine: Engine, event_type: str) -> list[FlowEvent]:
    with Session(engine) as session:
        query = select(FlowEvent).where(FlowEvent.event_type == event_type)
        return list(session.exec(query.order_by(FlowEvent.id)).all())  # type: ignore[arg-type]


def user_row(engine: Engine, user_id: int) -> User:
    with Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        return user


@pytest.fixture
def owner(engine: Engine) -> Principal:
    return add(engine, "owner@example.com", "owner")


def test_list_users_by_email_for_admins_only(engine: Engine, owner: Principal) -> None:
    admin = add(engine, "admin@example.com", "admin")
    plain = add(engine, "bob@example.com")
    with session_scope(engine) as session:
        rows = users.list_users(session=session, actor=admin)
        assert [row.email for row in rows] == [
            "admin@example.com",
            "bob@example.com",
            "owner@example.com",
        ]
        assert rows[1] == users.UserRow(
            id=plain.user_id, email="bob@example.com", github_login=None, role="user",
            disabled=False,
        )  # fmt: skip
        with pytest.raises(ForbiddenError):
            users.list_users(session=session, actor=plain)
        assert len(users.list_users(session=session, actor=None)) == 3


def test_set_role_writes_an_event(engine: Engine, owner: Principal) -> None:
    bob = add(engine, "bob@example.com")
    with session_scope(engine) as session:
        row = users.set_role(
            session=session, user_id=bob.user_id, role="admin", actor=owner, actor_id="owner@x"
        )
    assert row.role == "admin" and user_row(engine, bob.user_id).role == "admin"
    [event] = events(engine, "user_role_changed")
    assert event.correlation_id == f"user-{bob.user_id}"
    assert event.actor_id == "owner@x"
    assert event.payload == {"email": "bob@example.com", "from": "user", "to": "admin"}
    # Setting the same role again changes nothing and records nothing.
    with session_scope(engine) as session:
        users.set_role(session=session, user_id=bob.user_id, role="admin", actor=owner)
    assert len(events(engine, "user_role_changed")) == 1


def test_set_role_refusals(engine: Engine, owner: Principal) -> None:
    admin = add(engine, "admin@example.com", "admin")
    bob = add(engine, "bob@example.com")
    carol = add(engine, "carol@example.com")
    cases: list[tuple[Principal, int, str, type[Exception]]] = [
        (bob, carol.user_id, "user", ForbiddenError),  # a plain user manages nobody
        (admin, bob.user_id, "admin", ForbiddenError),  # only an owner grants admin
        (admin, admin.user_id, "user", ForbiddenError),  # ... or takes it away
        (owner, bob.user_id, "root", InvalidArgumentError),
        (owner, 999_999, "user", NotFoundError),
        (owner, owner.user_id, "admin", PreconditionError),  # the only owner stays owner
    ]
    for actor, user_id, role, error in cases:
        with pytest.raises(error), session_scope(engine) as session:
            users.set_role(session=session, user_id=user_id, role=role, actor=actor)
    assert events(engine, "user_role_changed") == []
    # An admin may still manage plain users' other settings.
    with session_scope(engine) as session:
        users.set_disabled(session=session, user_id=bob.user_id, disabled=True, actor=admin)


def test_disabling_revokes_sessions_in_the_same_transaction(
    engine: Engine, owner: Principal
) -> None:
    bob = add(engine, "bob@example.com")
    with Session(engine) as session:
        bob_user = session.get(User, bob.user_id)
    assert bob_user is not None
    tokens = [sessions.create_session(engine, user=bob_user, ttl=TTL) for _ in range(2)]
    assert sessions.resolve_session(engine, tokens[0], ttl=TTL) is not None

    with session_scope(engine) as session:
        row = users.set_disabled(
            session=session, user_id=bob.user_id, disabled=True, actor=owner, actor_id="o@x"
        )
    assert row.disabled
    assert all(sessions.resolve_session(engine, t, ttl=TTL) is None for t in tokens)
    [disabled] = events(engine, "user_disabled")
    assert disabled.actor_id == "o@x" and disabled.payload == {"email": "bob@example.com"}
    [revoked] = events(engine, "sessions_revoked")
    assert revoked.payload == {"count": 2} and revoked.correlation_id == f"user-{bob.user_id}"

    with session_scope(engine) as session:
        assert not users.set_disabled(
            session=session, user_id=bob.user_id, disabled=False, actor=owner
        ).disabled
    assert len(events(engine, "user_enabled")) == 1
    # Enabling does not bring old sessions back.
    assert sessions.resolve_session(engine, tokens[0], ttl=TTL) is None


def test_a_failed_disable_rolls_back_everything(engine: Engine, owner: Principal) -> None:
    bob = add(engine, "bob@example.com")
    with Session(engine) as session:
        bob_user = session.get(User, bob.user_id)
    assert bob_user is not None
    token = sessions.create_session(engine, user=bob_user, ttl=TTL)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        users.set_disabled(session=session, user_id=bob.user_id, disabled=True, actor=owner)
        raise RuntimeError("boom")
    assert not user_row(engine, bob.user_id).disabled
    assert sessions.resolve_session(engine, token, ttl=TTL) is not None
    assert events(engine, "sessions_revoked") == []


def test_set_disabled_refusals(engine: Engine, owner: Principal) -> None:
    admin = add(engine, "admin@example.com", "admin")
    bob = add(engine, "bob@example.com")
    cases: list[tuple[Principal | None, int, type[Exception]]] = [
        (bob, admin.user_id, ForbiddenError),
        (bob, bob.user_id, ForbiddenError),
        (admin, owner.user_id, ForbiddenError),  # an admin cannot disable an owner
        (owner, owner.user_id, PreconditionError),  # nor anyone themselves
        (None, owner.user_id, PreconditionError),  # the last owner stays enabled
        (owner, 999_999, NotFoundError),
    ]
    for actor, user_id, error in cases:
        with pytest.raises(error), session_scope(engine) as session:
            users.set_disabled(session=session, user_id=user_id, disabled=True, actor=actor)
    assert events(engine, "user_disabled") == []
