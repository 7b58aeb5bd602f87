"""What a run shows on GitHub: labels per state, next steps per stage, the comment's text."""

from __future__ import annotations

import pytest

from codexk8s.domain.feedback import (
    IN_PROGRESS,
    IN_REVIEW,
    SERVICE_MARKER,
    RunView,
    next_step_labels,
    render_service_comment,
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
