"""One project's page (`/projects/<key>`): its settings, repositories, recent runs, costs, agent
tool policies and deletion; its members are ProjectsState's (web/state/projects.py).

Every handler resolves the session again and goes through the services, which check the action
on the server; hiding the controls from read members is a courtesy, not the protection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import reflex as rx
from sqlmodel import Session

from codexk8s import urls
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.domain.authorization import Principal
from codexk8s.domain.run_requests import POLICY_WORDS, TOOL_WORDS, WAITING_SLOT_WORDS
from codexk8s.errors import CodexK8sError, NotFoundError
from codexk8s.services import overview, projects, repositories, run_requests
from codexk8s.services.projects import ProjectSettings, RecentRun
from codexk8s.services.repositories import RepositoryRow
from codexk8s.services.transactions import in_transaction
from codexk8s.web.components import formatters as fmt
from codexk8s.web.state.actions import attempt
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter
from codexk8s.web.state.projects import SIGNED_OUT, ProjectsState

COST_RANGES = ["7", "14", "30", "90"]


@dataclass(frozen=True, slots=True)
class CostRow:
    """One day of a project's cost."""

    day: str
    runs: int
    cost: str
    cost_value: float


class ProjectPageState(rx.State):
    """One project's page (`/projects/<key>`): settings, repositories, recent runs, deletion.

    The repository token and webhook secret arrive in the add form's submitted data and go
    straight to the service, which stores them encrypted: they are never state vars, so they are
    never sent back to any browser. Every handler re-resolves the session; the services check
    the action (EDIT_PROJECT, EDIT_REPOSITORIES, DELETE_PROJECT) on the server.
    """

    page_key: str = ""
    project_settings: ProjectSettings | None = None
    repositories: list[RepositoryRow] = []
    recent_runs: list[RecentRun] = []
    edit_name: str = ""
    edit_slots: str = ""
    edit_learning: bool = False
    edit_model: str = ""
    # Days finished runs keep their log: "" the installation's default, "0" forever.
    edit_log_retention: str = ""
    delete_confirmation: str = ""
    # Cost over the chosen range (days ending today).
    cost_days: int = 14
    cost_rows: list[CostRow] = []
    cost_total: str = "$0.00"
    # Who decides each platform tool's calls: [tool, the tool in words, none|owner|delegated].
    tool_policies: list[list[str]] = []
    # What a run does with its slot while it waits for a person: keep | release.
    waiting_slot: str = "keep"
    # Who else may start runs and how discussions run, as edited: bots and stages as
    # comma-separated text (`projects.update_conversation_settings`).
    conversation: dict[str, str] = {}
    # The repository whose webhook is being registered: its button spins, the others wait.
    registering: str = ""
    is_loaded: bool = False
    not_found: bool = False
    error: str = ""
    notice: str = ""

    @rx.var
    def can_edit(self) -> bool:
        return self.project_settings is not None and self.project_settings.can_edit

    @rx.var
    def can_edit_repositories(self) -> bool:
        return self.project_settings is not None and self.project_settings.can_edit_repositories

    @rx.var
    def can_delete(self) -> bool:
        return self.project_settings is not None and self.project_settings.can_delete

    @rx.var
    def project_name(self) -> str:
        return self.project_settings.name if self.project_settings is not None else self.page_key

    @rx.var
    def role_text(self) -> str:
        if self.project_settings is None:
            return ""
        return self.project_settings.role or "platform admin"

    async def _principal(self) -> tuple[Principal, str] | None:
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.project_settings, self.repositories, self.recent_runs = None, [], []
            self.error, self.notice = SIGNED_OUT, ""
            return None
        return principal, auth.email

    async def _refresh(self, principal: Principal) -> None:
        key = self.page_key
        try:
            settings, repos, runs, costs, total, policies = await asyncio.to_thread(
                _project_page, principal, key, self.cost_days
            )
        except NotFoundError:
            self.project_settings, self.repositories, self.recent_runs = None, [], []
            self.not_found = True
            return
        self.not_found = False
        self.project_settings, self.repositories, self.recent_runs = settings, repos, runs
        self.cost_rows, self.cost_total = costs, total
        self.tool_policies = [
            [tool, TOOL_WORDS.get(tool, tool), policy] for tool, policy in policies.items()
        ]
        self.waiting_slot = settings.waiting_slot
        self.edit_name, self.edit_slots = settings.name, str(settings.slots)
        self.edit_learning, self.edit_model = settings.learning_mode_default, settings.default_model
        days = settings.log_retention_days
        self.edit_log_retention = "" if days is None else str(days)
        self.conversation = {
            "bots": ", ".join(settings.trigger_bots),
            "stages": ", ".join(settings.discussion_stages),
            "model": settings.discussion_model,
            "effort": settings.discussion_reasoning_effort,
        }

    async def _act(self, done: str, work: Callable[..., object], **kwargs: object) -> bool:
        found = await self._principal()
        if found is None:
            return False
        principal, email = found
        ok, _ = await attempt(
            self, in_transaction, work, actor=principal, actor_id=email,
            project_key=self.page_key, **kwargs,
        )  # fmt: skip
        if ok:
            self.notice = done
        await self._refresh(principal)
        return ok

    @rx.event
    async def set_cost_days(self, value: str) -> None:
        """The cost panel's range: 7, 14, 30 or 90 days."""
        if value not in COST_RANGES:
            return
        self.cost_days = int(value)
        found = await self._principal()
        if found is not None:
            await self._refresh(found[0])

    @rx.event
    async def load_project(self) -> None:
        """`on_load` of a project's page; also shows its members through ProjectsState."""
        self.error = self.notice = self.delete_confirmation = self.registering = ""
        self.page_key = str(self.router.page.params.get("project_key", ""))
        found = await self._principal()
        self.is_loaded = True
        if found is None:
            return
        await self._refresh(found[0])
        if self.project_settings is not None:
            members = await self.get_state(ProjectsState)
            members.selected_key = self.page_key
            members.error = members.notice = members.member_error = members.member_notice = ""
            await members._refresh(found[0])

    set_edit_name = field_setter("edit_name")
    set_edit_slots = field_setter("edit_slots")

    @rx.event
    def set_edit_learning(self, value: bool) -> None:
        self.edit_learning = bool(value)

    set_edit_model = field_setter("edit_model")
    set_edit_log_retention = field_setter("edit_log_retention")

    @rx.var
    def log_retention_default(self) -> str:
        """What an empty retention means here: the installation's setting."""
        days = get_settings().log_retention_days
        return f"default: {days} days" if days else "default: forever"

    set_delete_confirmation = field_setter("delete_confirmation")

    @rx.event
    async def set_tool_policy(self, tool: str, policy: str) -> None:
        """Who decides TOOL's calls on this project (project admins)."""
        await self._act(
            f"{TOOL_WORDS.get(tool, tool)}: {POLICY_WORDS.get(policy, policy)}.",
            run_requests.set_tool_policy, tool=tool, policy=policy,
        )  # fmt: skip

    @rx.event
    async def set_waiting_slot(self, policy: str) -> None:
        """What this project's runs do with their slot while they wait for a person."""
        await self._act(
            f"A run waiting for a person {WAITING_SLOT_WORDS.get(policy, policy)}.",
            run_requests.set_waiting_slot, policy=policy,
        )  # fmt: skip

    @rx.event
    async def save_settings(self) -> None:
        try:
            slots = int(self.edit_slots.strip())
        except ValueError:
            self.error, self.notice = f"slots must be a whole number, got {self.edit_slots!r}", ""
            return
        try:
            retention = projects.parse_log_retention(self.edit_log_retention)
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
            return
        await self._act(
            "Settings saved.", projects.update_settings, name=self.edit_name, slots=slots,
            learning_mode_default=self.edit_learning, default_model=self.edit_model,
            log_retention_days=retention,
        )  # fmt: skip

    @rx.event
    def set_conversation(self, field: str, value: str) -> None:
        if field in ("bots", "stages", "model", "effort"):
            self.conversation = {**self.conversation, field: value}

    @rx.event
    async def save_conversation(self) -> None:
        """Bots that may start runs, stages that discuss first, and what discussions run with."""

        def listed(field: str) -> list[str]:
            text = self.conversation.get(field, "")
            return [item for item in (part.strip() for part in text.split(",")) if item]

        await self._act(
            "Conversation settings saved.", projects.update_conversation_settings,
            trigger_bots=listed("bots"), discussion_stages=listed("stages"),
            discussion_model=self.conversation.get("model", ""),
            discussion_reasoning_effort=self.conversation.get("effort", ""),
        )  # fmt: skip

    @rx.event
    async def add_repository(self, form: dict[str, Any]) -> None:
        """The add form's submit: FORM holds full_name, token and webhook_secret; the secrets
        pass through to the service only, which first asks GitHub whether the token (the
        platform's, for a platform admin who gives none) reaches the repository."""
        found = await self._principal()
        if found is None:
            return
        principal, email = found
        full_name = str(form.get("full_name") or "").strip()
        try:
            await repositories.attach_repository(
                box=get_secret_box(), settings=get_settings(), actor=principal,
                project_key=self.page_key, full_name=full_name,
                token=str(form.get("token") or "") or None,
                webhook_secret=str(form.get("webhook_secret") or "") or None, actor_id=email,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            self.error, self.notice = "", f"Added {full_name}."
        await self._refresh(principal)

    @rx.event
    async def remove_repository(self, full_name: str) -> None:
        await self._act(
            f"Removed {full_name}.", repositories.remove_repository, full_name=full_name
        )

    @rx.event
    async def register_webhook(self, full_name: str) -> AsyncIterator[None]:
        """Create or update FULL_NAME's webhook on GitHub with its stored token and secret.

        The service checks EDIT_REPOSITORIES (read members are refused there, whatever the
        page shows) and holds no transaction during the GitHub call. The intermediate yield
        lets the button show its spinner while GitHub answers.
        """
        found = await self._principal()
        if found is None:
            return
        principal, email = found
        self.registering, self.error, self.notice = full_name, "", ""
        yield
        try:
            hook_id, created = await repositories.register_stored_webhook(
                box=get_secret_box(), settings=get_settings(), actor=principal, actor_id=email,
                project_key=self.page_key, full_name=full_name,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error, self.notice = str(exc), ""
        else:
            outcome = "created" if created else "updated"
            self.error, self.notice = "", f"webhook {hook_id} {outcome} on {full_name}"
        finally:
            self.registering = ""
        await self._refresh(principal)

    @rx.event
    async def delete_project(self) -> rx.event.EventSpec | None:
        key = self.page_key
        if await self._act(
            f"Deleted {key}.", projects.delete_project, confirm_key=self.delete_confirmation
        ):
            return rx.redirect(urls.PROJECTS)
        return None


def _read_project_page(
    *, session: Session, principal: Principal, key: str, cost_days: int
) -> tuple[
    ProjectSettings, list[RepositoryRow], list[RecentRun], overview.Overview, dict[str, str]
]:
    settings = projects.get_settings(session=session, actor=principal, project_key=key)
    policies = run_requests.tool_policies(session=session, actor=principal, project_key=key)
    repos = repositories.list_repositories(session=session, actor=principal, project_key=key)
    runs = projects.recent_runs(session=session, actor=principal, project_key=key)
    # The same figures as the Overview, for this project alone (get_settings checked that the
    # caller may see it).
    figures = overview.build_overview(session=session, project_ids=[settings.id], days=cost_days)
    return settings, repos, runs, figures, policies


def _project_page(
    principal: Principal, key: str, cost_days: int = 14
) -> tuple[
    ProjectSettings, list[RepositoryRow], list[RecentRun], list[CostRow], str, dict[str, str]
]:
    settings, repos, runs, figures, policies = in_transaction(
        _read_project_page, principal=principal, key=key, cost_days=cost_days
    )
    rows = [
        CostRow(
            day=day.day,
            runs=day.succeeded + day.failed + day.canceled + day.active,
            cost=fmt.money(day.cost_usd),
            cost_value=round(day.cost_usd, 6),
        )
        for day in figures.days
    ]
    total = fmt.money(sum(day.cost_usd for day in figures.days))
    return settings, repos, runs, rows, total, policies
