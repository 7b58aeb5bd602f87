"""Tests for label parsing and classification."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexk8s.domain.labels import (
    MODEL_NAME_MAX_LENGTH,
    REASONING_EFFORTS,
    InvalidModifierLabel,
    Label,
    LabelSet,
    ModeLabel,
    ModelLabel,
    NeedLabel,
    OtherLabel,
    ReasoningLabel,
    RunLabel,
    StateLabel,
    UnknownRunLabel,
    classify_labels,
    parse_label,
)
from codexk8s.domain.stages import Stage

KNOWN_PREFIXES = ("run:", "need:", "state:", "mode:", "[ai-model-", "[ai-reasoning-")
WHITESPACE = st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("run:dev", RunLabel(Stage.DEV, is_revise=False)),
        ("run:dev:revise", RunLabel(Stage.DEV, is_revise=True)),
        ("run:doc-audit", RunLabel(Stage.DOC_AUDIT)),
        ("run:self-improve:revise", RunLabel(Stage.SELF_IMPROVE, is_revise=True)),
        ("RUN:DEV", RunLabel(Stage.DEV)),
        ("Run:Qa:ReViSe", RunLabel(Stage.QA, is_revise=True)),
        ("  run:plan\n", RunLabel(Stage.PLAN)),
        ("need:reviewer", NeedLabel("reviewer")),
        ("NEED:Reviewer", NeedLabel("reviewer")),
        ("need:human-input", NeedLabel("human-input")),
        ("state:in-progress", StateLabel("in-progress")),
        ("State:Blocked", StateLabel("blocked")),
        ("mode:discussion", ModeLabel("discussion")),
        (" Mode:DISCUSSION ", ModeLabel("discussion")),
        ("mode:quiet", ModeLabel("quiet")),
        ("mode:", OtherLabel("mode:")),
        ("[ai-model-gpt-5]", ModelLabel("gpt-5")),
        ("[AI-Model-GPT-5.1-Codex]", ModelLabel("GPT-5.1-Codex")),
        ("[ai-model-openai/gpt-oss:120b_v2]", ModelLabel("openai/gpt-oss:120b_v2")),
        (" [ai-model-o3] ", ModelLabel("o3")),
        ("[ai-reasoning-high]", ReasoningLabel("high")),
        ("[AI-REASONING-XHIGH]", ReasoningLabel("xhigh")),
        ("[ai-reasoning-Minimal]", ReasoningLabel("minimal")),
        ("bug", OtherLabel("bug")),
        ("  good first issue ", OtherLabel("good first issue")),
        ("runner:dev", OtherLabel("runner:dev")),
        ("run", OtherLabel("run")),
        ("ai-model-gpt-5", OtherLabel("ai-model-gpt-5")),
        ("[ai-models-gpt-5]", OtherLabel("[ai-models-gpt-5]")),
        ("need:", OtherLabel("need:")),
        ("state:", OtherLabel("state:")),
        ("", OtherLabel("")),
    ],
)
def test_parse_label_kinds(name: str, expected: Label) -> None:
    assert parse_label(name) == expected


@pytest.mark.parametrize(
    ("name", "stage_text"),
    [
        ("run:foo", "foo"),
        ("run:", ""),
        ("RUN:", ""),
        ("run:dev:other", "dev:other"),
        ("run:dev:revise:revise", "dev:revise:revise"),
        ("run:revise", "revise"),
        ("run::revise", ":revise"),
        ("run: dev", " dev"),
        ("run:dev :revise", "dev :revise"),
        ("run:review", "review"),
        ("run:doc_audit", "doc_audit"),
        ("run:rethin\u212a", "rethin\u212a"),
    ],
)
def test_unknown_run_labels_are_kept_for_explanation(name: str, stage_text: str) -> None:
    label = parse_label(name)
    assert label == UnknownRunLabel(name=name.strip(), stage_text=stage_text)
    assert not isinstance(label, RunLabel)


@pytest.mark.parametrize("effort", ["max", "none", "", "very-high", "HIGHER", "high ", " low"])
def test_invalid_reasoning_efforts(effort: str) -> None:
    name = f"[ai-reasoning-{effort}]"
    label = parse_label(name)
    assert isinstance(label, InvalidModifierLabel)
    assert label.name == name
    assert "minimal, low, medium, high, xhigh" in label.reason


@pytest.mark.parametrize(
    ("model", "reason_fragment"),
    [
        ("", "empty"),
        ("gpt 5", "may only contain"),
        ("gpt-5!", "may only contain"),
        ("gpt\u00e9", "may only contain"),
        ("gpt\n5", "may only contain"),
        ("a]b", "may only contain"),
        ("x" * (MODEL_NAME_MAX_LENGTH + 1), "longer than 100"),
    ],
)
def test_invalid_model_names(model: str, reason_fragment: str) -> None:
    label = parse_label(f"[ai-model-{model}]")
    assert isinstance(label, InvalidModifierLabel)
    assert reason_fragment in label.reason


def test_model_name_of_exactly_max_length_is_valid() -> None:
    model = "m" * MODEL_NAME_MAX_LENGTH
    assert parse_label(f"[ai-model-{model}]") == ModelLabel(model)


@pytest.mark.parametrize("name", ["[ai-model-gpt-5", "[ai-reasoning-high", "[ai-model-gpt]x"])
def test_modifier_without_closing_bracket_is_invalid(name: str) -> None:
    label = parse_label(name)
    assert isinstance(label, InvalidModifierLabel)
    assert "must end with ']'" in label.reason


def test_reasoning_efforts_constant() -> None:
    assert REASONING_EFFORTS == ("minimal", "low", "medium", "high", "xhigh")


@pytest.mark.parametrize("effort", REASONING_EFFORTS)
def test_every_reasoning_effort_parses(effort: str) -> None:
    assert parse_label(f"[ai-reasoning-{effort}]") == ReasoningLabel(effort)
    assert parse_label(f"[ai-reasoning-{effort.upper()}]") == ReasoningLabel(effort)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("RUN:DEV", "run:dev"),
        (" Run:Dev:REVISE ", "run:dev:revise"),
        ("NEED:REVIEWER", "need:reviewer"),
        ("STATE:Done", "state:done"),
        ("[AI-MODEL-GPT-5]", "[ai-model-GPT-5]"),
        ("[Ai-Reasoning-LOW]", "[ai-reasoning-low]"),
        (" Bug ", "Bug"),
        ("run:Foo", "run:Foo"),
        ("[ai-reasoning-max]", "[ai-reasoning-max]"),
    ],
)
def test_canonical_spelling(name: str, canonical: str) -> None:
    assert parse_label(name).canonical == canonical


def test_need_reviewer_flag() -> None:
    reviewer = parse_label("need:Reviewer")
    other = parse_label("need:reviewers")
    assert isinstance(reviewer, NeedLabel)
    assert reviewer.is_reviewer
    assert isinstance(other, NeedLabel)
    assert not other.is_reviewer


def test_labels_are_frozen() -> None:
    label = parse_label("run:dev")
    with pytest.raises(dataclasses.FrozenInstanceError):
        label.stage = Stage.QA  # type: ignore[misc, union-attr]


@given(st.text())
def test_parse_label_never_raises(text: str) -> None:
    label = parse_label(text)
    assert isinstance(label.canonical, str)


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(ch.upper() if flip else ch for ch, flip in zip(text, flips, strict=True))


@st.composite
def _cased_run_label(draw: st.DrawFn) -> tuple[str, Stage, bool]:
    stage = draw(st.sampled_from(list(Stage)))
    is_revise = draw(st.booleans())
    core = f"run:{stage.value}" + (":revise" if is_revise else "")
    name = draw(WHITESPACE) + _random_case(draw, core) + draw(WHITESPACE)
    return name, stage, is_revise


@given(_cased_run_label())
def test_run_labels_round_trip_through_any_casing_and_whitespace(
    case: tuple[str, Stage, bool],
) -> None:
    name, stage, is_revise = case
    label = parse_label(name)
    assert label == RunLabel(stage=stage, is_revise=is_revise)
    assert parse_label(label.canonical) == label


def _has_known_prefix(text: str) -> bool:
    stripped = text.strip()
    return any(stripped[: len(p)].lower() == p for p in KNOWN_PREFIXES)


@given(st.text().filter(lambda text: not _has_known_prefix(text)))
def test_text_without_known_prefix_is_other(text: str) -> None:
    assert parse_label(text) == OtherLabel(text.strip())


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-"))
def test_model_labels_keep_name_and_round_trip(model: str) -> None:
    label = parse_label(f"[ai-model-{model}]")
    if not model or len(model) > MODEL_NAME_MAX_LENGTH:
        assert isinstance(label, InvalidModifierLabel)
    else:
        assert label == ModelLabel(model)
        assert parse_label(label.canonical) == label


LABEL_NAMES = st.one_of(
    st.sampled_from(
        [
            "run:dev",
            "RUN:DEV",
            "run:qa:revise",
            "run:foo",
            "Run:Foo",
            "need:reviewer",
            "state:blocked",
            "[ai-model-gpt-5]",
            "[ai-model-GPT-5]",
            "[ai-reasoning-high]",
            "[ai-reasoning-max]",
            "bug",
            "Bug",
            " bug ",
        ]
    ),
    st.text(max_size=12),
)


def _flatten(labels: LabelSet) -> list[str]:
    return [
        *(x.canonical for x in labels.run_labels),
        *(x.canonical for x in labels.model_labels),
        *(x.canonical for x in labels.reasoning_labels),
        *(x.canonical for x in labels.need_labels),
        *(x.canonical for x in labels.state_labels),
        *(name for name, _ in labels.invalid),
        *(x.canonical for x in labels.others),
    ]


@given(st.lists(LABEL_NAMES, max_size=12))
def test_classify_is_idempotent_on_duplicates(names: list[str]) -> None:
    once = classify_labels(names)
    assert classify_labels(names + names) == once
    assert classify_labels([*names, *reversed(names)]) == once
    assert classify_labels(_flatten(once)) == once


@given(st.lists(LABEL_NAMES, max_size=12))
def test_classify_preserves_input_order_within_each_kind(names: list[str]) -> None:
    labels = classify_labels(names)
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        first_index.setdefault(parse_label(name).canonical.lower(), index)
    for group in (
        labels.run_labels,
        labels.model_labels,
        labels.reasoning_labels,
        labels.need_labels,
        labels.state_labels,
        labels.others,
    ):
        positions = [first_index[label.canonical.lower()] for label in group]
        assert positions == sorted(positions)
    invalid_positions = [first_index[name.lower()] for name, _ in labels.invalid]
    assert invalid_positions == sorted(invalid_positions)


def test_classify_sorts_every_kind() -> None:
    labels = classify_labels(
        [
            "bug",
            "run:qa",
            "[ai-reasoning-max]",
            "RUN:DEV:REVISE",
            "need:reviewer",
            "state:running",
            "[ai-model-o3]",
            "[ai-reasoning-low]",
            "run:nope",
            "[ai-model- bad]",
            "enhancement",
        ]
    )
    assert labels.run_labels == (RunLabel(Stage.QA), RunLabel(Stage.DEV, is_revise=True))
    assert labels.model_labels == (ModelLabel("o3"),)
    assert labels.reasoning_labels == (ReasoningLabel("low"),)
    assert labels.need_labels == (NeedLabel("reviewer"),)
    assert labels.state_labels == (StateLabel("running"),)
    assert labels.others == (OtherLabel("bug"), OtherLabel("enhancement"))
    assert [name for name, _ in labels.invalid] == [
        "[ai-reasoning-max]",
        "run:nope",
        "[ai-model- bad]",
    ]
    assert all(reason for _, reason in labels.invalid)
    assert "intake" in dict(labels.invalid)["run:nope"]
    assert labels.unknown_run_labels == (UnknownRunLabel("run:nope", "nope"),)
    assert [bad.name for bad in labels.invalid_modifiers] == [
        "[ai-reasoning-max]",
        "[ai-model- bad]",
    ]


def test_classify_deduplicates_case_insensitively_keeping_first_spelling() -> None:
    labels = classify_labels(
        ["Bug", "run:dev", "BUG", "RUN:DEV", " run:dev ", "run:Foo", "RUN:FOO"]
    )
    assert labels.others == (OtherLabel("Bug"),)
    assert labels.run_labels == (RunLabel(Stage.DEV),)
    assert labels.unknown_run_labels == (UnknownRunLabel("run:Foo", "Foo"),)
    assert len(labels.invalid) == 1


def test_classify_keeps_revise_and_fresh_run_labels_apart() -> None:
    labels = classify_labels(["run:dev", "run:dev:revise"])
    assert labels.run_labels == (RunLabel(Stage.DEV), RunLabel(Stage.DEV, is_revise=True))


def test_classify_model_names_differing_in_case_are_distinct() -> None:
    labels = classify_labels(["[ai-model-GPT-5]", "[ai-model-gpt-5]"])
    assert labels.model_labels == (ModelLabel("GPT-5"), ModelLabel("gpt-5"))


def test_classify_accepts_any_iterable_and_empty() -> None:
    assert classify_labels(iter(["run:dev"])).run_labels == (RunLabel(Stage.DEV),)
    assert classify_labels([]) == LabelSet()


def test_mode_labels_are_sorted_out_and_only_discussion_means_something() -> None:
    labels = classify_labels(["mode:discussion", "MODE:Discussion", "mode:quiet", "bug"])
    assert labels.mode_labels == (ModeLabel("discussion"), ModeLabel("quiet"))
    assert labels.has_discussion
    assert not classify_labels(["mode:quiet", "discussion"]).has_discussion
    assert ModeLabel("discussion").canonical == "mode:discussion"
