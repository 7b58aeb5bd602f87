"""The stage model: which stages exist and which agent role runs each of them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Stage(StrEnum):
    """A stage of the delivery flow, started by a `run:<stage>` label (listed in flow order)."""

    INTAKE = "intake"
    VISION = "vision"
    PRD = "prd"
    ARCH = "arch"
    DESIGN = "design"
    PLAN = "plan"
    DEV = "dev"
    DOC_AUDIT = "doc-audit"
    QA = "qa"
    RELEASE = "release"
    POSTDEPLOY = "postdeploy"
    OPS = "ops"
    SELF_IMPROVE = "self-improve"
    RETHINK = "rethink"


class AgentRole(StrEnum):
    """The kind of agent that performs a run."""

    PM = "pm"
    SA = "sa"
    EM = "em"
    DEV = "dev"
    REVIEWER = "reviewer"
    QA = "qa"
    SRE = "sre"
    KM = "km"


# A reviewer run (started by `need:reviewer` on a PR) belongs to no stage of the flow, so it is
# not a Stage member: making it one would let `run:review` labels start reviews and would put a
# fake stage in every list of stages. Runs store their stage as text, and this is that text.
REVIEW_STAGE: Final[str] = "review"
# A discussion started by the `mode:discussion` label (not by a stage's run label) is likewise
# no stage of the flow: the product manager answers it, before anyone has chosen a stage.
DISCUSSION_STAGE: Final[str] = "discussion"
DISCUSSION_ROLE: Final[AgentRole] = AgentRole.PM

STAGE_ROLES: Final[Mapping[Stage, AgentRole]] = MappingProxyType(
    {
        Stage.INTAKE: AgentRole.PM,
        Stage.VISION: AgentRole.PM,
        Stage.PRD: AgentRole.PM,
        Stage.ARCH: AgentRole.SA,
        Stage.DESIGN: AgentRole.SA,
        Stage.PLAN: AgentRole.EM,
        Stage.DEV: AgentRole.DEV,
        Stage.DOC_AUDIT: AgentRole.KM,
        Stage.QA: AgentRole.QA,
        Stage.RELEASE: AgentRole.EM,
        Stage.POSTDEPLOY: AgentRole.SRE,
        Stage.OPS: AgentRole.SRE,
        Stage.SELF_IMPROVE: AgentRole.KM,
        Stage.RETHINK: AgentRole.PM,
    }
)

# Stages whose agent writes documents (issue comments, docs/ markdown, plans) instead of changing
# the product's code. qa, release, postdeploy and ops stay out: they run tests, cut releases and
# touch deployments, so they need the same toolchain and permissions as dev. self-improve is in
# because it edits prompts and guides, which are documents to the system.
DOCUMENT_STAGES: Final[frozenset[Stage]] = frozenset(
    {
        Stage.INTAKE,
        Stage.VISION,
        Stage.PRD,
        Stage.ARCH,
        Stage.DESIGN,
        Stage.PLAN,
        Stage.DOC_AUDIT,
        Stage.RETHINK,
        Stage.SELF_IMPROVE,
    }
)


def role_for(stage: Stage) -> AgentRole:
    """Return the agent role that runs `stage` (reviewer runs use AgentRole.REVIEWER directly)."""
    return STAGE_ROLES[stage]


def parse_stage(text: str) -> Stage | None:
    """Return the Stage named by `text` (ASCII case-insensitive, outer whitespace ignored)."""
    candidate = text.strip()
    # Only ASCII case folding: str.lower() maps a few non-ASCII letters (the Kelvin sign) to ASCII,
    # which would let look-alike labels name a stage.
    if not candidate.isascii():
        return None
    try:
        return Stage(candidate.lower())
    except ValueError:
        return None
