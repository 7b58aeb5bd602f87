"""Repositories attached to projects; their token and webhook secret are stored encrypted."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from codexk8s.crypto import SecretBox
from codexk8s.db.models import Repository
from codexk8s.errors import ConflictError, InvalidArgumentError
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
) -> Repository:
    owner, name = parse_full_name(full_name)
    project = projects.require_by_key(session=session, key=project_key)
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
