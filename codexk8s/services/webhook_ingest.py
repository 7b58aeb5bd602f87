"""Webhook ingest: verify, record once, and turn a GitHub delivery into runs (DESIGN §4, §5).

Guarantees:
- Nothing but one audit event is written for a rejected request (bad headers, bad body, no
  secret, wrong signature).
- `X-GitHub-Delivery` is the idempotency key. The delivery row is inserted first with
  `INSERT ... ON CONFLICT DO NOTHING`; the runs it triggers and their flow events are written in
  the same transaction. A concurrent copy blocks on the unique index until the first commits,
  then sees the conflict and is answered as a duplicate, so 50 copies at once make one set of runs.
- One active run per (repository, issue/PR number, stage): the repository row is locked
  (`FOR UPDATE`) while checking, so two different deliveries cannot both start one.
- Only the decision is made here; GitHub calls and workloads happen later, in the engine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from codexk8s.adapters.github import webhooks
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.models import AgentRun, Project, Repository, WebhookDelivery, utcnow
from codexk8s.domain.runs import ACTIVE_STATUSES, RunStatus
from codexk8s.domain.triggers import (
    EVENT_PING,
    DecisionKind,
    TriggerDecision,
    decide,
    trigger_input_from_payload,
)
from codexk8s.errors import InvalidArgumentError, UnauthorizedError, UnavailableError
from codexk8s.services import repositories
from codexk8s.services.audit import record_event

REJECTED_CORRELATION = "webhook-rejected"
MAX_DELIVERY_ID = 100
MAX_EVENT_NAME = 64


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What the HTTP layer read off the request, untouched."""

    delivery_id: str | None
    event: str | None
    signature: str | None
    content_type: str | None
    body: bytes
    remote: str | None = None


@dataclass(slots=True)
class IngestOutcome:
    delivery_id: str
    event: str
    action: str | None = None
    runs: list[int] = field(default_factory=list)
    canceled: list[int] = field(default_factory=list)
    cancel_requested: list[int] = field(default_factory=list)
    ignored: str | None = None
    is_duplicate: bool = False

    @property
    def is_ping(self) -> bool:
        return self.event == EVENT_PING


def record_rejection(engine: Engine, request: WebhookRequest, event_type: str, reason: str) -> None:
    """The one row a rejected request may leave behind."""
    delivery = (request.delivery_id or "")[:MAX_DELIVERY_ID] or None
    with Session(engine) as session:
        record_event(
            session=session,
            correlation_id=delivery or REJECTED_CORRELATION,
            event_type=event_type,
            payload={
                "reason": reason,
                "delivery_id": delivery,
                "event": (request.event or "")[:MAX_EVENT_NAME] or None,
                "remote": request.remote,
            },
        )
        session.commit()


def _validated_headers(engine: Engine, request: WebhookRequest) -> tuple[str, str]:
    problems = []
    if not request.event:
        problems.append("missing X-GitHub-Event header")
    elif len(request.event) > MAX_EVENT_NAME or not request.event.replace("_", "").isalnum():
        problems.append("X-GitHub-Event is not an event name")
    if not request.delivery_id:
        problems.append("missing X-GitHub-Delivery header")
    elif len(request.delivery_id) > MAX_DELIVERY_ID or not request.delivery_id.isprintable():
        problems.append(f"X-GitHub-Delivery must be at most {MAX_DELIVERY_ID} printable characters")
    if problems:
        message = "; ".join(problems)
        record_rejection(engine, request, "request_rejected", message)
        raise InvalidArgumentError(message)
    assert request.event and request.delivery_id
    return request.event.lower(), request.delivery_id


def _secret_for(
    box: SecretBox, repository: Repository | None, global_secret: str | None
) -> str | None:
    if repository is not None and repository.webhook_secret_ciphertext:
        return box.decrypt(repository.webhook_secret_ciphertext)
    return global_secret or None


def _insert_delivery(
    session: Session, *, delivery_id: str, event: str, action: str | None,
    full_name: str | None, repository_id: int | None, payload: dict[str, Any],
) -> int | None:  # fmt: skip
    """Insert the delivery unless it exists; None means another request already has it."""
    values = {
        "delivery_id": delivery_id,
        "event": event,
        "action": action,
        "repository_full_name": full_name[:201] if full_name else None,
        "repository_id": repository_id,
        "received_at": utcnow(),
        "outcome": "processing",
        "payload": payload,
    }
    table = WebhookDelivery.__table__  # type: ignore[attr-defined]
    insert = (
        postgresql.insert(table)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(table)
    )
    statement = (
        insert.values(**values)
        .on_conflict_do_nothing(index_elements=["delivery_id"])
        .returning(table.c.id)
    )
    return session.execute(statement).scalar_one_or_none()


