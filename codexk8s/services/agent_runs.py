"""Reading agent runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from codexk8s.db.models import AgentRun, Project, Repository
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import InvalidArgumentError
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


def parse_status(status: str) -> RunStatus:
    return parse_choice(RunStatus, status, "status")


def list_runs(
    *,
    session: Session,
    project_key: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[RunRow]:
    """Newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}")
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
        )
        for run, key, owner, name in session.exec(query).all()
    ]
