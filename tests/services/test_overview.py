"""Overview figures from hand-built runs with known statuses, durations, tokens and costs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentRun, Slot
from codexk8s.services import projects
from codexk8s.services.overview import (
    DayCount,
    SlotUse,
    StageDuration,
    Usage,
    build_overview,
    percentile,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The same figures on both backends: PostgreSQL computes percentiles in SQL, SQLite here."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'overview.db'}"
        upgrade_to_head(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def run(
    project_id: int,
    number: int,
    *,
    status: str,
    age: timedelta,
    seconds: float | None = None,
    stage: str = "dev",
    agent: str = "dev",
    tokens: tuple[int, int] = (0, 0),
    cost: str = "0",
) -> AgentRun:
    created = NOW - age
    return AgentRun(
        correlation_id=f"run-{project_id}-{number}",
        project_id=project_id,
        agent_key=agent,
        stage=stage,
        status=status,
        created_at=created,
        started_at=created + timedelta(seconds=5) if seconds is not None or status in (
            "running", "starting") else None,
        finished_at=created + timedelta(seconds=5 + seconds) if seconds is not None else None,
        tokens_input=tokens[0],
        tokens_output=tokens[1],
        cost_usd=Decimal(cost),
    )  # fmt: skip


@pytest.fixture
def project_ids(engine: Engine) -> dict[str, int]:
    hour, day = timedelta(hours=1), timedelta(days=1)
    with session_scope(engine) as session:
        ids = {}
        for key, slots in (("alpha", 2), ("beta", 1), ("gamma", 1)):
            project = projects.create_project(session=session, key=key, slots=slots)
            assert project.id is not None
            ids[key] = project.id
        a, b, g = ids["alpha"], ids["beta"], ids["gamma"]
        session.add_all([
            run(a, 1, status="succeeded", age=hour, seconds=100, tokens=(1000, 200), cost="0.50"),
            run(a, 2, status="succeeded", age=day, seconds=200, tokens=(2000, 300), cost="1.25"),
            run(a, 3, status="failed", age=day, seconds=400, tokens=(500, 100), cost="0.25"),
            run(a, 4, status="succeeded", age=2 * day, seconds=60, stage="plan", agent="em",
                tokens=(100, 50), cost="0.10"),
            run(a, 5, status="running", age=timedelta(minutes=5)),
            run(a, 6, status="pending", age=timedelta(minutes=1)),
            # Outside the 14-day window: counts as a run ever, not in the window's figures.
            run(a, 7, status="succeeded", age=20 * day, seconds=9000, cost="9.99"),
            run(b, 1, status="canceled", age=3 * day, seconds=30),
            run(b, 2, status="starting", age=3 * day),
            run(g, 1, status="succeeded", age=hour, seconds=1000, tokens=(10, 10), cost="5"),
        ])  # fmt: skip
        session.flush()
        slot = session.exec(select(Slot).where(Slot.project_id == a, Slot.number == 1)).one()
        slot.state, slot.lease_owner = "leased", "test"
    return ids


def test_member_sees_figures_of_their_projects_only(
    engine: Engine, project_ids: dict[str, int]
) -> None:
    with Session(engine) as session:
        figures = build_overview(
            session=session, project_ids=[project_ids["alpha"], project_ids["beta"]], now=NOW
        )
    assert (figures.active_runs, figures.queued_runs) == (2, 1)
    assert figures.has_runs and figures.window_runs == 8
    assert figures.success_rate == 0.6  # 3 succeeded of 5 finished in the window
    assert figures.slot_use == [
        SlotUse(project_key="alpha", used=1, total=2),
        SlotUse(project_key="beta", used=0, total=1),
    ]
    assert len(figures.days) == 14 and figures.days[0].day == "2026-11-14"
    shown = [d for d in figures.days if d.succeeded + d.failed + d.canceled + d.active]
    assert shown == [
        DayCount(day="2026-11-24", succeeded=0, failed=0, canceled=1, active=1, cost_usd=0.0),
        DayCount(day="2026-11-25", succeeded=1, failed=0, canceled=0, active=0, cost_usd=0.1),
        DayCount(day="2026-11-26", succeeded=1, failed=1, canceled=0, active=0, cost_usd=1.5),
        DayCount(day="2026-11-27", succeeded=1, failed=0, canceled=0, active=2, cost_usd=0.5),
    ]
    # dev: 30, 100, 200, 400 s → p50 150 (between ranks), p95 200 + 0.85 * 200 = 370.
    assert figures.durations == [
        StageDuration(stage="dev", runs=4, p50_seconds=150.0, p95_seconds=370.0),
        StageDuration(stage="plan", runs=1, p50_seconds=60.0, p95_seconds=60.0),
    ]
    assert figures.usage_by_project == [
        Usage(name="alpha", runs=6, tokens_input=3600, tokens_output=650, cost_usd=2.1),
        Usage(name="beta", runs=2, tokens_input=0, tokens_output=0, cost_usd=0.0),
    ]
    assert figures.usage_by_agent == [
        Usage(name="dev", runs=7, tokens_input=3500, tokens_output=600, cost_usd=2.0),
        Usage(name="em", runs=1, tokens_input=100, tokens_output=50, cost_usd=0.1),
    ]


def test_platform_admin_sees_every_project(engine: Engine, project_ids: dict[str, int]) -> None:
    with Session(engine) as session:
        figures = build_overview(session=session, project_ids=None, now=NOW)
    assert figures.window_runs == 9 and figures.success_rate == round(4 / 6, 4)
    assert [s.project_key for s in figures.slot_use] == ["alpha", "beta", "gamma"]
    assert figures.durations[0] == StageDuration(
        stage="dev", runs=5, p50_seconds=200.0, p95_seconds=880.0
    )
    assert [u.name for u in figures.usage_by_project] == ["alpha", "beta", "gamma"]
    assert figures.usage_by_project[2].cost_usd == 5.0


def test_no_visible_projects_and_no_runs(engine: Engine, project_ids: dict[str, int]) -> None:
    with Session(engine) as session:
        nothing = build_overview(session=session, project_ids=[], now=NOW)
        quiet = build_overview(session=session, project_ids=[project_ids["gamma"]],
                               now=NOW + timedelta(days=30))  # fmt: skip
    assert not nothing.has_runs and nothing.slot_use == [] and nothing.success_rate is None
    assert all(d.succeeded + d.active == 0 for d in nothing.days)
    # A month later gamma's run is history: counted ever, not in the window.
    assert quiet.has_runs and quiet.window_runs == 0 and quiet.durations == []
    assert quiet.slot_use == [SlotUse(project_key="gamma", used=0, total=1)]


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([10.0, 20.0], 0.95) == pytest.approx(19.5)
