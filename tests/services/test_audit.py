"""The Audit page's reads: who sees which events, every filter, keyset paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.runs import ActorType
from codexk8s.errors import InvalidArgumentError
from codexk8s.services import audit, projects, users
from codexk8s.services.audit import AuditFilter, list_audit_events, list_event_types

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def principal(engine: Engine, email: str, role: str = "user") -> Principal:
    with session_scope(engine) as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


@pytest.fixture
def people(engine: Engine) -> dict[str, Principal]:
    """alpha (member: reader), beta (nobody); test events spread over three days, one without
    a project."""
    people = {
        "admin": principal(engine, "admin@example.com", "admin"),
        "reader": principal(engine, "reader@example.com"),
        "outsider": principal(engine, "outsider@example.com"),
    }
    with session_scope(engine) as session:
        alpha = projects.create_project(session=session, key="alpha")
        beta = projects.create_project(session=session, key="beta")
        projects.add_member(session=session, project_key="alpha", email="reader@example.com",
                            role="read")  # fmt: skip
        plan = [
            ("alpha", "test_label", ActorType.HUMAN, "Lead@Example.com", 0),
            ("alpha", "test_run", ActorType.SYSTEM, None, 1),
            ("alpha", "test_run", ActorType.AGENT, "dev-bot", 2),
            ("beta", "test_run", ActorType.SYSTEM, None, 1),
            (None, "test_signin", ActorType.HUMAN, "admin@example.com", 2),
        ]
        ids = {"alpha": alpha.id, "beta": beta.id, None: None}
        for key, kind, actor_type, actor_id, day in plan:
            event = audit.record_event(
                session=session, correlation_id=f"c-{kind}-{day}", event_type=kind,
                actor_type=actor_type, actor_id=actor_id, project_id=ids[key],
                payload={"day": day},
            )  # fmt: skip
            event.created_at = T0 + timedelta(days=day)
    return people


def events(engine: Engine, actor: Principal, **filters: object) -> list[tuple[str, str | None]]:
    with Session(engine) as session:
        rows, _ = list_audit_events(
            session=session, actor=actor, filters=AuditFilter(**filters), limit=200
        )  # type: ignore[arg-type]
    return [(r.event_type, r.project_key) for r in rows if r.event_type.startswith("test_")]


def test_who_sees_what(engine: Engine, people: dict[str, Principal]) -> None:
    assert events(engine, people["admin"]) == [
        ("test_signin", None),
        ("test_run", "beta"),
        ("test_run", "alpha"),
        ("test_run", "alpha"),
        ("test_label", "alpha"),
    ]
    # A member sees their project's events only, none without a project.
    assert events(engine, people["reader"]) == [
        ("test_run", "alpha"),
        ("test_run", "alpha"),
        ("test_label", "alpha"),
    ]
    assert events(engine, people["reader"], project_key="beta") == []
    with Session(engine) as session:
        assert list_audit_events(session=session, actor=people["outsider"]) == ([], None)
        assert list_event_types(session=session, actor=people["outsider"]) == []
        reader_types = list_event_types(session=session, actor=people["reader"])
        admin_types = list_event_types(session=session, actor=people["admin"])
    assert "test_signin" not in reader_types and "test_run" in reader_types
    assert "test_signin" in admin_types
    disabled = Principal(user_id=people["admin"].user_id, platform_role=PlatformRole.ADMIN,
                         is_disabled=True)  # fmt: skip
    assert events(engine, disabled) == []


def test_filters(engine: Engine, people: dict[str, Principal]) -> None:
    admin = people["admin"]
    assert events(engine, admin, project_key="beta") == [("test_run", "beta")]
    assert events(engine, admin, actor_type="agent") == [("test_run", "alpha")]
    assert events(engine, admin, actor_id="lead@") == [("test_label", "alpha")]  # any case
    assert events(engine, admin, event_type="test_label") == [("test_label", "alpha")]
    day1 = T0 + timedelta(days=1)
    assert events(engine, admin, since=day1, until=day1 + timedelta(days=1)) == [
        ("test_run", "beta"),
        ("test_run", "alpha"),
    ]
    assert events(engine, admin, since=T0 + timedelta(days=2), event_type="test_run",
                  project_key="alpha") == [("test_run", "alpha")]  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="before its end"):
        events(engine, admin, since=day1, until=day1)
    with pytest.raises(InvalidArgumentError, match="actor type"):
        events(engine, admin, actor_type="robot")
    # A NUL byte reached PostgreSQL (which refuses it in text) as an error, not an answer.
    for name in ("project_key", "actor_id", "event_type"):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            events(engine, admin, **{name: "a\x00b"})


def test_keyset_pages_cover_the_trail_once(engine: Engine, people: dict[str, Principal]) -> None:
    with Session(engine) as session:
        everything, last = list_audit_events(session=session, actor=people["admin"], limit=200)
        assert last is None
        seen: list[int] = []
        before: int | None = None
        while True:
            rows, before = list_audit_events(
                session=session, actor=people["admin"], before_id=before, limit=2
            )
            assert len(rows) <= 2
            seen.extend(r.id for r in rows)
            if before is None:
                break
        with pytest.raises(InvalidArgumentError):
            list_audit_events(session=session, actor=people["admin"], limit=0)
    assert seen == [r.id for r in everything] and seen == sorted(seen, reverse=True)
    assert len(everything) > 5  # the projects' own creation and member events are there too
