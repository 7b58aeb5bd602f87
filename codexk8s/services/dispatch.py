"""Dispatch: give pending runs a free slot of their project and launch their workloads; give
answered runs that released their slot while they waited for a person one back first.

Safe with any number of replicas: slots are claimed with `FOR UPDATE SKIP LOCKED` (PostgreSQL),
so two dispatchers never take the same slot or run, and a run moves pending → starting with a
guarded update in the same transaction as its slot lease. The launch happens after that commit;
workload names are deterministic, so a replica that dies between commit and launch leaves a
`starting` run that the reconciler adopts (workload exists) or puts back to pending (it does not).

Cost per cycle: one query for claimable slots (only of projects that have pending runs), then per
claimed slot one indexed query for the oldest pending run; nothing scales with the number of runs
that do not change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codexk8s.config import get_settings
from codexk8s.crypto import hash_token, new_token
from codexk8s.db.models import Agent, Project, table_of, utcnow
from codexk8s.domain.logs import utc
from codexk8s.domain.runs import AgentFailure, RunMode, RunStatus
from codexk8s.domain.runtime import (
    Runtime,
    WorkloadDeferredError,
    WorkloadHandle,
    WorkloadRuntimeError,
    WorkloadSpec,
)
from codexk8s.domain.slots import LEASE_TTL_SECONDS, SlotState
from codexk8s.errors import PreconditionError
from codexk8s.logging_config import bound_contextvars
from codexk8s.services.agents import effective_settings
from codexk8s.services.run_brief import model_precondition
from codexk8s.services.run_requests import resumed_deadline, waits_for_slot_back
from codexk8s.services.run_states import RUNS, SLOTS, add_event, transition

PROJECTS = table_of(Project)
AGENTS = table_of(Agent)
DEFAULT_BATCH = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: int
    correlation_id: str
    project_id: int
    created_at: datetime
    spec: WorkloadSpec
    # The model the run asks for and whether the agent runs Codex (only then is it checked).
    model: str | None = None
    engine: str = "codex"


@dataclass(slots=True)
class DispatchResult:
    launched: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    # Back in the queue for a while (WorkloadDeferredError), not failed.
    deferred: list[int] = field(default_factory=list)
    # Seconds from each launched run's creation to its launch (the dispatch latency).
    latencies: list[float] = field(default_factory=list)


def lineage_of(run: Any, project_key: str) -> str:
    """Runs of one (project, repository, issue, agent) share a lineage (and, on Kubernetes, a
    namespace), so a revise run finds what the previous run left."""
    target = run.issue_number if run.issue_number is not None else f"run{run.id}"
    return f"{project_key}/{run.repository_id or 0}/{target}/{run.agent_key}"


def _ready(now: datetime) -> sa.ColumnElement[bool]:
    """Pending runs whose launch was not deferred, or whose deferral is over."""
    return sa.or_(RUNS.c.dispatch_after.is_(None), RUNS.c.dispatch_after <= now)


def _claimable_slots(connection: Connection, batch: int, now: datetime) -> list[sa.Row[Any]]:
    pending = (
        sa.select(sa.literal(1))
        .where(
            RUNS.c.project_id == SLOTS.c.project_id,
            sa.or_(
                sa.and_(RUNS.c.status == RunStatus.PENDING.value, _ready(now)),
                waits_for_slot_back(),
            ),
        )
        .exists()
    )
    query = (
        sa.select(SLOTS.c.id, SLOTS.c.project_id, SLOTS.c.number)
        .where(SLOTS.c.state == SlotState.FREE.value, pending)
        .order_by(SLOTS.c.project_id, SLOTS.c.number)
        .limit(batch)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(of=SLOTS, skip_locked=True)
    return list(connection.execute(query).all())


def _turn_in_progress() -> sa.ColumnElement[bool]:
    """A discussion turn whose discussion has another turn starting or running: it waits, so the
    turns of one issue answer one after the other and each reads the answer before it."""
    earlier = RUNS.alias("earlier_turn")
    return sa.and_(
        RUNS.c.mode == RunMode.DISCUSSION.value,
        sa.select(sa.literal(1))
        .where(
            earlier.c.repository_id == RUNS.c.repository_id,
            earlier.c.issue_number == RUNS.c.issue_number,
            earlier.c.stage == RUNS.c.stage,
            earlier.c.mode == RunMode.DISCUSSION.value,
            earlier.c.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]),
        )
        .exists(),
    )


def _oldest_pending(
    connection: Connection, project_id: int, exclude: list[int], now: datetime
) -> sa.Row[Any] | None:
    query = (
        sa.select(RUNS)
        .where(
            RUNS.c.project_id == project_id,
            RUNS.c.status == RunStatus.PENDING.value,
            RUNS.c.cancel_requested_at.is_(None),
            _ready(now),
            ~_turn_in_progress(),
        )
        .order_by(RUNS.c.created_at, RUNS.c.id)
    )
    return _first_unclaimed(connection, query, exclude)


def _oldest_answered(
    connection: Connection, project_id: int, exclude: list[int]
) -> sa.Row[Any] | None:
    query = (
        sa.select(RUNS)
        .where(RUNS.c.project_id == project_id, waits_for_slot_back())
        .order_by(RUNS.c.slot_released_at, RUNS.c.id)
    )
    return _first_unclaimed(connection, query, exclude)


def _first_unclaimed(
    connection: Connection, query: sa.Select[Any], exclude: list[int]
) -> sa.Row[Any] | None:
    """QUERY's first run not in EXCLUDE (claimed in this cycle), locked on PostgreSQL; one
    another dispatcher holds is skipped."""
    query = query.limit(1)
    if exclude:
        query = query.where(RUNS.c.id.not_in(exclude))
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return connection.execute(query).first()


def _give_slot_back(
    connection: Connection, *, slot: sa.Row[Any], run: sa.Row[Any], owner: str, now: datetime
) -> bool:
    """Lease SLOT to an answered run that gave its own away: its wait (and paused deadline) ends
    here, and its agent's tool call returns the answer at its next look."""
    moved = connection.execute(
        RUNS.update()
        .where(
            RUNS.c.id == run.id,
            RUNS.c.status == RunStatus.RUNNING.value,
            RUNS.c.slot_released_at.is_not(None),
        )
        .values(slot_number=slot.number, slot_released_at=None, **resumed_deadline(run, now))
    ).rowcount
    if not moved:
        return False
    _lease(connection, slot=slot, run_id=run.id, owner=owner, now=now)
    add_event(
        connection, correlation_id=run.correlation_id, event_type="run_slot_taken_back",
        run_id=run.id, project_id=run.project_id,
        payload={"slot": slot.number, "owner": owner,
                 "waited_seconds": round((now - utc(run.slot_released_at)).total_seconds(), 3)},
    )  # fmt: skip
    return True


