"""What a run shows on GitHub: labels per state, next steps per stage, the comment's text."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from codexk8s.domain.feedback import (
    COMMENT_MARKER_PREFIX,
    IN_PROGRESS,
    IN_REVIEW,
    SERVICE_MARKER,
    RunView,
    discussion_marker,
    next_step_labels,
    render_notice_comment,
    render_service_comment,
    sender_refusal,
    shows_notice,
    state_labels,
)


def view(status: str, stage: str = "dev", *, pr: bool = False, **extra: object) -> RunView:
    return RunView(
        run_id=5, status=status, stage=stage, is_revise=False, run_url="https://ck8s/runs/5",
        trigger_label=f"run:{stage}", pr_url="https://github.com/o/r/pull/9" if pr else None,
        pr_number=9 if pr else None, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "pr", "add", "remove"),
    [
        ("pending", False, (IN_PROGRESS,), (IN_REVIEW,)),
        ("running", True, (IN_PROGRESS,), (IN_REVIEW,)),
        ("succeeded", True, (IN_REVIEW,), (IN_PROGRESS,)),
        ("succeeded", False, (), (IN_PROGRESS, IN_REVIEW)),
        ("failed", True, (), (IN_PROGRESS, IN_REVIEW)),
        ("canceled", False, (), (IN_PROGRESS, IN_REVIEW)),
    ],
)
def test_state_labels(status: str, pr: bool, add: tuple[str, ...], remove: tuple[str, ...]) -> None:
    plan = state_labels(view(status, pr=pr))
    assert (plan.add, plan.remove) == (add, remove)


@pytest.mark.parametrize(
    ("status", "stage", "pr", "labels"),
    [
        ("running", "plan", False, ()),
        ("succeeded", "plan", False, ("run:dev", "run:plan:revise")),
        ("succeeded", "dev", True, ("need:reviewer", "run:dev:revise")),
        ("succeeded", "ops", False, ("run:ops:revise",)),
        ("failed", "arch", False, ("run:arch",)),
        ("succeeded", "review", False, ()),
    ],
)
def test_next_step_labels(status: str, stage: str, pr: bool, labels: tuple[str, ...]) -> None:
    assert next_step_labels(view(status, stage, pr=pr)) == labels


def test_comment_has_marker_links_and_no_message_on_success() -> None:
    body = render_service_comment(
        view(
            "succeeded",
            pr=True,
            model="gpt-5",
            reasoning_effort="high",
            summary="Did it.",
            status_message="should not show",
        )
    )
    assert body.startswith(SERVICE_MARKER)
    assert "[#5](https://ck8s/runs/5)" in body and "[#9](https://github.com/o/r/pull/9)" in body
    assert "`gpt-5`, reasoning high" in body and "Did it." in body
    assert "should not show" not in body


def test_failure_message_is_one_bounded_line() -> None:
    body = render_service_comment(
        view("failed", status_reason="exit_code", status_message="line one\nline two " + "x" * 900)
    )
    quoted = [line for line in body.splitlines() if line.startswith("> ")]
    assert len(quoted) == 1 and quoted[0].startswith("> line one line two")
    assert len(quoted[0]) <= 502


def test_same_state_renders_the_same_text() -> None:
    earlier = [view("failed", "plan")]
    assert render_service_comment(view("running"), earlier) == render_service_comment(
        view("running"), earlier
    )


# --- discussions and notices (issue #19) ------------------------------------------------------


def discussion(
    status: str, *, trigger: str = "mode:discussion", stage: str = "discussion"
) -> RunView:
    return RunView(
        run_id=6, status=status, stage=stage, is_revise=False, run_url="https://ck8s/runs/6",
        trigger_label=trigger, mode="discussion",
    )  # fmt: skip


def test_a_discussion_turn_offers_to_reply_end_or_start_the_work() -> None:
    done = dataclasses.replace(discussion("succeeded"), summary="The long answer.")
    assert "The long answer." not in render_service_comment(done)  # posted on its own
    assert next_step_labels(done) == ()
    body = render_service_comment(done)
    assert "| Stage | discussion |" in body
    assert "Reply on this issue to continue" in body and "remove `mode:discussion`" in body
    assert "`run:<stage>`" in body
    staged = render_service_comment(discussion("succeeded", trigger="run:intake", stage="intake"))
    assert "| Stage | intake (discussion) |" in staged and "remove `run:intake`" in staged
    # A failed turn is retried like any run: re-add its label.
    assert next_step_labels(discussion("failed")) == ("mode:discussion",)


def test_a_notice_shows_under_the_run_and_alone_without_runs() -> None:
    when = datetime(2026, 12, 4, tzinfo=UTC)
    newest = view("succeeded", created_at=when)
    assert shows_notice(newest, when + timedelta(seconds=1))
    assert not shows_notice(newest, when - timedelta(seconds=1))
    assert not shows_notice(newest, None)
    assert shows_notice(None, when)
    text = sender_refusal("mallory", project_key="web", allowed_bots=["renovate[bot]"])
    assert "@mallory may not start runs" in text and "`web`" in text and "renovate[bot]" in text
    assert "read_write" in text
    body = render_service_comment(newest, notice=text)
    assert body.startswith(SERVICE_MARKER) and f"> ⚠️ {text}" in body
    alone = render_notice_comment(text)
    assert alone.startswith(SERVICE_MARKER) and text in alone and "| Status |" not in alone
    assert "renovate" not in sender_refusal("x", project_key="web", allowed_bots=[])


def test_codexk8s_markers_share_one_prefix() -> None:
    for marker in (SERVICE_MARKER, discussion_marker(3)):
        assert marker.startswith(COMMENT_MARKER_PREFIX)


def test_a_shared_milestone_shows_while_the_run_is_active() -> None:
    running = render_service_comment(view("running", milestone="All 41 tests pass;\npushing."))
    assert "> 📣 **Progress:** All 41 tests pass; pushing." in running
    assert "Progress" not in render_service_comment(view("succeeded", milestone="pushing"))
    assert "Progress" not in render_service_comment(view("running"))
