"""The dashboard's Overview figures: what is running now and how the last two weeks went.

Everything is aggregated in SQL (GROUP BY, works on PostgreSQL and SQLite) over the projects the
viewer may see; only the duration percentiles are computed here, over a bounded set of the most
recent finished runs, because SQLite has no percentile function.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from codexk8s.db.models import AgentRun, Project, Slot
from codexk8s.domain.runs import RunStatus
from codexk8s.domain.slots import SlotState

WINDOW_DAYS = 14
# Percentiles are taken over at most this many of the newest finished runs of the window, so the
# page stays fast however many runs there are; a larger sample would not move p50/p95 visibly.
DURATION_SAMPLE = 10_000

_RUNS: sa.Table = AgentRun.__table__  # type: ignore[attr-defined]
_PROJECTS: sa.Table = Project.__table__  # type: ignore[attr-defined]
_SLOTS: sa.Table = Slot.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SlotUse:
    project_key: str
    used: int
    total: int


@dataclass(frozen=True, slots=True)
class DayCount:
    """Runs created on one UTC day, by how they stand now, and what they cost."""

    day: str  # YYYY-MM-DD
    succeeded: int
    failed: int
    canceled: int
    active: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class StageDuration:
    """How long finished runs of one stage took (started → finished), in seconds."""

    stage: str
    runs: int
    p50_seconds: float
    p95_seconds: float


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and cost of the window's runs for one project or agent."""

    name: str
    runs: int
    tokens_input: int
    tokens_output: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Overview:
    active_runs: int  # starting or running
    queued_runs: int  # pending, waiting for a slot
    total_runs: int  # ever, in the visible projects: 0 means "nothing yet"
    window_runs: int
    success_rate: float | None  # succeeded / finished in the window; None when none finished
    slot_use: list[SlotUse]
    days: list[DayCount]
    durations: list[StageDuration]
    usage_by_project: list[Usage]
    usage_by_agent: list[Usage]


