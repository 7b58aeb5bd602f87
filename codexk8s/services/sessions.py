"""Who is signed in: GitHub sign-in, one-time sign-in links, browser sessions and API tokens.

Session and link tokens are random bearer secrets shown once (in a cookie or a printed link) and
stored only as SHA-256 hashes, like API tokens. A session, unlike a signed cookie, can be revoked:
signing out or disabling the user ends it at once. Every refused sign-in writes one audit event and
nothing else; the refusal is a specific error the HTTP layer turns into a page.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.crypto import hash_token
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import ApiToken, SignInLink, User, UserSession, table_of, utcnow
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.runs import ActorType
from codexk8s.errors import ForbiddenError, InvalidArgumentError, NotFoundError, PreconditionError
from codexk8s.services.audit import record_event
from codexk8s.services.users import get_by_email, normalize_email

SIGNIN_LINK_TTL = timedelta(minutes=15)
# Sliding expiry and "last used" stamps are written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(minutes=5)
# Refusals for someone who is not a user yet have no user to correlate with.
SIGN_IN_CORRELATION = "sign-in"

_SESSIONS: sa.Table = table_of(UserSession)
_USERS: sa.Table = table_of(User)
_API_TOKENS: sa.Table = table_of(ApiToken)


class SignInRefusedError(ForbiddenError):
    """This person may not sign in; `reason` is the stable name written to the audit trail."""

    reason = "refused"


class UnverifiedEmailError(SignInRefusedError):
    reason = "no_verified_primary_email"


class EmailNotAllowedError(SignInRefusedError):
    reason = "email_not_allowed"


class UserDisabledError(SignInRefusedError):
    reason = "user_disabled"


class GitHubLoginMismatchError(SignInRefusedError):
    """The user is linked to another GitHub account, or the account to another user."""

    reason = "github_login_mismatch"


class SignInLinkError(SignInRefusedError):
    reason = "signin_link_unknown"


class SignInLinkUsedError(SignInLinkError):
    reason = "signin_link_used"


class SignInLinkExpiredError(SignInLinkError):
    reason = "signin_link_expired"


@dataclass(frozen=True, slots=True)
class UserProfile:
    """What the signed-in person may see about themselves (`GET /api/v1/me`)."""

    id: int
    email: str
    github_login: str | None
    role: str


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; every stored timestamp is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _refuse(
    session: Session,
    error: SignInRefusedError,
    *,
    user: User | None,
    actor_id: str | None,
    details: dict[str, str | None],
) -> SignInRefusedError:
    """Write the refusal's one audit event into SESSION and hand the error back to raise."""
    record_event(
        session=session,
        correlation_id=f"user-{user.id}" if user is not None else SIGN_IN_CORRELATION,
        event_type="sign_in_refused",
        actor_type=ActorType.HUMAN,
        actor_id=actor_id,
        payload={"reason": error.reason, **details},
    )
    return error


# --- GitHub sign-in -------------------------------------------------------------------------------


def sign_in_with_github(
    engine: Engine, *, github_login: str, verified_primary_email: str | None
) -> User:
    """The user an admin added with this email; links GITHUB_LOGIN on their first sign-in."""
    with session_scope(engine) as session:
        outcome = _sign_in_with_github(
            session, github_login=github_login, email=verified_primary_email
        )
    if isinstance(outcome, SignInRefusedError):
        raise outcome
    return outcome


def _sign_in_with_github(
    session: Session, *, github_login: str, email: str | None
) -> User | SignInRefusedError:
    details: dict[str, str | None] = {"github_login": github_login, "email": email}
    actor = f"github:{github_login}"
    if not email:
        return _refuse(
            session,
            UnverifiedEmailError(f"GitHub account {github_login} has no verified primary email"),
            user=None, actor_id=actor, details=details,
        )  # fmt: skip
    try:
        user = get_by_email(session=session, email=email)
    except InvalidArgumentError:
        user = None
    if user is None:
        return _refuse(
            session, EmailNotAllowedError(f"{email} is not allowed to sign in"),
            user=None, actor_id=actor, details=details,
        )  # fmt: skip
    if user.disabled:
        return _refuse(
            session, UserDisabledError(f"user {user.email} is disabled"),
            user=user, actor_id=user.email, details=details,
        )  # fmt: skip
    # GitHub logins are case-insensitive; keep the spelling GitHub reports.
    if user.github_login is not None and user.github_login.lower() != github_login.lower():
        return _refuse(
            session,
            GitHubLoginMismatchError(
                f"{user.email} is linked to another GitHub account than {github_login}"
            ),
            user=user, actor_id=user.email,
            details={**details, "linked_github_login": user.github_login},
        )  # fmt: skip
    is_first_sign_in = user.github_login is None
    if is_first_sign_in:
        other = session.exec(
            select(User).where(sa.func.lower(User.github_login) == github_login.lower())
        ).first()
        if other is not None:
            return _refuse(
                session,
                GitHubLoginMismatchError(
                    f"GitHub account {github_login} is linked to another user"
                ),
                user=user, actor_id=user.email, details=details,
            )  # fmt: skip
    user.github_login = github_login
    user.updated_at = utcnow()
    session.add(user)
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_signed_in",
        actor_type=ActorType.HUMAN,
        actor_id=user.email,
        payload={"method": "github", "github_login": github_login, "linked": is_first_sign_in},
    )
    session.flush()
    return user


