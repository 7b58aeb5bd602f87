"""Reading agent runs: lists (keyset pages, newest first), one run, and who may see which
project. Callers pass the ids of the projects a principal may see (`visible_projects`); the rows
returned never come from other projects."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from codexk8s.db.models import (
    AgentRun,
    FlowEvent,
    Project,
    ProjectMember,
    Repository,
    RunRequest,
)
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Principal, can_see_project
from codexk8s.domain.logs import LogSummary, utc
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import InvalidArgumentError, NotFoundError
from codexk8s.services import projects
from codexk8s.services.validation import parse_choice

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run as lists show it: plain data, no ORM row."""

    id: int
    project_key: str
    repository: str | None
    issue_number: int | None
    pr_number: int | None
    stage: str
    agent_key: str
    status: str
    status_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    issue_title: str | None = None
    attempt: int = 1
    parent_run_id: int | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (created_at, id) of its last run."""

    created_at: datetime
    run_id: int

    @classmethod
    def after(cls, row: RunRow) -> Cursor:
        return cls(created_at=row.created_at, run_id=row.id)

    def encode(self) -> str:
        text = f"{self.created_at.isoformat()}|{self.run_id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor `encode` made, or InvalidArgumentError for anything else."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            stamp, _, run_id = text.partition("|")
            created_at = datetime.fromisoformat(stamp)
            if created_at.tzinfo is None or not run_id.isdigit():
                raise ValueError(text)
            return cls(created_at=created_at, run_id=int(run_id))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidArgumentError("cursor is not one this API returned") from None


@dataclass(frozen=True, slots=True)
class RunDetail:
    """One run with everything a person may want to know about it."""

    id: int
    project_id: int
    project_key: str
    repository: str | None
    issue_number: int | None
    pr_number: int | None
    issue_title: str | None
    stage: str
    agent_key: str
    is_revise: bool
    trigger_label: str | None
    status: str
    status_reason: str | None
    status_message: str | None
    model: str | None
    reasoning_effort: str | None
    learning_mode: bool
    attempt: int
    parent_run_id: int | None
    slot_number: int | None
    namespace: str | None
    job_name: str | None
    pr_url: str | None
    summary: str | None
    cancel_requested_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    tokens_input: int
    tokens_cached: int
    tokens_output: int
    tokens_reasoning: int
    cost_usd: Decimal
    # What its log holds: lines and bytes stored, dropped after the cap, removed by retention.
    log: LogSummary = field(default_factory=LogSummary)
    # work or discussion (an answer on the issue, nothing pushed).
    mode: str = "work"
    # The project documents its prompt received (the newest `run_documents` event's payload:
    # services_yaml, found, documents [{path, bytes, chars, truncated, skipped}], chars,
    # problems, resumed), or None when none were recorded.
    documents: dict[str, Any] | None = None
    # Its Codex session: which stored session it resumed ({session_id, version, from_run}),
    # why a resume did not happen, and the session it left ({session_id, version, bytes}).
    session: dict[str, Any] | None = None
    # Since when it waits for a person (a question or an approval of its agent), or None.
    waiting_since: datetime | None = None
    # Answered, it waits for a slot back: it gave its own away while it waited (the project's
    # waiting-slot policy `release`).
    is_waiting_for_slot: bool = False


@dataclass(frozen=True, slots=True)
class ProjectView:
    """A project as one person sees it, with their role on it (None: platform admin only)."""

    id: int
    key: str
    name: str
    settings: dict[str, Any]
    role: str | None


def parse_status(status: str) -> RunStatus:
    return parse_choice(RunStatus, status, "status")


def list_runs(
    *,
    session: Session,
    project_key: str | None = None,
    status: str | None = None,
    limit: int = 50,
    project_ids: Collection[int] | None = None,
    before: Cursor | None = None,
) -> list[RunRow]:
    """Newest first, by (created_at, id); only runs of PROJECT_IDS when given, and only runs
    older than BEFORE (the last row of the previous page) when given."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")
    return _select_runs(
        session=session, project_key=project_key, status=status, limit=limit,
        project_ids=project_ids, before=before,
    )  # fmt: skip


