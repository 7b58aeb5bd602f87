"""Sessions, sign-in links, GitHub sign-in and API tokens, on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.crypto import hash_token
from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import ApiToken, FlowEvent, SignInLink, User, UserSession, utcnow
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import NotFoundError, PreconditionError
from codexk8s.services import api_tokens, sessions, users

TTL = timedelta(hours=12)
ADA = "ada@example.com"


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
        upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def add_user(engine: Engine, email: str = ADA, role: str = "user") -> User:
    with session_scope(engine) as session:
        return users.add_user(session=session, email=email, role=role)


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return session.exec(sa.select(sa.func.count()).select_from(model)).one()[0]


def table_counts(engine: Engine) -> dict[str, int]:
    return {m.__tablename__: count(engine, m) for m in (User, UserSession, SignInLink, FlowEvent)}


def events(engine: Engine, event_type: str | None = None) -> list[FlowEvent]:
    with Session(engine) as session:
        query = select(FlowEvent).order_by(FlowEvent.id)  # type: ignore[arg-type]
        if event_type is not None:
            query = query.where(FlowEvent.event_type == event_type)
        return list(session.exec(query).all())


def update(engine: Engine, model: Any, where: Any, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(sa.update(model).where(where).values(**values))


def session_row(engine: Engine, token: str) -> UserSession:
    with Session(engine) as session:
        return session.exec(
            select(UserSession).where(UserSession.token_hash == hash_token(token))
        ).one()


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- sessions -------------------------------------------------------------------------------------


def test_session_token_is_stored_only_as_its_hash(engine: Engine) -> None:
    user = add_user(engine, role="admin")
    token = sessions.create_session(engine, user=user, ttl=TTL, user_agent="pytest/1 " + "x" * 300)
    assert len(token) >= 40
    with engine.connect() as connection:
        (row,) = connection.execute(sa.select(UserSession.__table__)).mappings().all()  # type: ignore[attr-defined]
    assert row["token_hash"] == hash_token(token)
    assert all(token not in str(value) for value in row.values())
    assert len(row["user_agent"]) == 200
    assert aware(row["expires_at"]) - aware(row["created_at"]) == TTL
    assert sessions.resolve_session(engine, token, ttl=TTL) == Principal(
        user_id=user.id or 0, platform_role=PlatformRole.ADMIN
    )
    assert sessions.resolve_session(engine, token + "x", ttl=TTL) is None
    assert sessions.resolve_session(engine, "", ttl=TTL) is None


def test_each_session_gets_its_own_token(engine: Engine) -> None:
    user = add_user(engine)
    tokens = {sessions.create_session(engine, user=user, ttl=TTL) for _ in range(5)}
    assert len(tokens) == 5 and count(engine, UserSession) == 5


def test_expired_session_is_refused(engine: Engine) -> None:
    user = add_user(engine)
    token = sessions.create_session(engine, user=user, ttl=TTL)
    update(
        engine, UserSession, UserSession.token_hash == hash_token(token),
        expires_at=utcnow() - timedelta(seconds=1),
    )  # fmt: skip
    assert sessions.resolve_session(engine, token, ttl=TTL) is None


def test_sliding_expiry_writes_only_after_the_touch_interval(engine: Engine) -> None:
    user = add_user(engine)
    token = sessions.create_session(engine, user=user, ttl=TTL)
    soon = utcnow() + timedelta(minutes=30)
    recently = utcnow() - timedelta(minutes=1)
    where = UserSession.token_hash == hash_token(token)
    update(engine, UserSession, where, expires_at=soon, last_seen_at=recently)
    assert sessions.resolve_session(engine, token, ttl=TTL) is not None
    untouched = session_row(engine, token)
    assert aware(untouched.expires_at) == soon and aware(untouched.last_seen_at) == recently

    long_ago = utcnow() - sessions.TOUCH_INTERVAL - timedelta(seconds=5)
    update(engine, UserSession, where, last_seen_at=long_ago)
    before = utcnow()
    assert sessions.resolve_session(engine, token, ttl=TTL) is not None
    slid = session_row(engine, token)
    assert aware(slid.last_seen_at) >= before
    assert aware(slid.expires_at) == aware(slid.last_seen_at) + TTL


def test_revoke_session(engine: Engine) -> None:
    user = add_user(engine)
    token = sessions.create_session(engine, user=user, ttl=TTL)
    other = sessions.create_session(engine, user=user, ttl=TTL)
    assert sessions.revoke_session(engine, token) is True
    assert sessions.resolve_session(engine, token, ttl=TTL) is None
    assert sessions.resolve_session(engine, other, ttl=TTL) is not None
    assert sessions.revoke_session(engine, token) is False
    assert sessions.revoke_session(engine, "unknown") is False
    (signed_out,) = events(engine, "user_signed_out")
    assert signed_out.correlation_id == f"user-{user.id}"


def test_disabled_user_session_dies_and_revoke_all(engine: Engine) -> None:
    ada, bob = add_user(engine), add_user(engine, "bob@example.com")
    ada_tokens = [sessions.create_session(engine, user=ada, ttl=TTL) for _ in range(3)]
    bob_token = sessions.create_session(engine, user=bob, ttl=TTL)
    sessions.revoke_session(engine, ada_tokens[0])

    update(engine, User, User.id == ada.id, disabled=True)
    assert all(sessions.resolve_session(engine, t, ttl=TTL) is None for t in ada_tokens)
    with session_scope(engine) as session:
        revoked = sessions.revoke_all_for_user(session=session, user_id=ada.id or 0, actor_id="x")
    assert revoked == 2
    # Re-enabling does not bring the revoked sessions back.
    update(engine, User, User.id == ada.id, disabled=False)
    assert all(sessions.resolve_session(engine, t, ttl=TTL) is None for t in ada_tokens)
    assert sessions.resolve_session(engine, bob_token, ttl=TTL) is not None
    (event,) = events(engine, "sessions_revoked")
    assert event.payload == {"count": 2} and event.actor_id == "x"
    with session_scope(engine) as session:
        assert sessions.revoke_all_for_user(session=session, user_id=ada.id or 0) == 0
    assert len(events(engine, "sessions_revoked")) == 1


# --- GitHub sign-in -------------------------------------------------------------------------------


def test_first_github_sign_in_links_the_login(engine: Engine) -> None:
    add_user(engine, role="owner")
    user = sessions.sign_in_with_github(
        engine, github_login="AdaL", verified_primary_email="Ada@Example.com"
    )
    assert (user.email, user.github_login) == (ADA, "AdaL")
    with Session(engine) as session:
        assert session.exec(select(User.github_login)).one() == "AdaL"
    # The same GitHub account, spelled in another case, is the same person.
    again = sessions.sign_in_with_github(engine, github_login="adal", verified_primary_email=ADA)
    assert again.id == user.id
    signed_in = events(engine, "user_signed_in")
    assert [e.payload["linked"] for e in signed_in] == [True, False]
    assert signed_in[0].actor_id == ADA and signed_in[0].actor_type == "human"


def _refused(
    engine: Engine, error: type[sessions.SignInRefusedError], login: str, email: str | None
) -> FlowEvent:
    before = table_counts(engine)
    logins_before = _logins(engine)
    with pytest.raises(error) as raised:
        sessions.sign_in_with_github(engine, github_login=login, verified_primary_email=email)
    assert type(raised.value) is error
    after = table_counts(engine)
    assert after == {**before, "flow_events": before["flow_events"] + 1}
    assert _logins(engine) == logins_before
    event = events(engine)[-1]
    assert event.event_type == "sign_in_refused"
    assert event.payload["reason"] == error.reason
    assert event.payload["github_login"] == login
    return event


def _logins(engine: Engine) -> list[tuple[str, str | None]]:
    with Session(engine) as session:
        return [(u.email, u.github_login) for u in session.exec(select(User).order_by(User.id))]  # type: ignore[arg-type]


def test_email_not_added_by_an_admin_is_refused(engine: Engine) -> None:
    add_user(engine)
    event = _refused(engine, sessions.EmailNotAllowedError, "mallory", "mallory@example.com")
    assert event.correlation_id == sessions.SIGN_IN_CORRELATION
    assert event.payload["email"] == "mallory@example.com"
    _refused(engine, sessions.EmailNotAllowedError, "mallory", "not an email")


def test_missing_verified_email_is_refused(engine: Engine) -> None:
    add_user(engine)
    _refused(engine, sessions.UnverifiedEmailError, "ada", None)
    _refused(engine, sessions.UnverifiedEmailError, "ada", "")


def test_disabled_user_is_refused(engine: Engine) -> None:
    user = add_user(engine)
    update(engine, User, User.id == user.id, disabled=True)
    event = _refused(engine, sessions.UserDisabledError, "ada", ADA)
    assert event.correlation_id == f"user-{user.id}"


def test_a_different_github_account_is_refused(engine: Engine) -> None:
    add_user(engine)
    sessions.sign_in_with_github(engine, github_login="ada", verified_primary_email=ADA)
    event = _refused(engine, sessions.GitHubLoginMismatchError, "impostor", ADA)
    assert event.payload["linked_github_login"] == "ada"


def test_a_github_account_linked_to_another_user_is_refused(engine: Engine) -> None:
    add_user(engine)
    add_user(engine, "bob@example.com")
    sessions.sign_in_with_github(engine, github_login="ada", verified_primary_email=ADA)
    _refused(engine, sessions.GitHubLoginMismatchError, "ADA", "bob@example.com")


# --- one-time sign-in links -----------------------------------------------------------------------


def test_signin_link_works_once(engine: Engine) -> None:
    user = add_user(engine, role="owner")
    token = sessions.create_signin_link(engine, email="ADA@example.com")
    with Session(engine) as session:
        link = session.exec(select(SignInLink)).one()
    assert link.token_hash == hash_token(token) and link.used_at is None
    assert timedelta(minutes=14) < aware(link.expires_at) - utcnow() <= timedelta(minutes=15)

    assert sessions.redeem_signin_link(engine, token).id == user.id
    before = table_counts(engine)
    with pytest.raises(sessions.SignInLinkUsedError):
        sessions.redeem_signin_link(engine, token)
    assert table_counts(engine) == {**before, "flow_events": before["flow_events"] + 1}
    assert events(engine)[-1].payload["reason"] == "signin_link_used"
    with pytest.raises(sessions.SignInLinkError) as unknown:
        sessions.redeem_signin_link(engine, "not-a-link")
    assert type(unknown.value) is sessions.SignInLinkError


def test_expired_signin_link_is_refused(engine: Engine) -> None:
    add_user(engine)
    token = sessions.create_signin_link(engine, email=ADA)
    update(engine, SignInLink, SignInLink.token_hash == hash_token(token),
           expires_at=utcnow() - timedelta(seconds=1))  # fmt: skip
    with pytest.raises(sessions.SignInLinkExpiredError):
        sessions.redeem_signin_link(engine, token)
    with Session(engine) as session:
        assert session.exec(select(SignInLink.used_at)).one() is None
    assert events(engine)[-1].payload["reason"] == "signin_link_expired"


def test_signin_link_of_a_disabled_user_is_refused(engine: Engine) -> None:
    user = add_user(engine)
    token = sessions.create_signin_link(engine, email=ADA)
    update(engine, User, User.id == user.id, disabled=True)
    with pytest.raises(sessions.UserDisabledError):
        sessions.redeem_signin_link(engine, token)
    with pytest.raises(PreconditionError):
        sessions.create_signin_link(engine, email=ADA)


def test_signin_link_needs_a_known_user(engine: Engine) -> None:
    with pytest.raises(NotFoundError):
        sessions.create_signin_link(engine, email="nobody@example.com")
    assert count(engine, SignInLink) == 0


def test_simultaneous_redeems_of_one_link_sign_in_once(pg_url: str) -> None:
    engine = make_engine(pg_url)
    add_user(engine)
    token = sessions.create_signin_link(engine, email=ADA)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def redeem() -> None:
        barrier.wait()
        try:
            sessions.redeem_signin_link(engine, token)
            outcomes.append("ok")
        except sessions.SignInLinkUsedError:
            outcomes.append("used")

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["used"] * 7
    assert len(events(engine, "user_signed_in")) == 1
    engine.dispose()


# --- API tokens -----------------------------------------------------------------------------------


def test_api_token_resolves_until_expired_or_revoked(engine: Engine) -> None:
    user = add_user(engine, role="admin")
    with session_scope(engine) as session:
        row, token = api_tokens.create_token(session=session, email=ADA)
    assert sessions.resolve_api_token(engine, token) == Principal(
        user_id=user.id or 0, platform_role=PlatformRole.ADMIN
    )
    with Session(engine) as session:
        used = session.get(ApiToken, row.id)
        assert used is not None and used.last_used_at is not None
    assert sessions.resolve_api_token(engine, token + "x") is None

    update(engine, ApiToken, ApiToken.id == row.id, expires_at=utcnow() - timedelta(seconds=1))
    assert sessions.resolve_api_token(engine, token) is None
    update(engine, ApiToken, ApiToken.id == row.id, expires_at=None)
    assert sessions.resolve_api_token(engine, token) is not None
    update(engine, ApiToken, ApiToken.id == row.id, revoked_at=utcnow())
    assert sessions.resolve_api_token(engine, token) is None
    update(engine, ApiToken, ApiToken.id == row.id, revoked_at=None)
    update(engine, User, User.id == user.id, disabled=True)
    assert sessions.resolve_api_token(engine, token) is None


def test_load_profile(engine: Engine) -> None:
    user = add_user(engine, role="owner")
    sessions.sign_in_with_github(engine, github_login="ada", verified_primary_email=ADA)
    assert sessions.load_profile(engine, user_id=user.id or 0) == sessions.UserProfile(
        id=user.id or 0, email=ADA, github_login="ada", role="owner"
    )
    assert sessions.load_profile(engine, user_id=(user.id or 0) + 100) is None
