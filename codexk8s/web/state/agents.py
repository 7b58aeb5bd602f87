"""The Agents page: the agent roster with its settings, and the prompt templates per stage.

Everyone signed in may look; only platform admins change settings or templates. Every handler
resolves the session again and goes through the services, which check the action on the server;
the page hiding its controls from others is a courtesy, not the protection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import reflex as rx

from codexk8s.domain import prompts
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.prompts import Comment, DiffLine, PromptContext, TemplateError
from codexk8s.errors import CodexK8sError
from codexk8s.services import agents, prompt_templates
from codexk8s.services.agents import AgentRow
from codexk8s.services.prompt_templates import TemplateVersion
from codexk8s.services.transactions import in_transaction
from codexk8s.web.state.actions import attempt
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter

SCOPES: list[str] = list(prompts.SCOPES)
KINDS: list[str] = list(prompts.KINDS)
SIGNED_OUT = "Your session has ended; sign in again."

# What the preview fills the placeholders with, so an editor sees the prompt as an agent would.
SAMPLE_CONTEXT = PromptContext(
    repository="octo-org/octo-repo",
    issue_number=42,
    issue_title="Add a /healthz endpoint",
    issue_body="The load balancer needs a health check that answers 200 when the app is up.",
    stage="dev",
    issue_labels=("run:dev", "enhancement"),
    comments=(Comment("octocat", "Please keep it free of database calls."),),
    pr_number=43,
)


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version in the history list (the bodies stay on the server)."""

    id: int
    version: int
    author: str
    created: str
    is_current: bool