# --- one-time sign-in links (embedded mode without OAuth) ----------------------------------------


def create_signin_link(engine: Engine, *, email: str, ttl: timedelta = SIGNIN_LINK_TTL) -> str:
    """A token for `/auth/link/<token>` that signs EMAIL in once within TTL."""
    with session_scope(engine) as session:
        user = get_by_email(session=session, email=email)
        if user is None:
            raise NotFoundError(f"no user with email {normalize_email(email)}")
        if user.disabled:
            raise PreconditionError(f"user {user.email} is disabled")
        assert user.id is not None
        token = _new_secret()
        link = SignInLink(user_id=user.id, token_hash=hash_token(token), expires_at=utcnow() + ttl)
        session.add(link)
        session.flush()
        record_event(
            session=session,
            correlation_id=f"user-{user.id}",
            event_type="signin_link_created",
            payload={"link_id": link.id, "expires_at": link.expires_at.isoformat()},
        )
    return token


def redeem_signin_link(engine: Engine, token: str) -> User:
    """The link's user, once: a second redeem, an expired link or a disabled user is refused."""
    with session_scope(engine) as session:
        outcome = _redeem_signin_link(session, token)
    if isinstance(outcome, SignInRefusedError):
        raise outcome
    return outcome


def _redeem_signin_link(session: Session, token: str) -> User | SignInRefusedError:
    now = utcnow()
    found = session.exec(
        select(SignInLink, User)
        .join(User, User.id == SignInLink.user_id)  # type: ignore[arg-type]
        .where(SignInLink.token_hash == hash_token(token))
    ).first()
    if found is None:
        return _refuse(
            session, SignInLinkError("this sign-in link is not valid"),
            user=None, actor_id=None, details={},
        )  # fmt: skip
    link, user = found
    details: dict[str, str | None] = {"link_id": str(link.id)}
    if link.used_at is not None:
        return _refuse(
            session, SignInLinkUsedError("this sign-in link was already used"),
            user=user, actor_id=user.email, details=details,
        )  # fmt: skip
    if _aware(link.expires_at) <= now:
        return _refuse(
            session, SignInLinkExpiredError("this sign-in link has expired"),
            user=user, actor_id=user.email, details=details,
        )  # fmt: skip
    if user.disabled:
        return _refuse(
            session, UserDisabledError(f"user {user.email} is disabled"),
            user=user, actor_id=user.email, details=details,
        )  # fmt: skip
    # The guarded UPDATE makes two simultaneous redeems of one link yield one sign-in.
    claimed = session.execute(
        sa.update(SignInLink)
        .where(SignInLink.id == link.id, SignInLink.used_at.is_(None))  # type: ignore[union-attr]
        .values(used_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        return _refuse(
            session, SignInLinkUsedError("this sign-in link was already used"),
            user=user, actor_id=user.email, details=details,
        )  # fmt: skip
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="user_signed_in",
        actor_type=ActorType.HUMAN,
        actor_id=user.email,
        payload={"method": "signin_link", "link_id": link.id},
    )
    return user


# --- sessions -------------------------------------------------------------------------------------


def create_session(
    engine: Engine, *, user: User, ttl: timedelta, user_agent: str | None = None
) -> str:
    """Start a session for USER (already signed in) and return its token, the only copy."""
    assert user.id is not None
    token = _new_secret()
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            _SESSIONS.insert().values(
                user_id=user.id,
                token_hash=hash_token(token),
                created_at=now,
                last_seen_at=now,
                expires_at=now + ttl,
                user_agent=user_agent[:200] if user_agent else None,
            )
        )
    return token


def open_session_with_github(
    *, github_login: str, verified_primary_email: str | None, ttl: timedelta,
    user_agent: str | None,
) -> str:  # fmt: skip
    """The GitHub callback's sign-in (`sign_in_with_github`) and the session it starts
    (`create_session`): the session's token."""
    engine = get_engine()
    user = sign_in_with_github(
        engine, github_login=github_login, verified_primary_email=verified_primary_email
    )
    return create_session(engine, user=user, ttl=ttl, user_agent=user_agent)


def open_session_with_link(link_token: str, *, ttl: timedelta, user_agent: str | None) -> str:
    """A one-time link's sign-in (`redeem_signin_link`) and the session it starts: the
    session's token."""
    engine = get_engine()
    user = redeem_signin_link(engine, link_token)
    return create_session(engine, user=user, ttl=ttl, user_agent=user_agent)


