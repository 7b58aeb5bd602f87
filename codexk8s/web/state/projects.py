"""The Projects page: the caller's projects and, for the one they pick, its members.

Every handler resolves the session again and goes through the services, which check the action
on the server (NotFound for a project the caller may not see, Forbidden for one they may only
look at); hiding the controls from read members is a courtesy, not the protection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import reflex as rx

from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import CodexK8sError, NotFoundError
from codexk8s.services import projects
from codexk8s.services.projects import MemberRow, ProjectRow
from codexk8s.services.transactions import in_transaction
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter

PROJECT_ROLES: list[str] = [role.value for role in ProjectRole]


SIGNED_OUT = "Your session has ended; sign in again."


class ProjectsState(rx.State):
    projects: list[ProjectRow] = []
    selected_key: str = ""
    members: list[MemberRow] = []
    new_email: str = ""
    new_role: str = ProjectRole.READ.value
    error: str = ""
    notice: str = ""
    # The outcome of a member change, shown in the members panel itself (on /projects and on a
    # project's page alike), so the person sees it where they acted.
    member_error: str = ""
    member_notice: str = ""
    is_creating: bool = False

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
            in_transaction, projects.list_visible_projects, actor=principal
        )
        if self.selected_key not in {p.key for p in self.projects}:
            self.selected_key, self.members = "", []
            return
        try:
            self.members = await asyncio.to_thread(
                in_transaction, projects.list_members, actor=principal,
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
                in_transaction, work, actor=principal, actor_id=email,
                project_key=self.selected_key, **kwargs,
            )  # fmt: skip
        except NotFoundError as exc:
            email = str(kwargs.get("email", ""))
            self.member_error = (
                f"{email} has no account here yet: a platform admin adds people on the Users "
                "page first, then you can add them to the project."
                if email and str(exc).startswith("no user with email")
                else str(exc)
            )
            self.member_notice = ""
            ok = False
        except CodexK8sError as exc:
            self.member_error, self.member_notice = str(exc), ""
            ok = False
        else:
            self.member_error = ""
            self.member_notice = done.format(**kwargs, project=self.selected_key)
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
    async def create_project(self, form: dict[str, Any]) -> None:
        """The "New project" form (platform admins; the service refuses anyone else)."""
        found = await self._principal()
        if found is None:
            return
        principal, email = found
        key = str(form.get("key", "")).strip()
        slots_text = str(form.get("slots", "") or "2").strip()
        if not slots_text.isdigit():
            self.error, self.notice = "slots must be a whole number", ""
            return
        self.is_creating = True
        try:
            await asyncio.to_thread(
                in_transaction, projects.create_project, key=key,
                name=str(form.get("name", "")).strip() or None, slots=int(slots_text),
                actor=principal, actor_id=email, is_operator=False,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            self.error, self.notice = "", f"Created project {key}."
            self.selected_key = key
        finally:
            self.is_creating = False
        await self._refresh(principal)

    @rx.event
    async def select_project(self, key: str) -> None:
        self.error = self.notice = self.member_error = self.member_notice = ""
        found = await self._principal()
        if found is None:
            return
        self.selected_key = key
        await self._refresh(found[0])

    set_new_email = field_setter("new_email")
    set_new_role = field_setter("new_role")

    @rx.event
    async def add_member(self) -> None:
        if not self.new_email.strip():
            self.member_error, self.member_notice = "Enter the email of the person to add.", ""
            return
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
    async def change_member_learning(self, email: str, mode: str) -> None:
        """A member's own learning mode: "on", "off" or "default" (the project's)."""
        choices = {label: value for value, label in projects.LEARNING_MODES.items()}
        if mode not in choices:
            self.member_error = "The learning mode must be on, off or default."
            self.member_notice = ""
            return
        await self._apply(
            "Learning mode for {email} on {project}: " + mode + ".",
            projects.set_member_learning_mode, email=email, learning_mode=choices[mode],
        )  # fmt: skip

    @rx.event
    async def remove_member(self, email: str) -> None:
        await self._apply("Removed {email} from {project}.", projects.remove_member, email=email)
