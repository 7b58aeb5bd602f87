"""Guarded run transitions: every state change is an UPDATE from the expected state plus a flow
event, in the caller's transaction. A lost race changes nothing and reports False."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from codexk8s.db.models import AgentRun, RunRequest, Slot, table_of, utcnow
from codexk8s.domain.runs import ActorType, RunStatus, can_transition
from codexk8s.domain.runtime import FailureReason
from codexk8s.domain.slots import SlotState
from codexk8s.services import audit

RUNS = table_of(AgentRun)
SLOTS = table_of(Slot)
REQUESTS = table_of(RunRequest)

# How a workload failure maps to the run's status reason.
FAILURE_REASONS: dict[FailureReason, str] = {
    FailureReason.EXIT_CODE: "exit_code",
    FailureReason.TIMEOUT: "timeout",
    FailureReason.CANCELED: "canceled",
    FailureReason.OOM_KILLED: "oom_killed",
    FailureReason.IMAGE_PULL: "image_pull",
    FailureReason.EVICTED: "evicted",
    FailureReason.POD_REJECTED: "pod_rejected",
    FailureReason.UNSCHEDULABLE: "unschedulable",
    FailureReason.RUNTIME_ERROR: "runtime_error",
}


def add_event(
    connection: Connection,
    *,
    correlation_id: str,
    event_type: str,
    run_id: int | None = None,
    project_id: int | None = None,
    payload: dict[str, Any] | None = None,
    actor_type: str = "system",
    actor_id: str | None = None,
) -> None:
    audit.insert_events(
        connection=connection,
        events=[
            audit.flow_event_values(
                correlation_id=correlation_id, event_type=event_type, run_id=run_id,
                project_id=project_id, payload=payload, actor_type=ActorType(actor_type),
                actor_id=actor_id,
            )
        ],
    )  # fmt: skip


def transition(
    connection: Connection,
    *,
    run_id: int,
    correlation_id: str,
    project_id: int,
    from_statuses: Iterable[RunStatus],
    to_status: RunStatus,
    reason: str | None = None,
    message: str | None = None,
    values: dict[str, Any] | None = None,
    event_payload: dict[str, Any] | None = None,
    actor_type: str = "system",
    actor_id: str | None = None,
) -> bool:
    """Move a run to `to_status` if it is in one of `from_statuses`; free its slot if terminal."""
    if not change_status(
        connection, run_id=run_id, from_statuses=from_statuses, to_status=to_status,
        reason=reason, message=message, values=values,
    ):  # fmt: skip
        return False
    add_event(
        connection,
        correlation_id=correlation_id,
        event_type=f"run_{to_status.value}",
        run_id=run_id,
        project_id=project_id,
        actor_type=actor_type,
        actor_id=actor_id,
        payload={"reason": reason, "message": message, **(event_payload or {})},
    )
    return True


def change_status(
    connection: Connection,
    *,
    run_id: int,
    from_statuses: Iterable[RunStatus],
    to_status: RunStatus,
    reason: str | None = None,
    message: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """`transition` without its flow event, for a caller that writes the event with others of
    its own (webhook ingest writes a delivery's events together)."""
    sources = [s for s in from_statuses if can_transition(s, to_status)]
    if not sources:
        raise ValueError(f"no allowed transition to {to_status} from {list(from_statuses)}")
    now = utcnow()
    update = {"status": to_status.value, **(values or {})}
    if reason is not None:
        update["status_reason"] = reason
    if message is not None:
        update["status_message"] = message[:4000]
    if to_status.is_terminal:
        update.setdefault("finished_at", now)
        update["waiting_since"] = None
        update["slot_released_at"] = None
    if to_status.is_terminal or to_status is RunStatus.PENDING:
        # The run token dies with the run (or with a launch that never happened): a leaked token
        # of an ended run opens nothing.
        update["run_token_hash"] = None
    changed = connection.execute(
        RUNS.update()
        .where(RUNS.c.id == run_id, RUNS.c.status.in_([s.value for s in sources]))
        .values(**update)
    ).rowcount
    if not changed:
        return False
    if to_status.is_terminal:
        release_slot(connection, run_id=run_id)
        # Nobody can answer an ended run: its open questions leave the inbox.
        connection.execute(
            REQUESTS.update()
            .where(REQUESTS.c.run_id == run_id, REQUESTS.c.status == "pending")
            .values(status="canceled", answered_via="system", answered_at=now)
        )
    return True


def release_slot(connection: Connection, *, run_id: int) -> None:
    connection.execute(
        SLOTS.update()
        .where(SLOTS.c.run_id == run_id)
        .values(state=SlotState.FREE.value, run_id=None, lease_owner=None, lease_until=None)
    )


def run_row(connection: Connection, run_id: int, *, for_update: bool = False) -> sa.Row[Any] | None:
    query = sa.select(RUNS).where(RUNS.c.id == run_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).first()
