"""The pure decision of what a GitHub webhook delivery should do to runs (DESIGN section 5).

Decisions where the design is silent:
- Event and action names and review states are compared after stripping and ASCII lower-casing.
- `run:<stage>` and `run:<stage>:revise` together on one issue at a labeled event are a conflict
  (it is unclear whether a fresh or a revise run is wanted); for a `changes_requested` review
  they count as one stage, as the review always asks for a revise.
- A labeled event's changed label is counted among the current labels even if the payload's
  label list misses it. Unknown `run:` labels already on the issue are not counted as run labels
  (they were explained when added).
- `run:*` on a pull request starts that stage on the PR number, exactly as on an issue.
- Removing a `run:*` label from a PR, or `need:reviewer` from a PR, cancels the pending run that
  label started, symmetric to the issue rule (the design lists no `pull_request` + `unlabeled`).
- Modifier conflicts (two model labels, two reasoning labels, an invalid modifier) also block
  reviewer runs and review-triggered revise runs, which read their modifiers from the PR.
- A delivery that would start or cancel a run but carries no issue/PR number is IGNORED with
  reason `missing_number`: nothing can be addressed without it.
- Adding a malformed modifier label alone starts nothing and is RECORD_ONLY with reason
  `invalid_modifier_label`; it becomes a CONFLICT when a run is started while it is present.
- Trigger labels are reported in canonical spelling (labels.py), so a run started by `RUN:DEV`
  is found again when `run:dev` is removed.

Discussion (issue #19), decided here from the payload alone:
- Adding `mode:discussion` to an issue or PR without `run:*` labels starts a discussion turn of
  the pseudo-stage `discussion` (the product manager answers). With a `run:*` label present the
  real work has started: the label is recorded (`discussion_over`) and starts nothing.
- A new comment on an issue or PR that carries `mode:discussion` and no `run:*` label starts the
  next turn. A comment on one whose only run label is `run:<stage>` starts a turn *tentatively*:
  only a project that made <stage> a discussion stage (`apply_project_policy`) keeps it, every
  other project records the comment. Comments codexk8s wrote itself (they carry
  `<!-- codexk8s:`) never start anything, so the agent cannot answer itself.
- Removing `mode:discussion` cancels a turn that is still pending, as for run labels.
- Discussion turns ignore the model and reasoning labels on the issue: those choose the model of
  the work; a discussion uses the project's discussion model and effort.

Who may trigger (the sender) is not decided here: that needs the database (`sender_may_trigger`
in domain/authorization.py is the rule, webhook ingest asks it after its one lookup).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from codexk8s.domain.feedback import COMMENT_MARKER_PREFIX
from codexk8s.domain.labels import (
    DISCUSSION_LABEL,
    InvalidModifierLabel,
    LabelSet,
    ModeLabel,
    ModelLabel,
    NeedLabel,
    ReasoningLabel,
    RunLabel,
    StateLabel,
    UnknownRunLabel,
    classify_labels,
    describe_unknown_run_label,
    parse_label,
)
from codexk8s.domain.run_requests import parse_answer_command
from codexk8s.domain.runs import RunMode
from codexk8s.domain.stages import (
    DISCUSSION_ROLE,
    DISCUSSION_STAGE,
    REVIEW_STAGE,
    STAGE_ROLES,
    AgentRole,
    Stage,
)

EVENT_ISSUES: Final[str] = "issues"
EVENT_PULL_REQUEST: Final[str] = "pull_request"
EVENT_PULL_REQUEST_REVIEW: Final[str] = "pull_request_review"
EVENT_ISSUE_COMMENT: Final[str] = "issue_comment"
EVENT_PING: Final[str] = "ping"
REVIEW_CHANGES_REQUESTED: Final[str] = "changes_requested"


class DecisionKind(StrEnum):
    """What the ingest service should do with a delivery."""

    START_RUN = "start_run"
    CANCEL_PENDING_FOR_LABEL = "cancel_pending_for_label"
    CANCEL_ACTIVE = "cancel_active"
    RECORD_ONLY = "record_only"
    CONFLICT = "conflict"
    IGNORED = "ignored"


class Reason(StrEnum):
    """Machine-friendly reason codes carried by TriggerDecision.reason."""

    RUN_LABEL_ADDED = "run_label_added"
    REVIEWER_REQUESTED = "reviewer_requested"
    CHANGES_REQUESTED = "changes_requested"
    RUN_LABEL_REMOVED = "run_label_removed"
    ISSUE_CLOSED = "issue_closed"
    PULL_REQUEST_CLOSED = "pull_request_closed"
    MULTIPLE_RUN_LABELS = "multiple_run_labels"
    MULTIPLE_MODEL_LABELS = "multiple_model_labels"
    MULTIPLE_REASONING_LABELS = "multiple_reasoning_labels"
    INVALID_MODIFIER_LABEL = "invalid_modifier_label"
    UNKNOWN_STAGE = "unknown_stage"
    COORDINATION_LABEL = "coordination_label"
    MODIFIER_LABEL = "modifier_label"
    NOT_A_TRIGGER = "not_a_trigger"
    NO_STAGE_LABEL = "no_stage_label"
    MULTIPLE_STAGE_LABELS = "multiple_stage_labels"
    REVIEW_NOT_CHANGES_REQUESTED = "review_not_changes_requested"
    COMMENT_RECORDED = "comment_recorded"
    PING = "ping"
    UNSUPPORTED_EVENT = "unsupported_event"
    UNSUPPORTED_ACTION = "unsupported_action"
    MISSING_LABEL = "missing_label"
    MISSING_NUMBER = "missing_number"
    DISCUSSION_STARTED = "discussion_started"
    DISCUSSION_CONTINUED = "discussion_continued"
    DISCUSSION_OVER = "discussion_over"
    OWN_COMMENT = "own_comment"
    ANSWER_TO_AGENT = "answer_to_agent"
    SENDER_NOT_ALLOWED = "sender_not_allowed"


class PayloadError(ValueError):
    """The webhook payload is not a JSON object, so nothing can be read from it."""


@dataclass(frozen=True, slots=True)
class TriggerInput:
    """The parts of a webhook delivery that decide what happens to runs."""

    event: str
    action: str | None = None
    changed_label: str | None = None
    labels: tuple[str, ...] = ()
    number: int | None = None
    is_pull_request: bool = False
    review_state: str | None = None
    # The GitHub login whose action sent the delivery (who labeled, commented or reviewed).
    sender: str | None = None
    # An issue_comment written by codexk8s itself (its body carries a codexk8s marker).
    is_own_comment: bool = False
    # An issue_comment answering a waiting run (`/answer ...`, domain.run_requests).
    is_answer: bool = False


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A run to create; `stage` is a Stage value, REVIEW_STAGE for a reviewer run or
    DISCUSSION_STAGE for a discussion started by `mode:discussion`.

    `mode` is a RunMode value. `is_tentative`: a comment's turn of a stage's discussion, which
    stands only if the project made that stage a discussion stage (`apply_project_policy`).
    """

    stage: str
    role: AgentRole
    is_revise: bool
    trigger_label: str
    model: str | None
    reasoning_effort: str | None
    number: int
    is_pull_request: bool
    mode: str = RunMode.WORK.value
    is_tentative: bool = False

    @property
    def is_discussion(self) -> bool:
        return self.mode == RunMode.DISCUSSION.value


