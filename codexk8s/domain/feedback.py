"""What a run shows on GitHub: the service comment's text, `state:*` labels, next-step labels.

Pure functions of a run's visible state, so the reporter can apply them idempotently (the same
state always renders the same comment and the same label set) and tests can read them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from codexk8s.domain.labels import (
    DISCUSSION_LABEL,
    NEED_PREFIX,
    REVIEWER_NEED,
    RUN_PREFIX,
    STATE_PREFIX,
)
from codexk8s.domain.runs import RunMode, RunStatus
from codexk8s.domain.stages import REVIEW_STAGE, Stage, parse_stage

# Every comment codexk8s writes carries a hidden marker starting with this, so ingest can tell
# its own comments from people's (a discussion never answers itself).
COMMENT_MARKER_PREFIX: Final[str] = "<!-- codexk8s:"
SERVICE_MARKER: Final[str] = f"{COMMENT_MARKER_PREFIX}service-comment -->"
IN_PROGRESS: Final[str] = f"{STATE_PREFIX}in-progress"
IN_REVIEW: Final[str] = f"{STATE_PREFIX}in-review"
STATE_LABELS: Final[tuple[str, ...]] = (IN_PROGRESS, IN_REVIEW)
# Colours GitHub shows for the labels the reporter creates when a repository lacks them.
LABEL_COLORS: Final[dict[str, str]] = {IN_PROGRESS: "fbca04", IN_REVIEW: "0e8a16"}
MESSAGE_LIMIT = 500
NOTICE_LIMIT = 1000

# The stage a successful stage usually hands over to (DESIGN §5 flow order); stages missing here
# end their line of work.
NEXT_STAGE: Final[dict[Stage, Stage]] = {
    Stage.INTAKE: Stage.VISION,
    Stage.VISION: Stage.PRD,
    Stage.PRD: Stage.ARCH,
    Stage.ARCH: Stage.DESIGN,
    Stage.DESIGN: Stage.PLAN,
    Stage.PLAN: Stage.DEV,
    Stage.DEV: Stage.QA,
    Stage.QA: Stage.RELEASE,
    Stage.RELEASE: Stage.POSTDEPLOY,
}

_ICONS: Final[dict[str, str]] = {
    RunStatus.PENDING: "⏳",
    RunStatus.STARTING: "🚀",
    RunStatus.RUNNING: "🔄",
    RunStatus.SUCCEEDED: "✅",
    RunStatus.FAILED: "❌",
    RunStatus.CANCELED: "⛔",
}


def review_marker(run_id: int) -> str:
    return f"<!-- codexk8s:review run={run_id} -->"


def learning_marker(run_id: int) -> str:
    return f"<!-- codexk8s:learning run={run_id} -->"


def discussion_marker(run_id: int) -> str:
    return f"<!-- codexk8s:discussion run={run_id} -->"


def agent_comment_marker(run_id: int) -> str:
    """On a comment an agent posts with the `post_comment` tool: ingest treats it as codexk8s's
    own (it starts nothing and answers nothing)."""
    return f"<!-- codexk8s:agent-comment run={run_id} -->"


@dataclass(frozen=True, slots=True)
class WaitingFor:
    """A question or approval request a run waits on, as the service comment shows it."""

    request_id: int
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class RunView:
    """The parts of a run that GitHub readers see."""

    run_id: int
    status: str
    stage: str
    is_revise: bool
    run_url: str
    trigger_label: str | None = None
    status_reason: str | None = None
    status_message: str | None = None
    model: str | None = None
    reasoning_effort: str | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    summary: str | None = None
    mode: str = RunMode.WORK.value
    created_at: datetime | None = None
    # The question or approval request the run waits on, if any.
    waiting_for: WaitingFor | None = None
    # The newest progress line the agent shared on GitHub (`report_progress`), if any.
    milestone: str | None = None

    @property
    def has_pr(self) -> bool:
        return self.pr_url is not None

    @property
    def is_discussion(self) -> bool:
        return self.mode == RunMode.DISCUSSION.value


@dataclass(frozen=True, slots=True)
class LabelPlan:
    add: tuple[str, ...]
    remove: tuple[str, ...]


def state_labels(view: RunView) -> LabelPlan:
    """`state:in-progress` while active, `state:in-review` once a PR is ready, none otherwise.

    The trigger label is never touched: it stays on the issue as the record of what was asked.
    """
    status = RunStatus(view.status)
    if status.is_active:
        return LabelPlan(add=(IN_PROGRESS,), remove=(IN_REVIEW,))
    if status is RunStatus.SUCCEEDED and view.has_pr:
        return LabelPlan(add=(IN_REVIEW,), remove=(IN_PROGRESS,))
    return LabelPlan(add=(), remove=STATE_LABELS)


def next_step_labels(view: RunView) -> tuple[str, ...]:
    """Labels a person may apply next, most likely first (nothing while the run is active)."""
    status = RunStatus(view.status)
    if status.is_active:
        return ()
    stage = parse_stage(view.stage)
    if status is not RunStatus.SUCCEEDED:
        return (view.trigger_label,) if view.trigger_label else ()
    if view.is_discussion:
        # The conversation goes on in comments; the work starts with a stage's run label.
        return ()
    if view.stage == REVIEW_STAGE or stage is None:
        return ()
    revise = f"{RUN_PREFIX}{stage.value}:revise"
    if view.has_pr:
        return (f"{NEED_PREFIX}{REVIEWER_NEED}", revise)
    following = NEXT_STAGE.get(stage)
    return ((f"{RUN_PREFIX}{following.value}",) if following else ()) + (revise,)


def _next_step_text(view: RunView, labels: Sequence[str]) -> str | None:
    status = RunStatus(view.status)
    if status.is_active:
        return None
    if status is not RunStatus.SUCCEEDED:
        if not labels:
            return None
        return f"Remove and re-add `{labels[0]}` to try again."
    if view.stage == REVIEW_STAGE:
        return "Address the review: apply `run:<stage>:revise` on the pull request."
    if view.is_discussion:
        end = (
            f"remove `{DISCUSSION_LABEL}` to end it"
            if view.trigger_label == DISCUSSION_LABEL
            else f"remove `{view.trigger_label}` to end it"
        )
        return (
            f"Reply on this issue to continue the discussion, {end}, or apply a "
            "`run:<stage>` label to start the work with this discussion as its context."
        )
    if not labels:
        return None
    options = " or ".join(f"`{label}`" for label in labels)
    return f"Apply {options}."


def _one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render_service_comment(
    view: RunView, earlier: Sequence[RunView] = (), *, notice: str | None = None
) -> str:
    """The service comment's Markdown; EARLIER are previous runs on the same issue, newest first.
    NOTICE (a delivery after the newest run that started nothing, and why) goes under the run."""
    stage = f"{view.stage} (revise)" if view.is_revise else view.stage
    if view.is_discussion:
        stage = f"{stage} (discussion)" if view.stage != "discussion" else stage
    status = view.status
    if view.status_reason:
        status = f"{status} ({view.status_reason})"
    rows = [
        ("Status", f"{_ICONS.get(view.status, '')} {status}".strip()),
        ("Stage", stage),
    ]
    if view.model:
        effort = f", reasoning {view.reasoning_effort}" if view.reasoning_effort else ""
        rows.append(("Model", f"`{view.model}`{effort}"))
    rows.append(("Run", f"[#{view.run_id}]({view.run_url})"))
    if view.pr_url:
        label = f"#{view.pr_number}" if view.pr_number else view.pr_url
        rows.append(("Pull request", f"[{label}]({view.pr_url})"))
    lines = [
        SERVICE_MARKER,
        f"### codexk8s · {view.trigger_label or view.stage}",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    if view.milestone and not RunStatus(view.status).is_terminal:
        lines += ["", f"> 📣 **Progress:** {_one_line(view.milestone)}"]
    if view.waiting_for is not None and not RunStatus(view.status).is_terminal:
        waiting = view.waiting_for
        how = (
            "`/answer approve` or `/answer deny <why>`"
            if waiting.kind == "approval"
            else "`/answer <your answer>`"
        )
        what = "asks for approval" if waiting.kind == "approval" else "asks"
        lines += [
            "", f"> ❓ **The agent {what}** (request #{waiting.request_id}): "
            f"{_one_line(waiting.text)}", ">", f"> Reply with {how}, or answer in the inbox.",
        ]  # fmt: skip
    if view.status_message and view.status != RunStatus.SUCCEEDED:
        lines += ["", f"> {_one_line(view.status_message)}"]
    # A discussion's answer is a comment of its own on the issue; it is not repeated here.
    if view.summary and not view.is_discussion:
        lines += ["", "**Summary**", "", view.summary.strip()]
    next_text = _next_step_text(view, next_step_labels(view))
    if next_text:
        lines += ["", f"**Next step:** {next_text}"]
    if notice:
        lines += ["", f"> ⚠️ {_one_line(notice, NOTICE_LIMIT)}"]
    if earlier:
        items = ", ".join(f"[#{r.run_id}]({r.run_url}) {r.stage} {r.status}" for r in earlier[:5])
        lines += ["", f"<sub>Earlier runs: {items}</sub>"]
    return "\n".join(lines) + "\n"


def render_notice_comment(notice: str) -> str:
    """The service comment of an issue on which no run was started yet, explaining why a
    delivery started nothing."""
    return (
        "\n".join([SERVICE_MARKER, "### codexk8s", "", f"> ⚠️ {_one_line(notice, NOTICE_LIMIT)}"])
        + "\n"
    )


def shows_notice(newest: RunView | None, notice_at: datetime | None) -> bool:
    """A notice is shown while no run was created after it."""
    if notice_at is None:
        return False
    return newest is None or newest.created_at is None or notice_at > newest.created_at


def sender_refusal(sender: str | None, *, project_key: str, allowed_bots: Sequence[str]) -> str:
    """Why a delivery from SENDER started nothing, and who may start runs (for the service
    comment and the delivery's flow event). Members are not named; bots are the project's
    own configuration."""
    who = f"@{sender}" if sender else "This delivery's sender"
    bots = f" and the bots allowed for it ({', '.join(f'`{b}`' for b in allowed_bots)})"
    return (
        f"{who} may not start runs here. Runs of project `{project_key}` are started only by "
        "its members with write access (read_write or admin) whose GitHub login is linked to "
        f"their codexk8s user{bots if allowed_bots else ''}. Ask a project admin to add you."
    )