def list_page(
    *,
    session: Session,
    project_ids: Collection[int] | None,
    status: str | None = None,
    limit: int = 50,
    before: Cursor | None = None,
) -> tuple[list[RunRow], Cursor | None]:
    """One keyset page and the cursor of the next one (None when this page is the last)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")
    rows = _select_runs(
        session=session, project_key=None, status=status, limit=limit + 1,
        project_ids=project_ids, before=before,
    )  # fmt: skip
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], Cursor.after(rows[limit - 1])


def _select_runs(
    *,
    session: Session,
    project_key: str | None,
    status: str | None,
    limit: int,
    project_ids: Collection[int] | None,
    before: Cursor | None,
) -> list[RunRow]:
    query = (
        select(AgentRun, Project.key, Repository.owner, Repository.name)
        .join(Project, col(Project.id) == col(AgentRun.project_id))
        .outerjoin(Repository, col(Repository.id) == col(AgentRun.repository_id))
        .order_by(col(AgentRun.created_at).desc(), col(AgentRun.id).desc())
        .limit(limit)
    )
    if project_key is not None:
        project = projects.require_by_key(session=session, key=project_key)
        query = query.where(AgentRun.project_id == project.id)
    if status is not None:
        query = query.where(AgentRun.status == parse_status(status).value)
    if project_ids is not None:
        query = query.where(col(AgentRun.project_id).in_(list(project_ids)))
    if before is not None:
        query = query.where(
            sa.tuple_(col(AgentRun.created_at), col(AgentRun.id))
            < sa.tuple_(sa.literal(before.created_at, sa.DateTime(timezone=True)), before.run_id)
        )
    return [
        RunRow(
            id=run.id or 0,
            project_key=key,
            repository=f"{owner}/{name}" if owner else None,
            issue_number=run.issue_number,
            pr_number=run.pr_number,
            stage=run.stage,
            agent_key=run.agent_key,
            status=run.status,
            status_reason=run.status_reason,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            issue_title=run.issue_title,
            attempt=run.attempt,
            parent_run_id=run.parent_run_id,
        )
        for run, key, owner, name in session.exec(query).all()
    ]


@dataclass(frozen=True, slots=True)
class RunFilters:
    """What the Runs page narrows the list to; None (or empty text) means any."""

    project_id: int | None = None
    status: str | None = None
    stage: str | None = None
    agent_key: str | None = None
    # Matches the issue/PR number ("42" or "#42") or a part of the issue title, case-insensitive.
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page in display order, with the cursors of its neighbours (None: there is none)."""

    rows: list[RunRow]
    next_cursor: Cursor | None
    previous_cursor: Cursor | None


