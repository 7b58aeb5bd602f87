"""Agents that ask (issue #18): the questions and approval requests a run's agent puts to the
people of its project through the platform MCP tools, their answers, and the policies that say
who may give them.

The database is the source of truth: the tool call stores a `run_requests` row and waits until
that row is decided (answered in the dashboard, the API, or by `/answer` on GitHub, on any
replica) or its wait limit passes. While a request is pending the run's `waiting_since` is set:
its deadline is paused, and the answer moves `deadline_at` on by the time waited. A denial or a
question left unanswered asks the run to stop, and the run fails with that reason.

A project's waiting-slot policy says what a waiting run does with its slot: `keep` it (the
default), or `release` it to the next run; then, once answered, the run waits on (deadline still
paused) until dispatch gives it a slot back, before any queued run, and only then does its agent
hear the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from codexk8s.db.engine import get_engine
from codexk8s.db.models import Project, RunRequest, User, table_of, utcnow
from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.authorization import Action, Principal, can_see_project, normalize_login
from codexk8s.domain.run_requests import (
    ALLOWED_POLICIES,
    MILESTONE_EVENT,
    POLICIES_SETTING,
    WAITING_SLOT_SETTING,
    ApprovalPolicy,
    RequestKind,
    RequestStatus,
    Tool,
    WaitingSlot,
    approval_decision,
    effective_policy,
    may_answer,
    parse_answer_command,
    waiting_slot,
)
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import ConflictError, ForbiddenError, InvalidArgumentError, NotFoundError
from codexk8s.services import agent_runs, notifications, projects, run_access
from codexk8s.services.run_states import RUNS, add_event, release_slot

REQUESTS = table_of(RunRequest)
PROJECTS = table_of(Project)
USERS = table_of(User)

MAX_TEXT = 4_000
MAX_OPTIONS = 10
# How often a waiting tool call looks at its row when no notification can wake it (the hub does
# not run in its loop): an answer resumes the run within this.
POLL_SECONDS = 0.25
# How often it looks all the same when the run's notifications wake it: the safety net for a
# lost notification, and the granularity of the wait limit.
WATCHED_POLL_SECONDS = 5.0
# The reasons a run fails with when a person said no or nobody answered.
DENIED_REASON = "approval_denied"
UNANSWERED_REASON = "question_unanswered"
HUMAN_FAILURE_REASONS = frozenset({DENIED_REASON, UNANSWERED_REASON})
_ACTIVE = (RunStatus.STARTING.value, RunStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Decision:
    """How a request ended, as the agent hears it."""

    request_id: int
    kind: str
    status: str
    answer: str | None
    answered_by: str | None

    @property
    def is_approved(self) -> bool:
        return self.status in (RequestStatus.APPROVED.value, RequestStatus.ANSWERED.value)


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request waiting for an answer, as the inbox shows it."""

    id: int
    run_id: int
    project_key: str
    kind: str
    text: str
    options: tuple[str, ...]
    details: str | None
    policy: str
    issue_number: int | None
    created_at: datetime
    expires_at: datetime


def _text(value: Any, what: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"`{what}` must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidArgumentError(f"`{what}` must be at most {MAX_TEXT} characters")
    return value.strip()


def _options(value: Any) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > MAX_OPTIONS
        or not all(isinstance(o, str) and o.strip() and len(o) <= 200 for o in value)
    ):
        raise InvalidArgumentError(f"`options` must be at most {MAX_OPTIONS} short strings")
    return [o.strip() for o in value]


def _project_settings(connection: Connection, project_id: int) -> dict[str, Any]:
    settings = connection.execute(
        sa.select(PROJECTS.c.settings).where(PROJECTS.c.id == project_id)
    ).scalar_one_or_none()
    return dict(settings or {})


def _event(connection: Connection, run: sa.Row[Any], event_type: str, **payload: Any) -> None:
    add_event(
        connection, correlation_id=run.correlation_id, event_type=event_type, run_id=run.id,
        project_id=run.project_id, payload=payload, actor_type="agent", actor_id=run.agent_key,
    )  # fmt: skip