@dataclass(frozen=True, slots=True)
class ProjectPolicy:
    """What a project decides about triggers: stages whose run label starts a discussion
    instead of work (their comments continue it)."""

    discussion_stages: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TriggerDecision:
    """The outcome for one delivery.

    `label` is the label the event is about in canonical spelling (for CANCEL_PENDING_FOR_LABEL
    the label whose pending run to cancel); `message` is a sentence for the user, set for
    conflicts and unknown stages; `run` is set exactly when kind is START_RUN.
    """

    kind: DecisionKind
    reason: str
    message: str = ""
    run: RunSpec | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class _Modifiers:
    model: str | None
    reasoning_effort: str | None


def _norm(value: str | None) -> str:
    if not isinstance(value, str):
        return ""
    return "".join(ch.lower() if ch.isascii() else ch for ch in value.strip())


def _ignored(reason: Reason, message: str = "", label: str | None = None) -> TriggerDecision:
    return TriggerDecision(kind=DecisionKind.IGNORED, reason=reason, message=message, label=label)


def _record(reason: Reason, message: str = "", label: str | None = None) -> TriggerDecision:
    return TriggerDecision(
        kind=DecisionKind.RECORD_ONLY, reason=reason, message=message, label=label
    )


def _conflict(problems: list[tuple[Reason, str]], label: str | None) -> TriggerDecision:
    # The first problem names the decision; all of them go to the user so one edit fixes all.
    return TriggerDecision(
        kind=DecisionKind.CONFLICT,
        reason=problems[0][0],
        message=" ".join(message for _, message in problems),
        label=label,
    )


