"""Parsing of GitHub label names into the kinds of label the control plane reacts to.

Matching rules:
- Leading and trailing whitespace is stripped; whitespace inside a label is kept, so `run: dev`
  names no stage and is reported as an unknown run label.
- Prefixes (`run:`, `need:`, `state:`, `mode:`, `[ai-model-`, `[ai-reasoning-`), stage names, the
  `:revise` suffix and reasoning efforts match ASCII case-insensitively, as GitHub itself treats
  label names case-insensitively. `need:`, `state:` and `mode:` values are lower-cased for the
  same reason.
- A model name keeps its case, because model identifiers at some providers are case-sensitive.
- A prefix with nothing after it (`need:`, `state:`, `mode:`) is an ordinary label, except
  `run:` which is reported as an unknown run label so the user learns the valid stages.
- Each parsed label has a `canonical` spelling; services store and compare that spelling so that
  adding `RUN:DEV` and later removing `run:dev` refer to the same trigger.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from codexk8s.domain.stages import Stage, parse_stage

RUN_PREFIX: Final[str] = "run:"
NEED_PREFIX: Final[str] = "need:"
STATE_PREFIX: Final[str] = "state:"
MODE_PREFIX: Final[str] = "mode:"
DISCUSSION_MODE: Final[str] = "discussion"
DISCUSSION_LABEL: Final[str] = f"{MODE_PREFIX}{DISCUSSION_MODE}"
MODEL_PREFIX: Final[str] = "[ai-model-"
REASONING_PREFIX: Final[str] = "[ai-reasoning-"
MODIFIER_SUFFIX: Final[str] = "]"
REVISE_SUFFIX: Final[str] = ":revise"
REVIEWER_NEED: Final[str] = "reviewer"

REASONING_EFFORTS: Final[tuple[str, ...]] = ("minimal", "low", "medium", "high", "xhigh")
MODEL_NAME_MAX_LENGTH: Final[int] = 100
# Model names end up in pod specs and API calls, so only a conservative character set is allowed.
_MODEL_NAME_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9._:/-]+")


@dataclass(frozen=True, slots=True)
class RunLabel:
    """`run:<stage>` (a fresh run) or `run:<stage>:revise` (a revise run) for a known stage."""

    stage: Stage
    is_revise: bool = False

    @property
    def canonical(self) -> str:
        suffix = REVISE_SUFFIX if self.is_revise else ""
        return f"{RUN_PREFIX}{self.stage.value}{suffix}"


@dataclass(frozen=True, slots=True)
class UnknownRunLabel:
    """A `run:` label that names no stage; kept apart so the user can be told the valid stages."""

    name: str
    stage_text: str

    @property
    def canonical(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class NeedLabel:
    """`need:<what>`; only `need:reviewer` triggers anything (a reviewer run on a PR)."""

    need: str

    @property
    def canonical(self) -> str:
        return f"{NEED_PREFIX}{self.need}"

    @property
    def is_reviewer(self) -> bool:
        return self.need == REVIEWER_NEED


@dataclass(frozen=True, slots=True)
class StateLabel:
    """`state:<value>`, a coordination label the control plane writes and never reacts to."""

    state: str

    @property
    def canonical(self) -> str:
        return f"{STATE_PREFIX}{self.state}"


@dataclass(frozen=True, slots=True)
class ModeLabel:
    """`mode:<value>`; only `mode:discussion` means something (the agent answers on the issue
    instead of opening a pull request)."""

    mode: str

    @property
    def canonical(self) -> str:
        return f"{MODE_PREFIX}{self.mode}"

    @property
    def is_discussion(self) -> bool:
        return self.mode == DISCUSSION_MODE


@dataclass(frozen=True, slots=True)
class ModelLabel:
    """`[ai-model-<name>]`, choosing the model for runs on the issue or PR."""

    model: str

    @property
    def canonical(self) -> str:
        return f"{MODEL_PREFIX}{self.model}{MODIFIER_SUFFIX}"


@dataclass(frozen=True, slots=True)
class ReasoningLabel:
    """`[ai-reasoning-<effort>]`, choosing the reasoning effort; effort is in REASONING_EFFORTS."""

    effort: str

    @property
    def canonical(self) -> str:
        return f"{REASONING_PREFIX}{self.effort}{MODIFIER_SUFFIX}"


@dataclass(frozen=True, slots=True)
class InvalidModifierLabel:
    """A model or reasoning label whose value is unusable; `reason` is shown to the user."""

    name: str
    reason: str

    @property
    def canonical(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class OtherLabel:
    """Any label the control plane has no meaning for."""

    name: str

    @property
    def canonical(self) -> str:
        return self.name


Label: TypeAlias = (
    RunLabel
    | UnknownRunLabel
    | NeedLabel
    | StateLabel
    | ModeLabel
    | ModelLabel
    | ReasoningLabel
    | InvalidModifierLabel
    | OtherLabel
)


@dataclass(frozen=True, slots=True)
class LabelSet:
    """Labels of one issue or PR sorted by kind, each tuple in input order without duplicates.

    `invalid` lists every label that must be explained to the user, as (name, reason), covering
    both `unknown_run_labels` and `invalid_modifiers`.
    """

    run_labels: tuple[RunLabel, ...] = ()
    model_labels: tuple[ModelLabel, ...] = ()
    reasoning_labels: tuple[ReasoningLabel, ...] = ()
    need_labels: tuple[NeedLabel, ...] = ()
    state_labels: tuple[StateLabel, ...] = ()
    mode_labels: tuple[ModeLabel, ...] = ()
    invalid: tuple[tuple[str, str], ...] = ()
    others: tuple[OtherLabel, ...] = ()
    unknown_run_labels: tuple[UnknownRunLabel, ...] = ()
    invalid_modifiers: tuple[InvalidModifierLabel, ...] = ()

    @property
    def has_discussion(self) -> bool:
        """Whether `mode:discussion` is among the labels."""
        return any(label.is_discussion for label in self.mode_labels)


def _strip_prefix(text: str, prefix: str) -> str | None:
    """Return what follows `prefix` in `text`, matching the prefix ASCII case-insensitively."""
    head = text[: len(prefix)]
    # isascii() first: str.lower() maps the Kelvin sign to "k" and similar look-alikes.
    if head.isascii() and head.lower() == prefix:
        return text[len(prefix) :]
    return None


def _stage_named(text: str) -> Stage | None:
    # parse_stage forgives outer whitespace; inside a label that whitespace is a typo to report.
    return parse_stage(text) if text == text.strip() else None


def _parse_run(name: str, rest: str) -> RunLabel | UnknownRunLabel:
    body, is_revise = rest, False
    if len(rest) > len(REVISE_SUFFIX):
        tail = rest[-len(REVISE_SUFFIX) :]
        if tail.isascii() and tail.lower() == REVISE_SUFFIX:
            body, is_revise = rest[: -len(REVISE_SUFFIX)], True
    stage = _stage_named(body)
    if stage is None:
        return UnknownRunLabel(name=name, stage_text=rest)
    return RunLabel(stage=stage, is_revise=is_revise)


def _parse_modifier(name: str, rest: str, *, is_model: bool) -> Label:
    kind = "model" if is_model else "reasoning"
    if not rest.endswith(MODIFIER_SUFFIX):
        return InvalidModifierLabel(name=name, reason=f"{kind} label must end with ']'")
    value = rest[: -len(MODIFIER_SUFFIX)]
    if is_model:
        if not value:
            return InvalidModifierLabel(name=name, reason="model name is empty")
        if len(value) > MODEL_NAME_MAX_LENGTH:
            return InvalidModifierLabel(
                name=name,
                reason=f"model name is longer than {MODEL_NAME_MAX_LENGTH} characters",
            )
        if _MODEL_NAME_PATTERN.fullmatch(value) is None:
            return InvalidModifierLabel(
                name=name,
                reason="model name may only contain letters, digits and . _ : - /",
            )
        return ModelLabel(model=value)
    effort = value.lower() if value.isascii() else value
    if effort not in REASONING_EFFORTS:
        return InvalidModifierLabel(
            name=name,
            reason=f"reasoning effort {value!r} is not one of {', '.join(REASONING_EFFORTS)}",
        )
    return ReasoningLabel(effort=effort)


def _lower_ascii(text: str) -> str:
    # Coordination values are compared by the control plane, so ASCII case is folded; anything
    # non-ASCII is kept verbatim rather than risk Unicode case mappings that change meaning.
    return "".join(ch.lower() if ch.isascii() else ch for ch in text)


def parse_label(name: str) -> Label:
    """Parse one GitHub label name into exactly one label kind; never raises."""
    text = name.strip()
    rest = _strip_prefix(text, RUN_PREFIX)
    if rest is not None:
        return _parse_run(text, rest)
    rest = _strip_prefix(text, NEED_PREFIX)
    if rest:
        return NeedLabel(need=_lower_ascii(rest))
    rest = _strip_prefix(text, STATE_PREFIX)
    if rest:
        return StateLabel(state=_lower_ascii(rest))
    rest = _strip_prefix(text, MODE_PREFIX)
    if rest:
        return ModeLabel(mode=_lower_ascii(rest))
    rest = _strip_prefix(text, MODEL_PREFIX)
    if rest is not None:
        return _parse_modifier(text, rest, is_model=True)
    rest = _strip_prefix(text, REASONING_PREFIX)
    if rest is not None:
        return _parse_modifier(text, rest, is_model=False)
    return OtherLabel(name=text)


def _dedup_key(label: Label) -> object:
    # Labels without a normalised value are compared the way GitHub compares label names.
    if isinstance(label, UnknownRunLabel | InvalidModifierLabel | OtherLabel):
        return (type(label), _lower_ascii(label.name))
    return label


def classify_labels(names: Iterable[str]) -> LabelSet:
    """Parse `names` and sort them by kind, keeping first occurrences in input order."""
    seen: set[object] = set()
    runs: list[RunLabel] = []
    models: list[ModelLabel] = []
    efforts: list[ReasoningLabel] = []
    needs: list[NeedLabel] = []
    states: list[StateLabel] = []
    modes: list[ModeLabel] = []
    invalid: list[tuple[str, str]] = []
    others: list[OtherLabel] = []
    unknown_runs: list[UnknownRunLabel] = []
    bad_modifiers: list[InvalidModifierLabel] = []
    for name in names:
        label = parse_label(name)
        key = _dedup_key(label)
        if key in seen:
            continue
        seen.add(key)
        match label:
            case RunLabel():
                runs.append(label)
            case ModelLabel():
                models.append(label)
            case ReasoningLabel():
                efforts.append(label)
            case NeedLabel():
                needs.append(label)
            case StateLabel():
                states.append(label)
            case ModeLabel():
                modes.append(label)
            case UnknownRunLabel():
                unknown_runs.append(label)
                invalid.append((label.name, describe_unknown_run_label(label)))
            case InvalidModifierLabel():
                bad_modifiers.append(label)
                invalid.append((label.name, label.reason))
            case OtherLabel():
                others.append(label)
    return LabelSet(
        run_labels=tuple(runs),
        model_labels=tuple(models),
        reasoning_labels=tuple(efforts),
        need_labels=tuple(needs),
        state_labels=tuple(states),
        mode_labels=tuple(modes),
        invalid=tuple(invalid),
        others=tuple(others),
        unknown_run_labels=tuple(unknown_runs),
        invalid_modifiers=tuple(bad_modifiers),
    )


def describe_unknown_run_label(label: UnknownRunLabel) -> str:
    """Explain to a user why `label` starts nothing and which stages exist."""
    valid = ", ".join(stage.value for stage in Stage)
    return (
        f"{label.name!r} names no known stage; use run:<stage> or run:<stage>:revise "
        f"with one of: {valid}"
    )
