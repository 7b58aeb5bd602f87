"""Projects, their run slots and their members."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from codexk8s.db.models import AgentRun, Project, ProjectMember, Slot, User, utcnow
from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Action, Principal, can_see_project, is_allowed
from codexk8s.domain.labels import REASONING_EFFORTS
from codexk8s.domain.run_requests import DEFAULT_WAITING_SLOT, waiting_slot
from codexk8s.domain.slots import DEFAULT_SLOTS, MAX_SLOTS
from codexk8s.domain.stages import Stage, parse_stage
from codexk8s.errors import (
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
)
from codexk8s.services import run_access, users
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


def is_key_shaped(key: str) -> bool:
    """Whether KEY could be a project's key. No project has one outside the pattern, so such a
    key (with a NUL byte, say, which PostgreSQL refuses in text) is not found without a query."""
    return bool(_KEY.match(key))


def _find(session: Session, key: str, *, lock: bool = False) -> Project | None:
    if not is_key_shaped(key):
        return None
    query = select(Project).where(Project.key == key)
    return session.exec(query.with_for_update() if lock else query).first()


def get_by_key(*, session: Session, key: str) -> Project | None:
    return _find(session, key)


def require_by_key(*, session: Session, key: str) -> Project:
    project = get_by_key(session=session, key=key)
    if project is None:
        raise NotFoundError(f"no project with key {key!r}")
    return project


def _record(
    session: Session,
    project: Project,
    event_type: str,
    actor_id: str | None,
    payload: dict[str, object],
) -> None:
    """Add a change of PROJECT to its audit trail (correlated by the project)."""
    record_event(
        session=session, correlation_id=f"project-{project.id}", event_type=event_type,
        actor_id=actor_id, project_id=project.id, payload=payload,
    )  # fmt: skip


def create_project(
    *,
    session: Session,
    key: str,
    name: str | None = None,
    slots: int = DEFAULT_SLOTS,
    actor_id: str | None = None,
    actor: Principal | None = None,
    is_operator: bool = True,
) -> Project:
    """Create project KEY with SLOTS run slots. From the dashboard (IS_OPERATOR false) only a
    platform admin ACTOR may; the command line is the local operator."""
    if not is_operator and not is_allowed(actor, Action.CREATE_PROJECT):
        raise ForbiddenError("creating projects is for platform admins")
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
    _record(session, project, "project_created", actor_id, {"key": key, "slots": slots})
    return project


# --- members (the dashboard's Projects page and `codexk8s member add`) ----------------------------
#
# Who may do what: anyone who may see a project (any member, platform admins) may list its
# members; MANAGE_MEMBERS (project admin, platform admin, owner) may add, re-role and remove them.
# Someone who cannot see the project gets the same NotFoundError as for a key that does not
# exist, so existence does not leak. A None actor is the local operator at the command line.
#
# The last project admin may not be demoted or removed by a project admin (they would lock the
# project's members out of managing it, themselves included); a platform admin or the operator
# may, since they can always manage the project and appoint a new admin.


@dataclass(frozen=True, slots=True)
class ProjectRow:
    """A project as one person's Projects page lists it; `role` is theirs (None: platform admin
    without a membership)."""

    id: int
    key: str
    name: str
    slots: int
    role: str | None
    can_manage_members: bool


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One member of a project: no ORM row leaves the service."""

    user_id: int
    email: str
    role: str
    # The member's own learning mode for the runs they start: "on", "off" or "default" (the
    # project's).
    learning_mode: str = "default"


LEARNING_MODES: dict[bool | None, str] = {True: "on", False: "off", None: "default"}


def _authorize_members(
    session: Session,
    actor: Principal | None,
    project_key: str,
    *,
    action: Action,
    lock: bool = False,
) -> Project:
    """`authorize` for ACTION on PROJECT_KEY's members, refused in the members' own words. LOCK
    holds the project row until commit so concurrent member changes on it serialize (the
    last-admin check depends on it)."""
    try:
        return authorize(
            session=session, actor=actor, project_key=project_key, action=action, lock=lock
        )
    except ForbiddenError:
        raise ForbiddenError(f"managing the members of {project_key} is for its admins") from None