def _names(labels: Sequence[RunLabel | ModelLabel | ReasoningLabel]) -> str:
    return ", ".join(label.canonical for label in labels)


def _modifier_problems(labels: LabelSet) -> list[tuple[Reason, str]]:
    problems = [
        (Reason.INVALID_MODIFIER_LABEL, f"Label {bad.name!r} is invalid: {bad.reason}.")
        for bad in labels.invalid_modifiers
    ]
    if len(labels.model_labels) > 1:
        problems.append(
            (
                Reason.MULTIPLE_MODEL_LABELS,
                f"Several model labels are set ({_names(labels.model_labels)}); keep one.",
            )
        )
    if len(labels.reasoning_labels) > 1:
        problems.append(
            (
                Reason.MULTIPLE_REASONING_LABELS,
                f"Several reasoning labels are set ({_names(labels.reasoning_labels)}); keep one.",
            )
        )
    return problems


def _modifiers(labels: LabelSet) -> _Modifiers:
    return _Modifiers(
        model=labels.model_labels[0].model if labels.model_labels else None,
        reasoning_effort=labels.reasoning_labels[0].effort if labels.reasoning_labels else None,
    )


def _current_labels(inp: TriggerInput, changed: str | None) -> LabelSet:
    names = list(_safe_labels(inp.labels))
    if changed is not None:
        names.append(changed)
    return classify_labels(names)


def _safe_labels(labels: object) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        return ()
    return tuple(name for name in labels if isinstance(name, str))


def _start(
    *,
    inp: TriggerInput,
    stage: str,
    role: AgentRole,
    is_revise: bool,
    trigger_label: str,
    modifiers: _Modifiers,
    is_pull_request: bool,
    reason: Reason,
    mode: RunMode = RunMode.WORK,
    is_tentative: bool = False,
) -> TriggerDecision:
    number = _valid_number(inp.number)
    if number is None:
        return _ignored(Reason.MISSING_NUMBER, label=trigger_label)
    run = RunSpec(
        stage=stage,
        role=role,
        is_revise=is_revise,
        trigger_label=trigger_label,
        model=modifiers.model,
        reasoning_effort=modifiers.reasoning_effort,
        number=number,
        is_pull_request=is_pull_request,
        mode=mode.value,
        is_tentative=is_tentative,
    )
    return TriggerDecision(kind=DecisionKind.START_RUN, reason=reason, run=run, label=trigger_label)


def _valid_number(value: object) -> int | None:
    # bool is an int subclass; True must not address issue #1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _on_run_label(
    inp: TriggerInput, run_label: RunLabel, *, is_pull_request: bool
) -> TriggerDecision:
    trigger = run_label.canonical
    labels = _current_labels(inp, trigger)
    problems: list[tuple[Reason, str]] = []
    if len(labels.run_labels) > 1:
        problems.append(
            (
                Reason.MULTIPLE_RUN_LABELS,
                (
                    f"Several run labels are set ({_names(labels.run_labels)}); "
                    "remove all but one to start a run."
                ),
            )
        )
    problems.extend(_modifier_problems(labels))
    if problems:
        return _conflict(problems, trigger)
    return _start(
        inp=inp,
        stage=run_label.stage,
        role=STAGE_ROLES[run_label.stage],
        is_revise=run_label.is_revise,
        trigger_label=trigger,
        modifiers=_modifiers(labels),
        is_pull_request=is_pull_request,
        reason=Reason.RUN_LABEL_ADDED,
    )


