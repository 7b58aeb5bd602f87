"""Attaching repositories and the GitHub token each one uses (issue #14, item 2): only platform
admins may attach one that falls back to CODEXK8S_GITHUB_TOKEN, every token is checked against
the repository on GitHub first, and rows that were attached otherwise never get the global one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from alembic import command
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db import migrations
from codexk8s.db.engine import get_engine, make_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, Repository
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import ForbiddenError, NotFoundError, PreconditionError, UnauthorizedError
from codexk8s.services import projects, repositories, run_brief, users
from tests.conftest import reset_caches, run_async
from tests.github_server import FakeGitHub, running_github

GLOBAL_TOKEN = "ghp_platform_token_with_wide_reach_000"
MEMBER_TOKEN = "ghp_member_token_for_one_repo_000"


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_GITHUB_TOKEN", GLOBAL_TOKEN)
        reset_caches()
        # The platform's token reaches the victim's private repository; the member's does not.
        fake.add_repo("victim-org/secret-repo", token=GLOBAL_TOKEN)
        fake.add_repo("team/app", token=GLOBAL_TOKEN)
        fake.add_repo("team/app", token=MEMBER_TOKEN, admin=False)
        yield fake


@pytest.fixture
def people(github: FakeGitHub) -> dict[str, Principal]:
    found = {}
    with session_scope() as session:
        projects.create_project(session=session, key="web")
        for role, platform in (("member", "user"), ("admin", "admin")):
            user = users.add_user(session=session, email=f"{role}@example.com", role=platform)
            assert user.id is not None
            found[role] = Principal(user_id=user.id, platform_role=PlatformRole(platform))
        projects.add_member(
            session=session, project_key="web", email="member@example.com", role="read_write"
        )
    return found


def attach(actor: Principal | None, full_name: str, token: str | None = None) -> Repository:
    return run_async(
        repositories.attach_repository(
            box=get_secret_box(), settings=get_settings(), actor=actor, project_key="web",
            full_name=full_name, token=token, actor_id="someone@example.com",
        )
    )  # fmt: skip


def stored() -> dict[str, tuple[bool, bool]]:
    """Attached repositories: (has its own token, may use the global one)."""
    with Session(get_engine()) as session:
        return {
            row.full_name: (row.token_ciphertext is not None, row.global_token_allowed)
            for row in session.exec(select(Repository))
        }


def test_a_member_cannot_aim_the_platform_token_at_another_repository(
    people: dict[str, Principal], github: FakeGitHub
) -> None:
    # The probe: a read_write member adds someone else's repository without a token of their own.
    with pytest.raises(ForbiddenError, match=r"platform admin.*token of its own"):
        attach(people["member"], "victim-org/secret-repo")
    assert stored() == {}
    assert github.calls == []  # not even asked with the platform's token


@pytest.mark.parametrize(
    ("full_name", "token", "error", "message"),
    [
        # The member's token cannot see the victim's repository: GitHub says 404.
        ("victim-org/secret-repo", MEMBER_TOKEN, NotFoundError, "cannot see it"),
        ("team/app", "ghp_wrong", UnauthorizedError, "rejected the token"),
    ],
)
def test_a_members_token_must_reach_the_repository(
    people: dict[str, Principal], github: FakeGitHub, full_name: str, token: str,
    error: type[Exception], message: str,
) -> None:  # fmt: skip
    with pytest.raises(error, match=message):
        attach(people["member"], full_name, token)
    assert stored() == {}
    with Session(get_engine()) as session:
        assert not session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "repository_added")
        ).all()


def test_a_member_attaches_with_a_token_that_reaches_the_repository(
    people: dict[str, Principal], github: FakeGitHub
) -> None:
    attach(people["member"], "Team/App", MEMBER_TOKEN)
    assert stored() == {"team/app": (True, False)}
    assert github.rest_calls("GET", "/repos/team/app")


def test_a_platform_admin_attaches_with_the_global_token_once_it_reaches(
    people: dict[str, Principal], github: FakeGitHub
) -> None:
    with pytest.raises(NotFoundError, match="cannot see it"):
        attach(people["admin"], "elsewhere/repo")
    assert stored() == {}
    attach(people["admin"], "team/app")
    attach(None, "victim-org/secret-repo")  # the operator at the command line
    assert stored() == {"team/app": (False, True), "victim-org/secret-repo": (False, True)}


def test_without_any_token_there_is_nothing_to_check(
    people: dict[str, Principal], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODEXK8S_GITHUB_TOKEN")
    reset_caches()
    attach(None, "local/mirror")
    assert stored() == {"local/mirror": (False, True)} and github.calls == []
    with pytest.raises(ForbiddenError):
        attach(people["member"], "local/other")


def _run_on(full_name: str) -> sa.Row:
    with session_scope() as session:
        repository = repositories.get_by_full_name(session=session, full_name=full_name)
        assert repository is not None
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=repository.project_id,
            repository_id=repository.id, issue_number=1, agent_key="dev", stage="dev",
            status="running", model="gpt-5",
        )  # fmt: skip
        session.add(run)
        session.flush()
        run_id = run.id
    with get_engine().connect() as connection:
        return connection.execute(
            sa.select(run_brief.RUNS).where(run_brief.RUNS.c.id == run_id)
        ).one()


def test_runs_get_the_global_token_only_where_a_platform_admin_allowed_it(
    people: dict[str, Principal], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "sk-test")
    reset_caches()
    attach(people["admin"], "team/app")
    # A row as a member could attach it before issue #14: no token, not allowed the global one.
    with session_scope() as session:
        web = projects.require_by_key(session=session, key="web")
        session.add(Repository(project_id=web.id or 0, owner="victim-org", name="secret-repo"))
    allowed = run_brief.build_brief(get_engine(), run=_run_on("team/app"), openai_path="/x")
    assert allowed["repository"]["token"] == GLOBAL_TOKEN
    with pytest.raises(PreconditionError, match="victim-org/secret-repo has no token of its own"):
        run_brief.build_brief(get_engine(), run=_run_on("victim-org/secret-repo"), openai_path="/x")
    # Nor do GitHub feedback, redelivery or webhook registration fall back to it.
    with Session(get_engine()) as session:
        row = repositories.get_by_full_name(session=session, full_name="victim-org/secret-repo")
        assert row is not None
        assert repositories.token_for(row, settings=get_settings(), box=get_secret_box()) is None
    with pytest.raises(PreconditionError, match="has no token"):
        run_async(
            repositories.register_stored_webhook(
                box=get_secret_box(), settings=get_settings(), actor=None, project_key=None,
                full_name="victim-org/secret-repo",
            )
        )  # fmt: skip

    # A platform admin may allow it, after the global token is checked against it.
    with pytest.raises(ForbiddenError):
        run_async(
            repositories.allow_global_token(
                box=get_secret_box(), settings=get_settings(), actor=people["member"],
                full_name="victim-org/secret-repo",
            )
        )  # fmt: skip
    run_async(
        repositories.allow_global_token(
            box=get_secret_box(), settings=get_settings(), actor=people["admin"],
            full_name="victim-org/secret-repo", actor_id="admin@example.com",
        )
    )  # fmt: skip
    brief = run_brief.build_brief(
        get_engine(), run=_run_on("victim-org/secret-repo"), openai_path="/x"
    )
    assert brief["repository"]["token"] == GLOBAL_TOKEN


def test_migration_keeps_the_global_token_for_repositories_admins_attached(
    empty_pg_url: str,
) -> None:
    """Rows from before: the audit trail says who attached each one."""
    config = migrations.alembic_config(empty_pg_url)
    command.upgrade(config, "0010")  # just before 0011, which decides about the token
    engine = make_engine(empty_pg_url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO users (email, role, disabled, created_at, updated_at) VALUES "
            "('boss@example.com', 'admin', false, now(), now()), "
            "('dev@example.com', 'user', false, now(), now())"
        ))  # fmt: skip
        connection.execute(sa.text(
            "INSERT INTO projects (key, name, settings, created_at, updated_at) "
            "VALUES ('web', 'web', '{}', now(), now())"
        ))  # fmt: skip
        for name, token, actor in (
            ("by-cli", None, None), ("by-admin", None, "boss@example.com"),
            ("by-member", None, "dev@example.com"), ("no-trail", None, "-"),
            ("with-token", "gAAAA-cipher", "dev@example.com"),
        ):  # fmt: skip
            connection.execute(
                sa.text(
                    "INSERT INTO repositories (project_id, provider, owner, name, "
                    "token_ciphertext, services_yaml_path, created_at, updated_at) VALUES "
                    "(1, 'github', 'team', :name, :token, 'services.yaml', now(), now())"
                ),
                {"name": name, "token": token},
            )
            if actor != "-":
                connection.execute(
                    sa.text(
                        "INSERT INTO flow_events (correlation_id, project_id, actor_type, "
                        "actor_id, event_type, payload, created_at) VALUES ('project-1', 1, "
                        ":type, :actor, 'repository_added', CAST(:payload AS json), now())"
                    ),
                    {"type": "human" if actor else "system", "actor": actor,
                     "payload": f'{{"repository": "team/{name}", "has_token": false}}'},
                )  # fmt: skip
    migrations.upgrade_to_head(empty_pg_url)
    with engine.connect() as connection:
        allowed = dict(
            connection.execute(sa.text("SELECT name, global_token_allowed FROM repositories")).all()
        )
    engine.dispose()
    assert allowed == {
        "by-cli": True, "by-admin": True, "by-member": False, "with-token": False,
        "no-trail": False,
    }  # fmt: skip
