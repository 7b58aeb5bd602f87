"""The reporter against the loopback GitHub: service comment, labels, pull requests, retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.config import get_settings
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, LearningFeedback, utcnow
from codexk8s.db.models import GitHubFeedback as FeedbackRow
from codexk8s.domain.feedback import IN_PROGRESS, IN_REVIEW, SERVICE_MARKER, discussion_marker
from codexk8s.domain.runs import RunStatus
from codexk8s.services import projects, repositories
from codexk8s.services.github_feedback import FULL_SCAN_EVERY, RUN_RESULT, GitHubFeedback
from codexk8s.services.run_states import add_event, transition
from tests.conftest import deliver_signed, link_member, reset_caches
from tests.github_server import FakeGitHub, FakeRepo, running_github
from tests.openai_server import API_KEY, FakeOpenAI, running_openai
from tests.webhook_examples import example, with_labels

TOKEN = "ghp_reportertoken0001"
HOOK_SECRET = "reporter-hook-secret"
PUBLIC = "https://ck8s.example.test"
ISSUE = 7


@pytest.fixture
def github(app_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        reset_caches()
        yield fake


@pytest.fixture
def repo(github: FakeGitHub) -> FakeRepo:
    fake_repo = github.add_repo("octo-org/octo-repo", token=TOKEN)
    with session_scope() as session:
        projects.create_project(session=session, key="web")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="web",
            full_name="octo-org/octo-repo", token=TOKEN,
        )  # fmt: skip
    return fake_repo


def reporter(owner: str = "replica-a") -> GitHubFeedback:
    return GitHubFeedback(
        engine=get_engine(), settings=get_settings(), box=get_secret_box(), owner=owner,
        client_options={"max_wait_seconds": 5.0, "backoff_seconds": 0.01},
    )  # fmt: skip


def new_run(
    *, stage: str = "dev", issue: int = ISSUE, is_revise: bool = False, learning: bool = False,
    model: str | None = "gpt-test",
) -> int:  # fmt: skip
    with session_scope() as session:
        repository = repositories.get_by_full_name(session=session, full_name="octo-org/octo-repo")
        assert repository is not None
        label = f"run:{stage}:revise" if is_revise else f"run:{stage}"
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=repository.project_id,
            repository_id=repository.id, issue_number=issue, agent_key="dev", stage=stage,
            is_revise=is_revise, trigger_label=label if stage != "review" else "need:reviewer",
            model=model, learning_mode=learning,
            pr_number=issue if stage == "review" else None,
        )  # fmt: skip
        session.add(run)
        session.flush()
        run_id = run.id
        assert run_id is not None
    event(run_id, "run_created", {})
    return run_id


def event(run_id: int, event_type: str, payload: dict[str, Any]) -> None:
    with get_engine().begin() as connection:
        row = connection.execute(sa.select(AgentRun.__table__).where(
            AgentRun.__table__.c.id == run_id)).one()  # type: ignore[attr-defined]  # fmt: skip
        add_event(connection, correlation_id=row.correlation_id, event_type=event_type,
                  run_id=run_id, project_id=row.project_id, payload=payload)  # fmt: skip


def move(run_id: int, *targets: RunStatus, reason: str | None = None) -> None:
    with get_engine().begin() as connection:
        for target in targets:
            row = connection.execute(sa.select(AgentRun.__table__).where(
                AgentRun.__table__.c.id == run_id)).one()  # type: ignore[attr-defined]  # fmt: skip
            assert transition(
                connection, run_id=run_id, correlation_id=row.correlation_id,
                project_id=row.project_id, from_statuses=[RunStatus(row.status)],
                to_status=target, reason=reason,
            )  # fmt: skip


def result_payload(**overrides: Any) -> dict[str, Any]:
    payload = {
        "branch": "codex/issue-7", "base_branch": "main", "head_sha": "a" * 40,
        "changed_files": ["app/models.py", "tests/test_models.py"],
        "summary": "Added the Widget model and its tests.", "pr_title": "Add widgets",
        "pr_body": "Implements #7.", "review_body": "",
    }  # fmt: skip
    payload.update(overrides)
    return payload


def the_run(run_id: int) -> AgentRun:
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        return run


def service_comments(repo: FakeRepo, number: int = ISSUE) -> list[dict[str, Any]]:
    return [c for c in repo.comments_on(number) if SERVICE_MARKER in c["body"]]


async def test_one_comment_created_then_edited_as_the_run_moves(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    run_id = new_run()
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert "pending" in comment["body"]
    assert f"[#{run_id}]({PUBLIC}/runs/{run_id})" in comment["body"]
    assert repo.issue_labels[ISSUE] == [IN_PROGRESS]

    move(run_id, RunStatus.STARTING, RunStatus.RUNNING)
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert "running" in comment["body"]

    # Nothing changed: no call at all.
    calls = len(github.calls)
    assert (await reporter().report_once()).reported == []
    assert len(github.calls) == calls

    event(run_id, RUN_RESULT, result_payload())
    move(run_id, RunStatus.SUCCEEDED)
    await reporter().report_once()
    (comment,) = service_comments(repo)
    run = the_run(run_id)
    assert run.pr_number is not None and run.pr_url
    assert f"[#{run.pr_number}]({run.pr_url})" in comment["body"]
    assert "Added the Widget model" in comment["body"]
    assert "`need:reviewer` or `run:dev:revise`" in comment["body"]
    assert repo.issue_labels[ISSUE] == [IN_REVIEW]
    assert len(github.rest_calls("POST", f"/issues/{ISSUE}/comments")) == 1
    assert len(github.rest_calls("PATCH", "/issues/comments/")) == 2


async def test_two_reporters_racing_post_one_comment(github: FakeGitHub, repo: FakeRepo) -> None:
    new_run()
    results = await asyncio.gather(reporter("a").report_once(), reporter("b").report_once())
    assert sorted(len(r.reported) for r in results) == [0, 1]
    assert len(service_comments(repo)) == 1
    assert len(github.rest_calls("POST", f"/issues/{ISSUE}/comments")) == 1
    # Also when the stored comment id is lost: the marker finds the comment instead of a new one.
    with get_engine().begin() as connection:
        connection.execute(sa.update(FeedbackRow).values(comment_id=None, body_sha256=None))
    run_id = new_run(stage="plan")
    move(run_id, RunStatus.STARTING)
    await asyncio.gather(reporter("a").report_once(), reporter("b").report_once())
    (comment,) = service_comments(repo)
    assert "plan" in comment["body"]


async def test_labels_removed_on_failure_and_trigger_label_kept(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    repo.issue_labels[ISSUE] = ["run:plan"]
    run_id = new_run(stage="plan")
    move(run_id, RunStatus.STARTING, RunStatus.RUNNING)
    await reporter().report_once()
    assert repo.issue_labels[ISSUE] == ["run:plan", IN_PROGRESS]
    assert IN_PROGRESS in repo.labels  # created in the repository when missing
    move(run_id, RunStatus.FAILED, reason="exit_code")
    await reporter().report_once()
    assert repo.issue_labels[ISSUE] == ["run:plan"]
    (comment,) = service_comments(repo)
    assert "failed (exit_code)" in comment["body"] and "re-add `run:plan`" in comment["body"]


async def test_plan_without_pr_suggests_dev(github: FakeGitHub, repo: FakeRepo) -> None:
    run_id = new_run(stage="plan")
    move(run_id, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert "`run:dev` or `run:plan:revise`" in comment["body"]
    assert repo.issue_labels.get(ISSUE, []) == []


async def test_pr_opened_once_and_updated_by_revise_run(github: FakeGitHub, repo: FakeRepo) -> None:
    first = new_run()
    event(first, RUN_RESULT, result_payload())
    move(first, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    await reporter().report_once()
    await reporter().report_once()  # nothing new: the PR is not touched again
    (pull,) = repo.pulls.values()
    assert (pull["head"], pull["base"], pull["title"]) == ("codex/issue-7", "main", "Add widgets")
    assert len(github.rest_calls("POST", "/pulls")) == 1
    assert github.rest_calls("PATCH", "/pulls/") == []

    revise = new_run(is_revise=True)
    event(revise, RUN_RESULT, result_payload(pr_title="Add widgets (revised)"))
    move(revise, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    await reporter().report_once()
    assert len(repo.pulls) == 1 and pull["title"] == "Add widgets (revised)"
    assert len(github.rest_calls("PATCH", "/pulls/")) == 1
    assert the_run(revise).pr_number == pull["number"]
    (comment,) = service_comments(repo)
    assert "dev (revise)" in comment["body"] and f"#{first}" in comment["body"]


async def test_reviewer_run_posts_its_review_once(github: FakeGitHub, repo: FakeRepo) -> None:
    run_id = new_run(stage="review", issue=42)
    event(run_id, RUN_RESULT, result_payload(branch="", review_body="Looks good; rename `x`."))
    move(run_id, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    await reporter().report_once()
    reviews = [c for c in repo.comments_on(42) if "rename `x`" in c["body"]]
    assert len(reviews) == 1
    assert repo.pulls == {}


async def test_failure_is_recorded_and_retried_later(github: FakeGitHub, repo: FakeRepo) -> None:
    run_id = new_run()
    github.inject("POST /repos/octo-org/octo-repo/issues/7/comments", 500, times=1)
    result = await reporter().report_once()
    assert result.failed == [(the_run(run_id).repository_id, ISSUE)]
    assert service_comments(repo) == []
    with Session(get_engine()) as session:
        row = session.exec(select(FeedbackRow)).one()
        assert row.attempts == 1 and "500" in (row.last_error or "")
        assert row.retry_after is not None
        failures = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "github_feedback_failed")
        ).all()
        assert len(failures) == 1 and failures[0].run_id == run_id
    # Not before its retry time; then once.
    assert (await reporter().report_once()).reported == []
    with get_engine().begin() as connection:
        connection.execute(sa.update(FeedbackRow).values(retry_after=None))
    assert len((await reporter().report_once()).reported) == 1
    assert len(service_comments(repo)) == 1


async def test_secondary_rate_limit_waits_and_continues(github: FakeGitHub, repo: FakeRepo) -> None:
    new_run()
    github.inject(
        "POST /repos/octo-org/octo-repo/issues/7/comments",
        403,
        headers={"Retry-After": "1"},
        message="You have exceeded a secondary rate limit",
    )
    result = await reporter().report_once()
    assert len(result.reported) == 1
    attempts = [i for i, c in enumerate(github.calls) if c[0] == "POST" and "/7/comments" in c[1]]
    assert len(attempts) == 2
    assert github.call_times[attempts[1]] - github.call_times[attempts[0]] >= 0.95
    assert len(service_comments(repo)) == 1


async def test_learning_mode_posts_one_comment_and_stores_it(
    github: FakeGitHub, repo: FakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeOpenAI(replies=[
        '{"explanations": [{"file": "app/models.py", "why": "Widgets need storage.",'
        ' "trade_offs": "One table, simple queries.", "alternatives": "A JSON column."}]}'
    ])  # fmt: skip
    with running_openai(fake):
        monkeypatch.setenv("CODEXK8S_OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", API_KEY)
        get_settings.cache_clear()
        run_id = new_run(learning=True)
        event(run_id, RUN_RESULT, result_payload())
        move(run_id, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
        await reporter().report_once()
        await reporter().report_once()
    pr_number = the_run(run_id).pr_number
    assert pr_number is not None
    notes = [c for c in repo.comments_on(pr_number) if "Learning notes" in c["body"]]
    assert len(notes) == 1
    assert "Widgets need storage." in notes[0]["body"] and "A JSON column." in notes[0]["body"]
    ((_method, path, body),) = fake.requests
    assert path == "/v1/responses" and body["model"] == "gpt-test"
    assert "app/models.py" in body["input"]
    with Session(get_engine()) as session:
        (row,) = session.exec(select(LearningFeedback)).all()
        assert (row.run_id, row.kind, row.file_path) == (run_id, "post_pr", "app/models.py")
    run = the_run(run_id)
    assert (run.tokens_input, run.tokens_cached, run.tokens_output, run.tokens_reasoning) == (
        120, 20, 80, 30,
    )  # fmt: skip


async def test_learning_mode_off_asks_no_model(
    github: FakeGitHub, repo: FakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_openai() as fake:
        monkeypatch.setenv("CODEXK8S_OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", API_KEY)
        get_settings.cache_clear()
        run_id = new_run(learning=False)
        event(run_id, RUN_RESULT, result_payload())
        move(run_id, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
        await reporter().report_once()
    assert fake.requests == []
    assert the_run(run_id).tokens_input == 0


async def test_old_unreported_changes_are_found_by_the_periodic_full_scan(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    new_run()
    with get_engine().begin() as connection:
        connection.execute(sa.update(FlowEvent).values(created_at=utcnow() - timedelta(hours=3)))
    regular = reporter()
    regular._cycles = 1  # not a full-scan cycle: only the last hour's events are looked at
    assert (await regular.report_once()).reported == []
    assert service_comments(repo) == []
    regular._cycles = FULL_SCAN_EVERY
    assert len((await regular.report_once()).reported) == 1
    assert len(service_comments(repo)) == 1


async def test_embedded_sqlite_reports_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The one-machine default (SQLite) uses the same claim and insert-or-ignore statements."""
    from codexk8s.db.migrations import upgrade_to_head

    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_DATABASE_URL", f"sqlite:///{tmp_path / 'ck8s.db'}")
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC)
        reset_caches()
        upgrade_to_head(get_settings().effective_database_url)
        fake_repo = fake.add_repo("octo-org/octo-repo", token=TOKEN)
        with session_scope() as session:
            projects.create_project(session=session, key="web")
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key="web",
                full_name="octo-org/octo-repo", token=TOKEN,
            )  # fmt: skip
        run_id = new_run()
        await reporter().report_once()
        move(run_id, RunStatus.STARTING, RunStatus.RUNNING)
        await reporter().report_once()
        (comment,) = service_comments(fake_repo)
        assert "running" in comment["body"]
        assert fake_repo.issue_labels[ISSUE] == [IN_PROGRESS]