def _member(session: Session, project: Project, email: str) -> tuple[ProjectMember, User]:
    user = users.require_by_email(session=session, email=email)
    found = session.exec(
        select(ProjectMember).where(
            ProjectMember.project_id == project.id, ProjectMember.user_id == user.id
        )
    ).first()
    if found is None:
        raise NotFoundError(f"{user.email} is not a member of {project.key}")
    return found, user


def _ensure_an_admin_remains(
    session: Session, actor: Principal | None, project: Project, member: ProjectMember
) -> None:
    """Refuse a project admin's change that takes away the project's last admin."""
    if member.role != ProjectRole.ADMIN.value or actor is None or actor.is_platform_admin:
        return
    other = session.exec(
        select(ProjectMember.id).where(
            ProjectMember.project_id == project.id,
            ProjectMember.role == ProjectRole.ADMIN.value,
            ProjectMember.id != member.id,
        )
    ).first()
    if other is None:
        raise PreconditionError(
            f"this is the only admin of {project.key}; make someone else admin first"
        )


def _member_row(member: ProjectMember, user: User) -> MemberRow:
    assert user.id is not None
    return MemberRow(
        user_id=user.id, email=user.email, role=member.role,
        learning_mode=LEARNING_MODES[member.learning_mode],
    )  # fmt: skip


def list_visible_projects(*, session: Session, actor: Principal) -> list[ProjectRow]:
    """The projects ACTOR may see, by key: all for platform admins, else those they are a member
    of, each with ACTOR's role on it."""
    from codexk8s.services.agent_runs import visible_projects  # agent_runs imports this module

    return [
        ProjectRow(
            id=view.id,
            key=view.key,
            name=view.name,
            slots=int(view.settings.get("slots", 0)),
            role=view.role,
            can_manage_members=is_allowed(
                actor, Action.MANAGE_MEMBERS, ProjectRole(view.role) if view.role else None
            ),
        )
        for view in visible_projects(session=session, principal=actor)
    ]


def list_members(*, session: Session, actor: Principal | None, project_key: str) -> list[MemberRow]:
    """The members of PROJECT_KEY by email, for anyone who may see the project."""
    project = _authorize_members(session, actor, project_key, action=Action.VIEW_PROJECT)
    rows = session.exec(
        select(ProjectMember, User)
        .join(User, col(User.id) == col(ProjectMember.user_id))
        .where(ProjectMember.project_id == project.id)
        .order_by(col(User.email))
    ).all()
    return [_member_row(member, user) for member, user in rows]


def add_member(
    *,
    session: Session,
    project_key: str,
    email: str,
    role: str,
    actor: Principal | None = None,
    actor_id: str | None = None,
) -> ProjectMember:
    """Give the user EMAIL the ROLE on PROJECT_KEY (the user must exist already)."""
    project_role = parse_project_role(role)
    project = _authorize_members(session, actor, project_key, action=Action.MANAGE_MEMBERS)
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
    _record(
        session,
        project,
        "member_added",
        actor_id,
        {"email": user.email, "role": project_role.value},
    )
    session.flush()
    return member


def set_member_role(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    email: str,
    role: str,
    actor_id: str | None = None,
) -> MemberRow:
    """Give the member EMAIL of PROJECT_KEY the ROLE."""
    project_role = parse_project_role(role)
    project = _authorize_members(
        session, actor, project_key, action=Action.MANAGE_MEMBERS, lock=True
    )
    member, user = _member(session, project, email)
    if member.role == project_role.value:
        return _member_row(member, user)
    _ensure_an_admin_remains(session, actor, project, member)
    previous = member.role
    member.role = project_role.value
    session.add(member)
    project.updated_at = utcnow()
    _record(
        session,
        project,
        "member_role_changed",
        actor_id,
        {"email": user.email, "from": previous, "to": project_role.value},
    )
    session.flush()
    return _member_row(member, user)


def set_member_learning_mode(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    email: str,
    learning_mode: bool | None,
    actor_id: str | None = None,
) -> MemberRow:
    """Turn learning mode on or off for the runs member EMAIL starts on PROJECT_KEY, or (None)
    back to the project's default."""
    project = _authorize_members(session, actor, project_key, action=Action.MANAGE_MEMBERS)
    member, user = _member(session, project, email)
    if member.learning_mode is learning_mode:
        return _member_row(member, user)
    previous = member.learning_mode
    member.learning_mode = learning_mode
    session.add(member)
    _record(
        session,
        project,
        "member_learning_mode_changed",
        actor_id,
        {"email": user.email, "from": previous, "to": learning_mode},
    )
    session.flush()
    return _member_row(member, user)


