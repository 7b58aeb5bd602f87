"""Repositories attached to projects; their token and webhook secret are stored encrypted."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from codexk8s.crypto import SecretBox
from codexk8s.db.models import Repository
from codexk8s.domain.authorization import Action, Principal
from codexk8s.errors import ConflictError, InvalidArgumentError, NotFoundError
from codexk8s.services import projects
from codexk8s.services.audit import record_event

PROVIDER_GITHUB = "github"
_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def parse_full_name(full_name: str) -> tuple[str, str]:
    """`Owner/Name` → ("owner", "name"), lower-cased as GitHub compares them."""
    owner, sep, name = full_name.strip().partition("/")
    if not sep or not _OWNER.match(owner) or not _NAME.match(name) or name in {".", ".."}:
        raise InvalidArgumentError(f"not a GitHub repository name (OWNER/NAME): {full_name!r}")
    return owner.lower(), name.lower()


def get_by_full_name(
    *, session: Session, full_name: str, provider: str = PROVIDER_GITHUB
) -> Repository | None:
    try:
        owner, name = parse_full_name(full_name)
    except InvalidArgumentError:
        return None
    return session.exec(
        select(Repository).where(
            Repository.provider == provider, Repository.owner == owner, Repository.name == name
        )
    ).first()


# Built once: constructing a statement from ORM attributes costs more CPU than running it.
_WEBHOOK_TARGET = sa.select(
    col(Repository.id), col(Repository.project_id), col(Repository.webhook_secret_ciphertext)
).where(
    col(Repository.provider) == sa.bindparam("provider"),
    col(Repository.owner) == sa.bindparam("owner"),
    col(Repository.name) == sa.bindparam("name"),
)


def get_webhook_target(
    *, connection: Connection, full_name: str, provider: str = PROVIDER_GITHUB
) -> tuple[int, int, str | None] | None:
    """`(id, project_id, webhook_secret_ciphertext)` of the repository named `full_name`, if any.

    For webhook ingest, which runs it for every delivery: a Core select of the three columns it
    needs, on the caller's connection, matching exactly as `get_by_full_name` does.
    """
    try:
        owner, name = parse_full_name(full_name)
    except InvalidArgumentError:
        return None
    row = connection.execute(
        _WEBHOOK_TARGET, {"provider": provider, "owner": owner, "name": name}
    ).first()
    return None if row is None else (row.id, row.project_id, row.webhook_secret_ciphertext)


def add_repository(
    *,
    session: Session,
    box: SecretBox,
    project_key: str,
    full_name: str,
    token: str | None = None,
    webhook_secret: str | None = None,
    services_yaml_path: str | None = None,
    actor_id: str | None = None,
    actor: Principal | None = None,
) -> Repository:
    """Attach FULL_NAME to PROJECT_KEY. ACTOR (None: the local operator at the command line) needs
    EDIT_REPOSITORIES on the project. The token and webhook secret are stored encrypted and are
    never read back out by the dashboard."""
    owner, name = parse_full_name(full_name)
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_REPOSITORIES
    )
    assert project.id is not None
    if get_by_full_name(session=session, full_name=full_name) is not None:
        raise ConflictError(f"repository {owner}/{name} is already attached to a project")
    if services_yaml_path is not None and (
        not services_yaml_path.strip()
        or services_yaml_path.startswith("/")
        or ".." in services_yaml_path
    ):
        raise InvalidArgumentError("services yaml path must be relative to the repository root")
    repository = Repository(
        project_id=project.id,
        provider=PROVIDER_GITHUB,
        owner=owner,
        name=name,
        token_ciphertext=box.encrypt(token) if token else None,
        webhook_secret_ciphertext=box.encrypt(webhook_secret) if webhook_secret else None,
    )
    if services_yaml_path:
        repository.services_yaml_path = services_yaml_path
    session.add(repository)
    session.flush()
    record_event(
        session=session,
        correlation_id=f"project-{project.id}",
        event_type="repository_added",
        actor_id=actor_id,
        project_id=project.id,
        # Only whether secrets are set: their values never enter the audit trail.
        payload={
            "repository": f"{owner}/{name}",
            "has_token": token is not None,
            "has_webhook_secret": webhook_secret is not None,
        },
    )
    return repository


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    """A repository as the project page shows it: whether secrets are set, never their values."""

    id: int
    full_name: str
    has_token: bool
    has_webhook_secret: bool
    webhook_id: int | None
    services_yaml_path: str


def list_repositories(
    *, session: Session, actor: Principal | None, project_key: str
) -> list[RepositoryRow]:
    """The repositories of PROJECT_KEY by name, for anyone who may see the project."""
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.VIEW_PROJECT
    )
    rows = session.exec(
        select(Repository)
        .where(Repository.project_id == project.id)
        .order_by(col(Repository.owner), col(Repository.name))
    ).all()
    return [
        RepositoryRow(
            id=row.id or 0,
            full_name=row.full_name,
            has_token=row.token_ciphertext is not None,
            has_webhook_secret=row.webhook_secret_ciphertext is not None,
            webhook_id=row.webhook_id,
            services_yaml_path=row.services_yaml_path,
        )
        for row in rows
    ]


def remove_repository(
    *,
    session: Session,
    actor: Principal | None,
    project_key: str,
    full_name: str,
    actor_id: str | None = None,
) -> None:
    """Detach FULL_NAME from PROJECT_KEY (its runs stay, without a repository). Webhooks it sends
    afterwards are answered as from an unknown repository."""
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_REPOSITORIES
    )
    repository = get_by_full_name(session=session, full_name=full_name)
    if repository is None or repository.project_id != project.id:
        raise NotFoundError(f"{full_name} is not a repository of {project_key}")
    session.delete(repository)
    record_event(
        session=session,
        correlation_id=f"project-{project.id}",
        event_type="repository_removed",
        actor_id=actor_id,
        project_id=project.id,
        payload={"repository": repository.full_name},
    )
    session.flush()
