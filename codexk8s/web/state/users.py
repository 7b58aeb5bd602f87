"""The Users page: platform admins list, add, disable and re-role users.

Every handler resolves the session again and checks the action on the server; the page hiding
its controls from non-admins is a courtesy, not the protection. The services check once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import reflex as rx

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.errors import CodexK8sError
from codexk8s.services import users
from codexk8s.services.users import UserRow
from codexk8s.web.state.auth import AuthState

T = TypeVar("T")

ROLES: list[str] = [role.value for role in PlatformRole]
NOT_ALLOWED = "Managing users is for platform admins."
NOT_OWNER = "Only an owner may grant or take away the owner and admin roles."
SIGNED_OUT = "Your session has ended; sign in again."


def _in_transaction(work: Callable[..., T], /, **kwargs: object) -> T:
    with session_scope(get_engine()) as session:
        return work(session=session, **kwargs)


class UsersState(rx.State):
    users: list[UserRow] = []
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
            self.users, self.error, self.notice = [], SIGNED_OUT, ""
            return None
        if not is_allowed(principal, Action.MANAGE_USERS):
            self.users, self.error, self.notice = [], NOT_ALLOWED, ""
            return None
        admin_roles = (PlatformRole.OWNER.value, PlatformRole.ADMIN.value)
        if any(role in admin_roles for role in roles) and not is_allowed(
            principal, Action.GRANT_PLATFORM_ADMIN
        ):
            self.error, self.notice = NOT_OWNER, ""
            return None
        return principal, auth.email

    async def _refresh(self, principal: Principal) -> None:
        self.users = await asyncio.to_thread(_in_transaction, users.list_users, actor=principal)

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
        try:
            row = await asyncio.to_thread(
                _in_transaction, work, actor=principal, actor_id=email, **kwargs
            )
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            self.error, self.notice = "", done.format(email=row.email, role=row.role)
        await self._refresh(principal)

    @rx.event
    async def load_users(self) -> None:
        """`on_load` of the Users page."""
        self.error = self.notice = ""
        authorized = await self._authorized()
        if authorized is not None:
            await self._refresh(authorized[0])

    @rx.event
    def set_new_email(self, value: str) -> None:
        self.new_email = value

    @rx.event
    def set_new_role(self, value: str) -> None:
        self.new_role = value

    @rx.event
    async def add_user(self) -> None:
        authorized = await self._authorized(self.new_role)
        if authorized is None:
            return
        principal, email = authorized
        try:
            user = await asyncio.to_thread(
                _in_transaction, users.add_user, email=self.new_email, role=self.new_role,
                actor_id=email,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            self.error, self.notice = "", f"Added {user.email} as {user.role}."
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
