"""Creating runs: the one place a new pending run is inserted for a trigger or a person.

One active run per (repository, issue/PR number, stage, mode): `insert_run_locked` takes the
repository row lock (`FOR NO KEY UPDATE`) and checks for an active run under it, so webhook ingest
and manual starts (API, dashboard) serialise on the same lock and cannot both create one. A
discussion is the exception that proves it: only a *pending* turn blocks the next one (a comment
during a running turn queues one more turn, which dispatch starts once the running one ended).

A discussion turn's model and reasoning effort come from the project's discussion settings
(`discussion_model`, `discussion_reasoning_effort`), else CODEXK8S_DISCUSSION_MODEL /
CODEXK8S_DISCUSSION_REASONING_EFFORT, never from the issue's model labels (those pick the work's).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine
from codexk8s.db.models import AgentRun, Project, ProjectMember, Repository, User, table_of
from codexk8s.domain.authorization import Principal
from codexk8s.domain.labels import MODEL_NAME_MAX_LENGTH, REASONING_EFFORTS
from codexk8s.domain.runs import ACTIVE_STATUSES, ActorType, RunMode, RunStatus
from codexk8s.domain.stages import REVIEW_STAGE, AgentRole, parse_stage, role_for
from codexk8s.domain.triggers import RunSpec
from codexk8s.errors import ConflictError, InvalidArgumentError, NotFoundError
from codexk8s.services import audit, repositories

_RUNS: sa.Table = table_of(AgentRun)
_REPOSITORIES: sa.Table = table_of(Repository)
_PROJECTS: sa.Table = table_of(Project)
_MEMBERS: sa.Table = table_of(ProjectMember)
_USERS: sa.Table = table_of(User)
_ACTIVE_STATUS_VALUES = sorted(status.value for status in ACTIVE_STATUSES)
_MODEL_NAME = re.compile(r"[A-Za-z0-9._:/-]+")
MAX_ISSUE_NUMBER = 2**31 - 1

# Statements are built once: building one costs more CPU than executing it (webhook ingest runs
# these for every delivery that may start a run).
# FOR NO KEY UPDATE: a webhook delivery row's foreign key already holds FOR KEY SHARE on this
# row, which a plain FOR UPDATE would wait on (a deadlock between two concurrent deliveries).
LOCK_REPOSITORY = (
    sa.select(_REPOSITORIES.c.id)
    .where(_REPOSITORIES.c.id == sa.bindparam("repository_id"))
    .with_for_update(key_share=True)
)
ACTIVE_RUN = sa.select(_RUNS.c.id).where(
    _RUNS.c.repository_id == sa.bindparam("repository_id"),
    _RUNS.c.issue_number == sa.bindparam("number"),
    _RUNS.c.stage == sa.bindparam("stage"),
    _RUNS.c.mode == sa.bindparam("mode"),
    # One fixed parameter per status: a plain list would be an "expanding" IN, re-rendered on
    # every execution. For a discussion only a pending turn counts (see the module's docstring).
    sa.or_(
        _RUNS.c.status == sa.literal(RunStatus.PENDING.value),
        sa.and_(
            sa.bindparam("pending_only", type_=sa.Boolean).is_(sa.false()),
            _RUNS.c.status.in_([sa.literal(status) for status in _ACTIVE_STATUS_VALUES]),
        ),
    ),
)
_PROJECT_SETTINGS = sa.select(_PROJECTS.c.settings).where(
    _PROJECTS.c.id == sa.bindparam("project_id")
)
_INSERT_RUN = sa.insert(_RUNS).returning(_RUNS.c.id)
# The learning-mode override of the project member who asked for the run: by user id (a start
# from the API or CLI) or by GitHub login (the webhook's sender).
_MEMBER_LEARNING_MODE = (
    sa.select(_MEMBERS.c.learning_mode)
    .select_from(_MEMBERS.join(_USERS, _USERS.c.id == _MEMBERS.c.user_id))
    .where(
        _MEMBERS.c.project_id == sa.bindparam("project_id"),
        sa.or_(
            _USERS.c.id == sa.bindparam("user_id", type_=sa.Integer),
            sa.func.lower(_USERS.c.github_login) == sa.bindparam("login", type_=sa.String),
        ),
        _MEMBERS.c.learning_mode.is_not(None),
    )
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class InsertedRun:
    """What `insert_run_locked` did: `run_id` of the new run, or `active_run_id` of the one that
    was already active (then nothing was inserted)."""

    run_id: int | None
    active_run_id: int | None
    model: str | None
    correlation_id: str | None
    reasoning_effort: str | None = None


def active_run(
    connection: Connection, *, repository_id: int, number: int, stage: str,
    mode: str = RunMode.WORK.value,
) -> int | None:  # fmt: skip
    parameters = {
        "repository_id": repository_id, "number": number, "stage": stage, "mode": mode,
        "pending_only": mode == RunMode.DISCUSSION.value,
    }  # fmt: skip
    return connection.execute(ACTIVE_RUN, parameters).scalar()


def insert_run_locked(
    connection: Connection,
    *,
    project_id: int,
    repository_id: int,
    spec: RunSpec,
    issue_title: str | None = None,
    delivery_id: str | None = None,
    requested_by_user_id: int | None = None,
    requested_by_login: str | None = None,
) -> InsertedRun:
    """Insert a pending run for SPEC unless one is active for its (repository, number, stage).

    Learning mode is the project's default unless the member who asked for the run (the user
    REQUESTED_BY_USER_ID, or the GitHub user REQUESTED_BY_LOGIN who labeled the issue) set their
    own. Runs in the caller's transaction, which holds the repository lock until it commits.
    """
    connection.execute(LOCK_REPOSITORY, {"repository_id": repository_id})
    # A statement of its own, after the lock: in READ COMMITTED each statement reads a fresh
    # snapshot, so it sees a run committed by the previous lock holder. Joined into the locking
    # statement it would read the snapshot taken before waiting for the lock.
    active = active_run(
        connection, repository_id=repository_id, number=spec.number, stage=spec.stage,
        mode=spec.mode,
    )  # fmt: skip
    if active is not None:
        return InsertedRun(run_id=None, active_run_id=active, model=None, correlation_id=None)
    settings = connection.execute(_PROJECT_SETTINGS, {"project_id": project_id}).scalar_one() or {}
    model = spec.model or settings.get("default_model")
    reasoning_effort = spec.reasoning_effort
    if spec.is_discussion:
        installation = get_settings()
        model = (
            settings.get("discussion_model")
            or installation.discussion_model
            or settings.get("default_model")
        )
        reasoning_effort = (
            settings.get("discussion_reasoning_effort") or installation.discussion_reasoning_effort
        )
    learning_mode = bool(settings.get("learning_mode_default", False))
    if requested_by_user_id is not None or requested_by_login:
        override = connection.execute(
            _MEMBER_LEARNING_MODE,
            {
                "project_id": project_id,
                "user_id": requested_by_user_id,
                "login": requested_by_login.lower() if requested_by_login else None,
            },
        ).scalar()
        if override is not None:
            learning_mode = bool(override)
    correlation_id = uuid.uuid4().hex
    run_id: int = connection.execute(
        _INSERT_RUN,
        {
            "correlation_id": correlation_id,
            "project_id": project_id,
            "repository_id": repository_id,
            # GitHub numbers issues and pull requests in one sequence per repository.
            "issue_number": spec.number,
            "pr_number": spec.number if spec.is_pull_request else None,
            "issue_title": issue_title,
            "agent_key": spec.role.value,
            "stage": spec.stage,
            "is_revise": spec.is_revise,
            "trigger_label": spec.trigger_label or None,
            "delivery_id": delivery_id,
            "status": RunStatus.PENDING.value,
            "model": model,
            "reasoning_effort": reasoning_effort,
            "learning_mode": learning_mode,
            "mode": spec.mode,
        },
    ).scalar_one()
    return InsertedRun(
        run_id=run_id, active_run_id=None, model=model, correlation_id=correlation_id,
        reasoning_effort=reasoning_effort,
    )  # fmt: skip


def run_spec_for(
    *, stage: str, issue: int, model: str | None = None, reasoning_effort: str | None = None
) -> RunSpec:
    """A manual run's spec from user input: STAGE is a Stage value or "review" (a reviewer run on
    pull request ISSUE)."""
    if isinstance(issue, bool) or not isinstance(issue, int) or not 1 <= issue <= MAX_ISSUE_NUMBER:
        raise InvalidArgumentError("issue must be a positive issue or pull request number")
    if not isinstance(stage, str):
        raise InvalidArgumentError("stage must be a string")
    if stage.strip().lower() == REVIEW_STAGE:
        stage_text, role, is_pull_request = REVIEW_STAGE, AgentRole.REVIEWER, True
    else:
        parsed = parse_stage(stage)
        if parsed is None:
            raise InvalidArgumentError(f"unknown stage {stage!r}; use a stage name or 'review'")
        stage_text, role, is_pull_request = parsed.value, role_for(parsed), False
    if model is not None and (
        not isinstance(model, str)
        or len(model) > MODEL_NAME_MAX_LENGTH
        or _MODEL_NAME.fullmatch(model) is None
    ):
        raise InvalidArgumentError(
            f"model must be 1-{MODEL_NAME_MAX_LENGTH} letters, digits and . _ : - /"
        )
    if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
        raise InvalidArgumentError(
            f"reasoning_effort must be one of: {', '.join(REASONING_EFFORTS)}"
        )
    return RunSpec(
        stage=stage_text, role=role, is_revise=False, trigger_label="", model=model,
        reasoning_effort=reasoning_effort, number=issue, is_pull_request=is_pull_request,
    )  # fmt: skip


def start_run(
    engine: Engine,
    *,
    project_key: str,
    repository: str,
    issue: int,
    stage: str,
    model: str | None = None,
    reasoning_effort: str | None = None,
    actor_id: str | None = None,
) -> int:
    """Start a run by hand for an issue (or, for "review", a pull request) of a repository
    attached to the project; ConflictError when one is active for the same issue and stage."""
    spec = run_spec_for(stage=stage, issue=issue, model=model, reasoning_effort=reasoning_effort)
    if not isinstance(repository, str):
        raise InvalidArgumentError("repository must be OWNER/NAME")
    owner, name = repositories.parse_full_name(repository)
    with engine.begin() as connection:
        project_id = connection.execute(
            sa.select(_PROJECTS.c.id).where(_PROJECTS.c.key == project_key)
        ).scalar()
        if project_id is None:
            raise NotFoundError(f"no project with key {project_key!r}")
        repository_id = connection.execute(
            sa.select(_REPOSITORIES.c.id).where(
                _REPOSITORIES.c.provider == repositories.PROVIDER_GITHUB,
                _REPOSITORIES.c.owner == owner,
                _REPOSITORIES.c.name == name,
                _REPOSITORIES.c.project_id == project_id,
            )
        ).scalar()
        if repository_id is None:
            raise InvalidArgumentError(
                f"repository {owner}/{name} is not attached to project {project_key!r}"
            )
        inserted = insert_run_locked(
            connection, project_id=project_id, repository_id=repository_id, spec=spec,
            requested_by_user_id=int(actor_id) if actor_id and actor_id.isdigit() else None,
        )  # fmt: skip
        if inserted.run_id is None:
            raise ConflictError(
                f"run {inserted.active_run_id} is already active for this issue and stage"
            )
        assert inserted.correlation_id is not None
        audit.insert_events(
            connection=connection,
            events=[
                audit.flow_event_values(
                    correlation_id=inserted.correlation_id,
                    event_type="run_created",
                    actor_type=ActorType.HUMAN,
                    actor_id=actor_id,
                    project_id=project_id,
                    run_id=inserted.run_id,
                    payload={
                        "stage": spec.stage,
                        "agent": spec.role.value,
                        "number": spec.number,
                        "is_pull_request": spec.is_pull_request,
                        "manual": True,
                        "model": inserted.model,
                        "reasoning_effort": spec.reasoning_effort,
                    },
                )
            ],
        )
    return inserted.run_id


# --- starting a run as a person (the staff API and the dashboard) --------------------------------


@dataclass(frozen=True, slots=True)
class StartTarget:
    """A project the person may start runs in, with its repositories."""

    project_key: str
    repositories: list[str]


def _may_start(session: Any, principal: Principal, project: Any) -> tuple[bool, bool]:
    """(may see it, may start runs in it) for PRINCIPAL."""
    from codexk8s.domain.authorization import Action, can_see_project, is_allowed
    from codexk8s.services import run_access

    role = run_access.access_role(session=session, actor=principal, project_id=project.id)
    return can_see_project(principal, role), is_allowed(principal, Action.START_RUN, role)


def start_run_as(
    engine: Engine | None = None,
    *,
    principal: Principal,
    project_key: str,
    repository: str,
    issue: Any,
    stage: str,
    model: str | None = None,
    reasoning_effort: str | None = None,
) -> int:
    """`start_run` for a signed-in person: NotFoundError for a project they may not see (the
    same as no project), ForbiddenError unless their role may start runs. The staff API's
    `POST /api/v1/runs` and the dashboard's "Start run" both come here."""
    engine = engine or get_engine()
    from sqlmodel import Session

    from codexk8s.errors import ForbiddenError
    from codexk8s.services import projects

    with Session(engine) as session:
        project = projects.get_by_key(session=session, key=project_key)
        may_see, may_start = _may_start(session, principal, project) if project else (False, False)
    if not may_see:
        raise NotFoundError(f"no project with key {project_key!r}")
    if not may_start:
        raise ForbiddenError("your role on this project does not allow starting runs")
    return start_run(
        engine, project_key=project_key, repository=repository, issue=issue, stage=stage,
        model=model, reasoning_effort=reasoning_effort, actor_id=str(principal.user_id),
    )  # fmt: skip


def start_targets(engine: Engine | None = None, *, principal: Principal) -> list[StartTarget]:
    """The projects PRINCIPAL may start runs in and their repositories, by key and name."""
    engine = engine or get_engine()
    from sqlmodel import Session, col, select

    from codexk8s.services import agent_runs

    targets = []
    with Session(engine) as session:
        for view in agent_runs.visible_projects(session=session, principal=principal):
            if not _may_start(session, principal, view)[1]:
                continue
            names = session.exec(
                select(Repository.owner, Repository.name)
                .where(Repository.project_id == view.id)
                .order_by(col(Repository.owner), col(Repository.name))
            ).all()
            targets.append(StartTarget(view.key, [f"{owner}/{name}" for owner, name in names]))
    return targets