def ingest_github_delivery(
    *, engine: Engine, box: SecretBox, global_secret: str | None, request: WebhookRequest
) -> IngestOutcome:
    """Verify and record one delivery; raise a CodexK8sError subclass for a rejected request."""
    event, delivery_id = _validated_headers(engine, request)
    try:
        payload = webhooks.decode_body(request.body, request.content_type)
    except webhooks.WebhookFormatError as exc:
        record_rejection(engine, request, "request_rejected", str(exc))
        raise InvalidArgumentError(str(exc)) from None
    full_name = webhooks.repository_full_name(payload)

    with Session(engine, expire_on_commit=False) as session:
        repository = (
            repositories.get_by_full_name(session=session, full_name=full_name)
            if full_name
            else None
        )
        try:
            secret = _secret_for(box, repository, global_secret)
        except DecryptionError:
            secret = None
    if secret is None:
        reason = "no webhook secret configured"
        record_rejection(engine, request, "request_rejected", reason)
        raise UnavailableError(
            f"{reason} for {full_name or 'this hook'}: set CODEXK8S_GITHUB_WEBHOOK_SECRET "
            "or attach the repository with `codexk8s repo add --webhook-secret-env VAR`"
        )
    if not webhooks.signature_matches(secret, request.body, request.signature):
        reason = "missing signature" if not request.signature else "signature mismatch"
        record_rejection(engine, request, "signature_rejected", reason)
        raise UnauthorizedError(
            f"{reason}: X-Hub-Signature-256 must be the HMAC-SHA256 of the body"
        )

    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    outcome = IngestOutcome(delivery_id=delivery_id, event=event, action=action)
    with Session(engine, expire_on_commit=False) as session:
        inserted = _insert_delivery(
            session,
            delivery_id=delivery_id,
            event=event,
            action=action,
            full_name=full_name,
            repository_id=repository.id if repository else None,
            payload=payload,
        )
        if inserted is None:
            session.rollback()
            outcome.is_duplicate = True
            record_event(
                session=session,
                correlation_id=delivery_id,
                event_type="delivery_duplicate",
                payload={"event": event, "action": action},
            )
            session.commit()
            return outcome
        record_event(
            session=session,
            correlation_id=delivery_id,
            event_type="delivery_accepted",
            project_id=repository.project_id if repository else None,
            payload={"event": event, "action": action, "repository": full_name},
        )
        if event == EVENT_PING:
            _finish(session, inserted, outcome, "ping")
        elif repository is None:
            _ignore(session, inserted, outcome, "unknown_repository", full_name=full_name)
        else:
            trigger = trigger_input_from_payload(event, payload)
            _apply(session, inserted, outcome, decide(trigger), trigger.number, repository, payload)
        session.commit()
    return outcome


def _finish(session: Session, delivery_row_id: int, outcome: IngestOutcome, result: str) -> None:
    session.execute(
        sa.update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_row_id)
        .values(outcome=result[:64])
    )


def _ignore(
    session: Session,
    delivery_row_id: int,
    outcome: IngestOutcome,
    reason: str,
    *,
    project_id: int | None = None,
    message: str = "",
    full_name: str | None = None,
) -> None:
    outcome.ignored = reason
    record_event(
        session=session,
        correlation_id=outcome.delivery_id,
        event_type="delivery_ignored",
        project_id=project_id,
        payload={"reason": reason, "message": message, "repository": full_name},
    )
    _finish(session, delivery_row_id, outcome, f"ignored:{reason}")


def _apply(
    session: Session,
    delivery_row_id: int,
    outcome: IngestOutcome,
    decision: TriggerDecision,
    number: int | None,
    repository: Repository,
    payload: dict[str, Any],
) -> None:
    project_id = repository.project_id
    match decision.kind:
        case DecisionKind.START_RUN:
            _start_run(session, delivery_row_id, outcome, decision, repository, payload)
        case DecisionKind.CONFLICT:
            outcome.ignored = f"trigger_conflict:{decision.reason}"
            record_event(
                session=session,
                correlation_id=outcome.delivery_id,
                event_type="trigger_conflict",
                project_id=project_id,
                payload={"reason": str(decision.reason), "message": decision.message},
            )
            _finish(session, delivery_row_id, outcome, outcome.ignored)
        case DecisionKind.CANCEL_PENDING_FOR_LABEL | DecisionKind.CANCEL_ACTIVE:
            _cancel(session, delivery_row_id, outcome, decision, number, repository)
        case DecisionKind.RECORD_ONLY | DecisionKind.IGNORED:
            _ignore(
                session, delivery_row_id, outcome, str(decision.reason),
                project_id=project_id, message=decision.message,
            )  # fmt: skip


def _issue_title(payload: dict[str, Any]) -> str | None:
    for key in ("issue", "pull_request"):
        item = payload.get(key)
        if isinstance(item, dict) and isinstance(item.get("title"), str):
            return item["title"][:500]
    return None


