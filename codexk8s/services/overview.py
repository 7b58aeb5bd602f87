"""The dashboard's Overview figures: what is running now and how the last two weeks went.

Everything is aggregated in SQL (GROUP BY, on PostgreSQL and SQLite alike) over the projects the
viewer may see. Duration percentiles come from PostgreSQL's percentile_cont; SQLite has no
percentile function, so there they are computed here over a bounded sample of the newest finished
runs. bench/overview.py times it with 100,000 runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from codexk8s.db.models import AgentRun, Project, Slot, table_of
from codexk8s.domain.runs import ACTIVE_STATUSES, RunStatus
from codexk8s.domain.slots import SlotState

WINDOW_DAYS = 14
# Percentiles are taken over at most this many of the newest finished runs of the window, so the
# page stays fast however many runs there are; a larger sample would not move p50/p95 visibly.
DURATION_SAMPLE = 10_000

_RUNS: sa.Table = table_of(AgentRun)
_PROJECTS: sa.Table = table_of(Project)
_SLOTS: sa.Table = table_of(Slot)


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
    has_runs: bool  # ever, in the visible projects: False means "nothing yet"
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

    active_counts = dict(
        session.execute(
            scoped(
                sa.select(runs.status, sa.func.count())
                .where(runs.status.in_([s.value for s in ACTIVE_STATUSES]))
                .group_by(runs.status)
            )
        ).all()
    )
    queued = int(active_counts.get(RunStatus.PENDING.value, 0))
    active = int(
        active_counts.get(RunStatus.STARTING.value, 0)
        + active_counts.get(RunStatus.RUNNING.value, 0)
    )
    has_runs = session.execute(scoped(sa.select(runs.id).limit(1))).first() is not None

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

    # One pass over the window's runs, grouped finely enough for every per-day, per-project and
    # per-agent figure; the groups (at most days x statuses x projects x agents) are summed here.
    day = _day_of(runs.created_at, dialect).label("day")
    groups = session.execute(
        scoped(
            sa.select(
                day,
                runs.status,
                runs.project_id,
                runs.agent_key,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(runs.tokens_input), 0),
                sa.func.coalesce(sa.func.sum(runs.tokens_output), 0),
                sa.func.coalesce(sa.func.sum(runs.cost_usd), 0),
            )
            .where(in_window)
            .group_by(day, runs.status, runs.project_id, runs.agent_key)
        )
    ).all()
    keys = dict(session.execute(sa.select(_PROJECTS.c.id, _PROJECTS.c.key)).all())
    per_day: dict[str, dict[str, float]] = {}
    by_project: dict[str, list[float]] = {}
    by_agent: dict[str, list[float]] = {}
    for day_value, status, project_id, agent, count, tokens_in, tokens_out, cost in groups:
        bucket = per_day.setdefault(_day_text(day_value), {})
        kind = status if status in ("succeeded", "failed", "canceled") else "active"
        bucket[kind] = bucket.get(kind, 0) + int(count)
        bucket["cost"] = bucket.get("cost", 0.0) + float(cost)
        for table, name in ((by_project, keys.get(project_id, "?")), (by_agent, agent)):
            totals = table.setdefault(name, [0, 0, 0, 0.0])
            totals[0] += int(count)
            totals[1] += int(tokens_in)
            totals[2] += int(tokens_out)
            totals[3] += float(cost)
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

    def usage(table: dict[str, list[float]]) -> list[Usage]:
        return [
            Usage(name=name, runs=int(t[0]), tokens_input=int(t[1]), tokens_output=int(t[2]),
                  cost_usd=round(t[3], 6))
            for name, t in sorted(table.items())
        ]  # fmt: skip

    durations = _durations(session, scoped, in_window, dialect)

    return Overview(
        active_runs=active,
        queued_runs=queued,
        has_runs=has_runs,
        window_runs=window_runs,
        success_rate=round(succeeded / finished, 4) if finished else None,
        slot_use=slot_use,
        days=day_list,
        durations=durations,
        usage_by_project=usage(by_project),
        usage_by_agent=usage(by_agent),
    )


def _durations(
    session: Session,
    scoped: Callable[[sa.Select[tuple[object, ...]]], sa.Select[tuple[object, ...]]],
    in_window: ColumnElement[bool],
    dialect: str,
) -> list[StageDuration]:
    """p50/p95 of started → finished per stage over the window's finished runs. PostgreSQL
    computes them (percentile_cont); elsewhere they are interpolated the same way here, over
    the newest DURATION_SAMPLE finished runs."""
    runs = _RUNS.c
    finished = sa.and_(in_window, runs.started_at.is_not(None), runs.finished_at.is_not(None))
    if dialect == "postgresql":
        seconds: ColumnElement[float] = sa.func.greatest(
            sa.extract("epoch", runs.finished_at - runs.started_at), 0
        )
        rows = session.execute(
            scoped(
                sa.select(
                    runs.stage,
                    sa.func.count(),
                    sa.func.percentile_cont(0.5).within_group(seconds),
                    sa.func.percentile_cont(0.95).within_group(seconds),
                )
                .where(finished)
                .group_by(runs.stage)
                .order_by(runs.stage)
            )
        ).all()
        return [
            StageDuration(stage=stage, runs=int(count), p50_seconds=round(float(p50), 1),
                          p95_seconds=round(float(p95), 1))
            for stage, count, p50, p95 in rows
        ]  # fmt: skip
    seconds = (sa.func.julianday(runs.finished_at) - sa.func.julianday(runs.started_at)) * 86400.0
    sample = session.execute(
        scoped(
            sa.select(runs.stage, seconds)
            .where(finished)
            .order_by(runs.finished_at.desc())
            .limit(DURATION_SAMPLE)
        )
    ).all()
    per_stage: dict[str, list[float]] = {}
    for stage, value in sample:
        per_stage.setdefault(stage, []).append(max(float(value), 0.0))
    result = []
    for stage in sorted(per_stage):
        values = sorted(per_stage[stage])
        result.append(
            StageDuration(
                stage=stage,
                runs=len(values),
                p50_seconds=round(percentile(values, 0.5), 1),
                p95_seconds=round(percentile(values, 0.95), 1),
            )
        )
    return result
