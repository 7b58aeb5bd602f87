"""People acting on runs: cancel and rerun (CLI, API and dashboard all call these)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from codexk8s.db.engine import get_engine
from codexk8s.db.models import utcnow
from codexk8s.domain.authorization import Action, Principal
from codexk8s.domain.runs import RunStatus
from codexk8s.errors import ConflictError, NotFoundError
from codexk8s.services import run_access
from codexk8s.services.run_start import LOCK_REPOSITORY, active_run
from codexk8s.services.run_states import RUNS, add_event, transition

USER_CANCEL_REASON = "canceled_by_user"


def _authorize(
    connection: Connection, actor: Principal | None, run_id: int, action: Action
) -> str | None:
    """ACTOR's id for the trail when they may ACTION on the run (run_access.require_run, in the
    action's transaction); None for no actor."""
    if actor is None:
        return None
    with Session(bind=connection) as session:
        run_access.require_run(session=session, actor=actor, run_id=run_id, action=action)
    return str(actor.user_id)


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    run_id: int
    status: str  # "canceled" when it never started, else the run's status while it stops
    is_immediate: bool


def cancel_run(
    engine: Engine | None = None,
    *,
    run_id: int,
    reason: str = USER_CANCEL_REASON,
    actor: Principal | None = None,
    actor_type: str = "human",
    actor_id: str | None = None,
) -> CancelOutcome:
    """A pending run is canceled at once; a starting or running one is asked to stop (the control
    loop delivers it to the workload and settles the run when it ends). ACTOR: the person asking,
    who must be allowed to cancel it (None: the operator or the system)."""
    engine = engine or get_engine()
    with engine.begin() as connection:
        actor_id = _authorize(connection, actor, run_id, Action.CANCEL_RUN) or actor_id
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).first()
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        if RunStatus(run.status).is_terminal:
            raise ConflictError(f"run {run_id} already ended ({run.status})")
        common = {
            "run_id": run.id,
            "correlation_id": run.correlation_id,
            "project_id": run.project_id,
        }
        now = utcnow()
        if transition(
            connection, **common, from_statuses=[RunStatus.PENDING], to_status=RunStatus.CANCELED,
            reason=reason, values={"cancel_requested_at": now, "cancel_reason": reason},
            actor_type=actor_type, actor_id=actor_id,
        ):  # fmt: skip
            return CancelOutcome(run_id=run_id, status=RunStatus.CANCELED.value, is_immediate=True)
        requested = connection.execute(
            RUNS.update()
            .where(
                RUNS.c.id == run_id,
                RUNS.c.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]),
                RUNS.c.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now, cancel_reason=reason)
        ).rowcount
        if requested:
            add_event(
                connection, **common, event_type="run_cancel_requested",
                payload={"reason": reason}, actor_type=actor_type, actor_id=actor_id,
            )  # fmt: skip
        current = connection.execute(
            sa.select(RUNS.c.status).where(RUNS.c.id == run_id)
        ).scalar_one()
    return CancelOutcome(run_id=run_id, status=current, is_immediate=False)


def rerun(
    engine: Engine | None = None,
    *,
    run_id: int,
    actor: Principal | None = None,
    actor_type: str = "human",
    actor_id: str | None = None,
) -> int:
    """Start a new pending run with the same target, stage and model as a finished one. ACTOR:
    the person asking, who must be allowed to rerun it (None: the operator)."""
    engine = engine or get_engine()
    with engine.begin() as connection:
        actor_id = _authorize(connection, actor, run_id, Action.RERUN) or actor_id
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).first()
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        if not RunStatus(run.status).is_terminal:
            raise ConflictError(f"run {run_id} is still {run.status}; cancel it or wait for it")
        if run.repository_id is not None and run.issue_number is not None:
            # The same rule and lock as webhook and manual starts: one active run per
            # (repository, issue, stage), checked under the repository row lock.
            connection.execute(LOCK_REPOSITORY, {"repository_id": run.repository_id})
            active = active_run(
                connection, repository_id=run.repository_id, number=run.issue_number,
                stage=run.stage, mode=run.mode,
            )  # fmt: skip
            if active is not None:
                raise ConflictError(f"run {active} is already active for this issue and stage")
        copied = {
            name: getattr(run, name)
            for name in (
                "project_id", "repository_id", "issue_number", "pr_number", "issue_title",
                "agent_key", "stage", "is_revise", "trigger_label", "model", "reasoning_effort",
                "learning_mode", "mode",
            )
        }  # fmt: skip
        new_id = connection.execute(
            RUNS.insert()
            .values(
                **copied, correlation_id=uuid.uuid4().hex, status=RunStatus.PENDING.value,
                attempt=run.attempt + 1, parent_run_id=run.id, created_at=utcnow(),
            )
            .returning(RUNS.c.id)
        ).scalar_one()  # fmt: skip
        add_event(
            connection, correlation_id=run.correlation_id, event_type="run_rerun_requested",
            run_id=run.id, project_id=run.project_id, payload={"new_run_id": new_id},
            actor_type=actor_type, actor_id=actor_id,
        )  # fmt: skip
        add_event(
            connection, correlation_id=run.correlation_id, event_type="run_created",
            run_id=new_id, project_id=run.project_id, payload={"rerun_of": run.id},
            actor_type=actor_type, actor_id=actor_id,
        )  # fmt: skip
    return int(new_id)
