"""Reconcile: move runs to what their workloads really do, and keep slots and leases honest.

The runtime is the source of truth for workloads; this module only ever applies guarded
transitions, so applying the same status twice, or racing another replica, changes nothing.
The control loop calls `apply_workload_status` for every status its watch reports and runs the sweep
functions on slower timers as a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codexk8s.db.models import utcnow
from codexk8s.domain.runs import ACTIVE_STATUSES, TERMINAL_STATUSES, RunStatus
from codexk8s.domain.runtime import (
    FailureReason,
    Runtime,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadRuntimeError,
    WorkloadStatus,
)
from codexk8s.domain.slots import LEASE_TTL_SECONDS, SlotState
from codexk8s.logging_config import bound_contextvars
from codexk8s.services.run_brief import reported_failure
from codexk8s.services.run_requests import HUMAN_FAILURE_REASONS
from codexk8s.services.run_states import FAILURE_REASONS, RUNS, SLOTS, add_event, transition

log = logging.getLogger(__name__)

# A claimed run without a workload is left alone this long: its launch may be under way.
STARTING_GRACE_SECONDS = 60
# The runtime enforces deadlines itself; the control loop steps in only after this extra time.
DEADLINE_GRACE_SECONDS = 60
FAILING_CANCEL_REASONS = frozenset({"timeout", *HUMAN_FAILURE_REASONS})
CLEANUP_AFTER = timedelta(hours=24)
CLEANUP_BATCH = 50


def _active_statuses() -> list[str]:
    return [s.value for s in ACTIVE_STATUSES]


def apply_workload_status(engine: Engine, status: WorkloadStatus) -> str | None:
    """Apply one observed workload status to its run; return the new run status if it changed."""
    with bound_contextvars(run_id=status.run_id):
        changed = _apply_workload_status(engine, status)
        if changed:
            log.info(
                "run is %s", changed,
                extra={"status": changed, "phase": status.phase.value,
                       "reason": status.reason.value if status.reason else None},
            )  # fmt: skip
        return changed


def _apply_workload_status(engine: Engine, status: WorkloadStatus) -> str | None:
    with engine.begin() as connection:
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == status.run_id)).first()
        if run is None or RunStatus(run.status).is_terminal:
            return None
        common = {
            "run_id": run.id,
            "correlation_id": run.correlation_id,
            "project_id": run.project_id,
        }
        handle_values: dict[str, Any] = {}
        if run.runtime_handle is None and status.handle is not None:
            # Adopting a workload launched by a replica that died before recording it.
            handle_values = {
                "runtime_handle": status.handle.to_json(),
                "namespace": status.handle.namespace,
                "job_name": status.handle.name,
            }
        if status.phase in (WorkloadPhase.PENDING, WorkloadPhase.RUNNING):
            if run.status == RunStatus.STARTING.value:
                started = status.started_at or utcnow()
                moved = transition(
                    connection, **common, from_statuses=[RunStatus.STARTING],
                    to_status=RunStatus.RUNNING,
                    values={**handle_values, "started_at": run.started_at or started},
                    event_payload={"adopted": bool(handle_values)},
                )  # fmt: skip
                return RunStatus.RUNNING.value if moved else None
            if handle_values:
                connection.execute(RUNS.update().where(RUNS.c.id == run.id).values(**handle_values))
            return None
        if status.phase is WorkloadPhase.MISSING:
            if run.runtime_handle is None and status.handle is None:
                return None  # never launched: the lease expiry requeues it
            target, reason = RunStatus.FAILED, "runtime_lost"
            message = status.message or "the workload disappeared from the runtime"
        elif status.phase is WorkloadPhase.SUCCEEDED:
            target, reason, message = RunStatus.SUCCEEDED, None, None
        else:
            failure = status.reason or FailureReason.RUNTIME_ERROR
            target, reason = RunStatus.FAILED, FAILURE_REASONS[failure]
            message = status.message or (
                f"exited with code {status.exit_code}" if status.exit_code is not None else None
            )
            if failure is FailureReason.EXIT_CODE:
                # The agent runner said why before exiting: keep its reason (model_rate_limited,
                # push_rejected, ...) rather than the bare exit code.
                reported = reported_failure(connection, run.id)
                if reported is not None:
                    reason, message = reported[0], reported[1] or message
        if run.cancel_reason in HUMAN_FAILURE_REASONS:
            # A person said no (or nobody answered): the run fails even if the agent finished
            # its turn before the stop reached it.
            target = RunStatus.FAILED
        if target is not RunStatus.SUCCEEDED and (
            run.cancel_requested_at is not None or status.reason is FailureReason.CANCELED
        ):
            # A deadline, a denied approval or an unanswered question fails the run; any other
            # stop request cancels it.
            if run.cancel_reason not in FAILING_CANCEL_REASONS:
                target = RunStatus.CANCELED
            elif run.cancel_reason in HUMAN_FAILURE_REASONS and run.status_message:
                message = run.status_message
            reason = run.cancel_reason or "canceled"
        moved = transition(
            connection, **common, from_statuses=[RunStatus.STARTING, RunStatus.RUNNING],
            to_status=target, reason=reason, message=message,
            values={**handle_values, "finished_at": status.finished_at or utcnow()},
            event_payload={"exit_code": status.exit_code},
        )  # fmt: skip
        return target.value if moved else None


@dataclass(slots=True)
class SweepResult:
    applied: dict[int, str] = field(default_factory=dict)
    requeued: list[int] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)


# Failures the runtime would keep retrying until the deadline (the image pull, the pod's
# creation, its scheduling; an unschedulable pod could even start later): once the run has
# failed for one of them, its workload is stopped so it frees its quota and can never run.
STUCK_REASONS = frozenset(
    {FailureReason.IMAGE_PULL, FailureReason.POD_REJECTED, FailureReason.UNSCHEDULABLE}
)


async def stop_if_stuck(runtime: Runtime, status: WorkloadStatus) -> None:
    """Cancel the workload of a run that just failed for one of STUCK_REASONS."""
    if status.reason not in STUCK_REASONS or status.handle is None:
        return
    try:
        await runtime.cancel(status.handle, grace_seconds=0)
    except WorkloadRuntimeError as exc:
        log.warning("stopping the stuck workload failed: %s", exc)


def _active_runs(engine: Engine) -> list[sa.Row[Any]]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(
                    RUNS.c.id, RUNS.c.status, RUNS.c.runtime_handle, RUNS.c.correlation_id,
                    RUNS.c.project_id, RUNS.c.started_at,
                ).where(RUNS.c.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]))
            ).all()
        )  # fmt: skip


async def reconcile_runs(*, engine: Engine, runtime: Runtime) -> SweepResult:
    """The safety sweep: one list call to the runtime, one query for active runs.

    The list may come from a cache (the Kubernetes API server's watch cache) a moment behind:
    a run whose workload it lacks is read once more directly before it counts as missing.
    """
    workloads = {s.run_id: s for s in await runtime.list_workloads()}
    result = SweepResult()
    for run in await asyncio.to_thread(_active_runs, engine):
        status = workloads.get(run.id)
        if status is None:
            if run.runtime_handle is None:
                continue  # claimed, not launched yet; the lease decides
            try:
                status = await runtime.status(WorkloadHandle.from_json(run.runtime_handle), run.id)
            except WorkloadRuntimeError as exc:
                log.warning("reading the run's workload failed: %s", exc, extra={"run_id": run.id})
                continue
        if status.phase in (WorkloadPhase.PENDING, WorkloadPhase.RUNNING):
            result.alive.append(run.id)
            if run.status == RunStatus.RUNNING.value and run.runtime_handle is not None:
                continue  # nothing to change: keep the sweep's cost independent of idle runs
        changed = await asyncio.to_thread(apply_workload_status, engine, status)
        if changed:
            result.applied[run.id] = changed
            await stop_if_stuck(runtime, status)
    return result


def finished_runs(engine: Engine, *, run_ids: list[int]) -> list[sa.Row[Any]]:
    """Stage, status, start and end of RUN_IDS: what the run duration metric needs of the runs
    a cycle just ended."""
    query = sa.select(RUNS.c.stage, RUNS.c.status, RUNS.c.started_at, RUNS.c.finished_at).where(
        RUNS.c.id.in_(run_ids)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).all())


def renew_leases(engine: Engine, *, run_ids: list[int], owner: str) -> int:
    """Extend the leases of runs whose workloads were just seen alive."""
    if not run_ids:
        return 0
    with engine.begin() as connection:
        return connection.execute(
            SLOTS.update()
            .where(SLOTS.c.run_id.in_(run_ids), SLOTS.c.state == SlotState.LEASED.value)
            .values(lease_until=utcnow() + timedelta(seconds=LEASE_TTL_SECONDS), lease_owner=owner)
        ).rowcount


def release_leases(engine: Engine, *, owner: str) -> int:
    """Hand this replica's slot leases back on shutdown: they expire now, so the leader (this
    replica's successor or another one) adopts live workloads, requeues runs never launched and
    frees slots of finished runs at its next lease cycle instead of after LEASE_TTL_SECONDS.
    The runs' workloads keep running."""
    with engine.begin() as connection:
        return connection.execute(
            SLOTS.update()
            .where(SLOTS.c.lease_owner == owner, SLOTS.c.state == SlotState.LEASED.value)
            .values(lease_until=utcnow(), lease_owner=None)
        ).rowcount


def _expired_slots(engine: Engine) -> list[sa.Row[Any]]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(SLOTS.c.id, SLOTS.c.run_id, RUNS.c.status, RUNS.c.runtime_handle,
                          RUNS.c.correlation_id, RUNS.c.project_id)
                .select_from(SLOTS.outerjoin(RUNS, RUNS.c.id == SLOTS.c.run_id))
                .where(SLOTS.c.state == SlotState.LEASED.value, SLOTS.c.lease_until < utcnow())
            ).all()
        )  # fmt: skip