def _lease(
    connection: Connection, *, slot: sa.Row[Any], run_id: int, owner: str, now: datetime
) -> None:
    connection.execute(
        SLOTS.update()
        .where(SLOTS.c.id == slot.id)
        .values(
            state=SlotState.LEASED.value, run_id=run_id, lease_owner=owner,
            lease_until=now + timedelta(seconds=LEASE_TTL_SECONDS),
        )
    )  # fmt: skip


def claim_runs(
    engine: Engine, *, owner: str, callback_url: str, batch: int = DEFAULT_BATCH
) -> list[Claim]:
    """One transaction: lease free slots to the answered runs that gave theirs away while they
    waited, then to the oldest pending runs of their projects."""
    claims: list[Claim] = []
    now = utcnow()
    with engine.begin() as connection:
        claimed_runs: list[int] = []
        project_keys: dict[int, str] = {}
        for slot in _claimable_slots(connection, batch, now):
            answered = _oldest_answered(connection, slot.project_id, claimed_runs)
            if answered is not None:
                claimed_runs.append(answered.id)
                if _give_slot_back(connection, slot=slot, run=answered, owner=owner, now=now):
                    continue
            run = _oldest_pending(connection, slot.project_id, claimed_runs, now)
            if run is None:
                continue
            agent_row = connection.execute(
                sa.select(AGENTS.c.settings).where(AGENTS.c.key == run.agent_key)
            ).first()
            settings = effective_settings(agent_row.settings if agent_row else None, run.agent_key)
            problem = model_precondition(get_settings()) if settings.engine == "codex" else None
            if problem is not None:
                # Nothing to launch without a model: fail at once, the slot stays free.
                transition(
                    connection, run_id=run.id, correlation_id=run.correlation_id,
                    project_id=run.project_id, from_statuses=[RunStatus.PENDING],
                    to_status=RunStatus.FAILED, reason=AgentFailure.PRECONDITION.value,
                    message=problem,
                )  # fmt: skip
                claimed_runs.append(run.id)
                continue
            token = new_token()
            moved = transition(
                connection, run_id=run.id, correlation_id=run.correlation_id,
                project_id=run.project_id, from_statuses=[RunStatus.PENDING],
                to_status=RunStatus.STARTING,
                values={"slot_number": slot.number, "run_token_hash": hash_token(token)},
                event_payload={"slot": slot.number, "owner": owner},
            )  # fmt: skip
            if not moved:
                continue
            _lease(connection, slot=slot, run_id=run.id, owner=owner, now=now)
            claimed_runs.append(run.id)
            if slot.project_id not in project_keys:
                project_keys[slot.project_id] = connection.execute(
                    sa.select(PROJECTS.c.key).where(PROJECTS.c.id == slot.project_id)
                ).scalar_one()
            lineage = lineage_of(run, project_keys[slot.project_id])
            connection.execute(RUNS.update().where(RUNS.c.id == run.id).values(lineage=lineage))
            claims.append(
                Claim(
                    run_id=run.id,
                    correlation_id=run.correlation_id,
                    project_id=run.project_id,
                    created_at=run.created_at,
                    spec=WorkloadSpec(
                        run_id=run.id,
                        correlation_id=run.correlation_id,
                        project_key=project_keys[slot.project_id],
                        lineage=lineage,
                        command=settings.workload,
                        image=settings.image,
                        env={"CODEXK8S_RUN_ID": str(run.id), "CODEXK8S_CALLBACK_URL": callback_url},
                        secret_env={"CODEXK8S_RUN_TOKEN": token},
                        timeout_seconds=max(1, round(settings.timeout_minutes * 60)),
                        # Only the agent runner is given the platform MCP tools that wait.
                        wait_allowance_seconds=(
                            round(get_settings().human_wait_minutes * 60)
                            if settings.engine == "codex"
                            else 0
                        ),
                        labels={"stage": run.stage, "agent": run.agent_key},
                        pod=settings.pod,
                    ),
                    model=run.model or settings.model,
                    engine=settings.engine,
                )
            )
    return claims