def remove_member(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    email: str,
    actor_id: str | None = None,
) -> MemberRow:
    """Take the member EMAIL off PROJECT_KEY; returns the membership as it was."""
    project = _authorize_members(
        session, actor, project_key, action=Action.MANAGE_MEMBERS, lock=True
    )
    member, user = _member(session, project, email)
    _ensure_an_admin_remains(session, actor, project, member)
    row = _member_row(member, user)
    session.delete(member)
    project.updated_at = utcnow()
    _record(session, project, "member_removed", actor_id, {"email": user.email, "role": row.role})
    session.flush()
    return row


# --- settings and deletion (the project page) -----------------------------------------------------

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")


@dataclass(frozen=True, slots=True)
class ProjectSettings:
    """A project's editable settings and what the viewer may do with the project."""

    id: int
    key: str
    name: str
    slots: int
    learning_mode_default: bool
    default_model: str
    # Days its finished runs keep their log lines: None the installation's default
    # (CODEXK8S_LOG_RETENTION_DAYS), 0 forever.
    log_retention_days: int | None
    role: str | None
    can_edit: bool
    can_edit_repositories: bool
    can_manage_members: bool
    can_delete: bool
    # Who besides members with write access may start runs from GitHub, and discussions
    # (see `update_conversation_settings`).
    trigger_bots: tuple[str, ...] = ()
    discussion_stages: tuple[str, ...] = ()
    discussion_model: str = ""
    discussion_reasoning_effort: str = ""
    # What a run does with its slot while it waits for a person (domain.run_requests).
    waiting_slot: str = DEFAULT_WAITING_SLOT.value


def authorize(
    *, session: Session, actor: Principal | None, project_key: str, action: Action,
    lock: bool = False,
) -> Project:  # fmt: skip
    """The project PROJECT_KEY when ACTOR (None: the local operator) may do ACTION on it;
    NotFoundError when they may not see it (as for a missing key), ForbiddenError otherwise."""
    project = _find(session, project_key, lock=lock)
    if project is None:
        raise NotFoundError(f"no project with key {project_key!r}")
    if actor is None:
        return project
    assert project.id is not None
    role = run_access.membership_role(session=session, actor=actor, project_id=project.id)
    if not can_see_project(actor, role):
        raise NotFoundError(f"no project with key {project_key!r}")
    if not is_allowed(actor, action, role):
        raise ForbiddenError(
            f"{action.value.replace('_', ' ')} on {project_key} is not for your role"
        )
    return project


def get_settings(*, session: Session, actor: Principal, project_key: str) -> ProjectSettings:
    """PROJECT_KEY's settings, for anyone who may see it."""
    project = authorize(
        session=session, actor=actor, project_key=project_key, action=Action.VIEW_PROJECT
    )
    assert project.id is not None
    role = run_access.membership_role(session=session, actor=actor, project_id=project.id)
    settings = project.settings or {}
    return ProjectSettings(
        id=project.id,
        key=project.key,
        name=project.name,
        slots=int(settings.get("slots", 0)),
        learning_mode_default=bool(settings.get("learning_mode_default", False)),
        default_model=str(settings.get("default_model") or ""),
        log_retention_days=settings.get("log_retention_days"),
        role=role.value if role is not None else None,
        can_edit=is_allowed(actor, Action.EDIT_PROJECT, role),
        can_edit_repositories=is_allowed(actor, Action.EDIT_REPOSITORIES, role),
        can_manage_members=is_allowed(actor, Action.MANAGE_MEMBERS, role),
        can_delete=is_allowed(actor, Action.DELETE_PROJECT, role),
        trigger_bots=tuple(settings.get("trigger_bots") or ()),
        discussion_stages=tuple(settings.get("discussion_stages") or ()),
        discussion_model=str(settings.get("discussion_model") or ""),
        discussion_reasoning_effort=str(settings.get("discussion_reasoning_effort") or ""),
        waiting_slot=waiting_slot(settings).value,
    )


