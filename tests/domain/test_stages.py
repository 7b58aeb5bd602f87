"""Tests for the stage model: the stage list, the role table and the document stages."""

from __future__ import annotations

import pytest

from codexk8s.domain.stages import (
    DOCUMENT_STAGES,
    REVIEW_STAGE,
    STAGE_ROLES,
    AgentRole,
    Stage,
    parse_stage,
    role_for,
)

EXPECTED_ROLES = {
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
}


def test_stages_are_exactly_the_fourteen_in_flow_order() -> None:
    assert [stage.value for stage in Stage] == list(EXPECTED_ROLES)


def test_member_names_use_underscores_for_hyphenated_stages() -> None:
    assert Stage.DOC_AUDIT == "doc-audit"
    assert Stage.SELF_IMPROVE == "self-improve"
    assert Stage["POSTDEPLOY"] is Stage.POSTDEPLOY


def test_agent_roles_are_exactly_the_eight() -> None:
    assert {role.value for role in AgentRole} == {
        "pm",
        "sa",
        "em",
        "dev",
        "reviewer",
        "qa",
        "sre",
        "km",
    }


def test_role_table_is_exactly_as_designed() -> None:
    assert {stage.value: role.value for stage, role in STAGE_ROLES.items()} == EXPECTED_ROLES


@pytest.mark.parametrize(("stage_value", "role_value"), sorted(EXPECTED_ROLES.items()))
def test_role_for_every_stage(stage_value: str, role_value: str) -> None:
    role = role_for(Stage(stage_value))
    assert isinstance(role, AgentRole)
    assert role == role_value


def test_no_stage_is_run_by_the_reviewer() -> None:
    assert AgentRole.REVIEWER not in STAGE_ROLES.values()


def test_role_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        STAGE_ROLES[Stage.DEV] = AgentRole.PM  # type: ignore[index]
    assert role_for(Stage.DEV) is AgentRole.DEV


def test_document_stages_are_the_non_code_stages() -> None:
    assert {stage.value for stage in DOCUMENT_STAGES} == {
        "intake",
        "vision",
        "prd",
        "arch",
        "design",
        "plan",
        "doc-audit",
        "rethink",
        "self-improve",
    }
    assert isinstance(DOCUMENT_STAGES, frozenset)
    for code_stage in (Stage.DEV, Stage.QA, Stage.RELEASE, Stage.POSTDEPLOY, Stage.OPS):
        assert code_stage not in DOCUMENT_STAGES


def test_review_stage_is_text_and_not_a_stage() -> None:
    assert REVIEW_STAGE == "review"
    assert type(REVIEW_STAGE) is str
    assert parse_stage(REVIEW_STAGE) is None
    assert REVIEW_STAGE not in {stage.value for stage in Stage}


def test_role_for_rejects_the_review_stage() -> None:
    with pytest.raises(KeyError):
        role_for(REVIEW_STAGE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dev", Stage.DEV),
        ("DEV", Stage.DEV),
        ("  Doc-Audit\t", Stage.DOC_AUDIT),
        ("self-improve", Stage.SELF_IMPROVE),
        ("self_improve", None),
        ("doc audit", None),
        ("", None),
        ("review", None),
        # U+212A KELVIN SIGN lower-cases to ASCII "k"; a look-alike must not name a stage.
        ("rethin\u212a", None),
        ("RETHINK", Stage.RETHINK),
    ],
)
def test_parse_stage(text: str, expected: Stage | None) -> None:
    assert parse_stage(text) is expected
