"""The GitHub REST client against the loopback GitHub: limits, retries and error mapping."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from codexk8s import metrics
from codexk8s.adapters.github.client import GitHubClient
from codexk8s.domain.repository_provider import (
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from tests.conftest import free_port
from tests.github_server import FakeGitHub, running_github

TOKEN = "ghp_clienttesttoken000000000001"
OWNER, NAME = "octo-org", "octo-repo"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with running_github() as fake:
        fake.add_repo(f"{OWNER}/{NAME}", token=TOKEN)
        yield fake


def client(github: FakeGitHub, token: str = TOKEN, **options: float) -> GitHubClient:
    defaults = {"max_wait_seconds": 5.0, "backoff_seconds": 0.01}
    return GitHubClient(token=token, api_url=github.base_url, **{**defaults, **options})  # type: ignore[arg-type]


def gap(github: FakeGitHub, first: int, second: int) -> float:
    return github.call_times[second] - github.call_times[first]


async def test_primary_limit_waits_until_reset(github: FakeGitHub) -> None:
    github.exhaust_primary_limit(reset_in=1.0)
    async with client(github) as gh:
        started = time.time()
        await gh.get_repository(OWNER, NAME)
        info = await gh.get_repository(OWNER, NAME)
    assert info.full_name == f"{OWNER}/{NAME}" and info.can_admin
    assert len(github.calls) == 2
    # The reset is a whole epoch second at least one second away.
    assert gap(github, 0, 1) >= 0.9
    assert time.time() - started >= 1.0


async def test_primary_limit_longer_than_allowed_raises_without_sending(
    github: FakeGitHub,
) -> None:
    github.exhaust_primary_limit(reset_in=120.0)
    async with client(github) as gh:
        await gh.get_repository(OWNER, NAME)
        with pytest.raises(ProviderRateLimitedError) as caught:
            await gh.get_repository(OWNER, NAME)
    assert len(github.calls) == 1
    assert caught.value.retry_after > 100


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_limit_honours_retry_after(github: FakeGitHub, status: int) -> None:
    github.inject("GET /repos/", status, headers={"Retry-After": "1"},
                  message="You have exceeded a secondary rate limit")  # fmt: skip
    async with client(github) as gh:
        await gh.list_hooks(OWNER, NAME)
    assert len(github.calls) == 2
    assert gap(github, 0, 1) >= 0.95


async def test_retry_after_beyond_the_bound_raises(github: FakeGitHub) -> None:
    github.inject("GET /repos/", 429, headers={"Retry-After": "3600"})
    async with client(github) as gh:
        started = time.monotonic()
        with pytest.raises(ProviderRateLimitedError) as caught:
            await gh.get_repository(OWNER, NAME)
    assert caught.value.retry_after == 3600 and time.monotonic() - started < 2


async def test_server_errors_are_retried_for_reads(github: FakeGitHub) -> None:
    github.inject("GET /repos/", 502, times=2)
    before = metrics.GITHUB_API_CALLS.labels("GET /repos")._value.get()
    async with client(github) as gh:
        info = await gh.get_repository(OWNER, NAME)
    assert info.default_branch == "main"
    assert len(github.calls) == 3
    assert metrics.GITHUB_API_CALLS.labels("GET /repos")._value.get() - before == 3


async def test_server_errors_give_up_after_retries(github: FakeGitHub) -> None:
    github.inject("GET /repos/", 503, times=10)
    async with client(github, max_retries=2) as gh:
        with pytest.raises(ProviderUnavailableError):
            await gh.get_repository(OWNER, NAME)
    assert len(github.calls) == 3


async def test_a_create_is_not_repeated_after_a_server_error(github: FakeGitHub) -> None:
    github.inject("POST /repos/", 502)
    async with client(github) as gh:
        with pytest.raises(ProviderUnavailableError):
            await gh.create_comment(OWNER, NAME, 1, "hello")
    assert len(github.calls) == 1


async def test_bad_token_and_unknown_repository(github: FakeGitHub) -> None:
    async with client(github, token="ghp_wrong") as gh:
        with pytest.raises(ProviderAuthError) as caught:
            await gh.get_repository(OWNER, NAME)
    assert caught.value.status == 401 and "ghp_wrong" not in str(caught.value)
    async with client(github) as gh:
        with pytest.raises(ProviderNotFoundError):
            await gh.get_repository(OWNER, "missing")


async def test_unreachable_github_is_unavailable() -> None:
    gh = GitHubClient(
        token=TOKEN, api_url=f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_seconds=0.01
    )
    async with gh:
        with pytest.raises(ProviderUnavailableError, match="unreachable"):
            await gh.get_repository(OWNER, NAME)


async def test_comments_labels_and_pulls_round_trip(github: FakeGitHub) -> None:
    repo = github.repos[f"{OWNER}/{NAME}"]
    async with client(github) as gh:
        first = await gh.create_comment(OWNER, NAME, 3, "plain")
        ours = await gh.create_comment(OWNER, NAME, 3, "<!-- mark -->\nhello")
        assert (await gh.find_comment(OWNER, NAME, 3, "<!-- mark -->")) == ours
        assert await gh.find_comment(OWNER, NAME, 4, "<!-- mark -->") is None
        await gh.update_comment(OWNER, NAME, ours.id, "<!-- mark -->\nedited")
        await gh.ensure_label(OWNER, NAME, "state:in-progress", color="fbca04")
        await gh.ensure_label(OWNER, NAME, "state:in-progress", color="fbca04")
        await gh.add_labels(OWNER, NAME, 3, ["state:in-progress"])
        await gh.remove_label(OWNER, NAME, 3, "state:in-review")  # absent: fine
        await gh.remove_label(OWNER, NAME, 3, "state:in-progress")
        pull = await gh.create_pull(OWNER, NAME, head="codex/issue-3", base="main", title="T",
                                    body="B")  # fmt: skip
        assert await gh.find_open_pull(OWNER, NAME, "codex/issue-3") == pull
        assert await gh.find_open_pull(OWNER, NAME, "other") is None
    assert repo.comments[first.id]["body"] == "plain"
    assert repo.comments[ours.id]["body"].endswith("edited")
    assert list(repo.labels) == ["state:in-progress"] and repo.issue_labels[3] == []
    assert len(github.rest_calls("POST", "/labels")) == 2  # one create, one add to the issue