class AgentsState(rx.State):
    is_loading: bool = True
    is_admin: bool = False
    error: str = ""
    notice: str = ""

    roster: list[AgentRow] = []
    editing_key: str = ""
    edit_engine: str = "codex"
    edit_image: str = ""
    edit_command: str = ""
    edit_timeout: str = ""
    edit_model: str = ""

    scope: str = "dev"
    kind: str = "work"
    view: str = "edit"
    current_version: int = 0
    current_body: str = ""
    draft: str = ""
    versions: list[VersionRow] = []
    diff_title: str = ""
    version_diff: list[DiffLine] = []

    _bodies: dict[int, tuple[int, str]] = {}  # template id → (version, body)

    # --- derived ----------------------------------------------------------------------------------

    @rx.var(cache=True)
    def is_dirty(self) -> bool:
        return self.draft != self.current_body

    @rx.var(cache=True)
    def draft_diff(self) -> list[DiffLine]:
        return prompts.diff_lines(
            self.current_body, self.draft, old_name=f"version {self.current_version}",
            new_name="your draft",
        )  # fmt: skip

    @rx.var(cache=True)
    def draft_error(self) -> str:
        try:
            prompts.validate_template(self.draft)
        except TemplateError as exc:
            return str(exc)
        return ""

    @rx.var(cache=True)
    def preview(self) -> str:
        try:
            return prompts.render(self.draft, SAMPLE_CONTEXT)
        except TemplateError:
            return self.draft

    # --- plumbing ---------------------------------------------------------------------------------

    async def _principal(self) -> tuple[Principal, str] | None:
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.roster, self.versions, self.version_diff = [], [], []
            self.current_body = self.draft = ""
            self.is_admin, self.error, self.notice = False, SIGNED_OUT, ""
            return None
        self.is_admin = is_allowed(principal, Action.MANAGE_PROMPTS)
        return principal, auth.email

    async def _reload_roster(self) -> None:
        self.roster = await asyncio.to_thread(in_transaction, agents.list_roster)

    async def _reload_template(self, *, keep_draft: bool = False) -> None:
        versions: list[TemplateVersion] = await asyncio.to_thread(
            in_transaction, prompt_templates.history, scope=self.scope, kind=self.kind
        )
        self._bodies = {v.id: (v.version, v.body) for v in versions}
        current = versions[0] if versions else None
        self.current_version = current.version if current else 0
        self.current_body = current.body if current else ""
        if not keep_draft:
            self.draft = self.current_body
        self.versions = [
            VersionRow(
                id=v.id,
                version=v.version,
                author=v.author,
                created=f"{v.created_at:%Y-%m-%d %H:%M} UTC",
                is_current=v is current,
            )
            for v in versions
        ]
        self.diff_title, self.version_diff = "", []

    # --- page load and template selection ---------------------------------------------------------

    @rx.event
    async def load_agents(self) -> None:
        """`on_load` of the Agents page."""
        self.error = self.notice = ""
        self.is_loading = True
        yield
        try:
            if await self._principal() is not None:
                await self._reload_roster()
                await self._reload_template()
        except CodexK8sError as exc:
            self.error = str(exc)
        finally:
            self.is_loading = False

    @rx.event
    async def select_scope(self, scope: str) -> None:
        await self._select(scope, self.kind)

    @rx.event
    async def select_kind(self, kind: str) -> None:
        await self._select(self.scope, kind)

    async def _select(self, scope: str, kind: str) -> None:
        self.error = self.notice = ""
        if scope not in SCOPES or kind not in KINDS:
            self.error = f"There is no {kind} template for {scope}."
            return
        if self.is_admin and self.draft != self.current_body:
            # Switching would throw the draft away; the picker snaps back to the open template.
            self.error = (
                f"You have unsaved changes to {self.scope}/{self.kind}: save or discard them "
                "before opening another template."
            )
            return
        if await self._principal() is None:
            return
        self.scope, self.kind, self.view = scope, kind, "edit"
        await self._reload_template()

    set_draft = field_setter("draft")
    set_view = field_setter("view")

    @rx.event
    def discard_draft(self) -> None:
        self.draft = self.current_body
        self.notice = self.error = ""

    # --- template changes -------------------------------------------------------------------------

    @rx.event
    async def save_template(self) -> None:
        found = await self._principal()
        if found is None:
            return
        ok, saved = await attempt(
            self, in_transaction, prompt_templates.save_version, actor=found[0],
            scope=self.scope, kind=self.kind, body=self.draft,
            base_version=self.current_version or None,
        )  # fmt: skip
        if not ok:
            return
        self.notice = f"Saved {self.scope}/{self.kind} as version {saved.version}."
        await self._reload_template()

    @rx.event
    async def show_version_diff(self, template_id: int) -> None:
        """The diff of one version against the version before it."""
        self.error = ""
        if template_id not in self._bodies:
            self.error = "That version is no longer listed; reload the page."
            return
        version, body = self._bodies[template_id]
        older = {v: b for v, b in self._bodies.values() if v < version}
        if not older:
            self.diff_title = f"Version {version} is the first version."
            self.version_diff = []
            return
        previous = max(older)
        self.diff_title = f"Version {version} against version {previous}"
        self.version_diff = prompts.diff_lines(
            older[previous], body, old_name=f"version {previous}", new_name=f"version {version}"
        )

    @rx.event
    async def restore_version(self, template_id: int) -> None:
        found = await self._principal()
        if found is None:
            return
        ok, saved = await attempt(
            self, in_transaction, prompt_templates.restore, actor=found[0], template_id=template_id
        )
        if not ok:
            return
        restored_from = self._bodies.get(template_id, (0, ""))[0]
        self.notice = (
            f"Restored version {restored_from} of {self.scope}/{self.kind} "
            f"as version {saved.version}."
        )
        await self._reload_template()

    # --- agent settings ---------------------------------------------------------------------------

    @rx.event
    def start_edit_agent(self, key: str) -> None:
        row = next((r for r in self.roster if r.key == key), None)
        if row is None:
            return
        self.error = self.notice = ""
        self.editing_key = key
        self.edit_engine = row.engine
        self.edit_image, self.edit_command = row.image, row.command
        self.edit_timeout, self.edit_model = f"{row.timeout_minutes:g}", row.model

    @rx.event
    def cancel_edit_agent(self) -> None:
        self.editing_key = ""

    @rx.event
    def set_edit_engine(self, value: str) -> None:
        if value in agents.ENGINES:
            self.edit_engine = value

    set_edit_image = field_setter("edit_image")
    set_edit_command = field_setter("edit_command")
    set_edit_timeout = field_setter("edit_timeout")
    set_edit_model = field_setter("edit_model")

    @rx.event
    async def save_agent(self) -> None:
        found = await self._principal()
        if found is None:
            return
        try:
            timeout = float(self.edit_timeout)
        except ValueError:
            self.error, self.notice = "The timeout must be a number of minutes.", ""
            return
        before = next((r for r in self.roster if r.key == self.editing_key), None)
        ok, saved = await attempt(
            self, in_transaction, agents.update_agent, actor=found[0], key=self.editing_key,
            engine=self.edit_engine, image=self.edit_image, command=self.edit_command,
            timeout_minutes=timeout, model=self.edit_model,
        )  # fmt: skip
        if not ok:
            return
        self.notice = (
            f"No changes to save for {self.editing_key}."
            if saved == before
            else f"Saved the settings of {self.editing_key}."
        )
        self.editing_key = ""
        await self._reload_roster()