def record_tool_call(
    engine: Engine | None = None, *, run: sa.Row[Any], tool: Tool, policy: str
) -> None:
    """Every platform tool call leaves a `tool_called` event on the run's trail."""
    engine = engine or get_engine()
    with engine.begin() as connection:
        _event(connection, run, "tool_called", tool=tool.value, policy=policy)


def open_request(
    engine: Engine | None = None, *, run: sa.Row[Any], kind: RequestKind, text: Any,
    options: Any = None, details: Any = None, wait_minutes: float, tool: Tool | None = None,
) -> Decision | int:  # fmt: skip
    """Store a question or an approval request of RUN and pause the run's deadline: the new
    request's id. An approval whose policy is `none` is decided at once: its Decision. TOOL: the
    tool whose policy applies (a platform tool that acts asks approval under its own)."""
    engine = engine or get_engine()
    if tool is None:
        tool = Tool.ASK if kind is RequestKind.QUESTION else Tool.REQUEST_APPROVAL
    question = _text(text, "question" if kind is RequestKind.QUESTION else "action")
    choices = _options(options) if kind is RequestKind.QUESTION else []
    more = _text(details, "details", required=False)
    now = utcnow()
    with engine.begin() as connection:
        current = connection.execute(sa.select(RUNS).where(RUNS.c.id == run.id)).first()
        if current is None or current.status not in _ACTIVE:
            raise ConflictError("the run has ended")
        settings = _project_settings(connection, run.project_id)
        policy = effective_policy(tool, settings.get(POLICIES_SETTING))
        _event(connection, run, "tool_called", tool=tool.value, policy=policy.value)
        common = {
            "run_id": run.id, "project_id": run.project_id, "kind": kind.value,
            "text": question, "details": more, "policy": policy.value, "created_at": now,
        }  # fmt: skip
        if policy is ApprovalPolicy.NONE:
            request_id = connection.execute(
                REQUESTS.insert().values(
                    **common,
                    options=[],
                    status=RequestStatus.APPROVED.value,
                    answered_via="policy",
                    expires_at=now,
                    answered_at=now,
                    delivered_at=now,
                )
            ).inserted_primary_key[0]
            _event(
                connection, run, "run_request_approved", request_id=request_id,
                kind=kind.value, text=question[:500], by="policy none",
            )  # fmt: skip
            return Decision(request_id, kind.value, RequestStatus.APPROVED.value, None, None)
        newest = connection.execute(
            sa.select(REQUESTS.c.id, REQUESTS.c.kind, REQUESTS.c.text, REQUESTS.c.status,
                      REQUESTS.c.delivered_at)
            .where(REQUESTS.c.run_id == run.id)
            .order_by(REQUESTS.c.id.desc())
            .limit(1)
        ).first()  # fmt: skip
        if (
            newest is not None
            and (newest.kind, newest.text) == (kind.value, question)
            and newest.delivered_at is None
        ):
            # The same call again (its HTTP request was cut, the control plane restarted): it
            # waits on the question already asked, or hears the decision its first try missed.
            return int(newest.id)
        pending = connection.execute(
            sa.select(REQUESTS.c.id).where(
                REQUESTS.c.run_id == run.id, REQUESTS.c.status == RequestStatus.PENDING.value
            )
        ).first()
        if pending is not None:
            raise ConflictError(f"request {pending.id} of this run is still waiting for an answer")
        request_id = connection.execute(
            REQUESTS.insert().values(
                **common,
                options=choices,
                status=RequestStatus.PENDING.value,
                expires_at=now + timedelta(minutes=wait_minutes),
            )
        ).inserted_primary_key[0]
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == run.id, RUNS.c.waiting_since.is_(None))
            .values(waiting_since=now)
        )
        _event(
            connection, run, "run_request_opened", request_id=request_id, kind=kind.value,
            text=question[:500], options=choices, policy=policy.value,
        )  # fmt: skip
        if waiting_slot(settings) is WaitingSlot.RELEASE:
            _give_slot_away(connection, current, now)
    return int(request_id)


