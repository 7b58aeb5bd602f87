"""Repositories attached to projects; their token and webhook secret are stored encrypted."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from codexk8s import urls
from codexk8s.adapters.github.client import GitHubClient
from codexk8s.config import Settings
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.engine import session_scope
from codexk8s.db.models import Project, Repository, utcnow
from codexk8s.domain.authorization import Action, Principal
from codexk8s.domain.repository_provider import (
    HookConfig,
    ProviderAuthError,
    ProviderError,
    ProviderForbiddenError,
    ProviderNotFoundError,
    RepositoryProvider,
)
from codexk8s.errors import (
    CodexK8sError,
    ConflictError,
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
    UnauthorizedError,
    UnavailableError,
)
from codexk8s.services import projects
from codexk8s.services.audit import record_event

PROVIDER_GITHUB = "github"
WEBHOOK_EVENTS = ("issues", "issue_comment", "pull_request", "pull_request_review")
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


def require_by_full_name(*, session: Session, full_name: str) -> Repository:
    parse_full_name(full_name)  # a malformed name is a bad argument, not a missing repository
    repository = get_by_full_name(session=session, full_name=full_name)
    if repository is None:
        raise NotFoundError(f"repository {full_name} is not attached to any project")
    return repository


def set_webhook_id(
    *,
    session: Session,
    full_name: str,
    webhook_id: int,
    created: bool | None = None,
    actor_id: str | None = None,
    project_id: int | None = None,
) -> Repository:
    """Store the hook id of FULL_NAME and record `webhook_registered` (never the secret).
    With PROJECT_ID, a repository since moved to another project is treated as gone."""
    repository = require_by_full_name(session=session, full_name=full_name)
    if project_id is not None and repository.project_id != project_id:
        raise NotFoundError(f"repository {full_name} is not attached to any project")
    repository.webhook_id = webhook_id
    repository.updated_at = utcnow()
    session.add(repository)
    payload: dict[str, object] = {"repository": repository.full_name, "webhook_id": webhook_id}
    if created is not None:
        payload["created"] = created
    record_event(
        session=session,
        correlation_id=f"project-{repository.project_id}",
        event_type="webhook_registered",
        actor_id=actor_id,
        project_id=repository.project_id,
        payload=payload,
    )
    return repository


class _TokenColumns(Protocol):
    """The columns of a repository row (ORM or Core) that say which token GitHub calls use."""

    token_ciphertext: str | None
    global_token_allowed: bool


def token_for(repository: _TokenColumns, *, settings: Settings, box: SecretBox) -> str | None:
    """The GitHub token for calls about REPOSITORY (cloning, feedback, hooks, redelivery): its
    own, else CODEXK8S_GITHUB_TOKEN when a platform admin attached or allowed it, else None.
    DecryptionError when its stored token does not open with the key."""
    if repository.token_ciphertext:
        return box.decrypt(repository.token_ciphertext)
    if repository.global_token_allowed and settings.github_token is not None:
        return settings.github_token.get_secret_value() or None
    return None


def global_token_refused(full_name: str) -> str:
    """What to say where a repository would need the global token it may not use."""
    return (
        f"{full_name} has no token of its own and was not attached by a platform admin, so "
        "CODEXK8S_GITHUB_TOKEN is not used for it: attach it again with a token of its own, or "
        f"have a platform admin allow it (`codexk8s repo allow-global-token {full_name}`)"
    )


def _may_use_global_token(actor: Principal | None) -> bool:
    # The operator at the command line (None) is a platform admin too.
    return actor is None or actor.is_platform_admin


def _require_token_or_admin(actor: Principal | None, token: str | None, full_name: str) -> None:
    if not token and not _may_use_global_token(actor):
        raise ForbiddenError(
            f"only a platform admin may attach {full_name} without a token of its own (it would "
            "use the platform's GitHub token): give the repository a token of its own"
        )


def check_can_add(*, session: Session, project_key: str, full_name: str) -> tuple[str, str]:
    """Raise what `add_repository` would raise for the name, before anything else is done."""
    owner, name = parse_full_name(full_name)
    projects.require_by_key(session=session, key=project_key)
    _ensure_not_attached(session, full_name)
    return owner, name


def _check_services_yaml_path(path: str | None) -> None:
    if path is not None and (not path.strip() or path.startswith("/") or ".." in path):
        raise InvalidArgumentError("services yaml path must be relative to the repository root")


def _ensure_not_attached(session: Session, full_name: str) -> None:
    if get_by_full_name(session=session, full_name=full_name) is not None:
        owner, name = parse_full_name(full_name)
        raise ConflictError(f"repository {owner}/{name} is already attached to a project")


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
    webhook_id: int | None = None,
    actor: Principal | None = None,
) -> Repository:
    """Attach FULL_NAME to PROJECT_KEY. ACTOR (None: the local operator at the command line) needs
    EDIT_REPOSITORIES on the project; without a TOKEN of the repository's own, ACTOR must be a
    platform admin, and the repository may then use CODEXK8S_GITHUB_TOKEN. The token and webhook
    secret are stored encrypted and are never read back out by the dashboard.

    This stores what it is given; `attach_repository` first checks on GitHub that the token
    reaches the repository, and is what the dashboard and the command line call."""
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_REPOSITORIES
    )
    # The project was just read by the authorisation: only the name is left to check.
    owner, name = parse_full_name(full_name)
    _ensure_not_attached(session, full_name)
    _require_token_or_admin(actor, token, f"{owner}/{name}")
    assert project.id is not None
    _check_services_yaml_path(services_yaml_path)
    repository = Repository(
        project_id=project.id,
        provider=PROVIDER_GITHUB,
        owner=owner,
        name=name,
        token_ciphertext=box.encrypt(token) if token else None,
        global_token_allowed=not token,
        webhook_secret_ciphertext=box.encrypt(webhook_secret) if webhook_secret else None,
        webhook_id=webhook_id,
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
            "uses_global_token": not token,
            "has_webhook_secret": webhook_secret is not None,
            "webhook_id": webhook_id,
        },
    )
    return repository


def _reach_refusal(exc: ProviderError, full_name: str, *, is_global: bool) -> CodexK8sError:
    """Why a token that was to be stored (or the global one) cannot be used for FULL_NAME."""
    whose = "CODEXK8S_GITHUB_TOKEN" if is_global else "the token"
    if isinstance(exc, ProviderAuthError):
        return UnauthorizedError(
            f"GitHub rejected {whose} for {full_name} (401): it is wrong, expired or revoked"
        )
    if isinstance(exc, ProviderNotFoundError | ProviderForbiddenError):
        status = 404 if isinstance(exc, ProviderNotFoundError) else 403
        return NotFoundError(
            f"repository {full_name} not found on GitHub, or {whose} cannot see it ({status}); "
            "nothing was attached"
        )
    return UnavailableError(f"GitHub could not be asked about {full_name}: {exc}; try again")


async def check_token_reaches(
    *, settings: Settings, full_name: str, token: str, is_global: bool
) -> None:
    """Ask GitHub for FULL_NAME with TOKEN; a refusal (401, 403, 404) or an unreachable GitHub
    raises a CodexK8sError that says which."""
    owner, name = parse_full_name(full_name)
    async with GitHubClient(token=token, api_url=settings.github_api_url) as github:
        try:
            await github.get_repository(owner, name)
        except ProviderError as exc:
            raise _reach_refusal(exc, f"{owner}/{name}", is_global=is_global) from None


async def attach_repository(
    *,
    engine: Engine | None = None,
    box: SecretBox,
    settings: Settings,
    actor: Principal | None,
    project_key: str,
    full_name: str,
    token: str | None = None,
    webhook_secret: str | None = None,
    services_yaml_path: str | None = None,
    webhook_id: int | None = None,
    actor_id: str | None = None,
) -> RepositoryRow:
    """Attach FULL_NAME to PROJECT_KEY once GitHub confirms that the token it will use reaches it:
    TOKEN, or (for a platform admin without one) CODEXK8S_GITHUB_TOKEN. Refusals (no right to
    the global token, a token GitHub refuses, a repository it cannot see) store nothing. No
    transaction is open during the GitHub call."""

    def check() -> None:
        with session_scope(engine) as session:
            projects.authorize(
                session=session, actor=actor, project_key=project_key,
                action=Action.EDIT_REPOSITORIES,
            )  # fmt: skip
            owner, name = check_can_add(
                session=session, project_key=project_key, full_name=full_name
            )
        _require_token_or_admin(actor, token, f"{owner}/{name}")
        _check_services_yaml_path(services_yaml_path)

    await asyncio.to_thread(check)
    global_token = settings.github_token.get_secret_value() if settings.github_token else None
    reach_with = token or global_token
    if reach_with:
        await check_token_reaches(
            settings=settings, full_name=full_name, token=reach_with, is_global=not token
        )

    def store() -> RepositoryRow:
        with session_scope(engine) as session:
            repository = add_repository(
                session=session, box=box, project_key=project_key, full_name=full_name,
                token=token, webhook_secret=webhook_secret, services_yaml_path=services_yaml_path,
                actor_id=actor_id, webhook_id=webhook_id, actor=actor,
            )  # fmt: skip
            return _repository_row(repository)

    return await asyncio.to_thread(store)


async def allow_global_token(
    *,
    engine: Engine | None = None,
    box: SecretBox,
    settings: Settings,
    actor: Principal | None,
    full_name: str,
    actor_id: str | None = None,
) -> RepositoryRow:
    """Let the attached FULL_NAME use CODEXK8S_GITHUB_TOKEN (a platform admin's decision, once
    GitHub confirms the token reaches it): for repositories attached without a token by someone
    else before only platform admins could."""
    if not _may_use_global_token(actor):
        raise ForbiddenError("only a platform admin may let a repository use the platform's token")
    if settings.github_token is None or not settings.github_token.get_secret_value():
        raise PreconditionError("CODEXK8S_GITHUB_TOKEN is not set: there is no token to allow")

    def read() -> None:
        with session_scope(engine) as session:
            require_by_full_name(session=session, full_name=full_name)

    await asyncio.to_thread(read)
    await check_token_reaches(
        settings=settings, full_name=full_name, token=settings.github_token.get_secret_value(),
        is_global=True,
    )  # fmt: skip

    def store() -> RepositoryRow:
        with session_scope(engine) as session:
            repository = require_by_full_name(session=session, full_name=full_name)
            if not repository.global_token_allowed:
                repository.global_token_allowed = True
                repository.updated_at = utcnow()
                session.add(repository)
                record_event(
                    session=session, correlation_id=f"project-{repository.project_id}",
                    event_type="repository_global_token_allowed", actor_id=actor_id,
                    project_id=repository.project_id,
                    payload={"repository": repository.full_name},
                )  # fmt: skip
                session.flush()
            return _repository_row(repository)

    return await asyncio.to_thread(store)


def _provider_error(exc: ProviderError, full_name: str) -> CodexK8sError:
    """One mapping from GitHub's answers to errors a person can act on."""
    if isinstance(exc, ProviderAuthError):
        return UnauthorizedError(
            f"GitHub rejected the token for {full_name} (401): it is wrong, expired or revoked"
        )
    if isinstance(exc, ProviderForbiddenError):
        return ForbiddenError(
            f"the token may not manage webhooks of {full_name} (403): it needs admin access "
            "to the repository (fine-grained tokens: 'Webhooks: read and write')"
        )
    if isinstance(exc, ProviderNotFoundError):
        return NotFoundError(
            f"repository {full_name} not found on GitHub, or the token cannot see it (404)"
        )
    return UnavailableError(f"GitHub call for {full_name} failed: {exc}")


