"""The Overview page's state: the viewer's figures, fetched from the overview service.

Only projects the signed-in person may see count (platform admins: all), resolved on the server
at every load; the page refreshes itself every REFRESH_SECONDS while it is open.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import reflex as rx
from sqlmodel import Session

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.authorization import Principal
from codexk8s.services import overview
from codexk8s.services.agent_runs import visible_projects
from codexk8s.services.overview import DayCount, SlotUse, Usage
from codexk8s.web.state.auth import AuthState

_log = logging.getLogger(__name__)
REFRESH_SECONDS = 15
NO_RATE = "n/a"
# A tab left open keeps refreshing at most this long; reopening the page starts again.
MAX_REFRESH_SECONDS = 3600


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
    _refreshing: bool = False

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
    async def load_overview(self) -> rx.event.EventHandler | None:
        """`on_load` of the Overview page: figures now, then a bounded background refresh."""
        await self._reload()
        if not self._refreshing:
            return OverviewState.keep_fresh

    @rx.event(background=True)
    async def keep_fresh(self) -> None:
        async with self:
            if self._refreshing:
                return
            self._refreshing = True
        try:
            waited = 0
            while waited < MAX_REFRESH_SECONDS:
                await asyncio.sleep(REFRESH_SECONDS)
                waited += REFRESH_SECONDS
                async with self:
                    if self.router.page.path not in ("/", "/index"):
                        return
                    await self._reload()
        finally:
            async with self:
                self._refreshing = False