def _give_slot_away(connection: Connection, run: sa.Row[Any], now: datetime) -> None:
    """The waiting-slot policy `release`: the slot of a run that waits for a person goes to the
    next run of its project (the event wakes dispatch); once answered, dispatch gives the run a
    slot back before any queued run (`dispatch.claim_runs`). Only a launched run gives its slot
    away: a run still starting is its lease's to settle."""
    if (
        run.status != RunStatus.RUNNING.value
        or run.slot_number is None
        or run.runtime_handle is None
        or run.slot_released_at is not None
    ):
        return
    release_slot(connection, run_id=run.id)
    connection.execute(
        RUNS.update().where(RUNS.c.id == run.id).values(slot_number=None, slot_released_at=now)
    )
    add_event(
        connection, correlation_id=run.correlation_id, event_type="run_slot_released",
        run_id=run.id, project_id=run.project_id, payload={"slot": run.slot_number},
    )  # fmt: skip


def _decision(row: sa.Row[Any]) -> Decision:
    return Decision(row.id, row.kind, row.status, row.answer, row.answered_by)


def _settle(
    connection: Connection, *, request: sa.Row[Any], status: RequestStatus, answer: str | None,
    by: str | None, via: str, actor_type: str = "human",
) -> bool:  # fmt: skip
    """Decide a pending request once (a lost race changes nothing: False); resume the run's
    deadline; ask the run to stop when the decision ends it."""
    now = utcnow()
    changed = connection.execute(
        REQUESTS.update()
        .where(REQUESTS.c.id == request.id, REQUESTS.c.status == RequestStatus.PENDING.value)
        .values(status=status.value, answer=answer, answered_by=by, answered_via=via,
                answered_at=now)
    ).rowcount  # fmt: skip
    if not changed:
        return False
    run = connection.execute(sa.select(RUNS).where(RUNS.c.id == request.run_id)).first()
    assert run is not None
    stop_reason = {
        RequestStatus.DENIED: DENIED_REASON, RequestStatus.TIMED_OUT: UNANSWERED_REASON
    }.get(status)  # fmt: skip
    values: dict[str, Any] = {}
    if run.slot_released_at is None or stop_reason is not None or run.status not in _ACTIVE:
        values.update(resumed_deadline(run, now))
    # else: the run gave its slot away and goes on waiting, for a slot now: dispatch resumes
    # its deadline when it takes one back.
    message = None
    if stop_reason is not None and run.status in _ACTIVE and run.cancel_requested_at is None:
        message = (
            f"{by or 'a person'} denied {request.text[:200]!r}" + (f": {answer}" if answer else "")
            if status is RequestStatus.DENIED
            else f"nobody answered {request.text[:200]!r} in time"
        )
        values.update(cancel_requested_at=now, cancel_reason=stop_reason, status_message=message)
    if values:
        connection.execute(RUNS.update().where(RUNS.c.id == run.id).values(**values))
    add_event(
        connection, correlation_id=run.correlation_id, event_type=f"run_request_{status.value}",
        run_id=run.id, project_id=run.project_id, actor_type=actor_type, actor_id=by,
        payload={"request_id": request.id, "kind": request.kind, "answer": (answer or "")[:500],
                 "via": via, "waited_seconds": round((now - _aware(request.created_at))
                                                     .total_seconds(), 3)},
    )  # fmt: skip
    if message is not None:
        add_event(
            connection, correlation_id=run.correlation_id, event_type="run_cancel_requested",
            run_id=run.id, project_id=run.project_id, payload={"reason": stop_reason},
        )  # fmt: skip
    return True


def resumed_deadline(run: sa.Row[Any], now: datetime) -> dict[str, Any]:
    """The values that end RUN's wait for a person: its deadline moves on by the time waited."""
    values: dict[str, Any] = {"waiting_since": None}
    if run.waiting_since is not None and run.deadline_at is not None:
        values["deadline_at"] = _aware(run.deadline_at) + (now - _aware(run.waiting_since))
    return values


