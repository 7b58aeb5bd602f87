"""The append-only audit trail: every decision and action becomes a flow event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from codexk8s.db.models import FlowEvent, utcnow
from codexk8s.domain.runs import ActorType
from codexk8s.services import notifications

_FLOW_EVENTS: sa.Table = FlowEvent.__table__  # type: ignore[attr-defined]
# RETURNING turns an executemany into one multi-row INSERT ("insertmanyvalues"), and
# sort_by_parameter_order makes PostgreSQL draw the ids in the order the events are given
# (INSERT ... SELECT ... ORDER BY). Without it psycopg runs one INSERT per event in pipeline mode,
# which costs more CPU under concurrency than the single statement.
_INSERT_EVENTS = sa.insert(_FLOW_EVENTS).returning(_FLOW_EVENTS.c.id, sort_by_parameter_order=True)


def record_event(
    *,
    session: Session,
    correlation_id: str,
    event_type: str,
    actor_type: ActorType | None = None,
    actor_id: str | None = None,
    project_id: int | None = None,
    run_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> FlowEvent:
    """Add a flow event to the caller's transaction (it commits with the change it records).

    Without an explicit actor type, an event with an actor id was done by a person, one without
    by the system.
    """
    if actor_type is None:
        actor_type = ActorType.HUMAN if actor_id else ActorType.SYSTEM
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


def flow_event_values(
    *,
    correlation_id: str,
    event_type: str,
    actor_type: ActorType = ActorType.SYSTEM,
    actor_id: str | None = None,
    project_id: int | None = None,
    run_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of one flow event for `insert_events`, with the defaults of `record_event`.

    The timestamp is taken now, when the event happens, as `record_event` does, not at insert.
    """
    return {
        "correlation_id": correlation_id,
        "event_type": event_type,
        "actor_type": actor_type.value,
        "actor_id": actor_id,
        "project_id": project_id,
        "run_id": run_id,
        "payload": payload or {},
        "created_at": utcnow(),
    }


def insert_events(*, connection: Connection, events: Sequence[dict[str, Any]]) -> None:
    """Write flow events built by `flow_event_values` on a Core connection, in one executemany.

    For hot paths that skip the ORM; the events commit with the caller's transaction, and their
    ids follow the order given, which is the order the trail is read in.
    """
    if events:
        connection.execute(_INSERT_EVENTS, list(events))
        notifications.publish_on_commit(connection, _topics_of(events))


def _topics_of(events: Sequence[dict[str, Any]]) -> set[str]:
    """What live pages to tell about these events once they commit: a run event changes its run
    and its project's run list."""
    topics: set[str] = set()
    for event in events:
        if event.get("run_id") is None:
            continue
        topics.add(notifications.run_topic(event["run_id"]))
        if event.get("project_id") is not None:
            topics.add(notifications.project_topic(event["project_id"]))
    return topics


@dataclass(frozen=True, slots=True)
class EventRow:
    """A flow event as plain data."""

    id: int
    correlation_id: str
    event_type: str
    actor_type: str
    actor_id: str | None
    payload: dict[str, Any]
    created_at: datetime


def list_run_events(*, session: Session, run_id: int, limit: int = 1000) -> list[EventRow]:
    """A run's flow events in the order they happened (their ids follow that order)."""
    rows = session.exec(
        select(FlowEvent).where(FlowEvent.run_id == run_id).order_by(col(FlowEvent.id)).limit(limit)
    ).all()
    return [
        EventRow(
            id=row.id or 0,
            correlation_id=row.correlation_id,
            event_type=row.event_type,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            payload=dict(row.payload or {}),
            created_at=row.created_at,
        )
        for row in rows
    ]