def _free_slot(engine: Engine, slot_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            SLOTS.update()
            .where(SLOTS.c.id == slot_id, SLOTS.c.lease_until < utcnow())
            .values(state=SlotState.FREE.value, run_id=None, lease_owner=None, lease_until=None)
        )


def _requeue(engine: Engine, row: sa.Row[Any]) -> bool:
    with engine.begin() as connection:
        moved = transition(
            connection, run_id=row.run_id, correlation_id=row.correlation_id,
            project_id=row.project_id, from_statuses=[RunStatus.STARTING],
            to_status=RunStatus.PENDING, reason="lease_expired",
            message="the replica that claimed this run stopped before launching it",
            values={"slot_number": None, "attempt": RUNS.c.attempt + 1},
        )  # fmt: skip
        if moved:
            connection.execute(
                SLOTS.update()
                .where(SLOTS.c.id == row.id)
                .values(state=SlotState.FREE.value, run_id=None, lease_owner=None, lease_until=None)
            )
        return moved


async def expire_leases(*, engine: Engine, runtime: Runtime, owner: str) -> SweepResult:
    """Reclaim slots whose lease ran out, settling or requeueing their runs."""
    result = SweepResult()
    listed: dict[int, WorkloadStatus] | None = None  # one cluster-wide list, and only if needed
    for row in await asyncio.to_thread(_expired_slots, engine):
        if row.run_id is None or row.status is None or RunStatus(row.status).is_terminal:
            await asyncio.to_thread(_free_slot, engine, row.id)
            continue
        if row.runtime_handle is None:
            # Launch never recorded: adopt the workload if it exists, else start over.
            if listed is None:
                listed = {found.run_id: found for found in await runtime.list_workloads()}
            status = listed.get(row.run_id)
            if status is None or status.phase is WorkloadPhase.MISSING:
                if await asyncio.to_thread(_requeue, engine, row):
                    log.info(
                        "lease expired before launch; run requeued", extra={"run_id": row.run_id}
                    )
                    result.requeued.append(row.run_id)
                continue
        else:
            status = await runtime.status(WorkloadHandle.from_json(row.runtime_handle), row.run_id)
        if status.phase in (WorkloadPhase.PENDING, WorkloadPhase.RUNNING):
            await asyncio.to_thread(renew_leases, engine, run_ids=[row.run_id], owner=owner)
            result.alive.append(row.run_id)
        changed = await asyncio.to_thread(apply_workload_status, engine, status)
        if changed:
            result.applied[row.run_id] = changed
            await stop_if_stuck(runtime, status)
    return result