def _resize_slots(session: Session, project: Project, slots: int) -> None:
    """Add slot rows up to SLOTS, or drop the ones above it when they are free (a leased slot
    holds a run; taking it away would strand the run's lease)."""
    existing = session.exec(
        select(Slot)
        .where(Slot.project_id == project.id)
        .order_by(col(Slot.number))
        .with_for_update()
    ).all()
    numbers = {slot.number for slot in existing}
    for slot in existing:
        if slot.number > slots:
            if slot.state != "free":
                raise PreconditionError(
                    f"slot {slot.number} of {project.key} is in use by a run; lower the slot "
                    "count after that run ends"
                )
            session.delete(slot)
    for number in range(1, slots + 1):
        if number not in numbers:
            assert project.id is not None
            session.add(Slot(project_id=project.id, number=number))


MAX_RETENTION_DAYS = 36_500


def parse_log_retention(text: str) -> int | None:
    """A log retention as typed: empty or "default" → None (the installation's), "forever" or 0
    → 0, else a whole number of days."""
    value = text.strip().lower()
    if value in ("", "default"):
        return None
    if value == "forever":
        return 0
    if not value.isascii() or not value.isdigit() or int(value) > MAX_RETENTION_DAYS:
        raise InvalidArgumentError(
            f"log retention must be a number of days (0-{MAX_RETENTION_DAYS}, 0: forever), "
            f"'forever' or 'default', got {text!r}"
        )
    return int(value)


def update_settings(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    name: str,
    slots: int,
    learning_mode_default: bool,
    default_model: str | None,
    log_retention_days: int | None,
    actor_id: str | None = None,
) -> Project:
    """Change PROJECT_KEY's name, slot count, learning-mode default, default model (empty: the
    agent's own model) and log retention in days (None: the installation's, 0: forever).
    Validates everything before changing anything."""
    display_name = name.strip()
    if not display_name or len(display_name) > 200:
        raise InvalidArgumentError("project name must be 1-200 characters")
    if not 1 <= slots <= MAX_SLOTS:
        raise InvalidArgumentError(f"slots must be between 1 and {MAX_SLOTS}, got {slots}")
    model = (default_model or "").strip() or None
    if model is not None and not _MODEL.match(model):
        raise InvalidArgumentError(f"not a model name: {model!r}")
    if log_retention_days is not None and not 0 <= log_retention_days <= MAX_RETENTION_DAYS:
        raise InvalidArgumentError(
            f"log retention must be 0-{MAX_RETENTION_DAYS} days, got {log_retention_days}"
        )
    project = authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_PROJECT,
        lock=True,
    )  # fmt: skip
    before = dict(project.settings or {})
    after = {**before, "slots": slots, "learning_mode_default": learning_mode_default,
             "default_model": model, "log_retention_days": log_retention_days}  # fmt: skip
    if log_retention_days is None:
        del after["log_retention_days"]  # the installation's default: no key at all
    keys = [*after, *(k for k in before if k not in after)]
    changes = {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}
    if project.name != display_name:
        changes["name"] = [project.name, display_name]
    if not changes:
        return project
    if "slots" in changes:
        _resize_slots(session, project, slots)
    project.name = display_name
    project.settings = after  # a new dict: JSON columns do not track in-place changes
    project.updated_at = utcnow()
    session.add(project)
    _record(session, project, "project_settings_changed", actor_id, {"changes": changes})
    session.flush()
    return project


MAX_TRIGGER_BOTS = 50


