"""The whole path of issue #5 with nothing mocked inside the product: a signed webhook → a run →
the control loop's dispatch → the local runtime → `codexk8s agent run` → the real Codex binary
against a scripted OpenAI Responses server (through the control plane's model proxy) → the branch
pushed to a bare git remote → the pull request opened on the loopback GitHub → the service
comment created, then edited → labels moved → the run succeeded with its usage and cost."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.feedback import IN_PROGRESS, IN_REVIEW, SERVICE_MARKER
from codexk8s.jobs.control_loop import ControlLoop
from codexk8s.services import projects, repositories, run_logs
from codexk8s.services.github_feedback import GitHubFeedback
from tests.agent.conftest import OWNER_REPO, REPO_TOKEN, Remote, load_run
from tests.codex_server import ScriptedResponses
from tests.conftest import deliver_signed, link_member, reset_caches
from tests.github_server import FakeGitHub, FakeRepo, running_github
from tests.jobs.test_control_loop_local import FAST
from tests.webhook_examples import example, with_labels

SECRET = "full-path-webhook-secret"
PUBLIC = "https://ck8s.example.test"


@pytest.fixture
def github(control_plane: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGitHub, str]]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        reset_caches()
        fake.add_repo(OWNER_REPO, token=REPO_TOKEN)
        with session_scope() as session:
            projects.create_project(session=session, key="web", slots=2)
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key="web",
                full_name=OWNER_REPO, token=REPO_TOKEN, webhook_secret=SECRET,
            )  # fmt: skip
        link_member("web")  # the payloads' sender may start runs
        yield fake, control_plane


def local_control_loop(callback_url: str, runs: Path) -> ControlLoop:
    """The control loop of one replica on the local runtime, with fast timings and feedback."""
    return ControlLoop(
        engine=get_engine(),
        runtime=LocalRuntime(
            runs, path=f"{Path(sys.executable).parent}:{os.environ['PATH']}", poll_interval=0.05,
            kill_grace_seconds=1,
        ),
        callback_url=callback_url, owner="replica-1",
        timings=replace(FAST, feedback_seconds=0.2),
        feedback=GitHubFeedback(
            engine=get_engine(), settings=get_settings(), box=get_secret_box(),
            owner="replica-1", client_options={"backoff_seconds": 0.01},
        ),
    )  # fmt: skip


def label_issue(number: int) -> int:
    payload = with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    payload["issue"]["number"] = number
    payload["issue"]["title"] = "Say hello"
    payload["repository"]["full_name"] = OWNER_REPO
    (run_id,) = deliver_signed("issues", payload, secret=SECRET).runs
    return run_id


def service_comments(repo: FakeRepo, number: int) -> list[str]:
    return [c["body"] for c in repo.comments_on(number) if SERVICE_MARKER in c["body"]]


async def until(predicate: object, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_labeled_issue_becomes_a_pushed_branch_a_pull_request_and_a_comment(
    github: tuple[FakeGitHub, str],
    remote: Remote,
    openai_api: ScriptedResponses,
    tmp_path: Path,
) -> None:
    fake, callback_url = github
    repo = fake.repos[OWNER_REPO]
    control_loop = local_control_loop(callback_url, tmp_path / "runs")
    repo.issue_labels[31] = ["run:dev"]  # as GitHub has it when it sends the delivery
    run_id = label_issue(31)
    await control_loop.start()
    try:
        # The reporter edits the comment, then sets the labels: on a busy machine a poll can
        # fall between the two, so both are waited for together.
        await until(
            lambda: (
                any("running" in b for b in service_comments(repo, 31))
                and IN_PROGRESS in repo.issue_labels[31]
            ),
            "the running comment and state:in-progress",
        )
        await until(lambda: load_run(run_id).status == "succeeded", "the run to succeed")
        await until(lambda: load_run(run_id).pr_url is not None, "the pull request")
        await until(lambda: IN_REVIEW in repo.issue_labels.get(31, []), "state:in-review")
        await until(
            lambda: any("succeeded" in b and "/pull/" in b for b in service_comments(repo, 31)),
            "the comment to link the pull request",
        )
        await asyncio.sleep(1)  # the log pump's last round
    finally:
        await control_loop.stop()

    run = load_run(run_id)
    # Codex wrote the file in the workspace; the runner committed and pushed the work branch.
    assert remote.show("codex/issue-31", "HELLO.md") == "hello from codex\n"
    # The pull request is opened once, from the work branch onto the default branch.
    (pull,) = repo.pulls.values()
    assert (pull["head"], pull["base"], pull["state"]) == ("codex/issue-31", "main", "open")
    assert run.pr_url == f"https://github.com/{OWNER_REPO}/pull/{pull['number']}"
    assert len(fake.rest_calls("POST", "/pulls")) == 1
    # One service comment, created once and edited as the run moved.
    (comment,) = service_comments(repo, 31)
    assert f"{PUBLIC}/runs/{run_id}" in comment and run.pr_url in comment
    assert len(fake.rest_calls("POST", "/issues/31/comments")) == 1
    assert fake.rest_calls("PATCH", "/issues/comments/")
    # The trigger label stays as the record; in-progress gave way to in-review.
    assert sorted(repo.issue_labels[31]) == ["run:dev", IN_REVIEW]
    # Usage metered by the control plane's model proxy, priced, and the token revoked.
    assert (run.tokens_input, run.tokens_output) == (2400, 600) and run.cost_usd > 0
    assert run.summary == "Added HELLO.md with a greeting." and run.run_token_hash is None
    stored = [line.line for line in run_logs.read_lines(get_engine(), run_id=run_id)]
    assert "runner: pushed codex/issue-31" in stored
    assert not any(REPO_TOKEN in line or openai_api.api_key in line for line in stored)


def deliver(event_name: str, payload: dict[str, Any]) -> Any:
    return deliver_signed(event_name, payload, secret=SECRET)


def comment_payload(number: int, body: str, login: str = "Codertocat") -> dict[str, Any]:
    """An issue_comment `created` delivery as GitHub sends it for a comment on issue NUMBER."""
    payload = with_labels(example("issue_comment", "created"), "issue", ["mode:discussion"], None)
    payload.pop("label", None)
    payload["issue"]["number"] = number
    payload["repository"]["full_name"] = OWNER_REPO
    payload["comment"]["body"] = body
    payload["comment"]["id"] = abs(hash(body)) % 10**9
    payload["sender"]["login"] = login
    return payload


async def test_a_discussion_answers_on_the_issue_and_a_members_reply_continues_it(
    github: tuple[FakeGitHub, str],
    remote: Remote,
    openai_api: ScriptedResponses,
    tmp_path: Path,
) -> None:
    """mode:discussion → a turn that reads the code and answers as an issue comment, no branch,
    no pull request → GitHub echoes that comment (ignored) → a member's reply starts the next
    turn, which resumes the first turn's Codex session and answers again."""
    fake, callback_url = github
    repo = fake.repos[OWNER_REPO]
    control_loop = local_control_loop(callback_url, tmp_path / "runs")
    openai_api.command = "cat README.md"
    openai_api.final_message = "I read the README. Which greeting do you want?"
    payload = with_labels(example("issues", "labeled"), "issue", ["mode:discussion"],
                          "mode:discussion")  # fmt: skip
    payload["issue"]["number"] = 33
    payload["repository"]["full_name"] = OWNER_REPO
    (first,) = deliver("issues", payload).runs

    def answers() -> list[str]:
        return [c["body"] for c in repo.comments_on(33) if "codexk8s:discussion" in c["body"]]

    await control_loop.start()
    try:
        await until(lambda: len(answers()) == 1, "the first answer on the issue")
        # GitHub sends the answer back as a new comment: it starts nothing.
        echo = deliver("issue_comment", comment_payload(33, answers()[0], login="codexk8s-bot"))
        assert echo.ignored == "own_comment"
        openai_api.final_message = "Then a friendly hello in English it is."
        (second,) = deliver("issue_comment", comment_payload(33, "A friendly one, please.")).runs
        await until(lambda: len(answers()) == 2, "the second answer")
        await until(lambda: load_run(second).status == "succeeded", "the second turn")
        await asyncio.sleep(1)
    finally:
        await control_loop.stop()

    assert "Which greeting do you want?" in answers()[0]
    assert "friendly hello in English" in answers()[1]
    assert remote.branches() == ["main"] and repo.pulls == {}
    first_run, second_run = load_run(first), load_run(second)
    assert (first_run.mode, first_run.stage, first_run.agent_key) == ("discussion", "discussion",
                                                                      "pm")  # fmt: skip
    assert first_run.reasoning_effort == "low"
    stored = [line.line for line in run_logs.read_lines(get_engine(), run_id=second)]
    assert any(f"resuming the session of run {first}" in line for line in stored), stored
    (comment,) = service_comments(repo, 33)
    assert "Reply on this issue to continue the discussion" in comment
    assert second_run.run_token_hash is None