def _aware(value: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive.
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def _expire_or_cancel(engine: Engine, request_id: int) -> None:
    with engine.begin() as connection:
        request = connection.execute(sa.select(REQUESTS).where(REQUESTS.c.id == request_id)).first()
        if request is None or request.status != RequestStatus.PENDING.value:
            return
        run_status = connection.execute(
            sa.select(RUNS.c.status).where(RUNS.c.id == request.run_id)
        ).scalar_one()
        if run_status not in _ACTIVE:
            _settle(connection, request=request, status=RequestStatus.CANCELED, answer=None,
                    by=None, via="system", actor_type="system")  # fmt: skip
        elif _aware(request.expires_at) <= utcnow():
            _settle(connection, request=request, status=RequestStatus.TIMED_OUT, answer=None,
                    by=None, via="system", actor_type="system")  # fmt: skip


def check_request(engine: Engine | None = None, *, request_id: int) -> Decision | None:
    """The request's decision, or None while it is pending (expiring it when its time is up,
    cancelling it when its run has ended) or, answered, its run waits for a slot back (the
    waiting-slot policy `release`)."""
    engine = engine or get_engine()
    _expire_or_cancel(engine, request_id)
    with engine.connect() as connection:
        row = connection.execute(sa.select(REQUESTS).where(REQUESTS.c.id == request_id)).first()
        if row is None:
            raise NotFoundError(f"no request {request_id}")
        if row.status == RequestStatus.PENDING.value:
            return None
        decision = _decision(row)
        if decision.is_approved and _waits_for_slot(connection, row.run_id):
            return None  # the agent hears the answer once its run holds a slot again
    return decision


def waits_for_slot_back() -> sa.ColumnElement[bool]:
    """Running runs that gave their slot away while they waited for a person (the waiting-slot
    policy `release`) and have been answered: they need a slot back (dispatch.claim_runs) before
    their agent hears the answer."""
    return sa.and_(
        RUNS.c.status == RunStatus.RUNNING.value,
        RUNS.c.slot_released_at.is_not(None),
        RUNS.c.cancel_requested_at.is_(None),
        ~sa.select(sa.literal(1))
        .where(REQUESTS.c.run_id == RUNS.c.id, REQUESTS.c.status == RequestStatus.PENDING.value)
        .exists(),
    )


def _waits_for_slot(connection: Connection, run_id: int) -> bool:
    query = sa.select(RUNS.c.id).where(RUNS.c.id == run_id, waits_for_slot_back())
    return connection.execute(query).first() is not None


async def wait_for_decision(
    engine: Engine | None = None, *, request_id: int, run_id: int | None = None,
    poll_seconds: float = POLL_SECONDS, watched_poll_seconds: float = WATCHED_POLL_SECONDS,
) -> Decision:  # fmt: skip
    """Block (asynchronously) until the request is decided on any replica, or times out. With
    RUN_ID and the notification hub running here, a change of the run (an answer on any
    replica, a slot given back) wakes the call at once, and the row is read every
    WATCHED_POLL_SECONDS besides (a lost notification, the expiry); else every POLL_SECONDS."""
    engine = engine or get_engine()
    topic = notifications.run_topic(run_id) if run_id is not None else None
    async with notifications.get_hub().watching(topic) as watch:
        while (
            decision := await asyncio.to_thread(check_request, engine, request_id=request_id)
        ) is None:
            if watch is None:
                await asyncio.sleep(poll_seconds)
            else:
                await watch.changed(watched_poll_seconds)
    await asyncio.to_thread(_mark_delivered, engine, request_id)
    return decision


def _mark_delivered(engine: Engine, request_id: int) -> None:
    """The decision goes to the agent now: the same call again asks anew."""
    with engine.begin() as connection:
        connection.execute(
            REQUESTS.update()
            .where(REQUESTS.c.id == request_id, REQUESTS.c.delivered_at.is_(None))
            .values(delivered_at=utcnow())
        )


def answer_request(
    engine: Engine | None = None, *, principal: Principal | None, request_id: int,
    answer: str | None = None, approve: bool | None = None, via: str = "dashboard",
    by: str | None = None,
) -> Decision:  # fmt: skip
    """A person's answer to request REQUEST_ID: the text of a question's answer, or an approval's
    decision (APPROVE, or an answer starting with approve/deny). PRINCIPAL None: the local
    operator (the CLI). NotFoundError when they may not see the run's project."""
    engine = engine or get_engine()
    with engine.begin() as connection:
        request = connection.execute(sa.select(REQUESTS).where(REQUESTS.c.id == request_id)).first()
        if request is None:
            raise NotFoundError(f"no request {request_id}")
        if principal is not None:
            with Session(bind=connection) as session:
                role = run_access.membership_role(
                    session=session, actor=principal, project_id=request.project_id
                )
            if not can_see_project(principal, role):
                raise NotFoundError(f"no request {request_id}")
            if not may_answer(principal, ApprovalPolicy(request.policy), role):
                who = "a project admin" if request.policy == "owner" else "a member with write"
                raise ForbiddenError(f"only {who} access may answer request {request_id}")
            if by is None:
                by = connection.execute(
                    sa.select(USERS.c.email).where(USERS.c.id == principal.user_id)
                ).scalar_one_or_none()
        if request.status != RequestStatus.PENDING.value:
            raise ConflictError(f"request {request_id} is already {request.status}")
        # A question needs its answer; an approval needs a decision: APPROVE, or the words.
        note = _text(answer, "answer", required=approve is None or
                     request.kind == RequestKind.QUESTION.value)  # fmt: skip
        if request.kind == RequestKind.QUESTION.value:
            status = RequestStatus.ANSWERED
        else:
            if approve is None:
                decided = approval_decision(note or "")
                if decided is None:
                    raise InvalidArgumentError("answer an approval with approve or deny")
                approve, note = decided[0], decided[1] or None
            status = RequestStatus.APPROVED if approve else RequestStatus.DENIED
        if not _settle(connection, request=request, status=status, answer=note, by=by, via=via):
            raise ConflictError(f"request {request_id} was answered meanwhile")
    return Decision(request_id, request.kind, status.value, note, by)


def pending_requests(*, session: Session, principal: Principal) -> list[PendingRequest]:
    """The pending requests PRINCIPAL may answer, across their projects, oldest first."""
    views = {v.id: v for v in agent_runs.visible_projects(session=session, principal=principal)}
    if not views:
        return []
    rows = (
        session.connection()
        .execute(
            sa.select(REQUESTS, RUNS.c.issue_number)
            .join(RUNS, RUNS.c.id == REQUESTS.c.run_id)
            .where(
                REQUESTS.c.status == RequestStatus.PENDING.value,
                REQUESTS.c.project_id.in_(list(views)),
            )
            .order_by(REQUESTS.c.created_at, REQUESTS.c.id)
        )
        .all()
    )
    found = []
    for row in rows:
        view = views[row.project_id]
        role = view.role
        if not may_answer(
            principal, ApprovalPolicy(row.policy), ProjectRole(role) if role is not None else None
        ):
            continue
        found.append(PendingRequest(
            id=row.id, run_id=row.run_id, project_key=view.key, kind=row.kind, text=row.text,
            options=tuple(row.options or ()), details=row.details, policy=row.policy,
            issue_number=row.issue_number, created_at=_aware(row.created_at),
            expires_at=_aware(row.expires_at),
        ))  # fmt: skip
    return found


def pending_for_issue(
    connection: Connection, *, repository_id: int, number: int
) -> list[sa.Row[Any]]:
    """The pending requests of active runs on issue or pull request NUMBER of a repository."""
    return list(
        connection.execute(
            sa.select(REQUESTS)
            .join(RUNS, RUNS.c.id == REQUESTS.c.run_id)
            .where(
                RUNS.c.repository_id == repository_id,
                sa.or_(RUNS.c.issue_number == number, RUNS.c.pr_number == number),
                REQUESTS.c.status == RequestStatus.PENDING.value,
            )
            .order_by(REQUESTS.c.id)
        ).all()
    )


def past_runs(
    engine: Engine | None = None, *, run: sa.Row[Any], limit: Any = 10
) -> list[dict[str, Any]]:
    """The run's project's earlier finished runs, newest first: evidence for self-improvement."""
    engine = engine or get_engine()
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
        raise InvalidArgumentError("`limit` must be a whole number from 1 to 50")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                RUNS.c.id, RUNS.c.stage, RUNS.c.agent_key, RUNS.c.issue_number, RUNS.c.status,
                RUNS.c.status_reason, RUNS.c.status_message, RUNS.c.summary, RUNS.c.finished_at,
            )
            .where(
                RUNS.c.project_id == run.project_id, RUNS.c.id != run.id,
                RUNS.c.status.in_([s.value for s in RunStatus if s.is_terminal]),
            )
            .order_by(RUNS.c.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
    return [
        {
            "run_id": r.id,
            "stage": r.stage,
            "agent": r.agent_key,
            "issue": r.issue_number,
            "status": r.status,
            "reason": r.status_reason,
            "message": (r.status_message or "")[:500] or None,
            "summary": (r.summary or "")[:1000] or None,
            "finished_at": _aware(r.finished_at).isoformat() if r.finished_at else None,
        }
        for r in rows
    ]


def tool_policies(*, session: Session, actor: Principal | None, project_key: str) -> dict[str, str]:
    """Every platform tool's effective policy on the project, for anyone who may see it."""
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.VIEW_PROJECT
    )
    overrides = (project.settings or {}).get(POLICIES_SETTING)
    return {tool.value: effective_policy(tool, overrides).value for tool in Tool}


