"""What happened to one run, in the terms a person asks about it: the model it used, why it is
still waiting, what it produced (summary, branch, changed files, pull request) and, when there is
no pull request, why not. Read-only; the run page and the API read it the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from codexk8s.config import get_settings
from codexk8s.db.models import AgentRun, FlowEvent, Project, Repository, Slot, utcnow
from codexk8s.domain.runs import RunStatus
from codexk8s.services.agents import get_settings_for


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """Why a pending run waits."""

    project_key: str
    slots: int
    holders: list[int]  # runs holding the project's slots
    position: int  # 1: next to start
    is_deferred: bool  # the runtime asked to wait (dispatch_after in the future)
    message: str  # the runtime's own words, when deferred


@dataclass(frozen=True, slots=True)
class RunStory:
    model: str  # the model the run used (or will use), never "default"
    model_source: str  # "reported", "labels", "agent", "project", "installation"
    summary: str
    branch: str
    base_branch: str
    changed_files: list[str] = field(default_factory=list)
    pr_url: str = ""
    no_pr_reason: str = ""  # why there is no pull request ("" while one may still come)
    queue: QueueInfo | None = None
    parent_run_id: int | None = None
    attempt: int = 1
    feedback_error: str = ""  # the last GitHub feedback failure, if any


def _last(events: list[FlowEvent], *types: str) -> dict[str, Any] | None:
    for event in reversed(events):
        if event.event_type in types:
            return dict(event.payload or {})
    return None


def _queue(session: Session, run: AgentRun, project: Project) -> QueueInfo:
    slots = session.exec(
        select(Slot.number, Slot.run_id)
        .where(Slot.project_id == run.project_id)
        .order_by(col(Slot.number))
    ).all()
    holders = sorted(run_id for _, run_id in slots if run_id is not None)
    ahead = session.exec(
        select(AgentRun.id).where(
            AgentRun.project_id == run.project_id,
            AgentRun.status == RunStatus.PENDING.value,
            (col(AgentRun.created_at) < run.created_at)
            | ((col(AgentRun.created_at) == run.created_at) & (col(AgentRun.id) < run.id)),
        )
    ).all()
    deferred = run.dispatch_after is not None and _aware(run.dispatch_after) > utcnow()
    return QueueInfo(
        project_key=project.key, slots=len(slots), holders=holders, position=len(ahead) + 1,
        is_deferred=deferred, message=(run.status_message or "") if deferred else "",
    )  # fmt: skip


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _no_pr_reason(
    run: AgentRun, repository: Repository | None, events: list[FlowEvent], has_token: bool,
    result: dict[str, Any] | None, engine: str,
) -> str:  # fmt: skip
    status = RunStatus(run.status)
    if run.agent_key == "reviewer":
        return "Reviewer runs post a review on the pull request; they open none."
    if run.pr_url or run.pr_number or not status.is_terminal:
        return ""
    if status is RunStatus.CANCELED:
        return "The run was canceled before it reported a result."
    if status is RunStatus.FAILED:
        return "The run failed, so no pull request was opened."
    if result is None:
        if engine == "process":
            return "This agent runs its own process, which reported no result to codexk8s."
        return "The agent reported no result."
    if not result.get("branch"):
        return "The agent reported no branch to open a pull request from."
    if repository is None:
        return "The run has no repository."
    if not has_token:
        return (
            "No repository token: GitHub feedback skipped. Attach a token to the repository "
            "(project page) or let a platform admin allow the global token."
        )
    failure = _last(events, "github_feedback_failed")
    if failure is not None:
        return f"GitHub feedback failed: {failure.get('error') or 'see the timeline'}"
    return "The pull request is being opened."


def explain_run(*, session: Session, run_id: int) -> RunStory:
    run = session.get(AgentRun, run_id)
    if run is None:
        raise LookupError(run_id)
    project = session.get(Project, run.project_id)
    assert project is not None
    repository = session.get(Repository, run.repository_id) if run.repository_id else None
    events = list(
        session.exec(
            select(FlowEvent)
            .where(
                FlowEvent.run_id == run_id,
                col(FlowEvent.event_type).in_(
                    ["run_usage", "run_result", "github_feedback_failed"]
                ),
            )
            .order_by(col(FlowEvent.id))
        ).all()
    )
    settings = get_settings()
    agent = get_settings_for(session=session, key=run.agent_key)
    usage = _last(events, "run_usage")
    if usage and usage.get("model"):
        model, source = str(usage["model"]), "reported"
    elif run.model:
        model, source = run.model, "labels"
    elif agent.model:
        model, source = agent.model, "agent"
    else:
        model, source = settings.default_model, "installation"
    result = _last(events, "run_result")
    has_token = repository is not None and bool(
        repository.token_ciphertext
        or (repository.global_token_allowed and settings.github_token is not None)
    )
    feedback = _last(events, "github_feedback_failed")
    return RunStory(
        model=model, model_source=source,
        summary=run.summary or (str(result.get("summary") or "") if result else ""),
        branch=str(result.get("branch") or "") if result else "",
        base_branch=str(result.get("base_branch") or "") if result else "",
        changed_files=[str(f) for f in (result.get("changed_files") or [])] if result else [],
        pr_url=run.pr_url or "",
        no_pr_reason=_no_pr_reason(run, repository, events, has_token, result, agent.engine),
        queue=_queue(session, run, project) if run.status == RunStatus.PENDING.value else None,
        parent_run_id=run.parent_run_id, attempt=run.attempt,
        feedback_error=str(feedback.get("error") or "") if feedback else "",
    )  # fmt: skip
