"""The policy rules of agents that ask: defaults, who may answer, `/answer` comments."""

from __future__ import annotations

from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.authorization import Principal
from codexk8s.domain.run_requests import (
    ApprovalPolicy,
    Tool,
    agent_label_problem,
    approval_decision,
    effective_policy,
    may_answer,
    parse_answer_command,
)

USER = Principal(user_id=1, platform_role=PlatformRole.USER)
ADMIN = Principal(user_id=2, platform_role=PlatformRole.ADMIN)


def test_policies_default_per_tool_and_a_question_always_needs_a_person() -> None:
    assert effective_policy(Tool.ASK, None) is ApprovalPolicy.DELEGATED
    assert effective_policy(Tool.REQUEST_APPROVAL, {}) is ApprovalPolicy.OWNER
    assert effective_policy(Tool.PAST_RUNS, None) is ApprovalPolicy.NONE
    assert effective_policy(Tool.ASK, {"ask": "none"}) is ApprovalPolicy.DELEGATED
    assert effective_policy(Tool.ASK, {"ask": "bogus"}) is ApprovalPolicy.DELEGATED
    assert effective_policy(Tool.REQUEST_APPROVAL, {"request_approval": "none"}) is (
        ApprovalPolicy.NONE
    )


def test_owner_needs_a_project_admin_delegated_any_writer() -> None:
    owner, delegated = ApprovalPolicy.OWNER, ApprovalPolicy.DELEGATED
    assert may_answer(USER, owner, ProjectRole.ADMIN)
    assert not may_answer(USER, owner, ProjectRole.READ_WRITE)
    assert may_answer(USER, delegated, ProjectRole.READ_WRITE)
    assert not may_answer(USER, delegated, ProjectRole.READ)
    assert not may_answer(USER, delegated, None)
    assert may_answer(ADMIN, owner, None)  # platform admins act on every project
    assert not may_answer(None, delegated, ProjectRole.ADMIN)


def test_answer_commands_in_comments() -> None:
    assert parse_answer_command("/answer PostgreSQL, please") == (None, "PostgreSQL, please")
    assert parse_answer_command("Thanks!\n  /answer #12 approve ship it") == (12, "approve ship it")
    assert parse_answer_command("/answered it already") is None
    assert parse_answer_command("/answer   ") is None
    assert parse_answer_command("see /answer x") is None
    assert approval_decision("Approve") == (True, "")
    assert approval_decision("deny too risky") == (False, "too risky")
    assert approval_decision("maybe") is None


def test_agents_may_not_touch_the_labels_that_steer_runs() -> None:
    assert agent_label_problem("bug") is None
    for label in ("run:dev", "RUN:plan", "need:reviewer", "state:in-review", "mode:discussion"):
        assert "codexk8s's own labels" in (agent_label_problem(label) or ""), label
    assert agent_label_problem("") and agent_label_problem("x" * 51)