def _on_reviewer_label(inp: TriggerInput, need: NeedLabel) -> TriggerDecision:
    trigger = need.canonical
    labels = _current_labels(inp, trigger)
    problems = _modifier_problems(labels)
    if problems:
        return _conflict(problems, trigger)
    return _start(
        inp=inp,
        stage=REVIEW_STAGE,
        role=AgentRole.REVIEWER,
        is_revise=False,
        trigger_label=trigger,
        modifiers=_modifiers(labels),
        is_pull_request=True,
        reason=Reason.REVIEWER_REQUESTED,
    )


def _on_labeled(inp: TriggerInput, *, on_pull_request: bool) -> TriggerDecision:
    if not isinstance(inp.changed_label, str) or not inp.changed_label.strip():
        return _ignored(Reason.MISSING_LABEL)
    label = parse_label(inp.changed_label)
    canonical = label.canonical
    match label:
        case RunLabel():
            is_pull_request = True if on_pull_request else inp.is_pull_request is True
            return _on_run_label(inp, label, is_pull_request=is_pull_request)
        case UnknownRunLabel():
            return _ignored(Reason.UNKNOWN_STAGE, describe_unknown_run_label(label), canonical)
        case NeedLabel() if on_pull_request and label.is_reviewer:
            return _on_reviewer_label(inp, label)
        case ModeLabel() if label.is_discussion:
            return _on_discussion_label(inp, on_pull_request=on_pull_request)
        case NeedLabel() | StateLabel() | ModeLabel():
            return _record(Reason.COORDINATION_LABEL, label=canonical)
        case ModelLabel() | ReasoningLabel():
            return _record(Reason.MODIFIER_LABEL, label=canonical)
        case InvalidModifierLabel():
            message = f"Label {label.name!r} is invalid: {label.reason}."
            return _record(Reason.INVALID_MODIFIER_LABEL, message, canonical)
        case _:
            return _record(Reason.NOT_A_TRIGGER, label=canonical)


_NO_MODIFIERS = _Modifiers(model=None, reasoning_effort=None)


def _discussion_turn(
    inp: TriggerInput, *, is_pull_request: bool, reason: Reason
) -> TriggerDecision:
    return _start(
        inp=inp,
        stage=DISCUSSION_STAGE,
        role=DISCUSSION_ROLE,
        is_revise=False,
        trigger_label=DISCUSSION_LABEL,
        modifiers=_NO_MODIFIERS,
        is_pull_request=is_pull_request,
        reason=reason,
        mode=RunMode.DISCUSSION,
    )


def _on_discussion_label(inp: TriggerInput, *, on_pull_request: bool) -> TriggerDecision:
    labels = _current_labels(inp, DISCUSSION_LABEL)
    if labels.run_labels:
        message = (
            f"{DISCUSSION_LABEL} starts nothing while a run label is set "
            f"({_names(labels.run_labels)}): the work has started. Remove the run labels to "
            "discuss first."
        )
        return _record(Reason.DISCUSSION_OVER, message, DISCUSSION_LABEL)
    is_pull_request = True if on_pull_request else inp.is_pull_request is True
    return _discussion_turn(inp, is_pull_request=is_pull_request, reason=Reason.DISCUSSION_STARTED)


def _on_comment(inp: TriggerInput) -> TriggerDecision:
    if inp.is_own_comment:
        return _record(Reason.OWN_COMMENT)
    if inp.is_answer:
        # It answers the run that asked (services.run_requests); it starts no turn.
        return _record(Reason.ANSWER_TO_AGENT)
    labels = _current_labels(inp, None)
    is_pull_request = inp.is_pull_request is True
    if labels.has_discussion and not labels.run_labels:
        return _discussion_turn(
            inp, is_pull_request=is_pull_request, reason=Reason.DISCUSSION_CONTINUED
        )
    if len(labels.run_labels) == 1 and not labels.run_labels[0].is_revise:
        (run_label,) = labels.run_labels
        return _start(
            inp=inp,
            stage=run_label.stage,
            role=STAGE_ROLES[run_label.stage],
            is_revise=False,
            trigger_label=run_label.canonical,
            modifiers=_NO_MODIFIERS,
            is_pull_request=is_pull_request,
            reason=Reason.DISCUSSION_CONTINUED,
            mode=RunMode.DISCUSSION,
            is_tentative=True,
        )
    return _record(Reason.COMMENT_RECORDED)