def _start_run(
    session: Session,
    delivery_row_id: int,
    outcome: IngestOutcome,
    decision: TriggerDecision,
    repository: Repository,
    payload: dict[str, Any],
) -> None:
    spec = decision.run
    assert spec is not None
    # Serialise trigger decisions per repository (no-op on SQLite, whose writers are serial).
    # FOR NO KEY UPDATE: the delivery row's foreign key already holds FOR KEY SHARE on this row,
    # which a plain FOR UPDATE would wait on (a deadlock between two concurrent deliveries).
    session.execute(
        select(Repository.id)
        .where(col(Repository.id) == repository.id)
        .with_for_update(key_share=True)
    )
    active = session.exec(
        select(AgentRun.id).where(
            AgentRun.repository_id == repository.id,
            AgentRun.issue_number == spec.number,
            AgentRun.stage == spec.stage,
            col(AgentRun.status).in_([s.value for s in ACTIVE_STATUSES]),
        )
    ).first()
    if active is not None:
        outcome.ignored = "already_active"
        record_event(
            session=session,
            correlation_id=outcome.delivery_id,
            event_type="run_already_active",
            project_id=repository.project_id,
            run_id=active,
            payload={"stage": spec.stage, "number": spec.number},
        )
        _finish(session, delivery_row_id, outcome, "ignored:already_active")
        return
    project = session.get(Project, repository.project_id)
    assert project is not None
    settings = project.settings or {}
    run = AgentRun(
        correlation_id=uuid.uuid4().hex,
        project_id=repository.project_id,
        repository_id=repository.id,
        # GitHub numbers issues and pull requests in one sequence per repository.
        issue_number=spec.number,
        pr_number=spec.number if spec.is_pull_request else None,
        issue_title=_issue_title(payload),
        agent_key=spec.role.value,
        stage=spec.stage,
        is_revise=spec.is_revise,
        trigger_label=spec.trigger_label,
        delivery_id=outcome.delivery_id,
        status=RunStatus.PENDING.value,
        model=spec.model or settings.get("default_model"),
        reasoning_effort=spec.reasoning_effort,
        learning_mode=bool(settings.get("learning_mode_default", False)),
    )
    session.add(run)
    session.flush()
    assert run.id is not None
    outcome.runs.append(run.id)
    record_event(
        session=session,
        correlation_id=outcome.delivery_id,
        event_type="run_created",
        project_id=repository.project_id,
        run_id=run.id,
        payload={
            "stage": spec.stage,
            "agent": spec.role.value,
            "number": spec.number,
            "is_pull_request": spec.is_pull_request,
            "is_revise": spec.is_revise,
            "trigger_label": spec.trigger_label,
            "model": run.model,
            "reasoning_effort": run.reasoning_effort,
        },
    )
    _finish(session, delivery_row_id, outcome, "run_created")


def _cancel(
    session: Session,
    delivery_row_id: int,
    outcome: IngestOutcome,
    decision: TriggerDecision,
    number: int | None,
    repository: Repository,
) -> None:
    query = select(AgentRun).where(
        AgentRun.repository_id == repository.id,
        AgentRun.issue_number == number,
        col(AgentRun.status).in_([s.value for s in ACTIVE_STATUSES]),
    )
    if decision.kind is DecisionKind.CANCEL_PENDING_FOR_LABEL:
        query = query.where(
            AgentRun.status == RunStatus.PENDING.value, AgentRun.trigger_label == decision.label
        )
    reason = (
        "label_removed"
        if decision.kind is DecisionKind.CANCEL_PENDING_FOR_LABEL
        else str(decision.reason)
    )
    now = utcnow()
    for run in session.exec(query.with_for_update()).all():
        assert run.id is not None
        if run.status == RunStatus.PENDING.value:
            # Nothing runs yet: cancel right away, guarded against a dispatcher claiming it now.
            changed = session.execute(
                sa.update(AgentRun)
                .where(col(AgentRun.id) == run.id, col(AgentRun.status) == RunStatus.PENDING.value)
                .values(
                    status=RunStatus.CANCELED.value,
                    status_reason=reason,
                    finished_at=now,
                    cancel_requested_at=now,
                    cancel_reason=reason,
                )
            ).rowcount
            if changed:
                outcome.canceled.append(run.id)
                record_event(
                    session=session, correlation_id=outcome.delivery_id, event_type="run_canceled",
                    project_id=run.project_id, run_id=run.id,
                    payload={"reason": reason, "from": RunStatus.PENDING.value},
                )  # fmt: skip
                continue
        session.execute(
            sa.update(AgentRun)
            .where(col(AgentRun.id) == run.id, col(AgentRun.cancel_requested_at).is_(None))
            .values(cancel_requested_at=now, cancel_reason=reason)
        )
        outcome.cancel_requested.append(run.id)
        record_event(
            session=session, correlation_id=outcome.delivery_id,
            event_type="run_cancel_requested", project_id=run.project_id, run_id=run.id,
            payload={"reason": reason},
        )  # fmt: skip
    if not outcome.canceled and not outcome.cancel_requested:
        _ignore(
            session, delivery_row_id, outcome, "nothing_to_cancel", project_id=repository.project_id
        )
        return
    _finish(session, delivery_row_id, outcome, reason)
