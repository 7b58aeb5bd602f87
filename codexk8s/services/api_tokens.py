"""API tokens for the staff JSON API: shown once at creation, stored only as a hash."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from codexk8s.crypto import hash_token, new_token
from codexk8s.db.models import ApiToken, utcnow
from codexk8s.errors import InvalidArgumentError, PreconditionError
from codexk8s.services import users
from codexk8s.services.audit import record_event

MAX_EXPIRY_DAYS = 365


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