async def register_webhook(
    *, provider: RepositoryProvider, owner: str, name: str, public_url: str, secret: str
) -> tuple[int, bool]:
    """Check the repository and the token, then create or update our hook.

    Returns (hook id, created). The hook is ours when its URL is our webhook URL, so running this
    again updates the same hook (events, secret, JSON) instead of adding a second one.
    """
    full_name = f"{owner}/{name}"
    url = public_url.rstrip("/") + urls.WEBHOOK_GITHUB
    config = HookConfig(url=url, secret=secret, events=WEBHOOK_EVENTS, content_type="json")
    try:
        info = await provider.get_repository(owner, name)
        if not info.can_admin:
            raise ForbiddenError(
                f"the token may not manage webhooks of {full_name}: it has no admin access "
                "to the repository"
            )
        existing = next((h for h in await provider.list_hooks(owner, name) if h.url == url), None)
        if existing is not None:
            hook = await provider.update_hook(owner, name, existing.id, config)
            return hook.id, False
        hook = await provider.create_hook(owner, name, config)
        return hook.id, True
    except ProviderError as exc:
        raise _provider_error(exc, full_name) from None


@dataclass(frozen=True, slots=True)
class _HookRequest:
    """What the GitHub call needs, read in one short transaction before it."""

    project_id: int
    owner: str
    name: str
    token: str = field(repr=False)
    secret: str = field(repr=False)