def mark_launched(
    engine: Engine, claim: Claim, handle: WorkloadHandle, *, now: datetime | None = None
) -> bool:
    now = now or utcnow()
    with engine.begin() as connection:
        # Where the workload lives is stored even if the watch already settled the run (a very
        # short workload): the log pump needs the handle to store its output.
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == claim.run_id, RUNS.c.runtime_handle.is_(None))
            .values(
                runtime_handle=handle.to_json(), namespace=handle.namespace, job_name=handle.name
            )
        )
        return transition(
            connection, run_id=claim.run_id, correlation_id=claim.correlation_id,
            project_id=claim.project_id, from_statuses=[RunStatus.STARTING],
            to_status=RunStatus.RUNNING,
            values={
                "started_at": now,
                "deadline_at": now + timedelta(seconds=claim.spec.timeout_seconds),
                "wait_allowance_seconds": claim.spec.wait_allowance_seconds,
            },
            event_payload={"runtime": handle.runtime, "name": handle.name},
        )  # fmt: skip


def mark_launch_deferred(engine: Engine, claim: Claim, error: WorkloadDeferredError) -> bool:
    """Back to the queue without its slot; not claimed again before the runtime's retry time."""
    now = utcnow()
    with engine.begin() as connection:
        moved = transition(
            connection, run_id=claim.run_id, correlation_id=claim.correlation_id,
            project_id=claim.project_id, from_statuses=[RunStatus.STARTING],
            to_status=RunStatus.PENDING, reason="launch_deferred", message=str(error),
            values={
                "slot_number": None, "run_token_hash": None,
                "dispatch_after": now + timedelta(seconds=error.retry_after_seconds),
            },
        )  # fmt: skip
        if moved:
            connection.execute(
                SLOTS.update()
                .where(SLOTS.c.run_id == claim.run_id, SLOTS.c.state == SlotState.LEASED.value)
                .values(state=SlotState.FREE.value, run_id=None, lease_owner=None, lease_until=None)
            )
        return moved


