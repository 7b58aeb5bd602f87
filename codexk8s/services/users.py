"""Users: only people an admin added may sign in (no self-signup)."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from codexk8s.db.models import User, utcnow
from codexk8s.domain.access import PlatformRole
from codexk8s.errors import ConflictError, InvalidArgumentError, NotFoundError
from codexk8s.services.audit import record_event
from codexk8s.services.validation import parse_choice

# Deliberately loose: one @, no spaces, a dot in the domain. GitHub verifies the address itself.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise InvalidArgumentError(f"not a valid email address: {email!r}")
    return value


def parse_platform_role(role: str) -> PlatformRole:
    return parse_choice(PlatformRole, role, "role")


def get_by_email(*, session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == normalize_email(email))).first()


def require_by_email(*, session: Session, email: str) -> User:
    user = get_by_email(session=session, email=email)
    if user is None:
        raise NotFoundError(f"no user with email {normalize_email(email)}")
    return user


def add_user(
    *,
    session: Session,
    email: str,
    role: str = PlatformRole.USER.value,
    name: str | None = None,
    actor_id: str | None = None,
) -> User:
    normalized = normalize_email(email)
    platform_role = parse_platform_role(role)
    if get_by_email(session=session, email=normalized) is not None:
        raise ConflictError(f"user {normalized} already exists")
    user = User(email=normalized, role=platform_role.value, name=name)
    session.add(user)
    session.flush()
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_added",
        actor_id=actor_id,
        payload={"email": normalized, "role": platform_role.value},
    )
    return user


def ensure_owner(*, session: Session, email: str) -> User:
    """Make sure the configured owner exists and is owner; idempotent across restarts."""
    user = get_by_email(session=session, email=email)
    if user is None:
        return add_user(session=session, email=email, role=PlatformRole.OWNER.value)
    if user.role != PlatformRole.OWNER.value or user.disabled:
        user.role = PlatformRole.OWNER.value
        user.disabled = False
        user.updated_at = utcnow()
        session.add(user)
    return user