def resolve_session(engine: Engine, token: str, *, ttl: timedelta) -> Principal | None:
    """The person behind a session token, or None (unknown, expired, revoked, user disabled).

    Each use pushes the expiry TTL ahead, but only once per TOUCH_INTERVAL, so reading a page is
    not a database write.
    """
    if not token:
        return None
    now = utcnow()
    with engine.begin() as connection:
        row = connection.execute(
            sa.select(_SESSIONS.c.id, _SESSIONS.c.last_seen_at, _USERS.c.id.label("user_id"),
                      _USERS.c.role)
            .join(_USERS, _USERS.c.id == _SESSIONS.c.user_id)
            .where(
                _SESSIONS.c.token_hash == hash_token(token),
                _SESSIONS.c.revoked_at.is_(None),
                _SESSIONS.c.expires_at > now,
                _USERS.c.disabled.is_(False),
            )
        ).first()  # fmt: skip
        if row is None:
            return None
        if now - _aware(row.last_seen_at) >= TOUCH_INTERVAL:
            connection.execute(
                _SESSIONS.update()
                .where(_SESSIONS.c.id == row.id, _SESSIONS.c.revoked_at.is_(None))
                .values(last_seen_at=now, expires_at=now + ttl)
            )
    return Principal(user_id=row.user_id, platform_role=PlatformRole(row.role))


def revoke_session(engine: Engine, token: str) -> bool:
    """Sign out: the token stops working at once. False when it was not a live session."""
    if not token:
        return False
    with session_scope(engine) as session:
        found = session.exec(
            select(UserSession).where(
                UserSession.token_hash == hash_token(token),
                UserSession.revoked_at.is_(None),  # type: ignore[union-attr]
            )
        ).first()
        if found is None:
            return False
        found.revoked_at = utcnow()
        session.add(found)
        record_event(
            session=session,
            correlation_id=f"user-{found.user_id}",
            event_type="user_signed_out",
            actor_type=ActorType.HUMAN,
            payload={"session_id": found.id},
        )
    return True


def sign_out(token: str) -> bool:
    """`revoke_session` on the application's database (the sign-out route)."""
    return revoke_session(get_engine(), token)


def revoke_all_for_user(*, session: Session, user_id: int, actor_id: str | None = None) -> int:
    """End every live session of USER_ID in the caller's transaction (e.g. with disabling them),
    so both commit together; returns how many were ended."""
    revoked = session.execute(
        sa.update(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),  # type: ignore[union-attr]
        )
        .values(revoked_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if revoked:
        record_event(
            session=session,
            correlation_id=f"user-{user_id}",
            event_type="sessions_revoked",
            actor_type=ActorType.HUMAN if actor_id else ActorType.SYSTEM,
            actor_id=actor_id,
            payload={"count": revoked},
        )
    return int(revoked)


# --- API tokens and the signed-in profile ---------------------------------------------------------


def resolve_api_token(engine: Engine, token: str) -> Principal | None:
    """The person behind a bearer API token, or None (unknown, expired, revoked, user disabled)."""
    if not token:
        return None
    now = utcnow()
    with engine.begin() as connection:
        row = connection.execute(
            sa.select(_API_TOKENS.c.id, _API_TOKENS.c.last_used_at,
                      _USERS.c.id.label("user_id"), _USERS.c.role)
            .join(_USERS, _USERS.c.id == _API_TOKENS.c.user_id)
            .where(
                _API_TOKENS.c.token_hash == hash_token(token),
                _API_TOKENS.c.revoked_at.is_(None),
                sa.or_(_API_TOKENS.c.expires_at.is_(None), _API_TOKENS.c.expires_at > now),
                _USERS.c.disabled.is_(False),
            )
        ).first()  # fmt: skip
        if row is None:
            return None
        if row.last_used_at is None or now - _aware(row.last_used_at) >= TOUCH_INTERVAL:
            connection.execute(
                _API_TOKENS.update().where(_API_TOKENS.c.id == row.id).values(last_used_at=now)
            )
    return Principal(user_id=row.user_id, platform_role=PlatformRole(row.role))


def authenticate(
    *, api_token: str | None = None, session_token: str | None = None, ttl: timedelta
) -> Principal | None:
    """Who presents API_TOKEN (a bearer API token; it wins) or else SESSION_TOKEN (a browser
    session, sliding by TTL), on the application's database; None when neither proves anyone."""
    if api_token is not None:
        return resolve_api_token(get_engine(), api_token)
    return resolve_session(get_engine(), session_token, ttl=ttl) if session_token else None


def load_profile(engine: Engine | None = None, *, user_id: int) -> UserProfile | None:
    engine = engine or get_engine()
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(_USERS.c.id, _USERS.c.email, _USERS.c.github_login, _USERS.c.role).where(
                _USERS.c.id == user_id
            )
        ).first()
    if row is None:
        return None
    return UserProfile(id=row.id, email=row.email, github_login=row.github_login, role=row.role)
