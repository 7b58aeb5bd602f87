"""Users: only people an admin added may sign in (no self-signup)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.db.models import User, utcnow
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.errors import (
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
)
from codexk8s.services.audit import record_event
from codexk8s.services.validation import parse_choice

# Deliberately loose: one @, no spaces, a dot in the domain. GitHub verifies the address itself.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# GitHub's own rule: letters, digits and single hyphens, not at either end, at most 39; bots
# end in "[bot]".
_GITHUB_LOGIN = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}(?:\[bot\])?$")
_ADMIN_ROLES = frozenset({PlatformRole.OWNER.value, PlatformRole.ADMIN.value})


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise InvalidArgumentError(f"not a valid email address: {email!r}")
    return value


def normalize_github_login(login: str) -> str:
    """LOGIN as typed, checked against GitHub's rules (its case is kept: GitHub shows it so)."""
    value = login.strip().removeprefix("@")
    if not _GITHUB_LOGIN.match(value):
        raise InvalidArgumentError(
            f"not a GitHub login: {login!r} (letters, digits and single hyphens, at most 39)"
        )
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
    github_login: str | None = None,
) -> User:
    normalized = normalize_email(email)
    platform_role = parse_platform_role(role)
    login = normalize_github_login(github_login) if github_login else None
    if get_by_email(session=session, email=normalized) is not None:
        raise ConflictError(f"user {normalized} already exists")
    if login is not None:
        _ensure_login_free(session, login, user_id=None)
    user = User(email=normalized, role=platform_role.value, name=name, github_login=login)
    session.add(user)
    session.flush()
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_added",
        actor_id=actor_id,
        payload={"email": normalized, "role": platform_role.value, "github_login": login},
    )
    return user


def _ensure_login_free(session: Session, login: str, *, user_id: int | None) -> None:
    # Logins are compared case-insensitively (as GitHub does), so `Octocat` and `octocat` are
    # one person.
    taken = session.exec(
        select(User).where(sa.func.lower(User.github_login) == login.lower())
    ).first()
    if taken is not None and taken.id != user_id:
        raise ConflictError(f"GitHub login {login} is already linked to {taken.email}")


def set_github_login(
    *,
    session: Session,
    email: str,
    github_login: str | None,
    actor: Principal | None,
    actor_id: str | None = None,
) -> UserRow:
    """Link the user EMAIL to GITHUB_LOGIN (None: unlink), before or instead of their first
    GitHub sign-in (which links it too, and from then on must come from that account). Labels,
    comments and reviews on GitHub start runs only for members whose login is linked."""
    user = require_by_email(session=session, email=email)
    authorize_user_change(actor, roles=(user.role,))
    login = normalize_github_login(github_login) if github_login else None
    if login is not None:
        _ensure_login_free(session, login, user_id=user.id)
    if user.github_login == login:
        return _row(user)
    previous = user.github_login
    user.github_login = login
    user.updated_at = utcnow()
    session.add(user)
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_github_login_changed",
        actor_id=actor_id,
        payload={"email": user.email, "from": previous, "to": login},
    )
    session.flush()
    return _row(user)


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


# --- managing users (the dashboard's Users page) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user as the Users page lists it: no ORM row leaves the service."""

    id: int
    email: str
    github_login: str | None
    role: str
    disabled: bool


def _row(user: User) -> UserRow:
    assert user.id is not None
    return UserRow(
        id=user.id,
        email=user.email,
        github_login=user.github_login,
        role=user.role,
        disabled=user.disabled,
    )


def authorize_user_change(actor: Principal | None, *, roles: tuple[str, ...]) -> None:
    """Refuse unless ACTOR may manage users, and may grant or take away platform admin when one
    of ROLES (the target's role before and after the change) is owner or admin. A None actor is
    the local operator at the command line, who may do anything."""
    if actor is None:
        return
    if not is_allowed(actor, Action.MANAGE_USERS):
        raise ForbiddenError("managing users is for platform admins")
    if any(role in _ADMIN_ROLES for role in roles) and not is_allowed(
        actor, Action.GRANT_PLATFORM_ADMIN
    ):
        raise ForbiddenError("only an owner may grant or take away the owner and admin roles")


def list_users(*, session: Session, actor: Principal | None) -> list[UserRow]:
    """Every user, by email."""
    authorize_user_change(actor, roles=())
    return [_row(user) for user in session.exec(select(User).order_by(User.email))]  # type: ignore[arg-type]


def _require(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFoundError(f"no user with id {user_id}")
    return user


def _ensure_an_owner_remains(session: Session, user: User) -> None:
    """Refuse a change that would leave no enabled owner (nobody could manage admins again)."""
    others = session.exec(
        select(User.id).where(
            User.role == PlatformRole.OWNER.value, User.id != user.id, User.disabled.is_(False)
        )  # type: ignore[union-attr,attr-defined]
    ).first()
    if others is None:
        raise PreconditionError(f"{user.email} is the only owner; make someone else owner first")


def set_role(
    *,
    session: Session,
    user_id: int,
    role: str,
    actor: Principal | None,
    actor_id: str | None = None,
) -> UserRow:
    """Give USER_ID the platform ROLE."""
    platform_role = parse_platform_role(role)
    user = _require(session, user_id)
    authorize_user_change(actor, roles=(user.role, platform_role.value))
    if user.role == platform_role.value:
        return _row(user)
    if user.role == PlatformRole.OWNER.value and not user.disabled:
        _ensure_an_owner_remains(session, user)
    previous = user.role
    user.role = platform_role.value
    user.updated_at = utcnow()
    session.add(user)
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_role_changed",
        actor_id=actor_id,
        payload={"email": user.email, "from": previous, "to": platform_role.value},
    )
    session.flush()
    return _row(user)


def set_disabled(
    *,
    session: Session,
    user_id: int,
    disabled: bool,
    actor: Principal | None,
    actor_id: str | None = None,
) -> UserRow:
    """Disable USER_ID (ending every session and revoking every API token of theirs in this same
    transaction, so enabling them again brings neither back) or enable them."""
    # Imported here: both modules import this one.
    from codexk8s.services import api_tokens, sessions

    user = _require(session, user_id)
    authorize_user_change(actor, roles=(user.role,))
    if user.disabled == disabled:
        return _row(user)
    if disabled and actor is not None and actor.user_id == user.id:
        raise PreconditionError("you cannot disable yourself")
    if disabled and user.role == PlatformRole.OWNER.value:
        _ensure_an_owner_remains(session, user)
    user.disabled = disabled
    user.updated_at = utcnow()
    session.add(user)
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_disabled" if disabled else "user_enabled",
        actor_id=actor_id,
        payload={"email": user.email},
    )
    session.flush()
    if disabled:
        assert user.id is not None
        sessions.revoke_all_for_user(session=session, user_id=user.id, actor_id=actor_id)
        api_tokens.revoke_all_for_user(session=session, user_id=user.id, actor_id=actor_id)
    return _row(user)
