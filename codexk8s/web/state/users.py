"""The Users page: platform admins list, add, disable and re-role users, and see and revoke
API tokens (never the tokens themselves: only their name, first characters and owner).

Every handler resolves the session again and checks the action on the server; the page hiding
its controls from non-admins is a courtesy, not the protection. The services check once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import reflex as rx
from sqlmodel import Session

from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.services import api_tokens, users
from codexk8s.services.api_tokens import TokenRow
from codexk8s.services.transactions import in_transaction
from codexk8s.services.users import UserRow
from codexk8s.web.state.actions import attempt
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter

ROLES: list[str] = [role.value for role in PlatformRole]
NOT_ALLOWED = "Managing users is for platform admins."
NOT_OWNER = "Only an owner may grant or take away the owner and admin roles."
SIGNED_OUT = "Your session has ended; sign in again."


@dataclass(frozen=True, slots=True)
class TokenView:
    """An API token as the page shows it; times are already words."""

    id: int
    name: str
    prefix: str
    owner_email: str
    created: str
    last_used: str
    status: str
    status_color: str


# Active like an enabled user, revoked like a disabled one.
TOKEN_STATUS_COLORS = {"active": "green", "revoked": "red", "expired": "gray"}


def _when(stamp: datetime | None, *, never: str = "never") -> str:
    if stamp is None:
        return never
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _token_view(row: TokenRow) -> TokenView:
    return TokenView(
        id=row.id, name=row.name or "unnamed", prefix=row.prefix or "—",
        owner_email=row.owner_email, created=_when(row.created_at),
        last_used=_when(row.last_used_at), status=row.status,
        status_color=TOKEN_STATUS_COLORS.get(row.status, "gray"),
    )  # fmt: skip


def _read_users_and_tokens(
    *, session: Session, actor: Principal
) -> tuple[list[UserRow], list[TokenRow]]:
    return (
        users.list_users(session=session, actor=actor),
        api_tokens.list_tokens(session=session, actor=actor),
    )


def _users_and_tokens(actor: Principal) -> tuple[list[UserRow], list[TokenView]]:
    rows, tokens = in_transaction(_read_users_and_tokens, actor=actor)
    return rows, [_token_view(token) for token in tokens]


class UsersState(rx.State):
    users: list[UserRow] = []
    tokens: list[TokenView] = []
    new_email: str = ""
    new_role: str = PlatformRole.USER.value
    error: str = ""
    notice: str = ""

    async def _authorized(self, *roles: str) -> tuple[Principal, str] | None:
        """The acting principal and their email when they may manage users (and grant platform
        admin when ROLES include owner or admin); otherwise sets `error` and returns None."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.users, self.tokens, self.error, self.notice = [], [], SIGNED_OUT, ""
            return None
        if not is_allowed(principal, Action.MANAGE_USERS):
            self.users, self.tokens, self.error, self.notice = [], [], NOT_ALLOWED, ""
            return None
        admin_roles = (PlatformRole.OWNER.value, PlatformRole.ADMIN.value)
        if any(role in admin_roles for role in roles) and not is_allowed(
            principal, Action.GRANT_PLATFORM_ADMIN
        ):
            self.error, self.notice = NOT_OWNER, ""
            return None
        return principal, auth.email

    async def _refresh(self, principal: Principal) -> None:
        self.users, self.tokens = await asyncio.to_thread(_users_and_tokens, principal)

    def _row(self, user_id: int) -> UserRow | None:
        return next((row for row in self.users if row.id == user_id), None)

    async def _apply(self, done: str, work: Callable[..., UserRow], **kwargs: object) -> None:
        """Run one change for an authorized actor; show its outcome and the fresh list."""
        target = self._row(int(kwargs.get("user_id", 0))) if "user_id" in kwargs else None
        roles = tuple(str(kwargs[k]) for k in ("role",) if k in kwargs)
        authorized = await self._authorized(*roles, *((target.role,) if target else ()))
        if authorized is None:
            return
        principal, email = authorized
        ok, row = await attempt(
            self, in_transaction, work, actor=principal, actor_id=email, **kwargs
        )
        if ok:
            self.notice = done.format(email=row.email, role=row.role)
        await self._refresh(principal)

    @rx.event
    async def load_users(self) -> None:
        """`on_load` of the Users page."""
        self.error = self.notice = ""
        authorized = await self._authorized()
        if authorized is not None:
            await self._refresh(authorized[0])

    set_new_email = field_setter("new_email")
    set_new_role = field_setter("new_role")

    @rx.event
    async def add_user(self) -> None:
        authorized = await self._authorized(self.new_role)
        if authorized is None:
            return
        principal, email = authorized
        ok, user = await attempt(
            self, in_transaction, users.add_user, email=self.new_email, role=self.new_role,
            actor_id=email,
        )  # fmt: skip
        if ok:
            self.notice = f"Added {user.email} as {user.role}."
            self.new_email, self.new_role = "", PlatformRole.USER.value
        await self._refresh(principal)

    @rx.event
    async def change_role(self, user_id: int, role: str) -> None:
        await self._apply("{email} is now {role}.", users.set_role, user_id=int(user_id), role=role)

    @rx.event
    async def disable_user(self, user_id: int) -> None:
        await self._apply(
            "Disabled {email}; their sessions have ended.", users.set_disabled,
            user_id=int(user_id), disabled=True,
        )  # fmt: skip

    @rx.event
    async def enable_user(self, user_id: int) -> None:
        await self._apply(
            "Enabled {email}.", users.set_disabled, user_id=int(user_id), disabled=False
        )

    @rx.event
    async def revoke_token(self, token_id: int) -> None:
        """End the API token TOKEN_ID; the service refuses an admin an owner's or admin's token."""
        authorized = await self._authorized()
        if authorized is None:
            return
        principal, email = authorized
        ok, row = await attempt(
            self, in_transaction, api_tokens.revoke_token, actor=principal, actor_id=email,
            token_id=int(token_id),
        )  # fmt: skip
        if ok:
            self.notice = f"Revoked the token {row.name or row.prefix} of {row.owner_email}."
        await self._refresh(principal)
