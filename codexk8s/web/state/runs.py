"""The Runs page: the runs a viewer may see, filtered, sorted and paged by keyset, kept live.

Every handler resolves the session again and narrows the query to the projects the viewer may
see (`agent_runs.visible_projects`); a project filter naming another project is refused, not
widened. Live changes arrive as a bump of the watched `ProjectLive` token (see web/live.py) and
reload the page the viewer is on, from the database.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import reflex as rx
from sqlmodel import Session

from codexk8s import urls
from codexk8s.domain.authorization import Principal
from codexk8s.domain.explanations import reason_words
from codexk8s.domain.runs import RunStatus
from codexk8s.domain.stages import AgentRole, Stage
from codexk8s.errors import CodexK8sError
from codexk8s.services import agent_runs
from codexk8s.services.agent_runs import Cursor, RunFilters, RunRow
from codexk8s.services.transactions import in_transaction
from codexk8s.web import live
from codexk8s.web.components import formatters as fmt
from codexk8s.web.state.auth import AuthState

ANY = "all"  # the "no filter" choice (a select item cannot have an empty value)
PAGE_SIZE = 25
SIGNED_OUT = "Your session has ended; sign in again."
STATUSES: list[str] = [status.value for status in RunStatus]
STAGES: list[str] = [stage.value for stage in Stage]
AGENTS: list[str] = [role.value for role in AgentRole]


@dataclass(frozen=True, slots=True)
class RunView:
    """One row of the table, formatted for display."""

    id: int
    href: str
    project_key: str
    repository: str
    target: str  # "#42" (issue) or "PR #7"
    title: str
    stage: str
    agent: str
    status: str
    status_reason: str  # in words
    created: str  # the absolute time (hover)
    created_ago: str  # "5 min ago"
    duration: str
    attempt: str  # "attempt 2 of #26", or ""
    parent_href: str


def format_duration(seconds: float) -> str:
    return fmt.duration(seconds)


def run_view(row: RunRow, now: datetime) -> RunView:
    duration = fmt.span(row.started_at, row.finished_at, now) or "-"
    repository = row.repository or ""
    if row.pr_number is not None:
        target = f"{repository} PR #{row.pr_number}".strip()
    elif row.issue_number is not None:
        target = f"{repository}#{row.issue_number}"
    else:
        target = repository
    parent = row.parent_run_id
    return RunView(
        id=row.id, href=f"/runs/{row.id}", project_key=row.project_key,
        repository=repository, target=target, title=row.issue_title or "",
        stage=row.stage, agent=row.agent_key, status=row.status,
        status_reason=reason_words(row.status_reason),
        created=fmt.timestamp(row.created_at), created_ago=fmt.relative(row.created_at, now),
        duration=duration,
        attempt=f"attempt {row.attempt} of #{parent}" if parent is not None else "",
        parent_href=f"/runs/{parent}" if parent is not None else "",
    )  # fmt: skip


def _load_page(
    *,
    session: Session,
    principal: Principal,
    project_key: str | None,
    filters: RunFilters,
    newest_first: bool,
    after: Cursor | None,
    before: Cursor | None,
) -> tuple[list[str], int | None, agent_runs.RunPage, int]:
    """The viewer's project keys, the filtered project's id, one page and how many runs match,
    in one transaction."""
    visible = agent_runs.visible_projects(session=session, principal=principal)
    by_key = {p.key: p.id for p in visible}
    project_id = None
    if project_key is not None:
        if project_key not in by_key:
            raise CodexK8sError(f"no project with key {project_key!r}")
        project_id = by_key[project_key]
    chosen = RunFilters(
        project_id=project_id, status=filters.status, stage=filters.stage,
        agent_key=filters.agent_key, text=filters.text,
    )  # fmt: skip
    page = agent_runs.search_page(
        session=session, project_ids=list(by_key.values()), filters=chosen,
        limit=PAGE_SIZE, newest_first=newest_first, after=after, before=before,
    )  # fmt: skip
    total = agent_runs.count_runs(
        session=session, project_ids=list(by_key.values()), filters=chosen
    )
    return sorted(by_key), project_id, page, total


class RunsState(rx.State):
    runs: list[RunView] = []
    project_keys: list[str] = []
    project: str = ANY
    status: str = ANY
    stage: str = ANY
    agent: str = ANY
    search: str = ""
    newest_first: bool = True
    has_next: bool = False
    has_previous: bool = False
    is_loading: bool = True
    is_signed_out: bool = False
    error: str = ""
    total: int = 0

    # Where the page shown starts: ("after" | "before", encoded cursor), or ("", "") for the
    # first page. A live refresh reloads the same place.
    _anchor: tuple[str, str] = ("", "")
    _next: str = ""
    _previous: str = ""
    _seen_version: int = -1

    @rx.var
    def is_filtered(self) -> bool:
        return (
            any(v != ANY for v in (self.project, self.status, self.stage, self.agent))
            or self.search.strip() != ""
        )

    @rx.var
    def total_text(self) -> str:
        noun = "run" if self.total == 1 else "runs"
        return f"{self.total:,} {noun}" + (" match these filters" if self.is_filtered else "")

    @rx.var
    def sort_order(self) -> str:
        return "newest" if self.newest_first else "oldest"

    def _filters(self) -> RunFilters:
        def chosen(value: str) -> str | None:
            return None if value == ANY else value

        return RunFilters(
            status=chosen(self.status), stage=chosen(self.stage), agent_key=chosen(self.agent),
            text=self.search.strip() or None,
        )  # fmt: skip

    async def _reload(self, anchor: tuple[str, str] | None = None) -> None:
        """Load the page at ANCHOR (default: the current one) for the signed-in viewer."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self.runs, self.project_keys, self.has_next, self.has_previous = [], [], False, False
            self.error, self.is_loading, self.is_signed_out, self.total = SIGNED_OUT, False, True, 0
            return
        self.is_signed_out = False
        kind, token = anchor if anchor is not None else self._anchor
        try:
            cursor = Cursor.decode(token) if token else None
            keys, project_id, page, total = await asyncio.to_thread(
                in_transaction, _load_page, principal=principal,
                project_key=None if self.project == ANY else self.project,
                filters=self._filters(), newest_first=self.newest_first,
                after=cursor if kind == "after" else None,
                before=cursor if kind == "before" else None,
            )  # fmt: skip
        except CodexK8sError as exc:
            self.runs, self.has_next, self.has_previous = [], False, False
            self.error, self.is_loading = str(exc), False
            return
        if kind and (not page.rows or (kind == "before" and page.previous_cursor is None)):
            # Back at the start (a short page when runs were added meanwhile), or the page
            # emptied under us: show the first page, full.
            await self._reload(("", ""))
            return
        self.project_keys, self.error, self.total = keys, "", total
        self._anchor = (kind, token)
        now = datetime.now(UTC)
        self.runs = [run_view(row, now) for row in page.rows]
        self._next = page.next_cursor.encode() if page.next_cursor else ""
        self._previous = page.previous_cursor.encode() if page.previous_cursor else ""
        self.has_next, self.has_previous = bool(self._next), bool(self._previous)
        self.is_loading = False
        token = live.project_token(project_id)
        self._seen_version = await live.watch(self, live.ProjectLive, token)

    def _query(self) -> str:
        """The filters as the page's query string, so a filtered list can be shared."""
        pairs = [
            (name, value)
            for name, value in (
                ("project", self.project), ("status", self.status), ("stage", self.stage),
                ("agent", self.agent),
            )
            if value != ANY
        ]  # fmt: skip
        if self.search.strip():
            pairs.append(("q", self.search.strip()))
        if not self.newest_first:
            pairs.append(("sort", "oldest"))
        return urlencode(pairs)

    def _url_script(self) -> rx.event.EventSpec:
        query = self._query()
        url = urls.RUNS + (f"?{query}" if query else "")
        return rx.call_script(f"window.history.replaceState(null, '', {json.dumps(url)})")

    def _read_query(self) -> None:
        params = self.router.page.params

        def one(name: str) -> str:
            value = params.get(name, "")
            return str(value[0] if isinstance(value, list) and value else value or "")

        self.project = one("project")[:100] or ANY
        self.status = one("status") if one("status") in STATUSES else ANY
        self.stage = one("stage") if one("stage") in STAGES else ANY
        self.agent = one("agent") if one("agent") in AGENTS else ANY
        self.search = one("q")[:200]
        self.newest_first = one("sort") != "oldest"

    @rx.event
    async def load_runs(self) -> None:
        """`on_load` (and after a reconnect): the filters in the URL, their first page, from the
        database. A signed-out visitor is asked to sign in (the page shows no list)."""
        self.is_loading = True
        self._read_query()
        await self._reload(("", ""))

    @rx.event
    async def refresh_live(self, version: int) -> None:
        """The watched project changed (the live trigger remounted): reload the page shown."""
        if version == self._seen_version:
            return
        await self._reload()

    async def _first_page(self) -> rx.event.EventSpec:
        await self._reload(("", ""))
        return self._url_script()

    @rx.event
    async def set_project(self, value: str):
        self.project = value
        return await self._first_page()

    @rx.event
    async def set_status(self, value: str):
        self.status = value if value in STATUSES else ANY
        return await self._first_page()

    @rx.event
    async def set_stage(self, value: str):
        self.stage = value if value in STAGES else ANY
        return await self._first_page()

    @rx.event
    async def set_agent(self, value: str):
        self.agent = value if value in AGENTS else ANY
        return await self._first_page()

    @rx.event
    async def set_search(self, value: str):
        self.search = value[:200]
        return await self._first_page()

    @rx.event
    async def set_sort(self, value: str):
        self.newest_first = value != "oldest"
        return await self._first_page()

    @rx.event
    async def clear_filters(self):
        self.project = self.status = self.stage = self.agent = ANY
        self.search = ""
        return await self._first_page()

    @rx.event
    async def next_page(self) -> None:
        if self._next:
            await self._reload(("after", self._next))

    @rx.event
    async def previous_page(self) -> None:
        if self._previous:
            await self._reload(("before", self._previous))