def _runs_to_cancel(engine: Engine) -> list[sa.Row[Any]]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(RUNS.c.id, RUNS.c.runtime_handle, RUNS.c.correlation_id,
                          RUNS.c.project_id, RUNS.c.cancel_reason)
                .where(
                    RUNS.c.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]),
                    RUNS.c.cancel_requested_at.is_not(None),
                    RUNS.c.cancel_sent_at.is_(None),
                    RUNS.c.runtime_handle.is_not(None),
                )
            ).all()
        )  # fmt: skip


def _mark_cancel_sent(engine: Engine, row: sa.Row[Any]) -> bool:
    with engine.begin() as connection:
        marked = connection.execute(
            RUNS.update()
            .where(RUNS.c.id == row.id, RUNS.c.cancel_sent_at.is_(None))
            .values(cancel_sent_at=utcnow())
        ).rowcount
        if marked:
            add_event(
                connection, correlation_id=row.correlation_id, event_type="run_cancel_sent",
                run_id=row.id, project_id=row.project_id, payload={"reason": row.cancel_reason},
            )  # fmt: skip
        return bool(marked)


async def deliver_cancellations(
    *, engine: Engine, runtime: Runtime, grace_seconds: float = 10.0
) -> list[int]:
    """Carry out cancel requests on workloads; the watch then settles the runs as canceled."""
    sent = []
    for row in await asyncio.to_thread(_runs_to_cancel, engine):
        if not await asyncio.to_thread(_mark_cancel_sent, engine, row):
            continue
        handle = WorkloadHandle.from_json(row.runtime_handle)
        with bound_contextvars(run_id=row.id):
            try:
                await runtime.cancel(handle, grace_seconds=grace_seconds)
            except WorkloadRuntimeError as exc:
                # The sweep settles the run once the workload is gone or ends.
                log.warning("cancelling the workload failed: %s", exc)
                continue
            log.info("cancellation sent to the workload", extra={"reason": row.cancel_reason})
        sent.append(row.id)
    return sent


