"""`repo add --register-webhook` against the loopback GitHub: create, update, and refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from codexk8s.cli import app
from codexk8s.db.engine import get_engine
from codexk8s.db.models import Repository
from codexk8s.domain.repository_provider import HookConfig
from tests.conftest import reset_caches
from tests.github_server import FakeGitHub, running_github

TOKEN = "ghp_webhookregistration0001"
SECRET = "hook-secret-789"
PUBLIC = "https://ck8s.example.test"
HOOK_URL = f"{PUBLIC}/api/v1/webhooks/github"
runner = CliRunner()


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        monkeypatch.setenv("REPO_TOKEN", TOKEN)
        monkeypatch.setenv("HOOK_SECRET", SECRET)
        reset_caches()
        assert runner.invoke(app, ["project", "create", "web"]).exit_code == 0
        yield fake


def add(*extra: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        ["repo", "add", "web", "Octo-Org/Octo-Repo", "--token-env", "REPO_TOKEN",
         "--webhook-secret-env", "HOOK_SECRET", "--register-webhook", *extra],
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def stored() -> list[Repository]:
    with Session(get_engine()) as session:
        return list(session.exec(select(Repository)).all())


def test_creates_the_webhook_and_stores_its_id(github: FakeGitHub) -> None:
    repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
    code, out, err = add()
    assert code == 0, err
    (hook_id,) = repo.hooks
    hook = repo.hooks[hook_id]
    assert hook["config"]["url"] == HOOK_URL and hook["config"]["content_type"] == "json"
    assert hook["_secret"] == SECRET
    assert sorted(hook["events"]) == [
        "issue_comment", "issues", "pull_request", "pull_request_review",
    ]  # fmt: skip
    assert f"created webhook {hook_id}" in out
    (row,) = stored()
    assert row.webhook_id == hook_id
    assert SECRET not in out and TOKEN not in out


def test_updates_an_existing_hook_with_our_url(github: FakeGitHub) -> None:
    repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
    other = github.add_hook(repo, HookConfig("https://ci.example/hook", "x", ("push",)))
    ours = github.add_hook(repo, HookConfig(HOOK_URL, "old-secret", ("issues",), "form"))
    code, out, err = add()
    assert code == 0, err
    assert set(repo.hooks) == {other, ours}
    assert repo.hooks[ours]["_secret"] == SECRET
    assert repo.hooks[ours]["config"]["content_type"] == "json"
    assert "pull_request_review" in repo.hooks[ours]["events"]
    assert repo.hooks[other]["events"] == ["push"]
    assert f"updated webhook {ours}" in out
    assert stored()[0].webhook_id == ours


@pytest.mark.parametrize(
    ("grant", "message"),
    [
        ("wrong-token", "GitHub rejected the token for octo-org/octo-repo (401)"),
        ("no-admin-403", "may not manage webhooks of octo-org/octo-repo (403)"),
        ("no-repo", "repository octo-org/octo-repo not found on GitHub, or the token cannot"),
    ],
)
def test_refusals_are_explained_and_change_nothing(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, grant: str, message: str
) -> None:
    if grant == "wrong-token":
        github.add_repo("octo-org/octo-repo", token="ghp_someone_else")
    elif grant == "no-admin-403":
        repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
        # Admin per the repository answer, refused by the hooks endpoint (fine-grained token).
        github.inject("GET /repos/octo-org/octo-repo/hooks", 403,
                      message="Resource not accessible by personal access token")  # fmt: skip
        assert repo.hooks == {}
    else:
        github.add_repo("octo-org/another-repo", token=TOKEN)  # a valid token, but not for this
    code, _out, err = add()
    assert code == 1 and message in err, err
    assert stored() == []
    assert TOKEN not in err


def test_token_without_admin_is_refused_before_any_hook_call(github: FakeGitHub) -> None:
    github.add_repo("octo-org/octo-repo", token=TOKEN, admin=False)
    code, _out, err = add()
    assert code == 1 and "no admin access" in err
    assert github.rest_calls(contains="/hooks") == [] and stored() == []


def test_needs_a_token_and_a_name_that_can_be_added(github: FakeGitHub) -> None:
    result = runner.invoke(app, ["repo", "add", "web", "octo-org/octo-repo", "--register-webhook"])
    assert result.exit_code == 1 and "needs a token" in result.stderr
    github.add_repo("octo-org/octo-repo", token=TOKEN)
    assert add()[0] == 0
    # Refused before GitHub is asked anything the second time.
    calls = len(github.calls)
    assert calls > 0
    code, _out, err = add()
    assert code == 1 and "already attached" in err and len(github.calls) == calls


def test_register_webhook_for_an_attached_repository(github: FakeGitHub) -> None:
    repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
    result = runner.invoke(
        app,
        ["repo", "add", "web", "octo-org/octo-repo", "--token-env", "REPO_TOKEN",
         "--webhook-secret-env", "HOOK_SECRET"],
    )  # fmt: skip
    assert result.exit_code == 0 and repo.hooks == {} and stored()[0].webhook_id is None
    for expected in ("created", "updated"):
        result = runner.invoke(app, ["repo", "register-webhook", "Octo-Org/Octo-Repo"])
        assert result.exit_code == 0, result.stderr
        assert expected in result.stdout
    (hook_id,) = repo.hooks
    assert repo.hooks[hook_id]["_secret"] == SECRET  # the stored secret, decrypted
    assert stored()[0].webhook_id == hook_id
    missing = runner.invoke(app, ["repo", "register-webhook", "octo-org/unknown"])
    assert missing.exit_code == 1 and "not attached" in missing.stderr
