"""`repositories.register_stored_webhook` against the loopback GitHub: the dashboard's and the
`repo register-webhook` command's one way to register an attached repository's webhook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select
from starlette.requests import Request
from starlette.responses import Response

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import FlowEvent, Repository
from codexk8s.domain.authorization import Principal
from codexk8s.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionError,
    UnauthorizedError,
)
from codexk8s.services import projects, repositories
from tests.conftest import reset_caches, run_async
from tests.github_server import FakeGitHub, running_github
from tests.web.test_projects_handlers import add_user

STORED_TOKEN = "ghp_stored_repository_token_01"
STORED_SECRET = "stored-hook-secret-01"
GLOBAL_TOKEN = "ghp_global_operator_token_02"
GLOBAL_SECRET = "global-hook-secret-02"
PUBLIC = "https://ck8s.example.test"
HOOK_URL = f"{PUBLIC}/api/v1/webhooks/github"


@dataclass
class ObservingGitHub(FakeGitHub):
    """The fake GitHub that also counts, while it answers, the database sessions idling inside
    a transaction: the service must hold none open across the GitHub call."""

    db_url: str = ""
    open_transactions: list[int] | None = None
    remove_while_creating: bool = False

    async def get_repo(self, request: Request) -> Response:
        engine = sa.create_engine(self.db_url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                count = connection.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
        finally:
            engine.dispose()
        if self.open_transactions is None:
            self.open_transactions = []
        self.open_transactions.append(int(count))
        return await super().get_repo(request)

    async def hooks(self, request: Request) -> Response:
        if self.remove_while_creating and request.method == "POST":
            engine = sa.create_engine(self.db_url, poolclass=NullPool)
            try:
                with engine.begin() as connection:
                    connection.execute(sa.text("DELETE FROM repositories"))
            finally:
                engine.dispose()
        return await super().hooks(request)


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObservingGitHub]:
    with running_github(ObservingGitHub(db_url=app_db)) as fake:
        assert isinstance(fake, ObservingGitHub)
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        reset_caches()
        with session_scope(get_engine()) as session:
            projects.create_project(session=session, key="web", name="Web")
            projects.create_project(session=session, key="other", name="Other")
        yield fake


def attach(full_name: str, *, token: str | None, secret: str | None, key: str = "web") -> None:
    with session_scope(get_engine()) as session:
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key=key, full_name=full_name,
            token=token, webhook_secret=secret,
        )  # fmt: skip


def register(
    full_name: str = "octo-org/octo-repo", *, actor: Principal | None = None,
    key: str | None = "web", actor_id: str | None = None,
) -> tuple[int, bool]:  # fmt: skip
    return run_async(
        repositories.register_stored_webhook(
            box=get_secret_box(), settings=get_settings(), actor=actor, project_key=key,
            full_name=full_name, actor_id=actor_id,
        )
    )  # fmt: skip


def stored_hook_id(full_name: str = "octo-org/octo-repo") -> int | None:
    with Session(get_engine()) as session:
        owner, name = full_name.split("/")
        row = session.exec(
            select(Repository).where(Repository.owner == owner, Repository.name == name)
        ).one()
        return row.webhook_id


def events() -> list[FlowEvent]:
    with Session(get_engine()) as session:
        return list(
            session.exec(
                select(FlowEvent)
                .where(FlowEvent.event_type == "webhook_registered")
                .order_by(FlowEvent.id)  # type: ignore[arg-type]
            ).all()
        )


def test_creates_then_updates_the_same_hook_with_the_stored_secrets(
    github: ObservingGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The global token has no access: only the stored one can succeed.
    monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", GLOBAL_TOKEN)
    monkeypatch.setenv("CODEXK8S_GITHUB_WEBHOOK_SECRET", GLOBAL_SECRET)
    reset_caches()
    repo = github.add_repo("octo-org/octo-repo", token=STORED_TOKEN)
    attach("Octo-Org/Octo-Repo", token=STORED_TOKEN, secret=STORED_SECRET)
    member = add_user(get_engine(), "rw@example.com")
    with session_scope(get_engine()) as session:
        projects.add_member(session=session, project_key="web", email="rw@example.com",
                            role="read_write")  # fmt: skip

    hook_id, created = register(actor=member, actor_id="rw@example.com")
    assert created and list(repo.hooks) == [hook_id] and stored_hook_id() == hook_id
    hook = repo.hooks[hook_id]
    assert hook["_secret"] == STORED_SECRET and hook["config"]["url"] == HOOK_URL
    assert "pull_request_review" in hook["events"]

    # Someone changed the hook on GitHub: registering again puts it back, same hook.
    repo.hooks[hook_id]["events"] = ["push"]
    assert register(actor=member, actor_id="rw@example.com") == (hook_id, False)
    assert list(repo.hooks) == [hook_id] and "issues" in repo.hooks[hook_id]["events"]
    assert stored_hook_id() == hook_id

    trail = events()
    assert [(e.payload, e.actor_id) for e in trail] == [
        ({"repository": "octo-org/octo-repo", "webhook_id": hook_id, "created": True},
         "rw@example.com"),
        ({"repository": "octo-org/octo-repo", "webhook_id": hook_id, "created": False},
         "rw@example.com"),
    ]  # fmt: skip
    dumped = json.dumps([e.payload for e in trail])
    assert STORED_SECRET not in dumped and STORED_TOKEN not in dumped
    # No database session sat inside a transaction while GitHub was asked.
    assert github.open_transactions == [0, 0]


def test_falls_back_to_the_global_token_and_secret(
    github: ObservingGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", GLOBAL_TOKEN)
    monkeypatch.setenv("CODEXK8S_GITHUB_WEBHOOK_SECRET", GLOBAL_SECRET)
    reset_caches()
    repo = github.add_repo("octo-org/octo-repo", token=GLOBAL_TOKEN)
    attach("octo-org/octo-repo", token=None, secret=None)
    hook_id, created = register(key=None)  # the local operator, by repository name only
    assert created and repo.hooks[hook_id]["_secret"] == GLOBAL_SECRET
    assert stored_hook_id() == hook_id and events()[0].actor_id is None


def test_without_a_token_nothing_is_sent_and_nothing_changes(github: ObservingGitHub) -> None:
    github.add_repo("octo-org/octo-repo", token=STORED_TOKEN)
    attach("octo-org/octo-repo", token=None, secret=STORED_SECRET)
    with pytest.raises(PreconditionError, match=r"has no token.*CODEXK8S_GITHUB_TOKEN"):
        register()
    attach("octo-org/no-secret", token=STORED_TOKEN, secret=None)
    with pytest.raises(PreconditionError, match="no webhook secret"):
        register("octo-org/no-secret")
    assert github.calls == [] and stored_hook_id() is None and events() == []


def test_github_refusal_is_explained_and_stores_nothing(github: ObservingGitHub) -> None:
    github.add_repo("octo-org/octo-repo", token="ghp_someone_else")
    attach("octo-org/octo-repo", token=STORED_TOKEN, secret=STORED_SECRET)
    with pytest.raises(UnauthorizedError, match=r"rejected the token for octo-org/octo-repo \(401"):
        register()
    assert stored_hook_id() is None and events() == []


def test_read_members_outsiders_and_other_projects_are_refused(github: ObservingGitHub) -> None:
    repo = github.add_repo("octo-org/octo-repo", token=STORED_TOKEN)
    attach("octo-org/octo-repo", token=STORED_TOKEN, secret=STORED_SECRET)
    engine = get_engine()
    reader = add_user(engine, "read@example.com")
    outsider = add_user(engine, "outsider@example.com")
    with session_scope(engine) as session:
        projects.add_member(session=session, project_key="web", email="read@example.com",
                            role="read")  # fmt: skip
        projects.add_member(session=session, project_key="other", email="read@example.com",
                            role="admin")  # fmt: skip
    with pytest.raises(ForbiddenError, match="not for your role"):
        register(actor=reader)
    with pytest.raises(NotFoundError, match="no project with key 'web'"):
        register(actor=outsider)
    # Admin of another project cannot reach this repository through it.
    with pytest.raises(NotFoundError, match="not a repository of other"):
        register(actor=reader, key="other")
    with pytest.raises(NotFoundError, match="not a repository of web"):
        register("octo-org/unknown")
    assert github.calls == [] and repo.hooks == {}
    assert stored_hook_id() is None and events() == []


def test_repository_removed_during_the_call_is_reported(github: ObservingGitHub) -> None:
    repo = github.add_repo("octo-org/octo-repo", token=STORED_TOKEN)
    attach("octo-org/octo-repo", token=STORED_TOKEN, secret=STORED_SECRET)
    github.remove_while_creating = True
    with pytest.raises(ConflictError, match=r"removed from its project while its webhook \d+"):
        register()
    # The hook GitHub created is named so that it can be deleted there; no event claims success.
    assert len(repo.hooks) == 1 and events() == []
