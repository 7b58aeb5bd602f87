"""Projects, their run slots and their members."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from codexk8s.db.models import Project, ProjectMember, Slot, utcnow
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.slots import DEFAULT_SLOTS, MAX_SLOTS
from codexk8s.errors import ConflictError, InvalidArgumentError, NotFoundError
from codexk8s.services import users
from codexk8s.services.audit import record_event
from codexk8s.services.validation import parse_choice

# Keys end up in Kubernetes namespace names and labels: DNS-label rules, kept short.
_KEY = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def validate_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidArgumentError(
            f"invalid project key {key!r}: use 1-32 lower-case letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return key


def parse_project_role(role: str) -> ProjectRole:
    return parse_choice(ProjectRole, role, "project role")


def get_by_key(*, session: Session, key: str) -> Project | None:
    return session.exec(select(Project).where(Project.key == key)).first()


def require_by_key(*, session: Session, key: str) -> Project:
    project = get_by_key(session=session, key=key)
    if project is None:
        raise NotFoundError(f"no project with key {key!r}")
    return project


def create_project(
    *,
    session: Session,
    key: str,
    name: str | None = None,
    slots: int = DEFAULT_SLOTS,
    actor_id: str | None = None,
) -> Project:
    validate_key(key)
    if not 1 <= slots <= MAX_SLOTS:
        raise InvalidArgumentError(f"slots must be between 1 and {MAX_SLOTS}, got {slots}")
    display_name = (name or key).strip()
    if not display_name or len(display_name) > 200:
        raise InvalidArgumentError("project name must be 1-200 characters")
    if get_by_key(session=session, key=key) is not None:
        raise ConflictError(f"project {key!r} already exists")
    project = Project(
        key=key,
        name=display_name,
        settings={"slots": slots, "learning_mode_default": False, "default_model": None},
    )
    session.add(project)
    session.flush()
    assert project.id is not None
    for number in range(1, slots + 1):
        session.add(Slot(project_id=project.id, number=number))
    record_event(
        session=session,
        correlation_id=f"project-{project.id}",
        event_type="project_created",
        actor_id=actor_id,
        project_id=project.id,
        payload={"key": key, "slots": slots},
    )
    return project


def add_member(
    *,
    session: Session,
    project_key: str,
    email: str,
    role: str,
    actor_id: str | None = None,
) -> ProjectMember:
    project_role = parse_project_role(role)
    project = require_by_key(session=session, key=project_key)
    user = users.require_by_email(session=session, email=email)
    assert project.id is not None and user.id is not None
    existing = session.exec(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    ).first()
    if existing is not None:
        raise ConflictError(f"{user.email} is already a member of {project.key}")
    member = ProjectMember(project_id=project.id, user_id=user.id, role=project_role.value)
    session.add(member)
    project.updated_at = utcnow()
    record_event(
        session=session,
        correlation_id=f"project-{project.id}",
        event_type="member_added",
        actor_id=actor_id,
        project_id=project.id,
        payload={"email": user.email, "role": project_role.value},
    )
    return member
