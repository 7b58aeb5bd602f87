"""The Overview page's state: the viewer's figures, fetched from the overview service.

Only projects the signed-in person may see count (platform admins: all), resolved on the server
at every load. The page is kept current by pushes, not polling: it watches every project's run
changes (`live.ALL_PROJECTS`, see web/live.py) and reloads its figures on a change, at most once
per MIN_REFRESH_SECONDS, since the figures are aggregates over the whole window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import reflex as rx
from sqlmodel import Session

from codexk8s.domain.authorization import Principal
from codexk8s.services import agent_runs, overview
from codexk8s.services.agent_runs import RunFilters, visible_projects
from codexk8s.services.overview import SlotUse, Usage
from codexk8s.services.transactions import in_transaction
from codexk8s.web import live
from codexk8s.web.components import formatters as fmt
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.runs import RunView, run_view

LIST_SIZE = 5  # running and recently failed runs listed
_log = logging.getLogger(__name__)
MIN_REFRESH_SECONDS = 5.0
NO_RATE = "n/a"


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage with its figures preformatted for the text table."""

    name: str
    runs: int
    tokens: int
    tokens_text: str
    cost_usd: float
    cost_text: str


def _usage_rows(rows: list[Usage]) -> list[UsageRow]:
    return [
        UsageRow(
            name=u.name, runs=u.runs, tokens=u.tokens_input + u.tokens_output,
            tokens_text=f"{fmt.number(u.tokens_input)} in / {fmt.number(u.tokens_output)} out",
            cost_usd=u.cost_usd, cost_text=fmt.money(u.cost_usd),
        )
        for u in rows
    ]  # fmt: skip


def _load(
    *, session: Session, principal: Principal
) -> tuple[overview.Overview, list[RunView], list[RunView]]:
    """The figures, the runs at work now and the runs that failed last."""
    figures = _build(session, principal)
    ids = [p.id for p in visible_projects(session=session, principal=principal)]
    now = datetime.now(UTC)

    def newest(status: str, limit: int) -> list[RunView]:
        page = agent_runs.search_page(
            session=session, project_ids=ids, filters=RunFilters(status=status), limit=limit
        )
        return [run_view(row, now) for row in page.rows]

    at_work = newest("running", LIST_SIZE) + newest("starting", LIST_SIZE)
    failed = newest("failed", LIST_SIZE)
    return figures, sorted(at_work, key=lambda r: -r.id)[:LIST_SIZE], failed


def _build(session: Session, principal: Principal) -> overview.Overview:
    ids = (
        None
        if principal.is_platform_admin
        else [p.id for p in visible_projects(session=session, principal=principal)]
    )
    return overview.build_overview(session=session, project_ids=ids)


def _duration_text(seconds: float) -> str:
    return fmt.duration(seconds)


@dataclass(frozen=True, slots=True)
class DayRow:
    """One day of the window, with its cost as money."""

    day: str
    succeeded: int
    failed: int
    canceled: int
    active: int
    cost_usd: float
    cost_text: str


@dataclass(frozen=True, slots=True)
class DurationRow:
    stage: str
    runs: int
    p50_seconds: float
    p95_seconds: float
    p50_text: str
    p95_text: str


class OverviewState(rx.State):
    is_loaded: bool = False
    error: str = ""
    active_runs: int = 0
    queued_runs: int = 0
    has_runs: bool = False
    window_runs: int = 0
    success_rate_text: str = NO_RATE
    slot_use: list[SlotUse] = []
    days: list[DayRow] = []
    durations: list[DurationRow] = []
    usage_by_project: list[UsageRow] = []
    usage_by_agent: list[UsageRow] = []
    running_runs: list[RunView] = []
    failed_runs: list[RunView] = []
    _seen_version: int = 0
    _refreshed_at: float = 0.0  # time.monotonic() of the last reload
    _is_refresh_pending: bool = False

    @rx.var
    def slots_used(self) -> int:
        return sum(s.used for s in self.slot_use)

    @rx.var
    def slots_total(self) -> int:
        return sum(s.total for s in self.slot_use)

    def _clear(self) -> None:
        self.active_runs = self.queued_runs = self.window_runs = 0
        self.has_runs = False
        self.success_rate_text = NO_RATE
        self.slot_use, self.days, self.durations = [], [], []
        self.usage_by_project, self.usage_by_agent = [], []
        self.running_runs, self.failed_runs = [], []

    def _show(self, figures: overview.Overview) -> None:
        self.active_runs, self.queued_runs = figures.active_runs, figures.queued_runs
        self.has_runs, self.window_runs = figures.has_runs, figures.window_runs
        rate = figures.success_rate
        self.success_rate_text = NO_RATE if rate is None else f"{rate * 100:.1f}%"
        self.slot_use = figures.slot_use
        self.days = [
            DayRow(
                day=d.day, succeeded=d.succeeded, failed=d.failed, canceled=d.canceled,
                active=d.active, cost_usd=d.cost_usd, cost_text=fmt.money(d.cost_usd),
            )
            for d in figures.days
        ]  # fmt: skip
        self.durations = [
            DurationRow(
                stage=d.stage, runs=d.runs, p50_seconds=d.p50_seconds, p95_seconds=d.p95_seconds,
                p50_text=_duration_text(d.p50_seconds), p95_text=_duration_text(d.p95_seconds),
            )
            for d in figures.durations
        ]  # fmt: skip
        self.usage_by_project = _usage_rows(figures.usage_by_project)
        self.usage_by_agent = _usage_rows(figures.usage_by_agent)

    async def _reload(self) -> None:
        self._refreshed_at = time.monotonic()
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        if principal is None:
            self._clear()
            self.is_loaded = True
            return
        try:
            figures, at_work, failed = await asyncio.to_thread(
                in_transaction, _load, principal=principal
            )
        except Exception:  # shown to the person in plain words, the details go to the log
            _log.exception("overview failed")
            self.error = "The overview could not be loaded; try again in a moment."
        else:
            self.error = ""
            self._show(figures)
            self.running_runs, self.failed_runs = at_work, failed
        self.is_loaded = True

    @rx.event
    async def load_overview(self) -> None:
        """`on_load` of the Overview page: the figures now, and a link to every project's run
        changes for later."""
        await self._reload()
        self._seen_version = await live.watch(self, live.ProjectLive, live.ALL_PROJECTS)

    @rx.event
    async def refresh_live(self, version: int):
        """A run changed somewhere: reload now, or once MIN_REFRESH_SECONDS after the last
        reload when one was that recent (a burst of changes costs one reload)."""
        if version == self._seen_version:
            return None
        self._seen_version = version
        if time.monotonic() - self._refreshed_at >= MIN_REFRESH_SECONDS:
            await self._reload()
            return None
        if self._is_refresh_pending:
            return None
        self._is_refresh_pending = True
        return OverviewState.refresh_later

    @rx.event(background=True)
    async def refresh_later(self) -> None:
        async with self:
            wait = MIN_REFRESH_SECONDS - (time.monotonic() - self._refreshed_at)
        await asyncio.sleep(max(0.0, wait))
        async with self:
            self._is_refresh_pending = False
            if self.router.page.path in ("/", "/index"):
                await self._reload()