def request_deadline_cancellations(engine: Engine) -> list[int]:
    """Ask overdue runs to stop (reason timeout). For most runs a backstop for runtimes that
    missed a deadline (after a grace, so that their own timer fires first); for runs whose
    runtime timer allows for waiting for people, the deadline itself (paused while they wait)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=DEADLINE_GRACE_SECONDS)
    with engine.begin() as connection:
        rows = connection.execute(
            sa.select(RUNS.c.id, RUNS.c.correlation_id, RUNS.c.project_id).where(
                RUNS.c.status == RunStatus.RUNNING.value,
                sa.or_(
                    RUNS.c.deadline_at < cutoff,
                    sa.and_(RUNS.c.wait_allowance_seconds > 0, RUNS.c.deadline_at < now),
                ),
                RUNS.c.cancel_requested_at.is_(None),
                # Waiting for a person pauses the deadline (services.run_requests).
                RUNS.c.waiting_since.is_(None),
            )
        ).all()
        for row in rows:
            connection.execute(
                RUNS.update()
                .where(RUNS.c.id == row.id, RUNS.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=utcnow(), cancel_reason="timeout")
            )
            add_event(
                connection, correlation_id=row.correlation_id, event_type="run_cancel_requested",
                run_id=row.id, project_id=row.project_id, payload={"reason": "timeout"},
            )  # fmt: skip
    return [row.id for row in rows]


def _cleanable(engine: Engine, older_than: timedelta) -> list[sa.Row[Any]]:
    cutoff = utcnow() - older_than
    newer = RUNS.alias("newer")
    # A lineage's namespace stays while any of its runs is active or finished recently.
    busy_lineage = (
        sa.select(sa.literal(1))
        .where(
            newer.c.lineage == RUNS.c.lineage,
            newer.c.id != RUNS.c.id,
            sa.or_(newer.c.status.in_(_active_statuses()), newer.c.finished_at >= cutoff),
        )
        .exists()
    )
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(RUNS.c.id, RUNS.c.runtime_handle)
                .where(
                    RUNS.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                    RUNS.c.cleaned_at.is_(None),
                    RUNS.c.runtime_handle.is_not(None),
                    RUNS.c.finished_at < cutoff,
                    ~busy_lineage,
                )
                .limit(CLEANUP_BATCH)
            ).all()
        )


def _mark_cleaned(engine: Engine, run_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(cleaned_at=utcnow()))


async def cleanup_runtimes(
    *, engine: Engine, runtime: Runtime, older_than: timedelta = CLEANUP_AFTER
) -> list[int]:
    """Remove what finished runs left in the runtime (namespaces, work folders) after a TTL."""
    cleaned = []
    for row in await asyncio.to_thread(_cleanable, engine, older_than):
        with bound_contextvars(run_id=row.id):
            try:
                await runtime.cleanup(WorkloadHandle.from_json(row.runtime_handle))
            except WorkloadRuntimeError as exc:
                log.warning("cleanup of the finished run's workload failed: %s", exc)
                continue
        await asyncio.to_thread(_mark_cleaned, engine, row.id)
        cleaned.append(row.id)
    return cleaned


def _runs_of_leftovers(
    engine: Engine, run_ids: list[int], namespaces: list[str]
) -> tuple[dict[int, sa.Row[Any]], set[str]]:
    with engine.connect() as connection:
        runs = {
            row.id: row
            for row in connection.execute(
                sa.select(RUNS.c.id, RUNS.c.status, RUNS.c.finished_at, RUNS.c.runtime_handle)
                .where(RUNS.c.id.in_(run_ids))
            )
        }  # fmt: skip
        busy = set(
            connection.execute(
                sa.select(RUNS.c.namespace).where(
                    RUNS.c.namespace.in_(namespaces), RUNS.c.status.in_(_active_statuses())
                )
            ).scalars()
        )
    return runs, busy


async def sweep_leftovers(
    *, engine: Engine, runtime: Runtime, older_than: timedelta = CLEANUP_AFTER
) -> list[WorkloadHandle]:
    """Remove leftovers (namespaces, work folders) that no stored run accounts for.

    `cleanup_runtimes` removes what a finished run's stored handle points to. A leftover
    created by a launch whose handle was never stored (a crash between the two, a run cancelled
    while its launch was retried) or by a run this database no longer has is found only by
    listing the runtime: it goes once it is older than OLDER_THAN and its latest run is over
    (or unknown), unless an active run uses it.
    """
    cutoff = utcnow() - older_than
    leftovers = [
        found
        for found in await runtime.list_leftovers()
        if found.created_at is not None and found.created_at < cutoff
    ]
    if not leftovers:
        return []
    runs, busy = await asyncio.to_thread(
        _runs_of_leftovers,
        engine,
        [found.run_id for found in leftovers if found.run_id is not None],
        [found.handle.namespace for found in leftovers if found.handle.namespace],
    )
    removed = []
    for found in leftovers:
        run = runs.get(found.run_id) if found.run_id is not None else None
        if run is not None and (
            not RunStatus(run.status).is_terminal
            or run.runtime_handle is not None  # cleanup_runtimes' job, lineage rules included
            or (run.finished_at is not None and run.finished_at >= cutoff)
        ):
            continue
        if found.handle.namespace and found.handle.namespace in busy:
            continue
        try:
            await runtime.cleanup(found.handle)
        except WorkloadRuntimeError as exc:
            log.warning("removing the leftover %s failed: %s", found.handle.name, exc)
            continue
        log.info("removed a leftover no run accounts for: %s", found.handle.name)
        removed.append(found.handle)
    return removed