def set_tool_policy(
    *, session: Session, actor: Principal | None, project_key: str, tool: str, policy: str,
    actor_id: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """Set one tool's approval policy on a project (project admins): every policy afterwards."""
    try:
        parsed_tool, parsed = Tool(tool), ApprovalPolicy(policy)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"tools: {', '.join(Tool)}; policies: {', '.join(ApprovalPolicy)}"
        ) from exc
    if parsed not in ALLOWED_POLICIES[parsed_tool]:
        raise InvalidArgumentError(f"{tool} cannot have the policy {policy}")
    overrides = _change_setting(
        session=session, actor=actor, actor_id=actor_id, project_key=project_key,
        key=POLICIES_SETTING, value=lambda current: {**(current or {}), tool: policy},
        event_type="tool_policy_changed", payload={"tool": tool, "policy": policy},
    )  # fmt: skip
    return {t.value: effective_policy(t, overrides).value for t in Tool}


def set_waiting_slot(
    *, session: Session, actor: Principal | None, project_key: str, policy: str,
    actor_id: str | None = None,
) -> str:  # fmt: skip
    """Set what the project's runs do with their slot while they wait for a person (project
    admins): `keep` or `release`."""
    try:
        parsed = WaitingSlot(policy)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"the waiting-slot policy is one of {', '.join(WaitingSlot)}, got {policy!r}"
        ) from exc
    _change_setting(
        session=session, actor=actor, actor_id=actor_id, project_key=project_key,
        key=WAITING_SLOT_SETTING, value=lambda _current: parsed.value,
        event_type="waiting_slot_changed", payload={"policy": parsed.value},
    )  # fmt: skip
    return parsed.value


