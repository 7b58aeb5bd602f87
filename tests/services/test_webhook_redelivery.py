"""Redelivery of failed webhooks against the loopback GitHub's hook deliveries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import GitHubRedelivery, WebhookDelivery
from codexk8s.domain.repository_provider import HookConfig
from codexk8s.services import projects, repositories
from codexk8s.services.webhook_redelivery import RedeliveryResult, redeliver_failed
from tests.conftest import reset_caches
from tests.github_server import FakeGitHub, FakeRepo, running_github

TOKEN = "ghp_redeliverytoken0001"


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        reset_caches()
        yield fake


@pytest.fixture
def hooked(github: FakeGitHub) -> tuple[FakeRepo, int]:
    repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
    hook_id = github.add_hook(
        repo, HookConfig("https://x/api/v1/webhooks/github", "s", ("issues",))
    )
    with session_scope() as session:
        projects.create_project(session=session, key="web")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="web",
            full_name="octo-org/octo-repo", token=TOKEN, webhook_id=hook_id,
        )  # fmt: skip
    return repo, hook_id


async def redeliver() -> RedeliveryResult:
    return await redeliver_failed(
        engine=get_engine(), settings=get_settings(), box=get_secret_box(),
        client_options={"backoff_seconds": 0.01},
    )  # fmt: skip


def attempts(github: FakeGitHub) -> list[str]:
    return [path for method, path, _ in github.calls if path.endswith("/attempts")]


async def test_asks_once_per_failed_delivery(
    github: FakeGitHub, hooked: tuple[FakeRepo, int]
) -> None:
    repo, hook = hooked
    down = github.add_delivery(repo, hook, guid="guid-down", status_code=502)
    timeout = github.add_delivery(repo, hook, guid="guid-timeout", status_code=0)
    github.add_delivery(repo, hook, guid="guid-ok", status_code=200)
    # Failed once, then succeeded on GitHub's manual redelivery: nothing to do.
    github.add_delivery(repo, hook, guid="guid-fixed", status_code=500, age_seconds=120)
    github.add_delivery(repo, hook, guid="guid-fixed", status_code=202, redelivery=True)
    # Too old to be worth replaying.
    github.add_delivery(repo, hook, guid="guid-old", status_code=500, age_seconds=3 * 86400)

    result = await redeliver()
    assert sorted(result.requested) == ["guid-down", "guid-timeout"]
    assert sorted(attempts(github)) == sorted(
        f"/repos/octo-org/octo-repo/hooks/{hook}/deliveries/{d['id']}/attempts"
        for d in (down, timeout)
    )
    # The redelivered ones now succeeded on GitHub; and asked ones are never asked again.
    assert (await redeliver()).requested == []
    # Even if those redeliveries failed too (dropped here), the record keeps them asked once.
    asked = {"guid-down", "guid-timeout"}
    repo.deliveries[hook] = [
        d for d in repo.deliveries[hook] if not (d["redelivery"] and d["guid"] in asked)
    ]
    assert (await redeliver()).requested == []
    assert len(attempts(github)) == 2
    with Session(get_engine()) as session:
        assert {r.guid for r in session.exec(select(GitHubRedelivery)).all()} == {
            "guid-down", "guid-timeout",
        }  # fmt: skip


async def test_skips_deliveries_that_reached_us(
    github: FakeGitHub, hooked: tuple[FakeRepo, int]
) -> None:
    repo, hook = hooked
    github.add_delivery(repo, hook, guid="guid-stored", status_code=0)
    with session_scope() as session:
        session.add(WebhookDelivery(delivery_id="guid-stored", event="issues", outcome="ok"))
    assert (await redeliver()).requested == []
    assert attempts(github) == []


async def test_a_failed_ask_is_tried_again_next_cycle(
    github: FakeGitHub, hooked: tuple[FakeRepo, int]
) -> None:
    repo, hook = hooked
    github.add_delivery(repo, hook, guid="guid-down", status_code=503)
    github.inject("/attempts", 500)
    result = await redeliver()
    assert result.requested == [] and len(result.errors) == 1
    assert (await redeliver()).requested == ["guid-down"]
    assert len(attempts(github)) == 2


async def test_a_repository_that_refuses_does_not_stop_the_others(
    github: FakeGitHub, hooked: tuple[FakeRepo, int]
) -> None:
    repo, hook = hooked
    github.add_delivery(repo, hook, guid="guid-a", status_code=500)
    github.inject("GET /repos/octo-org/octo-repo/hooks", 403, message="Must have admin rights")
    result = await redeliver()
    assert result.requested == [] and "403" in result.errors[0]
    assert (await redeliver()).requested == ["guid-a"]