def apply_project_policy(decision: TriggerDecision, policy: ProjectPolicy) -> TriggerDecision:
    """DECISION once the project is known: a tentative discussion turn stands only for a
    discussion stage (else the comment is just recorded), and a run label of a discussion stage
    starts a discussion turn instead of work. Pure, like `decide`."""
    spec = decision.run
    if decision.kind is not DecisionKind.START_RUN or spec is None:
        return decision
    is_discussion_stage = spec.stage in policy.discussion_stages
    if spec.is_tentative:
        if not is_discussion_stage:
            return _record(Reason.COMMENT_RECORDED)
        return TriggerDecision(
            kind=decision.kind, reason=decision.reason,
            run=dataclasses.replace(spec, is_tentative=False), label=decision.label,
        )  # fmt: skip
    if is_discussion_stage and not spec.is_discussion and not spec.is_revise:
        run = dataclasses.replace(
            spec, mode=RunMode.DISCUSSION.value, model=None, reasoning_effort=None
        )
        return TriggerDecision(
            kind=decision.kind, reason=Reason.DISCUSSION_STARTED, run=run, label=decision.label
        )
    return decision


def _on_unlabeled(inp: TriggerInput, *, on_pull_request: bool) -> TriggerDecision:
    if not isinstance(inp.changed_label, str) or not inp.changed_label.strip():
        return _ignored(Reason.MISSING_LABEL)
    label = parse_label(inp.changed_label)
    cancels = (
        isinstance(label, RunLabel)
        or (on_pull_request and isinstance(label, NeedLabel) and label.is_reviewer)
        or (isinstance(label, ModeLabel) and label.is_discussion)
    )
    if not cancels:
        return _record(Reason.NOT_A_TRIGGER, label=label.canonical)
    if _valid_number(inp.number) is None:
        return _ignored(Reason.MISSING_NUMBER, label=label.canonical)
    return TriggerDecision(
        kind=DecisionKind.CANCEL_PENDING_FOR_LABEL,
        reason=Reason.RUN_LABEL_REMOVED,
        label=label.canonical,
    )


def _on_closed(inp: TriggerInput, reason: Reason) -> TriggerDecision:
    if _valid_number(inp.number) is None:
        return _ignored(Reason.MISSING_NUMBER)
    return TriggerDecision(kind=DecisionKind.CANCEL_ACTIVE, reason=reason)


def _on_review(inp: TriggerInput) -> TriggerDecision:
    if _norm(inp.review_state) != REVIEW_CHANGES_REQUESTED:
        return _record(Reason.REVIEW_NOT_CHANGES_REQUESTED)
    labels = _current_labels(inp, None)
    stages: dict[Stage, RunLabel] = {}
    for run_label in labels.run_labels:
        # First label per stage in PR label order becomes the trigger label.
        stages.setdefault(run_label.stage, run_label)
    if not stages:
        return _record(Reason.NO_STAGE_LABEL)
    if len(stages) > 1:
        message = f"Several stage labels are set ({_names(list(stages.values()))})."
        return _record(Reason.MULTIPLE_STAGE_LABELS, message)
    (stage, run_label), *_ = stages.items()
    problems = _modifier_problems(labels)
    if problems:
        return _conflict(problems, run_label.canonical)
    return _start(
        inp=inp,
        stage=stage,
        role=STAGE_ROLES[stage],
        is_revise=True,
        trigger_label=run_label.canonical,
        modifiers=_modifiers(labels),
        is_pull_request=True,
        reason=Reason.CHANGES_REQUESTED,
    )