def _change_setting(
    *, session: Session, actor: Principal | None, actor_id: str | None, project_key: str,
    key: str, value: Callable[[Any], Any], event_type: str, payload: dict[str, Any],
) -> Any:  # fmt: skip
    """Set one key of a project's settings (project admins), audited: the new value."""
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_PROJECT,
        lock=True,
    )  # fmt: skip
    settings = dict(project.settings or {})
    settings[key] = value(settings.get(key))
    project.settings = settings
    project.updated_at = utcnow()
    session.add(project)
    add_event(
        session.connection(), correlation_id=f"project-{project.id}", event_type=event_type,
        project_id=project.id, payload=payload,
        actor_type="human" if actor is not None else "system",
        actor_id=actor_id or (str(actor.user_id) if actor is not None else None),
    )  # fmt: skip
    session.flush()
    return settings[key]


def pending_requests_for(principal: Principal) -> list[PendingRequest]:
    """`pending_requests` in a session of its own."""
    with Session(get_engine()) as session:
        return pending_requests(session=session, principal=principal)


def report_progress(
    engine: Engine | None = None, *, run: sa.Row[Any], message: Any, share: Any = False
) -> None:
    """The `report_progress` tool: a line on the run's timeline, while the run is active; SHARE
    makes it a milestone, which the service comment on GitHub shows too (github_feedback)."""
    engine = engine or get_engine()
    text = _text(message, "message")
    if not isinstance(share, bool):
        raise InvalidArgumentError("`share_on_github` must be true or false")
    with engine.begin() as connection:
        status = connection.execute(
            sa.select(RUNS.c.status).where(RUNS.c.id == run.id)
        ).scalar_one_or_none()
        if status not in _ACTIVE:
            raise ConflictError("the run has ended")
        _event(connection, run, "tool_called", tool=Tool.REPORT_PROGRESS.value, policy="none")
        event = MILESTONE_EVENT if share else "run_progress"
        _event(connection, run, event, kind="agent", message=(text or "")[:2000])


