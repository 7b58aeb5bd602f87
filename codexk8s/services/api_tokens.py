"""API tokens for the staff JSON API: shown once at creation, stored only as a hash; listed and
revoked by platform admins, and revoked with their user when the user is disabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from codexk8s.crypto import TOKEN_PREFIX, hash_token, new_token
from codexk8s.db.models import ApiToken, User, utcnow
from codexk8s.domain.authorization import Principal
from codexk8s.domain.runs import ActorType
from codexk8s.errors import InvalidArgumentError, NotFoundError, PreconditionError
from codexk8s.services import users
from codexk8s.services.audit import record_event

MAX_EXPIRY_DAYS = 365
# What a list shows of a token: `ck8s_` and four more characters (24 bits, useless to a guesser).
SHOWN_CHARACTERS = len(TOKEN_PREFIX) + 4


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token as an admin sees it: whose, which, how used. Never the token or its hash."""

    id: int
    name: str
    prefix: str
    owner_email: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @property
    def status(self) -> str:
        """`active`, `revoked` or `expired`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= utcnow():
            return "expired"
        return "active"

    @property
    def is_active(self) -> bool:
        return self.status == "active"


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; every stored timestamp is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _row(token: ApiToken, owner_email: str) -> TokenRow:
    assert token.id is not None
    return TokenRow(
        id=token.id, name=token.name, prefix=token.prefix or "", owner_email=owner_email,
        created_at=token.created_at, last_used_at=token.last_used_at,
        expires_at=token.expires_at, revoked_at=token.revoked_at,
    )  # fmt: skip


def create_token(
    *,
    session: Session,
    email: str,
    name: str = "",
    expires_in_days: int | None = 90,
    actor_id: str | None = None,
) -> tuple[ApiToken, str]:
    """Return the stored row and the plaintext token (the only time it exists)."""
    user = users.require_by_email(session=session, email=email)
    if user.disabled:
        raise PreconditionError(f"user {user.email} is disabled")
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise InvalidArgumentError(f"expiry must be 1-{MAX_EXPIRY_DAYS} days")
    if len(name) > 100:
        raise InvalidArgumentError("token name must be at most 100 characters")
    plaintext = new_token()
    assert user.id is not None
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:SHOWN_CHARACTERS],
        scopes=["api"],
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(token)
    session.flush()
    record_event(
        session=session,
        correlation_id=f"user-{user.id}",
        event_type="api_token_created",
        actor_id=actor_id,
        payload={"token_id": token.id, "name": name, "expires_at": str(token.expires_at)},
    )
    return token, plaintext


def list_tokens(*, session: Session, actor: Principal | None) -> list[TokenRow]:
    """Every token, newest first, for a platform admin (ACTOR None: the local operator)."""
    users.authorize_user_change(actor, roles=())
    found = session.exec(
        select(ApiToken, User.email)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .order_by(col(ApiToken.created_at).desc(), col(ApiToken.id).desc())
    ).all()
    return [_row(token, email) for token, email in found]


def revoke_token(
    *, session: Session, actor: Principal | None, token_id: int, actor_id: str | None = None
) -> TokenRow:
    """End TOKEN_ID at once (a platform admin's or the local operator's doing; an owner's or
    admin's token only an owner may revoke, as only an owner may disable them). Revoking a token
    that is already revoked changes nothing."""
    users.authorize_user_change(actor, roles=())
    found = session.exec(
        select(ApiToken, User.email, User.role)
        .join(User, col(User.id) == col(ApiToken.user_id))
        .where(ApiToken.id == token_id)
        .with_for_update()
    ).first()
    if found is None:
        raise NotFoundError(f"no API token with id {token_id}")
    token, email, owner_role = found
    users.authorize_user_change(actor, roles=(owner_role,))
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        record_event(
            session=session,
            correlation_id=f"user-{token.user_id}",
            event_type="api_token_revoked",
            actor_id=actor_id,
            payload={"token_id": token.id, "name": token.name, "owner": email},
        )
        session.flush()
    return _row(token, email)


def revoke_all_for_user(*, session: Session, user_id: int, actor_id: str | None = None) -> int:
    """Revoke every live token of USER_ID in the caller's transaction (with disabling them), so a
    later re-enable does not bring them back; returns how many were revoked."""
    revoked = session.execute(
        sa.update(ApiToken)
        .where(
            col(ApiToken.user_id) == user_id,
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if revoked:
        record_event(
            session=session,
            correlation_id=f"user-{user_id}",
            event_type="api_tokens_revoked",
            actor_type=ActorType.HUMAN if actor_id else ActorType.SYSTEM,
            actor_id=actor_id,
            payload={"count": revoked},
        )
    return int(revoked)