def _hook_request(
    *,
    session: Session,
    box: SecretBox,
    settings: Settings,
    actor: Principal | None,
    project_key: str | None,
    full_name: str,
) -> _HookRequest:
    if project_key is None:
        # The command line names only the repository: its own project is the one checked.
        repository = require_by_full_name(session=session, full_name=full_name)
        owning = session.get(Project, repository.project_id)
        assert owning is not None  # the foreign key cascades deletes
        project_key = owning.key
    # Authorized before the repository is looked up: the answer for a project the caller may
    # not see says nothing about its repositories.
    project = projects.authorize(
        session=session, actor=actor, project_key=project_key, action=Action.EDIT_REPOSITORIES
    )
    parse_full_name(full_name)
    found = get_by_full_name(session=session, full_name=full_name)
    if found is None or found.project_id != project.id:
        raise NotFoundError(f"{full_name} is not a repository of {project_key}")
    repository = found
    try:
        token = token_for(repository, settings=settings, box=box)
        secret = (
            box.decrypt(repository.webhook_secret_ciphertext)
            if repository.webhook_secret_ciphertext
            else None
        )
    except DecryptionError:
        raise PreconditionError(
            f"the stored token or webhook secret of {repository.full_name} does not decrypt with "
            "CODEXK8S_SECRET_KEY (was the key changed without `secrets rotate`?)"
        ) from None
    secret = secret or (
        settings.github_webhook_secret.get_secret_value()
        if settings.github_webhook_secret
        else None
    )
    if not token:
        if not repository.global_token_allowed and settings.github_token is not None:
            raise PreconditionError(global_token_refused(repository.full_name))
        raise PreconditionError(
            f"{repository.full_name} has no token to register its webhook with: add the "
            "repository again with a token, or set CODEXK8S_GITHUB_TOKEN"
        )
    if not secret:
        raise PreconditionError(
            f"{repository.full_name} has no webhook secret: add the repository again with one, "
            "or set CODEXK8S_GITHUB_WEBHOOK_SECRET"
        )
    return _HookRequest(project.id or 0, repository.owner, repository.name, token, secret)


