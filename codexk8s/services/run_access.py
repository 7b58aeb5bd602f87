"""Who may see or change a run, decided in one place: the staff API, the dashboard and any other
caller ask `require_run`; a person's role on a project is read by `membership_role`."""

from __future__ import annotations

from sqlmodel import Session, select

from codexk8s.db.models import AgentRun, ProjectMember
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Action, Principal, can_see_project, is_allowed
from codexk8s.errors import ForbiddenError, NotFoundError


def membership_role(*, session: Session, actor: Principal, project_id: int) -> ProjectRole | None:
    """ACTOR's membership role on the project, or None."""
    role = session.exec(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == actor.user_id
        )
    ).first()
    return ProjectRole(role) if role is not None else None


def access_role(*, session: Session, actor: Principal, project_id: int) -> ProjectRole | None:
    """The role `is_allowed` needs for ACTOR on the project: platform admins may do everything
    without a membership, so theirs is not read."""
    if actor.is_platform_admin:
        return None
    return membership_role(session=session, actor=actor, project_id=project_id)


def require_run(
    *, session: Session, actor: Principal, run_id: int, action: Action
) -> ProjectRole | None:
    """ACTOR's role on the run's project when they may ACTION on run RUN_ID. NotFoundError when
    there is no such run or they may not see it (the same error, so existence does not leak);
    ForbiddenError when they may see it but not ACTION."""
    project_id = session.exec(select(AgentRun.project_id).where(AgentRun.id == run_id)).first()
    if project_id is None:
        raise NotFoundError(f"no run {run_id}")
    role = access_role(session=session, actor=actor, project_id=project_id)
    if not can_see_project(actor, role):
        raise NotFoundError(f"no run {run_id}")
    if not is_allowed(actor, action, role):
        raise ForbiddenError(f"your role on this project does not allow {action.value}")
    return role