def search_page(
    *,
    session: Session,
    project_ids: Collection[int] | None,
    filters: RunFilters = RunFilters(),
    limit: int = 50,
    newest_first: bool = True,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> RunPage:
    """A keyset page of runs sorted by (created_at, id), newest or oldest first.

    AFTER (the last row of the current page) asks for the next page, BEFORE (its first row) for
    the previous one; neither gives the first page. Only runs of PROJECT_IDS when given.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")
    if after is not None and before is not None:
        raise InvalidArgumentError("ask for the page after a run or before it, not both")
    if filters.status:
        parse_status(filters.status)
    backwards = before is not None
    # Walking back reads in the opposite order from the first row shown, then flips the page.
    descending = newest_first != backwards
    rows = _search(
        session=session, project_ids=project_ids, filters=filters, limit=limit + 1,
        descending=descending, start=before if backwards else after,
    )  # fmt: skip
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
        has_previous, has_next = has_more, True
    else:
        has_previous, has_next = after is not None, has_more
    return RunPage(
        rows=rows,
        next_cursor=Cursor.after(rows[-1]) if rows and has_next else None,
        previous_cursor=Cursor.after(rows[0]) if rows and has_previous else None,
    )


def _search(
    *,
    session: Session,
    project_ids: Collection[int] | None,
    filters: RunFilters,
    limit: int,
    descending: bool,
    start: Cursor | None,
) -> list[RunRow]:
    query = search_query(
        project_ids=project_ids, filters=filters, limit=limit, descending=descending, start=start
    )
    return [
        RunRow(
            id=run.id or 0,
            project_key=project_key,
            repository=f"{owner}/{name}" if owner else None,
            issue_number=run.issue_number,
            pr_number=run.pr_number,
            stage=run.stage,
            agent_key=run.agent_key,
            status=run.status,
            status_reason=run.status_reason,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            issue_title=run.issue_title,
            attempt=run.attempt,
            parent_run_id=run.parent_run_id,
        )
        for run, project_key, owner, name in session.exec(query).all()
    ]


def count_runs(
    *, session: Session, project_ids: Collection[int] | None, filters: RunFilters = RunFilters()
) -> int:
    """How many runs `search_page` pages through with these filters (the list's total): one
    count over agent_runs alone, on the same conditions (no join: every run has a project)."""
    query = (
        sa.select(sa.func.count()).select_from(AgentRun).where(*_conditions(project_ids, filters))
    )
    return int(session.execute(query).scalar_one())


def search_query(
    *,
    project_ids: Collection[int] | None,
    filters: RunFilters,
    limit: int,
    descending: bool = True,
    start: Cursor | None = None,
) -> Any:
    """The SELECT behind `search_page` (the benchmark EXPLAINs it)."""
    key = sa.tuple_(col(AgentRun.created_at), col(AgentRun.id))
    order = (
        (col(AgentRun.created_at).desc(), col(AgentRun.id).desc())
        if descending
        else (col(AgentRun.created_at).asc(), col(AgentRun.id).asc())
    )
    query = (
        select(AgentRun, Project.key, Repository.owner, Repository.name)
        .join(Project, col(Project.id) == col(AgentRun.project_id))
        .outerjoin(Repository, col(Repository.id) == col(AgentRun.repository_id))
        .where(*_conditions(project_ids, filters))
        .order_by(*order)
        .limit(limit)
    )
    if start is not None:
        bound = sa.tuple_(
            sa.literal(start.created_at, sa.DateTime(timezone=True)), sa.literal(start.run_id)
        )
        query = query.where(key < bound if descending else key > bound)
    return query


def _conditions(
    project_ids: Collection[int] | None, filters: RunFilters
) -> list[sa.ColumnElement[bool]]:
    """The WHERE of a run search (shared by the page and its count)."""
    conditions: list[sa.ColumnElement[bool]] = []
    if project_ids is not None:
        conditions.append(col(AgentRun.project_id).in_(list(project_ids)))
    if filters.project_id is not None:
        conditions.append(col(AgentRun.project_id) == filters.project_id)
    if filters.status:
        conditions.append(col(AgentRun.status) == filters.status)
    if filters.stage:
        conditions.append(col(AgentRun.stage) == filters.stage)
    if filters.agent_key:
        conditions.append(col(AgentRun.agent_key) == filters.agent_key)
    text = (filters.text or "").strip()
    if text:
        number = text.removeprefix("#")
        matches = [col(AgentRun.issue_title).ilike(f"%{_escape_like(text)}%", escape="\\")]
        if number.isdigit() and len(number) <= 9:
            matches += [
                col(AgentRun.issue_number) == int(number),
                col(AgentRun.pr_number) == int(number),
            ]
        conditions.append(sa.or_(*matches))
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _session_summary(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    summary: dict[str, Any] = {}
    for event_type, payload in events:
        if event_type == "session_resume_started":
            summary["resumed"] = {
                key: payload.get(key) for key in ("session_id", "version", "from_run")
            }
        elif event_type == "session_stored":
            summary["stored"] = {
                key: payload.get(key) for key in ("session_id", "version", "bytes")
            }
        elif event_type == "run_progress" and payload.get("kind") == "session":
            summary.setdefault("notes", []).append(str(payload.get("message") or ""))
    return summary or None


def get_run(*, session: Session, run_id: int) -> RunDetail:
    row = session.exec(
        select(AgentRun, Project.key, Repository.owner, Repository.name)
        .join(Project, col(Project.id) == col(AgentRun.project_id))
        .outerjoin(Repository, col(Repository.id) == col(AgentRun.repository_id))
        .where(AgentRun.id == run_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no run {run_id}")
    run, key, owner, name = row
    conversation = session.exec(
        select(FlowEvent.event_type, FlowEvent.payload)
        .where(
            FlowEvent.run_id == run_id,
            sa.or_(
                col(FlowEvent.event_type).in_(
                    ["run_documents", "session_resume_started", "session_stored"]
                ),
                sa.and_(
                    FlowEvent.event_type == "run_progress",
                    FlowEvent.payload["kind"].as_string() == "session",  # type: ignore[index]
                ),
            ),
        )
        .order_by(col(FlowEvent.id))
    ).all()
    documents = [dict(p or {}) for t, p in conversation if t == "run_documents"]
    session_events = [(t, dict(p or {})) for t, p in conversation if t != "run_documents"]
    return RunDetail(
        id=run.id or 0, project_id=run.project_id, project_key=key,
        repository=f"{owner}/{name}" if owner else None, issue_number=run.issue_number,
        pr_number=run.pr_number, issue_title=run.issue_title, stage=run.stage,
        agent_key=run.agent_key, is_revise=run.is_revise, trigger_label=run.trigger_label,
        status=run.status, status_reason=run.status_reason, status_message=run.status_message,
        model=run.model, reasoning_effort=run.reasoning_effort, learning_mode=run.learning_mode,
        attempt=run.attempt, parent_run_id=run.parent_run_id, slot_number=run.slot_number,
        namespace=run.namespace, job_name=run.job_name, pr_url=run.pr_url, summary=run.summary,
        cancel_requested_at=run.cancel_requested_at, cancel_reason=run.cancel_reason,
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        deadline_at=run.deadline_at, tokens_input=run.tokens_input,
        tokens_cached=run.tokens_cached, tokens_output=run.tokens_output,
        tokens_reasoning=run.tokens_reasoning, cost_usd=Decimal(run.cost_usd),
        log=LogSummary(
            lines=run.log_sequence, bytes=run.log_bytes, dropped_lines=run.log_dropped_lines,
            dropped_bytes=run.log_dropped_bytes, storage=run.log_storage,
            removed_at=utc(run.log_removed_at) if run.log_removed_at is not None else None,
        ),
        mode=run.mode, documents=documents[-1] if documents else None,
        session=_session_summary(session_events), waiting_since=run.waiting_since,
        is_waiting_for_slot=run.slot_released_at is not None and session.exec(
            select(RunRequest.id).where(RunRequest.run_id == run_id, RunRequest.status == "pending")
        ).first() is None,
    )  # fmt: skip


def visible_projects(*, session: Session, principal: Principal) -> list[ProjectView]:
    """The projects PRINCIPAL may see, by key: all of them for platform admins, else those they
    are a member of."""
    rows = session.exec(
        select(Project, ProjectMember.role)
        .outerjoin(
            ProjectMember,
            sa.and_(
                col(ProjectMember.project_id) == col(Project.id),
                col(ProjectMember.user_id) == principal.user_id,
            ),
        )
        .order_by(col(Project.key))
    ).all()
    return [
        ProjectView(
            id=project.id or 0,
            key=project.key,
            name=project.name,
            settings=dict(project.settings or {}),
            role=role,
        )
        for project, role in rows
        if can_see_project(principal, ProjectRole(role) if role is not None else None)
    ]
