"""How Codex is started and how its failures are classified (pure, no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codexk8s.agent.codex import classify, codex_argv, codex_binary
from codexk8s.domain.runs import AgentFailure

BRIEF = {"model": "gpt-5", "reasoning_effort": "high", "sandbox": "workspace-write", "prompt": "p"}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        # Texts Codex 0.163.0 prints after its own retries (seen against tests/codex_server.py).
        ("exceeded retry limit, last status: 429 Too Many Requests",
         AgentFailure.MODEL_RATE_LIMITED),
        ("We\u2019re currently experiencing high demand, which may cause temporary errors.",
         AgentFailure.MODEL_UNAVAILABLE),
        ("exceeded retry limit, last status: 502 Bad Gateway", AgentFailure.MODEL_UNAVAILABLE),
        ("unexpected status 401 Unauthorized: Incorrect API key provided",
         AgentFailure.MODEL_ERROR),
        ("unexpected status 404 Not Found: Unknown error", AgentFailure.MODEL_ERROR),
        ("stream disconnected before completion: idle timeout waiting for SSE",
         AgentFailure.MODEL_TIMEOUT),
        ("codex exited with code 1", AgentFailure.AGENT_ERROR),
    ],
)  # fmt: skip
def test_failures_are_classified(message: str, reason: AgentFailure) -> None:
    assert classify(message) is reason


def test_argv_names_the_proxy_and_keeps_secrets_out() -> None:
    argv = codex_argv(BRIEF, workspace=Path("/w"), base_url="http://cp/api/v1/agent/runs/5/openai")
    assert Path(argv[0]) == codex_binary() and codex_binary().is_file()
    joined = " ".join(argv)
    assert 'base_url="http://cp/api/v1/agent/runs/5/openai"' in joined
    assert 'env_key="CODEXK8S_RUN_TOKEN"' in joined
    assert "--sandbox workspace-write" in joined and argv[-1] == "-"
    assert 'model_reasoning_effort="high"' in joined
    in_pod = codex_argv({**BRIEF, "sandbox": "danger-full-access"}, workspace=Path("/w"),
                        base_url="http://cp")  # fmt: skip
    assert "--dangerously-bypass-approvals-and-sandbox" in in_pod and "--sandbox" not in in_pod