def update_conversation_settings(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    trigger_bots: list[str] | None = None,
    discussion_stages: list[str] | None = None,
    discussion_model: str | None = None,
    discussion_reasoning_effort: str | None = None,
    actor_id: str | None = None,
) -> Project:
    """Change who besides members may start runs from GitHub and how discussions run; a None
    argument leaves that setting as it is, an empty one clears it.

    - TRIGGER_BOTS: GitHub logins (bots, usually `name[bot]`) whose labels, comments and
      reviews start runs although no codexk8s user is linked to them.
    - DISCUSSION_STAGES: stages whose run label starts a discussion (answers on the issue, no
      pull request) instead of work; members' comments then continue it.
    - DISCUSSION_MODEL / DISCUSSION_REASONING_EFFORT: what discussion turns run with (empty:
      the installation's CODEXK8S_DISCUSSION_MODEL / _REASONING_EFFORT).
    Validates everything before changing anything."""
    changes: dict[str, object] = {}
    if trigger_bots is not None:
        bots = list(dict.fromkeys(users.normalize_github_login(bot) for bot in trigger_bots))
        if len(bots) > MAX_TRIGGER_BOTS:
            raise InvalidArgumentError(f"at most {MAX_TRIGGER_BOTS} bots may trigger runs")
        changes["trigger_bots"] = bots
    if discussion_stages is not None:
        stages = []
        for text in discussion_stages:
            stage = parse_stage(text)
            if stage is None:
                raise InvalidArgumentError(
                    f"unknown stage {text!r}; use: {', '.join(s.value for s in Stage)}"
                )
            stages.append(stage.value)
        changes["discussion_stages"] = list(dict.fromkeys(stages))
    if discussion_model is not None:
        model = discussion_model.strip()
        if model and not _MODEL.match(model):
            raise InvalidArgumentError(f"not a model name: {discussion_model!r}")
        changes["discussion_model"] = model or None
    if discussion_reasoning_effort is not None:
        effort = discussion_reasoning_effort.strip().lower()
        if effort and effort not in REASONING_EFFORTS:
            raise InvalidArgumentError(
                f"reasoning effort must be one of: {', '.join(REASONING_EFFORTS)}"
            )
        changes["discussion_reasoning_effort"] = effort or None
    project = authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_PROJECT,
        lock=True,
    )  # fmt: skip
    before = dict(project.settings or {})
    after = dict(before)
    for key, value in changes.items():
        if value in (None, []):
            after.pop(key, None)
        else:
            after[key] = value
    diff = {k: [before.get(k), after.get(k)] for k in changes if before.get(k) != after.get(k)}
    if not diff:
        return project
    project.settings = after  # a new dict: JSON columns do not track in-place changes
    project.updated_at = utcnow()
    session.add(project)
    _record(session, project, "project_settings_changed", actor_id, {"changes": diff})
    session.flush()
    return project


def delete_project(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    confirm_key: str,
    actor_id: str | None = None,
) -> None:
    """Delete PROJECT_KEY with its repositories, members, slots, runs and their logs. CONFIRM_KEY
    must repeat the key; a project with active runs is refused (their workloads would be left
    behind). The audit trail keeps its events (without the project) and a deletion event."""
    if confirm_key.strip() != project_key:
        raise InvalidArgumentError(f"type the project key {project_key!r} to confirm deletion")
    project = authorize(
        session=session, actor=actor, project_key=project_key, action=Action.DELETE_PROJECT,
        lock=True,
    )  # fmt: skip
    active = session.exec(
        select(sa.func.count())
        .select_from(AgentRun)
        .where(
            AgentRun.project_id == project.id,
            col(AgentRun.status).in_(["pending", "starting", "running"]),
        )
    ).one()
    if active:
        raise PreconditionError(
            f"{project_key} has {active} active run(s); cancel them or let them finish first"
        )
    record_event(
        session=session,
        correlation_id=f"project-{project.id}",
        event_type="project_deleted",
        actor_id=actor_id,
        payload={"key": project.key, "name": project.name, "project_id": project.id},
    )
    # Slots point at runs; the database cascades the rest from the project row.
    session.exec(sa.delete(Slot).where(col(Slot.project_id) == project.id))  # type: ignore[call-overload]
    session.delete(project)
    session.flush()


@dataclass(frozen=True, slots=True)
class RecentRun:
    id: int
    stage: str
    agent_key: str
    status: str
    issue_number: int | None
    repository: str | None
    created_at: str  # ISO, UTC


def recent_runs(
    *, session: Session, actor: Principal, project_key: str, limit: int = 20
) -> list[RecentRun]:
    """The newest LIMIT runs of PROJECT_KEY, for anyone who may see it."""
    from codexk8s.services.agent_runs import list_runs  # agent_runs imports this module

    authorize(session=session, actor=actor, project_key=project_key, action=Action.VIEW_PROJECT)
    return [
        RecentRun(
            id=row.id, stage=row.stage, agent_key=row.agent_key, status=row.status,
            issue_number=row.issue_number, repository=row.repository,
            created_at=_utc_text(row.created_at),
        )
        for row in list_runs(session=session, project_key=project_key, limit=limit)
    ]  # fmt: skip


def _utc_text(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
