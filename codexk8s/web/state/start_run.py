"""The "Start run" dialog (Runs page and a project's page): repository, issue or pull request
number, stage. It calls `run_start.start_run_as`, the same service as `POST /api/v1/runs`, which
checks on the server that the person may start runs in that project."""

from __future__ import annotations

import asyncio

import reflex as rx

from codexk8s import urls
from codexk8s.domain.stages import REVIEW_STAGE, Stage
from codexk8s.errors import CodexK8sError
from codexk8s.services import run_start
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter

STAGES: list[str] = [stage.value for stage in Stage] + [REVIEW_STAGE]


class StartRunState(rx.State):
    """Which projects the person may start runs in, and the dialog's fields."""

    projects: list[str] = []
    repositories: list[str] = []
    project: str = ""
    repository: str = ""
    number: str = ""
    stage: str = "dev"
    error: str = ""
    is_open: bool = False
    is_starting: bool = False
    # On a project's page: that project, when the person may start runs in it ("" otherwise,
    # and then the page shows no button even if they may start runs elsewhere).
    page_project: str = ""

    _targets: dict[str, list[str]] = {}

    @rx.var
    def can_start(self) -> bool:
        return len(self.projects) > 0

    def _choose(self, project: str) -> None:
        self.project = project if project in self._targets else ""
        self.repositories = list(self._targets.get(self.project, []))
        self.repository = self.repositories[0] if self.repositories else ""

    @rx.event
    async def load_targets(self) -> None:
        """`on_load` of the pages with the button: the projects this person may start runs in
        (none when signed out or read-only, and then the button is not shown)."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        self.is_open, self.error = False, ""
        if principal is None:
            self.projects, self._targets, self.page_project = [], {}, ""
            return
        targets = await asyncio.to_thread(run_start.start_targets, principal=principal)
        self._targets = {t.project_key: t.repositories for t in targets}
        self.projects = list(self._targets)
        page_key = str(self.router.page.params.get("project_key", "") or "")
        self.page_project = page_key if page_key in self._targets else ""
        if page_key in self._targets:
            self._choose(page_key)
        elif self.project not in self._targets:
            self._choose(self.projects[0] if self.projects else "")
        else:
            self._choose(self.project)

    @rx.event
    def open_dialog(self) -> None:
        self.error, self.is_open = "", True
        if self.page_project:
            self._choose(self.page_project)
        elif self.project not in self._targets and self.projects:
            self._choose(self.projects[0])

    @rx.event
    def set_open(self, is_open: bool) -> None:
        self.is_open = is_open

    @rx.event
    def set_project(self, value: str) -> None:
        self._choose(value)

    set_repository = field_setter("repository")

    @rx.event
    def set_number(self, value: str) -> None:
        self.number = value.strip().lstrip("#")[:12]

    @rx.event
    def set_stage(self, value: str) -> None:
        self.stage = value if value in STAGES else "dev"

    @rx.event
    async def start(self):
        """Start the run and open its page; every refusal is said in the dialog."""
        if not self.repository:
            self.error = "Attach a repository to the project first (its page, Repositories)."
            return
        if not self.number.isdigit() or int(self.number) < 1:
            self.error = "Give the number of the issue (or, for review, the pull request)."
            return
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.error = "Your session has ended; sign in again."
            return
        self.is_starting, self.error = True, ""
        yield
        try:
            run_id = await asyncio.to_thread(
                run_start.start_run_as, principal=principal,
                project_key=self.project, repository=self.repository,
                issue=int(self.number), stage=self.stage,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.error = str(exc)
            return
        finally:
            self.is_starting = False
        self.is_open, self.number = False, ""
        yield rx.redirect(urls.run_page(run_id))
