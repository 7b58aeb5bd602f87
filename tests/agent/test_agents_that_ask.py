"""Agents that ask (issue #18), end to end with nothing mocked inside the product: a labeled
issue → the control loop → the local runtime → `codexk8s agent run` → the real Codex binary, whose
scripted model calls the platform MCP tools → a person answers (the service the inbox calls, an
`/answer` comment through webhook ingest) → the run resumes and finishes; a denied approval fails
the run with its reason; a tool under policy `none` goes through without waiting."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.jobs.control_loop import ControlLoop
from codexk8s.services import projects, run_requests, users
from tests.agent.conftest import OWNER_REPO, Remote, load_run
from tests.agent.test_full_path import (  # noqa: F401  (github is a fixture)
    comment_payload,
    deliver,
    github,
    label_issue,
    local_control_loop,
    service_comments,
    until,
)
from tests.codex_server import ScriptedResponses, mcp_outputs
from tests.conftest import link_member
from tests.github_server import FakeGitHub
from tests.services.test_run_requests import events


@pytest.fixture
def loopback(request: pytest.FixtureRequest) -> tuple[FakeGitHub, str]:
    """test_full_path's `github` fixture: the loopback GitHub, a project and its repository."""
    return request.getfixturevalue("github")


@pytest.fixture
async def control_loop(
    loopback: tuple[FakeGitHub, str], tmp_path: Path
) -> AsyncIterator[ControlLoop]:
    _, callback_url = loopback
    started = local_control_loop(callback_url, tmp_path / "runs")
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def admin() -> Principal:
    email = link_member("web", "boss", role="admin")
    with session_scope() as session:
        user = users.require_by_email(session=session, email=email)
        return Principal(user_id=user.id or 0, platform_role=PlatformRole(user.role))


def pending(run_id: int) -> list[sa.Row]:
    with get_engine().connect() as connection:
        return list(
            connection.execute(
                sa.select(run_requests.REQUESTS).where(
                    run_requests.REQUESTS.c.run_id == run_id,
                    run_requests.REQUESTS.c.status == "pending",
                )
            ).all()
        )


async def test_questions_answered_in_the_inbox_and_on_github_resume_the_run(
    loopback: tuple[FakeGitHub, str], remote: Remote, openai_api: ScriptedResponses,
    control_loop: ControlLoop,
) -> None:  # fmt: skip
    fake, _ = loopback
    repo = fake.repos[OWNER_REPO]
    openai_api.mcp_calls = (
        ("report_progress", {"message": "Read the README", "share_on_github": True}),
        ("ask", {"question": "Which greeting?", "options": ["hello", "hi"]}),
        ("ask", {"question": "In which language?"}),
    )
    boss = admin()
    repo.issue_labels[41] = ["run:dev"]
    run_id = label_issue(41)

    await until(lambda: len(pending(run_id)) == 1, "the first question")
    (first,) = pending(run_id)
    assert load_run(run_id).waiting_since is not None
    await until(
        lambda: any("The agent asks" in b and "Which greeting?" in b
                    and "**Progress:** Read the README" in b for b in service_comments(repo, 41)),
        "the shared progress and the question in the service comment",
    )  # fmt: skip
    # Answered in the inbox (the service the dashboard calls).
    answered_at = time.monotonic()
    run_requests.answer_request(get_engine(), principal=boss, request_id=first.id, answer="hello")
    await until(lambda: len(pending(run_id)) == 1 and pending(run_id)[0].id != first.id,
                "the second question")  # fmt: skip
    assert time.monotonic() - answered_at < 10

    # Answered on GitHub by a member with write access.
    outcome = deliver("issue_comment", comment_payload(41, "Thanks!\n/answer English, please"))
    assert outcome.ignored == "answer_to_agent" and outcome.runs == []
    await until(lambda: load_run(run_id).status == "succeeded", "the run to finish")

    outputs = mcp_outputs(openai_api)
    assert "Recorded and shared on GitHub." in outputs[0]
    assert "boss@users.example.test answered: hello" in outputs[1]
    assert "Codertocat answered: English, please" in outputs[2]
    run = load_run(run_id)
    assert run.waiting_since is None and run.summary == "Added HELLO.md with a greeting."
    trail = events(run_id)
    assert trail.count("run_request_opened") == 2 and trail.count("run_request_answered") == 2