def _store_hook_id(
    *, engine: Engine | None, request: _HookRequest, hook_id: int, created: bool,
    actor_id: str | None,
) -> None:  # fmt: skip
    full_name = f"{request.owner}/{request.name}"
    try:
        with session_scope(engine) as session:
            set_webhook_id(
                session=session, full_name=full_name, webhook_id=hook_id, created=created,
                actor_id=actor_id, project_id=request.project_id,
            )  # fmt: skip
    except NotFoundError:
        raise ConflictError(
            f"{full_name} was removed from its project while its webhook {hook_id} was being "
            "registered: the hook stays on GitHub until it is deleted there"
        ) from None


async def register_stored_webhook(
    *,
    engine: Engine | None = None,
    box: SecretBox,
    settings: Settings,
    actor: Principal | None,
    project_key: str | None,
    full_name: str,
    actor_id: str | None = None,
) -> tuple[int, bool]:
    """Create or update the webhook of the attached repository FULL_NAME and store its id.

    ACTOR (None: the local operator) needs EDIT_REPOSITORIES on PROJECT_KEY (None: the
    repository's own project). The repository's stored token and secret are used, else
    CODEXK8S_GITHUB_TOKEN / CODEXK8S_GITHUB_WEBHOOK_SECRET; with neither nothing is sent. No
    transaction is open during the GitHub call, so a slow GitHub holds no row or connection.
    Returns (hook id, created).
    """

    def read() -> _HookRequest:
        with session_scope(engine) as session:
            return _hook_request(
                session=session, box=box, settings=settings, actor=actor,
                project_key=project_key, full_name=full_name,
            )  # fmt: skip

    request = await asyncio.to_thread(read)
    async with GitHubClient(token=request.token, api_url=settings.github_api_url) as github:
        hook_id, created = await register_webhook(
            provider=github, owner=request.owner, name=request.name,
            public_url=settings.effective_public_url, secret=request.secret,
        )  # fmt: skip
    await asyncio.to_thread(
        _store_hook_id, engine=engine, request=request, hook_id=hook_id, created=created,
        actor_id=actor_id,
    )  # fmt: skip
    return hook_id, created


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    """A repository as the project page shows it: whether secrets are set, never their values."""

    id: int
    full_name: str
    has_token: bool
    # Without a token of its own: whether it may use CODEXK8S_GITHUB_TOKEN (a platform admin's).
    uses_global_token: bool
    has_webhook_secret: bool
    webhook_id: int | None
    services_yaml_path: str


def _repository_row(row: Repository) -> RepositoryRow:
    return RepositoryRow(
        id=row.id or 0,
        full_name=row.full_name,
        has_token=row.token_ciphertext is not None,
        uses_global_token=row.token_ciphertext is None and row.global_token_allowed,
        has_webhook_secret=row.webhook_secret_ciphertext is not None,
        webhook_id=row.webhook_id,
        services_yaml_path=row.services_yaml_path,
    )


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
    return [_repository_row(row) for row in rows]


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