def percentile(sorted_values: list[float], q: float) -> float:
    """The Q-quantile of SORTED_VALUES with linear interpolation between closest ranks (as
    PostgreSQL's percentile_cont does); 0 for no values."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def _day_of(column: ColumnElement[datetime], dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of a timestamp as text YYYY-MM-DD."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLite stores the UTC wall time as ISO text; date() keeps its first ten characters.
    return sa.func.date(column)


def _day_text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _in_projects(
    query: sa.Select[tuple[object, ...]], column: sa.Column[int], ids: Collection[int] | None
) -> sa.Select[tuple[object, ...]]:
    return query if ids is None else query.where(column.in_(list(ids)))


def build_overview(
    *,
    session: Session,
    project_ids: Collection[int] | None,
    now: datetime | None = None,
    days: int = WINDOW_DAYS,
) -> Overview:
    """The Overview of the runs of PROJECT_IDS (None: every project), for the DAYS UTC days that
    end today."""
    now = now or datetime.now(UTC)
    first_day = now.astimezone(UTC).date() - timedelta(days=days - 1)
    since = datetime.combine(first_day, time.min, tzinfo=UTC)
    dialect = session.get_bind().dialect.name
    runs = _RUNS.c
    in_window = runs.created_at >= since

    def scoped(query: sa.Select[tuple[object, ...]]) -> sa.Select[tuple[object, ...]]:
        return _in_projects(query, runs.project_id, project_ids)

    by_status: dict[str, int] = {
        status: int(count)
        for status, count in session.execute(
            scoped(sa.select(runs.status, sa.func.count()).group_by(runs.status))
        ).all()
    }
    total_runs = int(sum(by_status.values()))
    queued = int(by_status.get(RunStatus.PENDING.value, 0))
    active = int(
        by_status.get(RunStatus.STARTING.value, 0) + by_status.get(RunStatus.RUNNING.value, 0)
    )

    slot_rows = session.execute(
        _in_projects(
            sa.select(
                _PROJECTS.c.key,
                sa.func.count(_SLOTS.c.id),
                sa.func.sum(sa.case((_SLOTS.c.state != SlotState.FREE.value, 1), else_=0)),
            )
            .select_from(_PROJECTS.join(_SLOTS, _SLOTS.c.project_id == _PROJECTS.c.id))
            .group_by(_PROJECTS.c.key)
            .order_by(_PROJECTS.c.key),
            _PROJECTS.c.id,
            project_ids,
        )
    ).all()
    slot_use = [SlotUse(project_key=k, used=int(u or 0), total=int(t)) for k, t, u in slot_rows]

    day = _day_of(runs.created_at, dialect).label("day")
    day_rows = session.execute(
        scoped(
            sa.select(day, runs.status, sa.func.count(), sa.func.sum(runs.cost_usd))
            .where(in_window)
            .group_by(day, runs.status)
        )
    ).all()
    per_day: dict[str, dict[str, float]] = {}
    for day_value, status, count, cost in day_rows:
        bucket = per_day.setdefault(_day_text(day_value), {})
        key = status if status in ("succeeded", "failed", "canceled") else "active"
        bucket[key] = bucket.get(key, 0) + int(count)
        bucket["cost"] = bucket.get("cost", 0.0) + float(cost or 0)
    day_list = []
    for offset in range(days):
        text = (first_day + timedelta(days=offset)).isoformat()
        bucket = per_day.get(text, {})
        day_list.append(
            DayCount(
                day=text,
                succeeded=int(bucket.get("succeeded", 0)),
                failed=int(bucket.get("failed", 0)),
                canceled=int(bucket.get("canceled", 0)),
                active=int(bucket.get("active", 0)),
                cost_usd=round(bucket.get("cost", 0.0), 6),
            )
        )
    succeeded = sum(d.succeeded for d in day_list)
    finished = succeeded + sum(d.failed + d.canceled for d in day_list)
    window_runs = finished + sum(d.active for d in day_list)

    sample = session.execute(
        scoped(
            sa.select(runs.stage, runs.started_at, runs.finished_at)
            .where(in_window, runs.started_at.is_not(None), runs.finished_at.is_not(None))
            .order_by(runs.finished_at.desc())
            .limit(DURATION_SAMPLE)
        )
    ).all()
    per_stage: dict[str, list[float]] = {}
    for stage, started, ended in sample:
        seconds = max((_aware(ended) - _aware(started)).total_seconds(), 0.0)
        per_stage.setdefault(stage, []).append(seconds)
    durations = []
    for stage in sorted(per_stage):
        values = sorted(per_stage[stage])
        durations.append(
            StageDuration(
                stage=stage,
                runs=len(values),
                p50_seconds=round(percentile(values, 0.5), 1),
                p95_seconds=round(percentile(values, 0.95), 1),
            )
        )

    def usage(name_column: ColumnElement[str], joined: bool) -> list[Usage]:
        source = _RUNS.join(_PROJECTS, _PROJECTS.c.id == runs.project_id) if joined else _RUNS
        rows = session.execute(
            scoped(
                sa.select(
                    name_column,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(runs.tokens_input), 0),
                    sa.func.coalesce(sa.func.sum(runs.tokens_output), 0),
                    sa.func.coalesce(sa.func.sum(runs.cost_usd), Decimal(0)),
                )
                .select_from(source)
                .where(in_window)
                .group_by(name_column)
                .order_by(name_column)
            )
        ).all()
        return [
            Usage(name=n, runs=int(c), tokens_input=int(i), tokens_output=int(o),
                  cost_usd=round(float(cost), 6))
            for n, c, i, o, cost in rows
        ]  # fmt: skip

    return Overview(
        active_runs=active,
        queued_runs=queued,
        total_runs=total_runs,
        window_runs=window_runs,
        success_rate=round(succeeded / finished, 4) if finished else None,
        slot_use=slot_use,
        days=day_list,
        durations=durations,
        usage_by_project=usage(_PROJECTS.c.key, True),
        usage_by_agent=usage(runs.agent_key, False),
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