def record_refused_call(engine: Engine | None = None, *, run_id: int, reason: str) -> None:
    """A platform tool call refused for its token: audited on the run named in the path (when it
    exists), so a leaked or stale token shows up on that run's trail."""
    engine = engine or get_engine()
    with engine.begin() as connection:
        run = connection.execute(
            sa.select(RUNS.c.id, RUNS.c.correlation_id, RUNS.c.project_id).where(
                RUNS.c.id == run_id
            )
        ).first()
        if run is None:
            return
        add_event(
            connection, correlation_id=run.correlation_id, event_type="request_rejected",
            run_id=run.id, project_id=run.project_id, actor_type="agent",
            payload={"route": "mcp", "reason": "unauthorized", "message": reason[:500]},
        )  # fmt: skip


def answer_from_github(
    engine: Engine, *, repository_id: int, number: int, login: str | None, body: str,
    correlation_id: str,
) -> Decision | None:  # fmt: skip
    """`/answer [#id] <text>` in a comment on issue or PR NUMBER: the answer of the codexk8s
    user linked to LOGIN to the waiting request of a run there (the one named, or the only one).
    Anything else leaves an `answer_refused` event (on the run, when one is waiting) and
    changes nothing."""
    parsed = parse_answer_command(body)
    if parsed is None:
        return None
    wanted, text = parsed
    with engine.connect() as connection:
        pending = pending_for_issue(connection, repository_id=repository_id, number=number)
        user = (
            connection.execute(
                sa.select(USERS.c.id, USERS.c.role, USERS.c.disabled).where(
                    sa.func.lower(USERS.c.github_login) == normalize_login(login)
                )
            ).first()
            if login
            else None
        )
    chosen = [r for r in pending if wanted is None or r.id == wanted]
    problem = None
    if not chosen:
        problem = f"no request {'#' + str(wanted) + ' ' if wanted else ''}is waiting here"
    elif len(chosen) > 1:
        problem = "several requests are waiting here: name one, `/answer #<id> ...`"
    elif user is None:
        problem = f"{login or 'the sender'} is not linked to a codexk8s user"
    if problem is None:
        principal = Principal(
            user_id=user.id, platform_role=PlatformRole(user.role), is_disabled=user.disabled
        )
        try:
            return answer_request(
                engine, principal=principal, request_id=chosen[0].id, answer=text,
                via="github", by=login,
            )  # fmt: skip
        except (NotFoundError, ForbiddenError, ConflictError, InvalidArgumentError) as exc:
            problem = str(exc)
    target = chosen[0] if chosen else (pending[0] if pending else None)
    with engine.begin() as connection:
        run = (
            connection.execute(sa.select(RUNS).where(RUNS.c.id == target.run_id)).first()
            if target is not None
            else None
        )
        add_event(
            connection, correlation_id=run.correlation_id if run else correlation_id,
            event_type="answer_refused", run_id=run.id if run else None,
            project_id=run.project_id if run else None, actor_type="human", actor_id=login,
            payload={"via": "github", "reason": problem, "delivery": correlation_id},
        )  # fmt: skip
    return None


def all_pending(engine: Engine) -> list[sa.Row[Any]]:
    """Every pending request, oldest first (the operator's view, `codexk8s runs waiting`)."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(REQUESTS)
                .where(REQUESTS.c.status == RequestStatus.PENDING.value)
                .order_by(REQUESTS.c.id)
            ).all()
        )
