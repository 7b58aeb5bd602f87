"""The control loop with GitHub feedback and the model check, end to end: signed webhook → run →
local process → service comment and labels on the loopback GitHub; a missing model fails the run
with reason precondition before anything is launched."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.config import Settings, get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.feedback import IN_PROGRESS, SERVICE_MARKER
from codexk8s.jobs.control_loop import ControlLoop
from codexk8s.services import model_checks, projects, repositories
from codexk8s.services.github_feedback import GitHubFeedback
from tests.conftest import link_member, reset_caches
from tests.conftest import trigger as signed_trigger
from tests.github_server import FakeGitHub, FakeRepo, running_github
from tests.jobs.test_control_loop_local import (
    FAST,
    SECRET,
    set_command,
    trigger,
    until,
    until_status,
)
from tests.openai_server import API_KEY, FakeOpenAI, running_openai

TOKEN = "ghp_enginefeedback0001"
PUBLIC = "https://ck8s.example.test"


@pytest.fixture
def fakes(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGitHub, FakeOpenAI]]:
    with running_github() as github, running_openai() as openai:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", github.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        monkeypatch.setenv("CODEXK8S_OPENAI_BASE_URL", openai.base_url)
        monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", API_KEY)
        reset_caches()
        github.add_repo("Codertocat/Hello-World", token=TOKEN)
        with session_scope() as session:
            projects.create_project(session=session, key="web", slots=2)
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key="web",
                full_name="Codertocat/Hello-World", webhook_secret=SECRET, token=TOKEN,
            )  # fmt: skip
        link_member("web")
        yield github, openai


async def check(settings: Settings, model: str) -> None:
    await model_checks.check_model(settings=settings, model=model)


@pytest.fixture
async def control_loop(
    fakes: tuple[FakeGitHub, FakeOpenAI], tmp_path: Path
) -> AsyncIterator[ControlLoop]:
    settings = get_settings()
    started = ControlLoop(
        engine=get_engine(), runtime=LocalRuntime(tmp_path / "runs", poll_interval=0.05),
        callback_url="http://127.0.0.1:1", owner="replica-1",
        timings=replace(FAST, feedback_seconds=0.2),
        feedback=GitHubFeedback(
            engine=get_engine(), settings=settings, box=get_secret_box(), owner="replica-1",
            client_options={"backoff_seconds": 0.01},
        ),
        model_check=functools.partial(check, settings),
    )  # fmt: skip
    await started.start()
    yield started
    await started.stop()


def service_body(repo: FakeRepo, number: int) -> str:
    found = [c["body"] for c in repo.comments_on(number) if SERVICE_MARKER in c["body"]]
    assert len(found) <= 1, "the service comment was duplicated"
    return found[0] if found else ""


async def test_run_moves_its_comment_and_labels(
    control_loop: ControlLoop, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, _openai = fakes
    repo = github.repos["codertocat/hello-world"]
    set_command("import time; time.sleep(3); print('done')", role="em")
    run_id = trigger(11, "run:plan")
    await until(lambda: "running" in service_body(repo, 11), what="comment says running")
    # The comment and the label are two GitHub calls of one report: the label may follow.
    await until(lambda: IN_PROGRESS in repo.issue_labels.get(11, ()), what="label added")
    await until_status(run_id, "succeeded")
    await until(lambda: "succeeded" in service_body(repo, 11), what="comment says succeeded")
    await until(lambda: IN_PROGRESS not in repo.issue_labels[11], what="label removed")
    body = service_body(repo, 11)
    assert f"{PUBLIC}/runs/{run_id}" in body and "`run:dev` or `run:plan:revise`" in body
    assert len(github.rest_calls("POST", "/issues/11/comments")) == 1


async def test_missing_model_fails_with_precondition_before_launch(
    control_loop: ControlLoop, fakes: tuple[FakeGitHub, FakeOpenAI]
) -> None:
    github, openai = fakes
    repo = github.repos["codertocat/hello-world"]
    # The dev agent runs Codex (the default engine), so its model is checked.
    run_id = signed_trigger(
        12, secret=SECRET, labels=["[ai-model-gpt-missing]", "run:dev"], added="run:dev"
    )
    failed = await until_status(run_id, "failed")
    assert failed.status_reason == "precondition"
    assert "gpt-missing" in (failed.status_message or "") and failed.runtime_handle is None
    assert ("GET", "/v1/models/gpt-missing", None) in openai.requests
    await until(lambda: "failed (precondition)" in service_body(repo, 12), what="comment")
    assert "does not exist" in service_body(repo, 12)
