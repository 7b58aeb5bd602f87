"""The Projects page: the caller's projects and, for the one they pick, its members.

Every handler resolves the session again and goes through the services, which check the action
on the server (NotFound for a project the caller may not see, Forbidden for one they may only
look at); hiding the controls from read members is a courtesy, not the protection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import reflex as rx

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import CodexK8sError
from codexk8s.services import projects
from codexk8s.services.projects import MemberRow, ProjectRow
from codexk8s.web.state.auth import AuthState

T = TypeVar("T")

PROJECT_ROLES: list[str] = [role.value for role in ProjectRole]
SIGNED_OUT = "Your session has ended; sign in again."


def _in_transaction(work: Callable[..., T], /, **kwargs: object) -> T:
    with session_scope(get_engine()) as session:
        return work(session=session, **kwargs)


class ProjectsState(rx.State):
    projects: list[ProjectRow] = []
    selected_key: str = ""
    members: list[MemberRow] = []
    new_email: str = ""
    new_role: str = ProjectRole.READ.value
    error: str = ""
    notice: str = ""

    def _selected(self) -> ProjectRow | None:
        return next((p for p in self.projects if p.key == self.selected_key), None)

    @rx.var
    def selected_name(self) -> str:
        project = self._selected()
        return project.name if project is not None else ""

    @rx.var
    def can_manage_members(self) -> bool:
        project = self._selected()
        return project is not None and project.can_manage_members

    async def _principal(self) -> tuple[Principal, str] | None:
        """The acting principal and their email, or None (everything cleared) when signed out."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.projects, self.members, self.selected_key = [], [], ""
            self.error, self.notice = SIGNED_OUT, ""
            return None
        return principal, auth.email

    async def _refresh(self, principal: Principal) -> None:
        """Reload the caller's projects and the selected project's members; a project that has
        gone out of sight is deselected."""
        self.projects = await asyncio.to_thread(
            _in_transaction, projects.list_visible_projects, actor=principal
        )
        if self.selected_key not in {p.key for p in self.projects}:
            self.selected_key, self.members = "", []
            return
        try:
            self.members = await asyncio.to_thread(
                _in_transaction, projects.list_members, actor=principal,
                project_key=self.selected_key,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.members, self.error = [], str(exc)

    async def _apply(self, done: str, work: Callable[..., object], **kwargs: object) -> bool:
        """Run one member change on the selected project for the signed-in caller; show its
        outcome and the fresh lists. True when it went through."""
        found = await self._principal()
        if found is None:
            return False
        principal, email = found
        try:
            await asyncio.to_thread(
                _in_transaction, work, actor=principal, actor_id=email,
                project_key=self.selected_key, **kwargs,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
            ok = False
        else:
            self.error, self.notice = "", done.format(**kwargs, project=self.selected_key)
            ok = True
        await self._refresh(principal)
        return ok

    @rx.event
    async def load_projects(self) -> None:
        """`on_load` of the Projects page."""
        self.error = self.notice = ""
        found = await self._principal()
        if found is not None:
            await self._refresh(found[0])

    @rx.event
    async def select_project(self, key: str) -> None:
        self.error = self.notice = ""
        found = await self._principal()
        if found is None:
            return
        self.selected_key = key
        await self._refresh(found[0])

    @rx.event
    def set_new_email(self, value: str) -> None:
        self.new_email = value

    @rx.event
    def set_new_role(self, value: str) -> None:
        self.new_role = value

    @rx.event
    async def add_member(self) -> None:
        if await self._apply(
            "Added {email} to {project} as {role}.", projects.add_member,
            email=self.new_email.strip(), role=self.new_role,
        ):  # fmt: skip
            self.new_email, self.new_role = "", ProjectRole.READ.value

    @rx.event
    async def change_member_role(self, email: str, role: str) -> None:
        await self._apply(
            "{email} is now {role} on {project}.", projects.set_member_role, email=email, role=role
        )

    @rx.event
    async def remove_member(self, email: str) -> None:
        await self._apply("Removed {email} from {project}.", projects.remove_member, email=email)