def decide(inp: TriggerInput) -> TriggerDecision:
    """Decide what a delivery does to runs; pure, and never raises for any TriggerInput."""
    event = _norm(inp.event)
    action = _norm(inp.action)
    if event == EVENT_PING:
        return _ignored(Reason.PING)
    if event == EVENT_ISSUES:
        if action == "labeled":
            return _on_labeled(inp, on_pull_request=False)
        if action == "unlabeled":
            return _on_unlabeled(inp, on_pull_request=False)
        if action == "closed":
            return _on_closed(inp, Reason.ISSUE_CLOSED)
    elif event == EVENT_PULL_REQUEST:
        if action == "labeled":
            return _on_labeled(inp, on_pull_request=True)
        if action == "unlabeled":
            return _on_unlabeled(inp, on_pull_request=True)
        if action == "closed":
            return _on_closed(inp, Reason.PULL_REQUEST_CLOSED)
    elif event == EVENT_PULL_REQUEST_REVIEW:
        if action == "submitted":
            return _on_review(inp)
    elif event == EVENT_ISSUE_COMMENT:
        if action == "created":
            return _on_comment(inp)
    else:
        return _ignored(Reason.UNSUPPORTED_EVENT)
    return _ignored(Reason.UNSUPPORTED_ACTION)


def _get(container: object, key: str) -> object:
    return container.get(key) if isinstance(container, Mapping) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _label_names(subject: object) -> tuple[str, ...]:
    raw = _get(subject, "labels")
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        return ()
    names: list[str] = []
    for item in raw:
        # GitHub sends label objects; bare strings are accepted for hand-written payloads.
        name = item if isinstance(item, str) else _text(_get(item, "name"))
        if name is not None:
            names.append(name)
    return tuple(names)


def trigger_input_from_payload(event: str, payload: Mapping[str, Any]) -> TriggerInput:
    """Extract a TriggerInput from a GitHub webhook payload; odd or missing fields become empty.

    Raises PayloadError only when `payload` is not a mapping.
    """
    if not isinstance(payload, Mapping):
        raise PayloadError(f"webhook payload must be a JSON object, not {type(payload).__name__}")
    event_name = _norm(event) if isinstance(event, str) else ""
    is_pr_event = event_name in (EVENT_PULL_REQUEST, EVENT_PULL_REQUEST_REVIEW)
    issue = _get(payload, "issue")
    pull_request = _get(payload, "pull_request")
    if is_pr_event:
        subject = pull_request if isinstance(pull_request, Mapping) else None
    elif isinstance(issue, Mapping):
        subject = issue
    elif event_name not in (EVENT_ISSUES, EVENT_ISSUE_COMMENT) and isinstance(
        pull_request, Mapping
    ):
        subject = pull_request
    else:
        subject = None
    number = _valid_number(_get(subject, "number"))
    if number is None and is_pr_event:
        number = _valid_number(_get(payload, "number"))
    if is_pr_event:
        is_pull_request = True
    elif subject is not None and subject is issue:
        # An issue payload that is really a PR carries a non-null "pull_request" object.
        is_pull_request = _get(issue, "pull_request") is not None
    else:
        is_pull_request = subject is not None
    comment_body = _text(_get(_get(payload, "comment"), "body")) or ""
    return TriggerInput(
        event=event_name,
        action=_text(_get(payload, "action")),
        changed_label=_text(_get(_get(payload, "label"), "name")),
        labels=_label_names(subject),
        number=number,
        is_pull_request=is_pull_request,
        review_state=_text(_get(_get(payload, "review"), "state")),
        sender=_text(_get(_get(payload, "sender"), "login")) or None,
        is_own_comment=(
            event_name == EVENT_ISSUE_COMMENT and COMMENT_MARKER_PREFIX in comment_body
        ),
        # codexk8s's own comments (an agent's `post_comment`, a discussion's answer) never
        # answer a question, whatever they quote: an agent must not approve its own request
        # through a repository token that belongs to a project admin.
        is_answer=(
            event_name == EVENT_ISSUE_COMMENT
            and COMMENT_MARKER_PREFIX not in comment_body
            and parse_answer_command(comment_body) is not None
        ),
    )
