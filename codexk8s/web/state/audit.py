"""The Audit page's state: filters, one keyset page of flow events at a time.

Which events a person may read is decided by the audit service on the server at every load
(platform admins: all; others: events of their projects only).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import reflex as rx
from sqlmodel import Session

from codexk8s.domain.authorization import Principal
from codexk8s.domain.explanations import describe_event
from codexk8s.errors import CodexK8sError, InvalidArgumentError
from codexk8s.services import audit
from codexk8s.services.agent_runs import visible_projects
from codexk8s.services.transactions import in_transaction
from codexk8s.web.components import formatters as fmt
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.fields import field_setter

PAGE_SIZE = 50
ANY = "any"
ACTOR_TYPES = [ANY, "human", "agent", "system"]


@dataclass(frozen=True, slots=True)
class AuditItem:
    """A flow event ready to show: times and payload already as text."""

    id: int
    created_at: str
    project_key: str
    run_id: int
    correlation_id: str
    actor_type: str
    actor_id: str
    event_type: str
    payload_text: str
    created_ago: str = ""
    summary: str = ""  # the event in words, one line


def _item(row: audit.AuditRow) -> AuditItem:
    stamp = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    words = describe_event(row.event_type, dict(row.payload or {}))
    return AuditItem(
        id=row.id,
        created_ago=fmt.relative(stamp),
        summary=(words.title + (f" · {words.detail}" if words.detail else ""))[:200],
        created_at=stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        project_key=row.project_key or "",
        run_id=row.run_id or 0,
        correlation_id=row.correlation_id,
        actor_type=row.actor_type,
        actor_id=row.actor_id or "",
        event_type=row.event_type,
        payload_text=json.dumps(row.payload, indent=2, sort_keys=True, ensure_ascii=False),
    )


def _day(text: str, name: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgumentError(f"{name} is not a date (YYYY-MM-DD): {text!r}") from None


def parse_range(since: str, until: str) -> tuple[datetime | None, datetime | None]:
    """The UTC instants of the days FROM (inclusive) and TO (inclusive, so the next midnight)."""
    first, last = _day(since, "From"), _day(until, "To")
    start = datetime.combine(first, time.min, tzinfo=UTC) if first else None
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC) if last else None
    return start, end


def _query(
    *, session: Session, principal: Principal, filters: audit.AuditFilter, before_id: int | None
) -> tuple[list[audit.AuditRow], int | None, list[str], list[str]]:
    rows, next_id = audit.list_audit_events(
        session=session, actor=principal, filters=filters, before_id=before_id, limit=PAGE_SIZE
    )
    types = audit.list_event_types(session=session, actor=principal)
    keys = [p.key for p in visible_projects(session=session, principal=principal)]
    return rows, next_id, types, keys


class AuditState(rx.State):
    events: list[AuditItem] = []
    event_types: list[str] = []
    project_keys: list[str] = []
    project_filter: str = ANY
    actor_type_filter: str = ANY
    actor_filter: str = ""
    type_filter: str = ANY
    since: str = ""
    until: str = ""
    # Keyset paging: the id the next page starts below, and the starts of the pages seen so far.
    next_before: int = 0
    page_starts: list[int] = []
    is_loaded: bool = False
    is_loading: bool = False
    error: str = ""

    @rx.var
    def has_next(self) -> bool:
        return self.next_before > 0

    @rx.var
    def has_previous(self) -> bool:
        return len(self.page_starts) > 1

    @rx.var
    def project_options(self) -> list[str]:
        return [ANY, *self.project_keys]

    @rx.var
    def type_options(self) -> list[str]:
        return [ANY, *self.event_types]

    def _filters(self) -> audit.AuditFilter:
        since, until = parse_range(self.since, self.until)
        return audit.AuditFilter(
            project_key=None if self.project_filter == ANY else self.project_filter,
            actor_type=None if self.actor_type_filter == ANY else self.actor_type_filter,
            actor_id=self.actor_filter.strip() or None,
            event_type=None if self.type_filter == ANY else self.type_filter,
            since=since,
            until=until,
        )

    async def _show_page(self, before_id: int | None) -> bool:
        """Load the page of events below BEFORE_ID (None: the newest); False when it failed."""
        auth = await self.get_state(AuthState)
        principal = await auth._resolve_principal()
        self.is_loaded = True
        if principal is None:
            self.events, self.event_types, self.project_keys = [], [], []
            self.next_before, self.page_starts = 0, []
            return False
        self.is_loading = True
        try:
            filters = self._filters()
            rows, next_id, types, keys = await asyncio.to_thread(
                in_transaction, _query, principal=principal, filters=filters, before_id=before_id
            )
        except CodexK8sError as exc:
            self.error = str(exc)
            return False
        finally:
            self.is_loading = False
        self.error = ""
        self.events = [_item(row) for row in rows]
        self.next_before = next_id or 0
        self.event_types, self.project_keys = types, keys
        return True

    async def _first_page(self) -> None:
        if await self._show_page(None):
            self.page_starts = [0]

    @rx.event
    async def load_audit(self) -> None:
        """`on_load` of the Audit page; every filter change also goes back to the newest events."""
        await self._first_page()

    @rx.event
    async def next_page(self) -> None:
        if self.next_before <= 0:
            return
        start = self.next_before
        if await self._show_page(start):
            self.page_starts = [*self.page_starts, start]

    @rx.event
    async def previous_page(self) -> None:
        if len(self.page_starts) < 2:
            return
        start = self.page_starts[-2]
        if await self._show_page(start or None):
            self.page_starts = self.page_starts[:-1]

    @rx.event
    async def set_project_filter(self, value: str) -> None:
        self.project_filter = value
        await self._first_page()

    @rx.event
    async def set_actor_type_filter(self, value: str) -> None:
        self.actor_type_filter = value
        await self._first_page()

    @rx.event
    async def set_type_filter(self, value: str) -> None:
        self.type_filter = value
        await self._first_page()

    set_actor_filter = field_setter("actor_filter")
    set_since = field_setter("since")
    set_until = field_setter("until")

    @rx.event
    async def apply_filters(self) -> None:
        await self._first_page()

    @rx.event
    async def clear_filters(self) -> None:
        self.project_filter = self.actor_type_filter = self.type_filter = ANY
        self.actor_filter = self.since = self.until = ""
        await self._first_page()
