"""The platform tools that act on GitHub for a run (`post_comment`, `set_labels`): only on the
run's own issue or pull request, in its own repository, with the repository's token, never with
codexk8s's own labels; each call audited, a refusal too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codexk8s.adapters.github.client import GitHubClient
from codexk8s.config import Settings
from codexk8s.crypto import SecretBox
from codexk8s.db.engine import get_engine
from codexk8s.db.models import Repository, table_of
from codexk8s.domain.feedback import agent_comment_marker
from codexk8s.domain.repository_provider import ProviderError, RepositoryProvider
from codexk8s.domain.run_requests import agent_label_problem
from codexk8s.errors import InvalidArgumentError, PreconditionError
from codexk8s.services import repositories
from codexk8s.services.run_states import add_event

REPOSITORIES = table_of(Repository)
MAX_COMMENT = 20_000
MAX_LABELS = 10

ProviderFactory = Callable[[str], RepositoryProvider]


@dataclass(frozen=True, slots=True)
class Target:
    owner: str
    name: str
    number: int
    token: str


def _refuse(engine: Engine, run: sa.Row[Any], tool: str, reason: str) -> InvalidArgumentError:
    with engine.begin() as connection:
        add_event(
            connection, correlation_id=run.correlation_id, event_type="tool_refused",
            run_id=run.id, project_id=run.project_id, actor_type="agent", actor_id=run.agent_key,
            payload={"tool": tool, "reason": reason[:500]},
        )  # fmt: skip
    return InvalidArgumentError(reason)


def target(
    engine: Engine | None = None, *, run: sa.Row[Any], tool: str, number: Any, repository: Any,
    settings: Settings, box: SecretBox,
) -> Target:  # fmt: skip
    """The run's own issue (or pull request) and repository; any other is refused and audited."""
    engine = engine or get_engine()
    own = run.issue_number if run.issue_number is not None else run.pr_number
    with engine.connect() as connection:
        repo = (
            connection.execute(
                sa.select(REPOSITORIES).where(REPOSITORIES.c.id == run.repository_id)
            ).first()
            if run.repository_id is not None
            else None
        )
    if repo is None or own is None:
        raise _refuse(engine, run, tool, "this run has no issue or repository to act on")
    full_name = f"{repo.owner}/{repo.name}"
    if number is not None and number not in (run.issue_number, run.pr_number):
        raise _refuse(engine, run, tool, f"a run acts only on its own issue, #{own}")
    if repository is not None and str(repository).lower() != full_name:
        raise _refuse(engine, run, tool, f"a run acts only on its own repository, {full_name}")
    token = repositories.token_for(repo, settings=settings, box=box)
    if token is None:
        raise PreconditionError(f"{full_name} has no GitHub token codexk8s may use")
    return Target(repo.owner, repo.name, int(number or own), token)


def check_comment(body: Any) -> str:
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_COMMENT:
        raise InvalidArgumentError(f"`body` must be 1-{MAX_COMMENT} characters")
    return body


def check_labels_of(
    engine: Engine | None = None, *, run: sa.Row[Any], add: Any, remove: Any
) -> tuple[list[str], list[str]]:
    """The labels to add and remove, each one an agent may set; a refusal is audited."""
    engine = engine or get_engine()
    lists = []
    for value, what in ((add, "add"), (remove, "remove")):
        value = value or []
        if not isinstance(value, list) or len(value) > MAX_LABELS:
            raise InvalidArgumentError(f"`{what}` must be a list of at most {MAX_LABELS} labels")
        for label in value:
            problem = agent_label_problem(label) if isinstance(label, str) else "not a string"
            if problem is not None:
                raise _refuse(engine, run, "set_labels", problem)
        lists.append([str(label) for label in value])
    if not lists[0] and not lists[1]:
        raise InvalidArgumentError("name labels to add or remove")
    return lists[0], lists[1]


def _done(engine: Engine, run: sa.Row[Any], message: str) -> None:
    """What the tool did, as a line on the run's timeline."""
    with engine.begin() as connection:
        add_event(
            connection, correlation_id=run.correlation_id, event_type="run_progress",
            run_id=run.id, project_id=run.project_id, actor_type="agent", actor_id=run.agent_key,
            payload={"kind": "agent", "message": message},
        )  # fmt: skip


def _github(settings: Settings) -> ProviderFactory:
    return lambda token: GitHubClient(token=token, api_url=settings.github_api_url)


async def post_comment(
    engine: Engine | None = None, *, run: sa.Row[Any], place: Target, body: str, settings: Settings,
    provider: ProviderFactory | None = None,
) -> str:  # fmt: skip
    """Comment BODY on the run's issue, signed as the run's; the comment's URL."""
    engine = engine or get_engine()
    footer = f"\n\n<sub>codexk8s · run [#{run.id}]({settings.effective_public_url}/runs/{run.id})"
    footer += f" · agent {run.agent_key}</sub>\n{agent_comment_marker(run.id)}"
    async with (provider or _github(settings))(place.token) as github:  # type: ignore[attr-defined]
        try:
            comment = await github.create_comment(place.owner, place.name, place.number,
                                                  body + footer)  # fmt: skip
        except ProviderError as exc:
            raise PreconditionError(f"GitHub refused the comment: {exc}") from exc
    _done(engine, run, f"commented on #{place.number}")
    return comment.html_url or f"#{place.number}"


async def set_labels(
    engine: Engine | None = None, *, run: sa.Row[Any], place: Target, add: list[str],
    remove: list[str], settings: Settings, provider: ProviderFactory | None = None,
) -> None:  # fmt: skip
    engine = engine or get_engine()
    async with (provider or _github(settings))(place.token) as github:  # type: ignore[attr-defined]
        try:
            await github.add_labels(place.owner, place.name, place.number, add)
            for label in remove:
                await github.remove_label(place.owner, place.name, place.number, label)
        except ProviderError as exc:
            raise PreconditionError(f"GitHub refused the labels: {exc}") from exc
    _done(engine, run, f"labels on #{place.number}: +{add} -{remove}")