async def test_a_denied_approval_fails_the_run_with_the_reason(
    loopback: tuple[FakeGitHub, str], remote: Remote, openai_api: ScriptedResponses,
    control_loop: ControlLoop,
) -> None:  # fmt: skip
    fake, _ = loopback
    repo = fake.repos[OWNER_REPO]
    openai_api.mcp_calls = (("request_approval", {"action": "Drop the users table"}),)
    boss = admin()
    repo.issue_labels[43] = ["run:dev"]
    run_id = label_issue(43)
    await until(lambda: len(pending(run_id)) == 1, "the approval request")
    (request,) = pending(run_id)
    # A member with write access may not decide what the policy leaves to an admin, on GitHub
    # either: refused, audited, nothing changes.
    deliver("issue_comment", comment_payload(43, "/answer approve"))
    assert len(pending(run_id)) == 1 and "answer_refused" in events(run_id)
    run_requests.answer_request(
        get_engine(), principal=boss, request_id=request.id, answer="deny not on a Friday"
    )
    await until(lambda: load_run(run_id).status == "failed", "the run to fail")
    run = load_run(run_id)
    assert run.status_reason == "approval_denied"
    assert "denied 'Drop the users table': not on a Friday" in run.status_message
    await until(
        lambda: any("approval_denied" in b for b in service_comments(repo, 43)),
        "the failure in the service comment",
    )


async def test_a_tool_under_policy_none_goes_through_without_waiting(
    loopback: tuple[FakeGitHub, str], remote: Remote, openai_api: ScriptedResponses,
    control_loop: ControlLoop,
) -> None:  # fmt: skip
    fake, _ = loopback
    repo = fake.repos[OWNER_REPO]
    with session_scope() as session:
        run_requests.set_tool_policy(
            session=session, actor=None, project_key="web", tool="request_approval",
            policy="none",
        )  # fmt: skip
    openai_api.mcp_calls = (
        ("request_approval", {"action": "Push a branch"}),
        ("report_progress", {"message": "approved, pushing"}),
    )
    repo.issue_labels[44] = ["run:dev"]
    run_id = label_issue(44)
    await until(lambda: load_run(run_id).status == "succeeded", "the run to finish")
    approved, progress = mcp_outputs(openai_api)
    assert "Approved by the project's policy" in approved and "Recorded." in progress
    trail = events(run_id)
    assert "run_request_approved" in trail and "run_request_opened" not in trail
    assert "run_progress" in trail


async def test_a_waiting_run_releases_its_slot_and_takes_one_back_when_answered(
    loopback: tuple[FakeGitHub, str], remote: Remote, openai_api: ScriptedResponses,
    control_loop: ControlLoop,
) -> None:  # fmt: skip
    """Waiting-slot policy `release` on a one-slot project: while the first run's agent waits
    for a person, the second run starts in its slot (and asks too); answered, each run takes the
    slot back in turn and finishes."""
    fake, _ = loopback
    repo = fake.repos[OWNER_REPO]
    with session_scope() as session:
        projects.update_settings(
            session=session, actor=None, project_key="web", name="web", slots=1,
            learning_mode_default=False, default_model=None, log_retention_days=None,
        )  # fmt: skip
        run_requests.set_waiting_slot(
            session=session, actor=None, project_key="web", policy="release"
        )
    openai_api.mcp_calls = (("ask", {"question": "Which greeting?"}),)
    boss = admin()
    repo.issue_labels[45] = ["run:dev"]
    first = label_issue(45)
    await until(lambda: len(pending(first)) == 1, "the first run's question")
    repo.issue_labels[46] = ["run:dev"]
    second = label_issue(46)
    # One slot, two runs waiting for a person at once: the first gave its slot away.
    await until(lambda: len(pending(second)) == 1, "the second run's question")
    assert load_run(first).slot_number is None and load_run(second).slot_number is None

    # Both answered at once: the one that waited longer takes the slot back first; the other
    # hears its answer only once that run has ended and freed the slot.
    for run_id, answer in ((first, "hello"), (second, "hi")):
        run_requests.answer_request(
            get_engine(), principal=boss, request_id=pending(run_id)[0].id, answer=answer
        )
    await until(
        lambda: {load_run(first).status, load_run(second).status} == {"succeeded"},
        "both runs to finish",
    )
    outputs = mcp_outputs(openai_api)
    assert sum("answered: hello" in o for o in outputs) == 1
    assert sum("answered: hi" in o for o in outputs) == 1
    with get_engine().connect() as connection:
        order = [
            (row.run_id, row.event_type)
            for row in connection.execute(
                sa.text(
                    "SELECT run_id, event_type FROM flow_events WHERE run_id IN (:a, :b) AND "
                    "event_type IN ('run_slot_released', 'run_slot_taken_back', "
                    "'run_succeeded') ORDER BY id"
                ),
                {"a": first, "b": second},
            )
        ]
    assert order == [
        (first, "run_slot_released"), (second, "run_slot_released"),
        (first, "run_slot_taken_back"), (first, "run_succeeded"),
        (second, "run_slot_taken_back"), (second, "run_succeeded"),
    ]  # fmt: skip
    assert load_run(first).slot_released_at is None