# --- discussions and notices (issue #19) ---------------------------------------------------------


def deliver(payload: dict[str, Any], event_name: str = "issues") -> Any:
    return deliver_signed(event_name, payload, secret=HOOK_SECRET, global_secret=HOOK_SECRET)


def labeled_by(login: str, labels: list[str], changed: str) -> dict[str, Any]:
    payload = with_labels(example("issues", "labeled"), "issue", labels, changed)
    payload["issue"]["number"] = ISSUE
    payload["repository"]["full_name"] = "octo-org/octo-repo"
    payload["sender"]["login"] = login
    return payload


async def test_a_discussion_turn_answers_on_the_issue_once_and_opens_no_pull_request(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    run_id = new_run(stage="discussion", learning=True)
    with session_scope() as session:
        session.execute(
            sa.update(AgentRun)
            .where(AgentRun.id == run_id)
            .values(mode="discussion", trigger_label="mode:discussion", agent_key="pm")
        )
    answer = "Two options: a cron job or a queue. I would start with the cron job."
    event(run_id, RUN_RESULT, result_payload(branch=None, summary=answer, pr_title=None))
    move(run_id, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    await reporter().report_once()
    (reply,) = [c for c in repo.comments_on(ISSUE) if answer in c["body"]]
    assert reply["body"].startswith(discussion_marker(run_id))
    assert f"run [#{run_id}]" in reply["body"] and "`gpt-test`" in reply["body"]
    assert repo.pulls == {} and the_run(run_id).pr_url is None
    assert not [c for c in repo.comments_on(ISSUE) if "Learning notes" in c["body"]]
    (comment,) = service_comments(repo)
    assert "Reply on this issue to continue the discussion" in comment["body"]
    # A retry after a lost answer finds the reply by its marker instead of posting it again.
    with get_engine().begin() as connection:
        connection.execute(sa.update(AgentRun).values(reported_event_id=None))
    await reporter().report_once()
    assert len([c for c in repo.comments_on(ISSUE) if answer in c["body"]]) == 1


async def test_a_refused_sender_is_told_who_may_start_runs(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    outcome = deliver(labeled_by("drive-by", ["run:dev"], "run:dev"))
    assert outcome.ignored == "sender_not_allowed"
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert "@drive-by may not start runs" in comment["body"] and "`web`" in comment["body"]
    assert "| Status |" not in comment["body"]  # no run yet
    assert repo.issue_labels.get(ISSUE, []) == []
    # Reported once: nothing new, no call.
    calls = len(github.calls)
    await reporter().report_once()
    assert len(github.calls) == calls
    # A run started afterwards replaces the notice; a refusal after it shows under the run.
    link_member("web", "Codertocat")
    (run_id,) = deliver(labeled_by("Codertocat", ["run:dev"], "run:dev")).runs
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert f"[#{run_id}]" in comment["body"] and "may not start runs" not in comment["body"]
    deliver(labeled_by("mallory", ["run:plan"], "run:plan"))
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert f"[#{run_id}]" in comment["body"] and "@mallory may not start runs" in comment["body"]
    assert len(github.rest_calls("POST", f"/issues/{ISSUE}/comments")) == 1


async def test_conflicting_labels_are_explained_in_the_service_comment(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    link_member("web", "Codertocat")
    outcome = deliver(labeled_by("Codertocat", ["run:dev", "run:plan"], "run:dev"))
    assert outcome.ignored == "trigger_conflict:multiple_run_labels"
    await reporter().report_once()
    (comment,) = service_comments(repo)
    assert "Several run labels are set (run:dev, run:plan)" in comment["body"]


async def test_a_failed_notice_is_retried(github: FakeGitHub, repo: FakeRepo) -> None:
    deliver(labeled_by("drive-by", ["run:dev"], "run:dev"))
    github.inject("POST /repos/octo-org/octo-repo/issues/7/comments", 500, times=1)
    result = await reporter().report_once()
    assert len(result.failed) == 1 and service_comments(repo) == []
    with Session(get_engine()) as session:
        (failure,) = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "github_feedback_failed")
        ).all()
        assert failure.run_id is None and failure.payload["number"] == ISSUE
    with get_engine().begin() as connection:
        connection.execute(sa.update(FeedbackRow).values(retry_after=None))
    assert len((await reporter().report_once()).reported) == 1
    assert len(service_comments(repo)) == 1
