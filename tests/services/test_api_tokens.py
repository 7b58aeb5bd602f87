"""API tokens: listed and revoked by platform admins, revoked with their user (issue #14 item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.models import ApiToken, FlowEvent
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import ForbiddenError, NotFoundError
from codexk8s.services import api_tokens, sessions, users


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


def create(engine: Engine, email: str, name: str = "laptop") -> tuple[int, str]:
    with session_scope(engine) as session:
        row, plaintext = api_tokens.create_token(session=session, email=email, name=name)
        assert row.id is not None
        return row.id, plaintext


def event_types(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(FlowEvent.event_type).order_by(FlowEvent.id)).all())


def test_disabling_a_user_revokes_their_tokens_for_good(engine: Engine) -> None:
    owner = add(engine, "owner@example.com", "owner")
    bob = add(engine, "bob@example.com")
    _, first = create(engine, "bob@example.com")
    _, second = create(engine, "bob@example.com", "ci")
    assert sessions.resolve_api_token(engine, first) is not None

    with session_scope(engine) as session:
        users.set_disabled(
            session=session, user_id=bob.user_id, disabled=True, actor=owner, actor_id="o@x"
        )
    assert sessions.resolve_api_token(engine, first) is None
    with session_scope(engine) as session:
        users.set_disabled(session=session, user_id=bob.user_id, disabled=False, actor=owner)
    # Before issue #14 the tokens worked again here: nothing had set revoked_at.
    assert sessions.resolve_api_token(engine, first) is None
    assert sessions.resolve_api_token(engine, second) is None
    with Session(engine) as session:
        assert all(row.revoked_at is not None for row in session.exec(select(ApiToken)))
        [revoked] = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "api_tokens_revoked")
        ).all()
    assert revoked.payload == {"count": 2} and revoked.actor_id == "o@x"
    assert revoked.correlation_id == f"user-{bob.user_id}"


def test_platform_admins_list_tokens_without_their_secret(engine: Engine) -> None:
    owner = add(engine, "owner@example.com", "owner")
    admin = add(engine, "admin@example.com", "admin")
    bob = add(engine, "bob@example.com")
    bob_token_id, plaintext = create(engine, "bob@example.com", "ci")
    create(engine, "owner@example.com", "laptop")
    assert sessions.resolve_api_token(engine, plaintext) is not None  # stamps last used

    with session_scope(engine) as session:
        rows = api_tokens.list_tokens(session=session, actor=admin)
        assert api_tokens.list_tokens(session=session, actor=None) == rows
        with pytest.raises(ForbiddenError):
            api_tokens.list_tokens(session=session, actor=bob)
    assert [(row.owner_email, row.name) for row in rows] == [
        ("owner@example.com", "laptop"), ("bob@example.com", "ci"),
    ]  # fmt: skip
    bob_row = rows[1]
    assert bob_row.id == bob_token_id and bob_row.is_active
    assert bob_row.prefix == plaintext[: len(bob_row.prefix)] and len(bob_row.prefix) <= 9
    assert bob_row.last_used_at is not None and rows[0].last_used_at is None
    assert plaintext not in repr(asdict(bob_row))
    with Session(engine) as session:
        stored = session.get(ApiToken, bob_token_id)
        assert stored is not None and stored.token_hash not in repr(asdict(bob_row))
    assert owner.user_id != bob.user_id


def test_revoking_a_token_ends_it_at_once(engine: Engine) -> None:
    add(engine, "owner@example.com", "owner")
    admin = add(engine, "admin@example.com", "admin")
    bob = add(engine, "bob@example.com")
    token_id, plaintext = create(engine, "bob@example.com")
    _, other = create(engine, "bob@example.com", "other")

    for actor, error in ((bob, ForbiddenError), (admin, None)):
        if error is not None:
            with pytest.raises(error), session_scope(engine) as session:
                api_tokens.revoke_token(session=session, actor=actor, token_id=token_id)
            assert sessions.resolve_api_token(engine, plaintext) is not None
            continue
        with session_scope(engine) as session:
            row = api_tokens.revoke_token(
                session=session, actor=actor, token_id=token_id, actor_id="admin@example.com"
            )
        assert not row.is_active and row.revoked_at is not None
    assert sessions.resolve_api_token(engine, plaintext) is None
    assert sessions.resolve_api_token(engine, other) is not None
    assert event_types(engine).count("api_token_revoked") == 1

    # An admin may not end an owner's token (as they may not disable an owner); an owner may.
    owner_token_id, owner_token = create(engine, "owner@example.com")
    with pytest.raises(ForbiddenError), session_scope(engine) as session:
        api_tokens.revoke_token(session=session, actor=admin, token_id=owner_token_id)
    assert sessions.resolve_api_token(engine, owner_token) is not None

    # Again: nothing more happens; an unknown id is not found.
    with session_scope(engine) as session:
        again = api_tokens.revoke_token(session=session, actor=None, token_id=token_id)
        assert not again.is_active
        with pytest.raises(NotFoundError):
            api_tokens.revoke_token(session=session, actor=None, token_id=999_999)
    assert event_types(engine).count("api_token_revoked") == 1
