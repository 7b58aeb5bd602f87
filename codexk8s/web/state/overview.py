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

import reflex as rx
from sqlmodel import Session

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.authorization import Principal
from codexk8s.services import overview
from codexk8s.services.agent_runs import visible_projects
from codexk8s.services.overview import DayCount, SlotUse, Usage
from codexk8s.web import live
from codexk8s.web.state.auth import AuthState

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
            tokens_text=f"{u.tokens_input:,} in / {u.tokens_output:,} out",
            cost_usd=u.cost_usd, cost_text=f"${u.cost_usd:,.2f}",
        )
        for u in rows
    ]  # fmt: skip


def _load(principal: Principal) -> overview.Overview:
    with session_scope(get_engine()) as session:
        return _build(session, principal)


def _build(session: Session, principal: Principal) -> overview.Overview:
    ids = (
        None
        if principal.is_platform_admin
        else [p.id for p in visible_projects(session=session, principal=principal)]
    )
    return overview.build_overview(session=session, project_ids=ids)


def _duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


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
    days: list[DayCount] = []
    durations: list[DurationRow] = []
    usage_by_project: list[UsageRow] = []
    usage_by_agent: list[UsageRow] = []
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

    def _show(self, figures: overview.Overview) -> None:
        self.active_runs, self.queued_runs = figures.active_runs, figures.queued_runs
        self.has_runs, self.window_runs = figures.has_runs, figures.window_runs
        rate = figures.success_rate
        self.success_rate_text = NO_RATE if rate is None else f"{rate * 100:.1f}%"
        self.slot_use = figures.slot_use
        self.days = figures.days
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
            figures = await asyncio.to_thread(_load, principal)
        except Exception:  # shown to the person in plain words, the details go to the log
            _log.exception("overview failed")
            self.error = "The overview could not be loaded; try again in a moment."
        else:
            self.error = ""
            self._show(figures)
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
