"""Tests for the webhook trigger decision and payload extraction."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexk8s.domain.feedback import agent_comment_marker
from codexk8s.domain.stages import DISCUSSION_STAGE, REVIEW_STAGE, AgentRole, Stage
from codexk8s.domain.triggers import (
    DecisionKind,
    PayloadError,
    ProjectPolicy,
    RunSpec,
    TriggerDecision,
    TriggerInput,
    apply_project_policy,
    decide,
    trigger_input_from_payload,
)

START = DecisionKind.START_RUN
CANCEL_PENDING = DecisionKind.CANCEL_PENDING_FOR_LABEL
CANCEL_ACTIVE = DecisionKind.CANCEL_ACTIVE
RECORD = DecisionKind.RECORD_ONLY
CONFLICT = DecisionKind.CONFLICT
IGNORED = DecisionKind.IGNORED


def issue_labeled(label: str | None, *others: str, number: int | None = 7) -> TriggerInput:
    current = (*others, label) if label is not None else others
    return TriggerInput(
        event="issues", action="labeled", changed_label=label, labels=current, number=number
    )


def pr_labeled(label: str | None, *others: str, number: int | None = 9) -> TriggerInput:
    current = (*others, label) if label is not None else others
    return TriggerInput(
        event="pull_request",
        action="labeled",
        changed_label=label,
        labels=current,
        number=number,
        is_pull_request=True,
    )


def review(state: str | None, *labels: str, number: int | None = 9) -> TriggerInput:
    return TriggerInput(
        event="pull_request_review",
        action="submitted",
        labels=labels,
        number=number,
        is_pull_request=True,
        review_state=state,
    )


def event(name: str, action: str | None, label: str | None = None, **kw: Any) -> TriggerInput:
    return TriggerInput(event=name, action=action, changed_label=label, number=5, **kw)


# (input, kind, reason)
DECISION_TABLE: list[tuple[str, TriggerInput, DecisionKind, str]] = [
    ("issue run label", issue_labeled("run:dev"), START, "run_label_added"),
    ("issue revise label", issue_labeled("run:dev:revise"), START, "run_label_added"),
    ("issue run label with others", issue_labeled("run:qa", "bug", "state:x"), START, ""),
    ("two run labels", issue_labeled("run:dev", "run:qa"), CONFLICT, "multiple_run_labels"),
    (
        "fresh and revise of one stage",
        issue_labeled("run:dev:revise", "run:dev"),
        CONFLICT,
        "multiple_run_labels",
    ),
    (
        "two model labels",
        issue_labeled("run:dev", "[ai-model-a]", "[ai-model-b]"),
        CONFLICT,
        "multiple_model_labels",
    ),
    (
        "two reasoning labels",
        issue_labeled("run:dev", "[ai-reasoning-low]", "[ai-reasoning-high]"),
        CONFLICT,
        "multiple_reasoning_labels",
    ),
    (
        "bad effort",
        issue_labeled("run:dev", "[ai-reasoning-max]"),
        CONFLICT,
        "invalid_modifier_label",
    ),
    (
        "bad model name",
        issue_labeled("run:dev", "[ai-model-bad name]"),
        CONFLICT,
        "invalid_modifier_label",
    ),
    ("unknown stage", issue_labeled("run:foo"), IGNORED, "unknown_stage"),
    ("empty stage", issue_labeled("run:"), IGNORED, "unknown_stage"),
    ("state label", issue_labeled("state:running"), RECORD, "coordination_label"),
    ("need label on issue", issue_labeled("need:reviewer"), RECORD, "coordination_label"),
    ("other need", issue_labeled("need:human"), RECORD, "coordination_label"),
    ("model label", issue_labeled("[ai-model-o3]"), RECORD, "modifier_label"),
    ("reasoning label", issue_labeled("[ai-reasoning-low]"), RECORD, "modifier_label"),
    ("bad modifier alone", issue_labeled("[ai-reasoning-max]"), RECORD, "invalid_modifier_label"),
    ("plain label", issue_labeled("bug"), RECORD, "not_a_trigger"),
    ("labeled without label", issue_labeled(None), IGNORED, "missing_label"),
    ("labeled with blank label", issue_labeled("  "), IGNORED, "missing_label"),
    ("run label without number", issue_labeled("run:dev", number=None), IGNORED, "missing_number"),
    ("reviewer on PR", pr_labeled("need:reviewer"), START, "reviewer_requested"),
    (
        "reviewer with two models",
        pr_labeled("need:reviewer", "[ai-model-a]", "[ai-model-b]"),
        CONFLICT,
        "multiple_model_labels",
    ),
    ("run label on PR", pr_labeled("run:qa"), START, "run_label_added"),
    ("two run labels on PR", pr_labeled("run:qa", "run:dev"), CONFLICT, "multiple_run_labels"),
    ("unknown stage on PR", pr_labeled("run:nope"), IGNORED, "unknown_stage"),
    ("other need on PR", pr_labeled("need:docs"), RECORD, "coordination_label"),
    ("other PR label", pr_labeled("bug"), RECORD, "not_a_trigger"),
    ("PR labeled without label", pr_labeled(None), IGNORED, "missing_label"),
    ("review one stage", review("changes_requested", "run:dev"), START, "changes_requested"),
    ("review upper-case state", review("CHANGES_REQUESTED", "run:dev"), START, ""),
    ("review fresh+revise", review("changes_requested", "run:dev", "run:dev:revise"), START, ""),
    ("review no stage", review("changes_requested", "bug"), RECORD, "no_stage_label"),
    ("review unknown stage only", review("changes_requested", "run:x"), RECORD, "no_stage_label"),
    (
        "review two stages",
        review("changes_requested", "run:dev", "run:qa:revise"),
        RECORD,
        "multiple_stage_labels",
    ),
    ("review approved", review("approved", "run:dev"), RECORD, "review_not_changes_requested"),
    ("review commented", review("commented", "run:dev"), RECORD, "review_not_changes_requested"),
    ("review no state", review(None, "run:dev"), RECORD, "review_not_changes_requested"),
    (
        "review with bad modifier",
        review("changes_requested", "run:dev", "[ai-reasoning-ultra]"),
        CONFLICT,
        "invalid_modifier_label",
    ),
    ("review without number", review("changes_requested", "run:dev", number=None), IGNORED, ""),
    ("review dismissed", event("pull_request_review", "dismissed"), IGNORED, "unsupported_action"),
    ("unlabel run", event("issues", "unlabeled", "run:dev"), CANCEL_PENDING, "run_label_removed"),
    ("unlabel revise", event("issues", "unlabeled", "run:qa:revise"), CANCEL_PENDING, ""),
    ("unlabel other", event("issues", "unlabeled", "bug"), RECORD, "not_a_trigger"),
    ("unlabel state", event("issues", "unlabeled", "state:x"), RECORD, "not_a_trigger"),
    ("unlabel unknown run", event("issues", "unlabeled", "run:foo"), RECORD, "not_a_trigger"),
    (
        "unlabel need:reviewer on issue",
        event("issues", "unlabeled", "need:reviewer"),
        RECORD,
        "not_a_trigger",
    ),
    ("unlabel without label", event("issues", "unlabeled"), IGNORED, "missing_label"),
    ("unlabel run on PR", event("pull_request", "unlabeled", "run:dev"), CANCEL_PENDING, ""),
    (
        "unlabel reviewer on PR",
        event("pull_request", "unlabeled", "need:reviewer"),
        CANCEL_PENDING,
        "run_label_removed",
    ),
    ("unlabel other on PR", event("pull_request", "unlabeled", "bug"), RECORD, "not_a_trigger"),
    ("issue closed", event("issues", "closed"), CANCEL_ACTIVE, "issue_closed"),
    ("PR closed", event("pull_request", "closed"), CANCEL_ACTIVE, "pull_request_closed"),
    (
        "closed without number",
        TriggerInput(event="issues", action="closed"),
        IGNORED,
        "missing_number",
    ),
    ("comment", event("issue_comment", "created"), RECORD, "comment_recorded"),
    ("comment edited", event("issue_comment", "edited"), IGNORED, "unsupported_action"),
    ("ping", event("ping", None), IGNORED, "ping"),
    ("ping with action", event("ping", "created"), IGNORED, "ping"),
    ("push", event("push", None), IGNORED, "unsupported_event"),
    ("empty event", event("", "labeled", "run:dev"), IGNORED, "unsupported_event"),
    ("issue opened", event("issues", "opened"), IGNORED, "unsupported_action"),
    ("issue no action", event("issues", None), IGNORED, "unsupported_action"),
    ("PR opened", event("pull_request", "opened"), IGNORED, "unsupported_action"),
    ("PR synchronize", event("pull_request", "synchronize"), IGNORED, "unsupported_action"),
    ("event case", event(" Issues ", "CLOSED"), CANCEL_ACTIVE, "issue_closed"),
]


@pytest.mark.parametrize(
    ("inp", "kind", "reason"),
    [pytest.param(inp, kind, reason, id=name) for name, inp, kind, reason in DECISION_TABLE],
)
def test_decision_table(inp: TriggerInput, kind: DecisionKind, reason: str) -> None:
    decision = decide(inp)
    assert decision.kind is kind
    if reason:
        assert decision.reason == reason
    # A run is described exactly when one is to start.
    assert (decision.run is not None) == (kind is START)


def test_issue_run_label_starts_that_stage_with_its_role() -> None:
    decision = decide(issue_labeled("run:arch", "bug"))
    assert decision.run == RunSpec(
        stage=Stage.ARCH,
        role=AgentRole.SA,
        is_revise=False,
        trigger_label="run:arch",
        model=None,
        reasoning_effort=None,
        number=7,
        is_pull_request=False,
    )


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("is_revise", [False, True])
def test_every_stage_label_starts_its_run(stage: Stage, is_revise: bool) -> None:
    label = f"run:{stage.value}" + (":revise" if is_revise else "")
    run = decide(issue_labeled(label)).run
    assert run is not None
    assert run.stage == stage.value
    assert run.is_revise is is_revise
    assert run.trigger_label == label
    expected_role = {
        "intake": "pm",
        "vision": "pm",
        "prd": "pm",
        "arch": "sa",
        "design": "sa",
        "plan": "em",
        "dev": "dev",
        "doc-audit": "km",
        "qa": "qa",
        "release": "em",
        "postdeploy": "sre",
        "ops": "sre",
        "self-improve": "km",
        "rethink": "pm",
    }[stage.value]
    assert run.role == expected_role


def test_modifiers_come_from_the_single_modifier_labels() -> None:
    run = decide(
        issue_labeled("RUN:DEV:REVISE", "[ai-model-GPT-5.1-Codex]", "[AI-REASONING-HIGH]")
    ).run
    assert run is not None
    assert run.model == "GPT-5.1-Codex"
    assert run.reasoning_effort == "high"
    assert run.trigger_label == "run:dev:revise"
    assert run.is_revise is True


def test_duplicate_spellings_of_one_label_are_not_a_conflict() -> None:
    decision = decide(issue_labeled("run:dev", "RUN:DEV", "[ai-model-o3]", " [AI-model-o3] "))
    assert decision.kind is START
    assert decision.run is not None
    assert decision.run.model == "o3"


def test_changed_label_counts_even_if_missing_from_label_list() -> None:
    inp = TriggerInput(
        event="issues", action="labeled", changed_label="run:dev", labels=("run:qa",), number=3
    )
    assert decide(inp).reason == "multiple_run_labels"
    alone = TriggerInput(event="issues", action="labeled", changed_label="run:dev", number=3)
    assert decide(alone).kind is START


def test_unknown_run_label_already_present_does_not_block() -> None:
    assert decide(issue_labeled("run:dev", "run:foo")).kind is START


def test_conflict_message_names_the_labels() -> None:
    decision = decide(issue_labeled("run:dev", "run:qa"))
    assert "run:dev" in decision.message
    assert "run:qa" in decision.message
    models = decide(issue_labeled("run:dev", "[ai-model-a]", "[ai-model-b]"))
    assert "[ai-model-a]" in models.message
    assert "[ai-model-b]" in models.message
    efforts = decide(issue_labeled("run:dev", "[ai-reasoning-low]", "[ai-reasoning-high]"))
    assert "[ai-reasoning-low]" in efforts.message
    assert "[ai-reasoning-high]" in efforts.message
    bad = decide(issue_labeled("run:dev", "[ai-reasoning-max]"))
    assert "[ai-reasoning-max]" in bad.message
    assert "xhigh" in bad.message


def test_every_conflict_is_explained_in_one_message() -> None:
    decision = decide(
        issue_labeled("run:dev", "run:qa", "[ai-model-a]", "[ai-model-b]", "[ai-reasoning-max]")
    )
    assert decision.kind is CONFLICT
    assert decision.reason == "multiple_run_labels"
    assert "[ai-model-b]" in decision.message
    assert "[ai-reasoning-max]" in decision.message


def test_unknown_stage_message_lists_valid_stages() -> None:
    decision = decide(issue_labeled("run:foo"))
    assert "run:foo" in decision.message
    for stage in Stage:
        assert stage.value in decision.message


def test_reviewer_run_on_pull_request() -> None:
    decision = decide(pr_labeled("Need:Reviewer", "[ai-model-o3]", "[ai-reasoning-low]"))
    assert decision.run == RunSpec(
        stage=REVIEW_STAGE,
        role=AgentRole.REVIEWER,
        is_revise=False,
        trigger_label="need:reviewer",
        model="o3",
        reasoning_effort="low",
        number=9,
        is_pull_request=True,
    )


def test_reviewer_ignores_run_labels_on_the_pr() -> None:
    decision = decide(pr_labeled("need:reviewer", "run:dev", "run:qa"))
    assert decision.kind is START
    assert decision.run is not None
    assert decision.run.stage == "review"


def test_run_label_on_pull_request_runs_on_the_pr() -> None:
    run = decide(pr_labeled("run:qa")).run
    assert run is not None
    assert (run.stage, run.role, run.number, run.is_pull_request) == ("qa", "qa", 9, True)


def test_changes_requested_starts_revise_of_the_single_stage() -> None:
    decision = decide(review("changes_requested", "bug", "run:design", "[ai-model-o3]"))
    assert decision.run == RunSpec(
        stage=Stage.DESIGN,
        role=AgentRole.SA,
        is_revise=True,
        trigger_label="run:design",
        model="o3",
        reasoning_effort=None,
        number=9,
        is_pull_request=True,
    )


@pytest.mark.parametrize(
    ("labels", "trigger"),
    [
        (("run:dev", "run:dev:revise"), "run:dev"),
        (("run:dev:revise", "run:dev"), "run:dev:revise"),
        (("RUN:DEV:REVISE",), "run:dev:revise"),
    ],
)
def test_changes_requested_counts_fresh_and_revise_as_one_stage(
    labels: tuple[str, ...], trigger: str
) -> None:
    run = decide(review("changes_requested", *labels)).run
    assert run is not None
    assert run.stage == "dev"
    assert run.is_revise is True
    assert run.trigger_label == trigger


def test_unlabel_reports_the_removed_label_canonically() -> None:
    decision = decide(event("issues", "unlabeled", " RUN:Dev:Revise "))
    assert decision.kind is CANCEL_PENDING
    assert decision.label == "run:dev:revise"
    assert decision.run is None


def test_labeled_and_unlabeled_agree_on_trigger_label() -> None:
    started = decide(issue_labeled("Run:QA"))
    removed = decide(event("issues", "unlabeled", "run:qa"))
    assert started.run is not None
    assert started.run.trigger_label == removed.label


def test_unlabel_without_number_cancels_nothing() -> None:
    inp = TriggerInput(event="issues", action="unlabeled", changed_label="run:dev")
    assert decide(inp).reason == "missing_number"


def test_decision_is_frozen() -> None:
    decision = decide(issue_labeled("run:dev"))
    with pytest.raises(AttributeError):
        decision.kind = IGNORED  # type: ignore[misc]
    assert isinstance(decision, TriggerDecision)


LABELS = st.one_of(
    st.sampled_from(
        [
            "run:dev",
            "run:dev:revise",
            "run:qa",
            "run:foo",
            "need:reviewer",
            "state:x",
            "[ai-model-o3]",
            "[ai-model-GPT]",
            "[ai-reasoning-low]",
            "[ai-reasoning-high]",
            "[ai-reasoning-max]",
            "mode:discussion",
            "mode:other",
            "bug",
        ]
    ),
    st.text(max_size=20),
)
EVENTS = st.one_of(
    st.sampled_from(
        ["issues", "pull_request", "pull_request_review", "issue_comment", "ping", "push"]
    ),
    st.text(max_size=10),
)
ACTIONS = st.one_of(
    st.none(),
    st.sampled_from(["labeled", "unlabeled", "closed", "submitted", "created", "opened"]),
    st.text(max_size=10),
)


@given(
    st.builds(
        TriggerInput,
        event=EVENTS,
        action=ACTIONS,
        changed_label=st.one_of(st.none(), LABELS),
        labels=st.lists(LABELS, max_size=6).map(tuple),
        number=st.one_of(st.none(), st.integers()),
        is_pull_request=st.booleans(),
        review_state=st.one_of(
            st.none(), st.sampled_from(["changes_requested", "approved"]), st.text(max_size=10)
        ),
        sender=st.one_of(st.none(), st.text(max_size=10)),
        is_own_comment=st.booleans(),
    )
)
def test_decide_never_raises_and_is_consistent(inp: TriggerInput) -> None:
    decision = decide(inp)
    assert isinstance(decision.kind, DecisionKind)
    assert decision.reason
    assert (decision.run is not None) == (decision.kind is START)
    if decision.run is not None:
        assert decision.run.number == inp.number
        assert inp.number > 0
    if decision.kind is CANCEL_PENDING:
        assert decision.label is not None
        assert decision.label.startswith(("run:", "need:", "mode:discussion"))
    if decision.run is not None and decision.run.is_discussion:
        # A discussion never takes the model labels meant for the work.
        assert decision.run.model is None and decision.run.reasoning_effort is None
        assert not decision.run.is_revise
    if decision.kind is CONFLICT:
        assert decision.message


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)
)
KEYS = st.one_of(
    st.sampled_from(
        ["issue", "pull_request", "label", "labels", "name", "number", "review", "state", "action"]
    ),
    st.text(max_size=5),
)
JSON_LIKE = st.recursive(
    JUNK,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=5),
    ),
    max_leaves=25,
)


@given(EVENTS, st.dictionaries(KEYS, JSON_LIKE, max_size=6))
def test_payload_extraction_never_raises(event_name: str, payload: dict[str, Any]) -> None:
    inp = trigger_input_from_payload(event_name, payload)
    assert inp.action is None or isinstance(inp.action, str)
    assert inp.changed_label is None or isinstance(inp.changed_label, str)
    assert all(isinstance(name, str) for name in inp.labels)
    assert inp.number is None or (type(inp.number) is int and inp.number > 0)
    assert isinstance(inp.is_pull_request, bool)
    assert inp.review_state is None or isinstance(inp.review_state, str)
    decide(inp)


@pytest.mark.parametrize("payload", [None, [], "x", 3, [("action", "labeled")]])
def test_payload_must_be_a_mapping(payload: Any) -> None:
    with pytest.raises(PayloadError):
        trigger_input_from_payload("issues", payload)
    assert issubclass(PayloadError, ValueError)


def _labels(*names: str) -> list[dict[str, Any]]:
    return [{"id": index, "name": name, "color": "ffffff"} for index, name in enumerate(names)]


def test_issues_labeled_payload() -> None:
    payload = {
        "action": "labeled",
        "label": {"name": "run:dev"},
        "issue": {"number": 42, "labels": _labels("bug", "run:dev"), "pull_request": None},
        "repository": {"full_name": "o/r"},
    }
    inp = trigger_input_from_payload("issues", payload)
    assert inp == TriggerInput(
        event="issues",
        action="labeled",
        changed_label="run:dev",
        labels=("bug", "run:dev"),
        number=42,
        is_pull_request=False,
        review_state=None,
    )
    run = decide(inp).run
    assert run is not None
    assert run.number == 42
    assert run.stage == "dev"


def test_issue_payload_for_a_pull_request_is_marked() -> None:
    payload = {
        "action": "created",
        "issue": {"number": 5, "labels": [], "pull_request": {"url": "https://x"}},
        "comment": {"body": "hi"},
    }
    inp = trigger_input_from_payload("issue_comment", payload)
    assert inp.is_pull_request is True
    assert inp.number == 5


def test_pull_request_labeled_payload() -> None:
    payload = {
        "action": "labeled",
        "number": 11,
        "label": {"name": "need:reviewer"},
        "pull_request": {"number": 11, "labels": _labels("need:reviewer", "[ai-model-o3]")},
    }
    inp = trigger_input_from_payload("pull_request", payload)
    assert inp.is_pull_request is True
    assert inp.labels == ("need:reviewer", "[ai-model-o3]")
    run = decide(inp).run
    assert run is not None
    assert run.stage == REVIEW_STAGE
    assert run.model == "o3"


def test_pull_request_number_falls_back_to_top_level() -> None:
    payload = {"action": "closed", "number": 12, "pull_request": {"labels": []}}
    inp = trigger_input_from_payload("pull_request", payload)
    assert inp.number == 12
    assert decide(inp).kind is CANCEL_ACTIVE


def test_pull_request_review_payload() -> None:
    payload = {
        "action": "submitted",
        "review": {"state": "changes_requested", "body": "fix it"},
        "pull_request": {"number": 8, "labels": _labels("run:dev")},
    }
    inp = trigger_input_from_payload("pull_request_review", payload)
    assert inp.review_state == "changes_requested"
    assert inp.is_pull_request is True
    run = decide(inp).run
    assert run is not None
    assert run.is_revise
    assert run.number == 8


def test_ping_payload() -> None:
    inp = trigger_input_from_payload("ping", {"zen": "Keep it simple.", "hook_id": 1})
    assert decide(inp).reason == "ping"


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"action": 3}, "action", None),
        ({"label": "run:dev"}, "changed_label", None),
        ({"label": {"name": 5}}, "changed_label", None),
        ({"issue": {"number": True}}, "number", None),
        ({"issue": {"number": "7"}}, "number", None),
        ({"issue": {"number": -1}}, "number", None),
        ({"issue": {"number": 7.0}}, "number", None),
        ({"issue": {"labels": "run:dev"}}, "labels", ()),
        ({"issue": {"labels": {"name": "run:dev"}}}, "labels", ()),
        (
            {"issue": {"labels": [{"name": 1}, None, {"x": "y"}, "raw", {"name": "ok"}]}},
            "labels",
            ("raw", "ok"),
        ),
        ({"issue": []}, "labels", ()),
        ({"review": "approved"}, "review_state", None),
        ({"issue": {"pull_request": None}}, "is_pull_request", False),
        ({}, "is_pull_request", False),
    ],
)
def test_payload_odd_fields_become_empty(
    payload: dict[str, Any], field: str, expected: Any
) -> None:
    inp = trigger_input_from_payload("issues", payload)
    assert getattr(inp, field) == expected


def test_issues_event_reads_the_issue_not_the_pull_request() -> None:
    payload = {"issue": {"number": 1, "labels": _labels("a")}, "pull_request": {"number": 2}}
    inp = trigger_input_from_payload("issues", payload)
    assert (inp.number, inp.labels, inp.is_pull_request) == (1, ("a",), False)


def test_pull_request_event_ignores_a_stray_issue() -> None:
    payload = {"action": "closed", "issue": {"number": 1}}
    inp = trigger_input_from_payload("pull_request", payload)
    assert inp.number is None
    assert decide(inp).reason == "missing_number"


# --- discussions (issue #19) ----------------------------------------------------------------------


def comment(*labels: str, number: int | None = 7, own: bool = False) -> TriggerInput:
    return TriggerInput(
        event="issue_comment", action="created", labels=labels, number=number,
        sender="alice", is_own_comment=own,
    )  # fmt: skip


def test_the_discussion_label_starts_a_discussion_turn_that_ignores_model_labels() -> None:
    decision = decide(issue_labeled("mode:discussion", "bug", "[ai-model-o3]"))
    assert decision.kind is START and decision.reason == "discussion_started"
    assert decision.run == RunSpec(
        stage=DISCUSSION_STAGE, role=AgentRole.PM, is_revise=False,
        trigger_label="mode:discussion", model=None, reasoning_effort=None, number=7,
        is_pull_request=False, mode="discussion",
    )  # fmt: skip
    assert decide(issue_labeled("Mode:Discussion")).run.trigger_label == "mode:discussion"  # type: ignore[union-attr]


def test_the_discussion_label_is_over_once_a_run_label_is_set() -> None:
    decision = decide(issue_labeled("mode:discussion", "run:dev"))
    assert decision.kind is RECORD and decision.reason == "discussion_over"
    assert "run:dev" in decision.message


def test_other_modes_start_nothing() -> None:
    assert decide(issue_labeled("mode:quiet")).kind is RECORD


def test_a_comment_continues_a_discussion_until_a_run_label_starts_the_work() -> None:
    turn = decide(comment("mode:discussion", "bug"))
    assert turn.kind is START and turn.reason == "discussion_continued"
    assert turn.run is not None and turn.run.is_discussion and turn.run.stage == DISCUSSION_STAGE
    assert not turn.run.is_tentative
    after_work = apply_project_policy(
        decide(comment("mode:discussion", "run:dev")), ProjectPolicy()
    )
    assert after_work.kind is RECORD and after_work.reason == "comment_recorded"
    assert decide(comment("bug")).reason == "comment_recorded"


def test_codexk8s_own_comments_never_start_a_turn() -> None:
    decision = decide(comment("mode:discussion", own=True))
    assert decision.kind is RECORD and decision.reason == "own_comment"


def test_a_comment_under_a_single_run_label_is_a_tentative_turn_of_that_stage() -> None:
    decision = decide(comment("run:intake"))
    assert decision.kind is START and decision.run is not None
    assert decision.run.is_tentative and decision.run.is_discussion
    assert (decision.run.stage, decision.run.role) == ("intake", AgentRole.PM)
    # A revise label or two run labels: no discussion to continue.
    assert decide(comment("run:intake:revise")).kind is RECORD
    assert decide(comment("run:intake", "run:dev")).kind is RECORD


def test_project_policy_keeps_tentative_turns_only_for_discussion_stages() -> None:
    tentative = decide(comment("run:intake"))
    ordinary = apply_project_policy(tentative, ProjectPolicy())
    assert ordinary.kind is RECORD and ordinary.reason == "comment_recorded"
    kept = apply_project_policy(tentative, ProjectPolicy(frozenset({"intake"})))
    assert kept.kind is START and kept.run is not None and not kept.run.is_tentative


def test_a_run_label_of_a_discussion_stage_starts_a_discussion_instead_of_work() -> None:
    policy = ProjectPolicy(frozenset({"intake"}))
    started = apply_project_policy(decide(issue_labeled("run:intake", "[ai-model-o3]")), policy)
    assert started.kind is START and started.reason == "discussion_started"
    assert started.run is not None and started.run.is_discussion
    assert started.run.model is None and started.run.trigger_label == "run:intake"
    # Other stages, revise labels and reviewer runs stay work.
    for inp in (issue_labeled("run:dev"), issue_labeled("run:intake:revise"),
                pr_labeled("need:reviewer")):  # fmt: skip
        decision = decide(inp)
        assert apply_project_policy(decision, policy) == decision


def test_removing_the_discussion_label_cancels_a_pending_turn() -> None:
    removed = TriggerInput(
        event="issues", action="unlabeled", changed_label="mode:discussion", number=7
    )
    decision = decide(removed)
    assert decision.kind is CANCEL_PENDING and decision.label == "mode:discussion"


def test_payload_names_the_sender_and_recognises_codexk8s_comments() -> None:
    from tests.webhook_examples import example

    payload = example("issue_comment", "created")
    inp = trigger_input_from_payload("issue_comment", payload)
    assert inp.sender == "Codertocat" and inp.is_own_comment is False
    payload["comment"]["body"] = "<!-- codexk8s:discussion run=4 -->\nAn answer"
    assert trigger_input_from_payload("issue_comment", payload).is_own_comment is True
    # A person's `/answer` answers; the same words in codexk8s's own comment (an agent's
    # post_comment, sent with a token that may be a project admin's) answer nothing.
    payload["comment"]["body"] = "Sure.\n/answer #3 approve"
    assert trigger_input_from_payload("issue_comment", payload).is_answer is True
    payload["comment"]["body"] = "/answer #3 approve\n\n" + agent_comment_marker(4)
    own = trigger_input_from_payload("issue_comment", payload)
    assert own.is_own_comment is True and own.is_answer is False
    assert decide(own).reason == "own_comment"
    # Only comments: an issue body with the marker is a person's text like any other.
    labeled = example("issues", "labeled")
    labeled["issue"]["body"] = "<!-- codexk8s:service-comment -->"
    assert trigger_input_from_payload("issues", labeled).is_own_comment is False
