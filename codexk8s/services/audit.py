"""The append-only audit trail: every decision and action becomes a flow event."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from codexk8s.db.models import FlowEvent
from codexk8s.domain.runs import ActorType


def record_event(
    *,
    session: Session,
    correlation_id: str,
    event_type: str,
    actor_type: ActorType = ActorType.SYSTEM,
    actor_id: str | None = None,
    project_id: int | None = None,
    run_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> FlowEvent:
    """Add a flow event to the caller's transaction (it commits with the change it records)."""
    event = FlowEvent(
        correlation_id=correlation_id,
        event_type=event_type,
        actor_type=actor_type.value,
        actor_id=actor_id,
        project_id=project_id,
        run_id=run_id,
        payload=payload or {},
    )
    session.add(event)
    return event
