"""The append-only audit trail: every decision and action becomes a flow event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from codexk8s.db.engine import get_engine
from codexk8s.db.models import FlowEvent, Project, table_of, utcnow
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.runs import ActorType
from codexk8s.errors import InvalidArgumentError
from codexk8s.services import notifications

_FLOW_EVENTS: sa.Table = table_of(FlowEvent)
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


def record_rejected_request(
    engine: Engine | None = None, *, route: str, reason: str, message: str, correlation_id: str,
    actor_type: ActorType, actor_id: str | None, project_id: int | None = None,
    run_id: int | None = None,
) -> None:  # fmt: skip
    """The one row a malformed API request leaves behind (`request_rejected`, as for webhooks):
    which route, why, and who sent it."""
    engine = engine or get_engine()
    event = flow_event_values(
        correlation_id=correlation_id, event_type="request_rejected", actor_type=actor_type,
        actor_id=actor_id, project_id=project_id, run_id=run_id,
        payload={"route": route, "reason": reason, "message": message[:500]},
    )  # fmt: skip
    with engine.begin() as connection:
        insert_events(connection=connection, events=[event])


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


# --- the Audit page ------------------------------------------------------------------------------
#
# Platform admins (VIEW_AUDIT) read the whole trail; everyone else reads the events of the
# projects they may see, and never events without a project (sign-ins, rejected webhooks for
# unknown repositories, user management), which can concern anyone.

MAX_AUDIT_PAGE = 200


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One flow event as the Audit page lists it."""

    id: int
    created_at: datetime
    project_key: str | None
    run_id: int | None
    correlation_id: str
    actor_type: str
    actor_id: str | None
    event_type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What to narrow the trail to; None or empty means no restriction."""

    project_key: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None  # substring, case-insensitive
    event_type: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def _audit_scope(session: Session, actor: Principal) -> list[int] | None:
    """The project ids ACTOR may read events of; None: everything, project or not."""
    from codexk8s.services.agent_runs import visible_projects  # avoids an import cycle

    if is_allowed(actor, Action.VIEW_AUDIT):
        return None
    return [p.id for p in visible_projects(session=session, principal=actor)]


def list_audit_events(
    *,
    session: Session,
    actor: Principal,
    filters: AuditFilter | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[AuditRow], int | None]:
    """Newest first, one keyset page (events with ids below BEFORE_ID) and the id to pass as
    BEFORE_ID for the next page (None when this is the last)."""
    if not 1 <= limit <= MAX_AUDIT_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_AUDIT_PAGE}")
    filters = filters or AuditFilter()
    if filters.actor_type and filters.actor_type not in {a.value for a in ActorType}:
        raise InvalidArgumentError(f"unknown actor type {filters.actor_type!r}")
    if filters.since and filters.until and filters.since >= filters.until:
        raise InvalidArgumentError("the start of the time range must come before its end")
    texts = (filters.project_key, filters.actor_id, filters.event_type)
    if any(text and "\x00" in text for text in texts):
        # PostgreSQL refuses NUL in text; no event has one to find.
        raise InvalidArgumentError("a filter may not hold a NUL character")
    if actor.is_disabled:
        return [], None
    events = _FLOW_EVENTS.c
    projects_table: sa.Table = table_of(Project)
    query = (
        sa.select(_FLOW_EVENTS, projects_table.c.key)
        .select_from(
            _FLOW_EVENTS.outerjoin(projects_table, projects_table.c.id == events.project_id)
        )
        .order_by(events.id.desc())
        .limit(limit + 1)
    )
    scope = _audit_scope(session, actor)
    if scope is not None:
        if not scope:
            return [], None
        query = query.where(events.project_id.in_(scope))
    if filters.project_key:
        query = query.where(projects_table.c.key == filters.project_key)
    if filters.actor_type:
        query = query.where(events.actor_type == filters.actor_type)
    if filters.actor_id:
        query = query.where(sa.func.lower(events.actor_id).contains(filters.actor_id.lower()))
    if filters.event_type:
        query = query.where(events.event_type == filters.event_type)
    if filters.since:
        query = query.where(events.created_at >= filters.since)
    if filters.until:
        query = query.where(events.created_at < filters.until)
    if before_id is not None:
        query = query.where(events.id < before_id)
    rows = [
        AuditRow(
            id=row.id, created_at=row.created_at, project_key=row.key, run_id=row.run_id,
            correlation_id=row.correlation_id, actor_type=row.actor_type,
            actor_id=row.actor_id, event_type=row.event_type, payload=dict(row.payload or {}),
        )
        for row in session.execute(query).all()
    ]  # fmt: skip
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].id


def list_event_types(*, session: Session, actor: Principal) -> list[str]:
    """The event types present in the part of the trail ACTOR may read, for the type filter."""
    events = _FLOW_EVENTS.c
    query = sa.select(events.event_type).distinct().order_by(events.event_type)
    scope = _audit_scope(session, actor)
    if scope is not None:
        if not scope:
            return []
        query = query.where(events.project_id.in_(scope))
    return [str(value) for value in session.execute(query).scalars().all()]