def mark_launch_failed(
    engine: Engine, claim: Claim, error: str, *, reason: str = "runtime_error"
) -> None:
    with engine.begin() as connection:
        transition(
            connection, run_id=claim.run_id, correlation_id=claim.correlation_id,
            project_id=claim.project_id, from_statuses=[RunStatus.STARTING],
            to_status=RunStatus.FAILED, reason=reason, message=error,
        )  # fmt: skip


# Raises PreconditionError when the model cannot be used (services.model_checks.check_model).
ModelCheck = Callable[[str], Awaitable[None]]


async def dispatch_pending_runs(
    *, engine: Engine, runtime: Runtime, owner: str, callback_url: str, batch: int = DEFAULT_BATCH,
    model_check: ModelCheck | None = None,
) -> DispatchResult:  # fmt: skip
    """Claim what can start now and launch it; launch errors fail the run with runtime_error,
    a model that MODEL_CHECK rejects fails it with precondition before anything is launched."""
    claims = await asyncio.to_thread(
        claim_runs, engine, owner=owner, callback_url=callback_url, batch=batch
    )
    result = DispatchResult()

    async def launch(claim: Claim) -> None:
        with bound_contextvars(run_id=claim.run_id, correlation_id=claim.correlation_id):
            await _launch(claim)

    async def _launch(claim: Claim) -> None:
        if model_check is not None and claim.model and claim.engine == "codex":
            try:
                await model_check(claim.model)
            except PreconditionError as exc:
                await asyncio.to_thread(
                    mark_launch_failed, engine, claim, str(exc), reason="precondition"
                )
                result.failed.append(claim.run_id)
                return
        try:
            handle = await runtime.launch(claim.spec)
        except WorkloadDeferredError as exc:
            await asyncio.to_thread(mark_launch_deferred, engine, claim, exc)
            log.info("launch deferred: %s", exc)
            result.deferred.append(claim.run_id)
            return
        except WorkloadRuntimeError as exc:
            await asyncio.to_thread(mark_launch_failed, engine, claim, str(exc))
            log.warning("launch failed: %s", exc)
            result.failed.append(claim.run_id)
            return
        started = utcnow()
        await asyncio.to_thread(mark_launched, engine, claim, handle, now=started)
        log.info(
            "run launched",
            extra={"runtime": handle.runtime, "workload": handle.name, "owner": owner},
        )
        result.launched.append(claim.run_id)
        # SQLite hands back naive UTC times: without this every launch on the embedded default
        # logged a TypeError (after the launch itself had gone through).
        result.latencies.append((started - utc(claim.created_at)).total_seconds())

    await asyncio.gather(*(launch(claim) for claim in claims))
    return result
