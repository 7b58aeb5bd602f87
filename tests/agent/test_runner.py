"""`codexk8s agent run` end to end: the real Codex binary against a loopback OpenAI Responses
server (through the control plane's model proxy), a real git remote, the control plane's
internal API on PostgreSQL, and the run settled by the control loop's reconcile step."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import select

from codexk8s.adapters.local.runtime import LocalRuntime
from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import Agent
from codexk8s.domain.runtime import FailureReason, WorkloadPhase, WorkloadStatus
from codexk8s.jobs.control_loop import ControlLoop, ControlLoopTimings
from codexk8s.services import agents, dispatch, reconcile, run_logs
from codexk8s.services.run_brief import RESULT_KEYS
from tests.agent.conftest import (
    REPO_TOKEN,
    ClaimedRun,
    Remote,
    claim,
    create_run,
    events,
    git,
    load_run,
    output_of,
    run_agent,
    set_engine,
)
from tests.agent.git_http_server import serve_git_http
from tests.codex_server import ScriptedResponses
from tests.conftest import reset_caches


def settle(claimed: ClaimedRun, exit_code: int) -> str | None:
    """What the control loop does when the workload ends: apply the runtime's final status."""
    phase = WorkloadPhase.SUCCEEDED if exit_code == 0 else WorkloadPhase.FAILED
    reason = None if exit_code == 0 else FailureReason.EXIT_CODE
    return reconcile.apply_workload_status(
        get_engine(),
        WorkloadStatus(run_id=claimed.run_id, phase=phase, exit_code=exit_code, reason=reason),
    )


def test_codex_run_pushes_the_work_branch_and_reports_the_result(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    with session_scope() as session:
        agent = session.exec(select(Agent).where(Agent.key == "dev")).one()
        agent.github_login, agent.github_email = "octo-dev-bot", "dev-bot@example.com"
    claimed = claim(create_run(issue=7), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    output = output_of(process)
    assert process.returncode == 0, output

    # The branch is on the remote with the file Codex's shell call wrote, by the agent.
    assert "codex/issue-7" in remote.branches()
    assert remote.show("codex/issue-7", "HELLO.md") == "hello from codex\n"
    author, subject = remote.log("codex/issue-7").splitlines()[0].split("|")
    assert author == "octo-dev-bot <dev-bot@example.com>"
    assert subject == "dev: Say hello (#7)"

    # Codex talked to the model only through the control plane's proxy, with the real key.
    assert len(openai_api.requests) == 2
    assert all(
        r.headers["authorization"] == f"Bearer {openai_api.api_key}" for r in openai_api.requests
    )
    assert openai_api.requests[0].body["model"] == "gpt-5"
    assert "Say hello" in str(openai_api.requests[0].body["input"])

    # Readable log lines: the command, its exit code, the agent's message, the push.
    assert "$ /bin/bash -lc" in output and "HELLO.md" in output
    assert "exit 0" in output
    assert "agent: Added HELLO.md with a greeting." in output
    assert "runner: pushed codex/issue-7" in output

    run = load_run(claimed.run_id)
    assert run.summary == "Added HELLO.md with a greeting."
    # Two model turns at 1200/200/300/100 tokens each.
    assert (run.tokens_input, run.tokens_cached, run.tokens_output, run.tokens_reasoning) == (
        2400, 400, 600, 200,
    )  # fmt: skip
    # gpt-5: (2400-400)*1.25 + 400*0.125 + 600*10.0 per million.
    assert run.cost_usd == Decimal("0.008550")

    # What Codex reported matches what the proxy metered.
    (usage,) = events(claimed.run_id, "run_usage")
    assert usage["reported"] == usage["metered"] == {
        "input": 2400, "cached": 400, "output": 600, "reasoning": 200,
    }  # fmt: skip

    (result,) = events(claimed.run_id, "run_result")
    assert set(result) == set(RESULT_KEYS)
    assert result["branch"] == "codex/issue-7"
    assert result["base_branch"] == "main"
    assert result["changed_files"] == ["HELLO.md"]
    assert result["head_sha"] == remote.sha("codex/issue-7")
    assert result["pr_title"] == "[dev] Say hello"
    assert "Closes #7" in result["pr_body"]
    assert result["review_body"] is None
    kinds = [event["kind"] for event in events(claimed.run_id, "run_progress")]
    assert "command" in kinds and "message" in kinds and "push" in kinds

    # The control loop settles the run; the token dies with it.
    assert settle(claimed, process.returncode) == "succeeded"
    run = load_run(claimed.run_id)
    assert run.status == "succeeded"
    assert run.run_token_hash is None

    # Secrets never reach the output: not the run token, the repository token or the key.
    for secret in (claimed.token, REPO_TOKEN, openai_api.api_key):
        assert secret not in output


def test_model_rate_limit_is_retried_by_the_engine(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    openai_api.fail_statuses = [429, 429]
    claimed = claim(create_run(issue=8), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    assert process.returncode == 0, output_of(process)
    # Two refused requests, then the two turns of the session.
    assert len(openai_api.requests) == 4
    assert remote.show("codex/issue-8", "HELLO.md") == "hello from codex\n"
    assert settle(claimed, process.returncode) == "succeeded"


def test_persistent_model_outage_fails_with_its_reason(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    openai_api.always_fail = 500
    claimed = claim(create_run(issue=9), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    output = output_of(process)
    assert process.returncode == 1, output
    assert "runner: failed (model_unavailable)" in output
    # Codex retried each session's request, and the runner started the session once more.
    assert "starting the session again" in output
    assert len(openai_api.requests) > 2
    assert "codex/issue-9" not in remote.branches()
    (failure,) = events(claimed.run_id, "run_failure_reported")
    assert failure["reason"] == "model_unavailable"
    assert events(claimed.run_id, "run_result") == []

    # The control loop sees a non-zero exit and keeps the reason the runner reported.
    assert settle(claimed, process.returncode) == "failed"
    run = load_run(claimed.run_id)
    assert (run.status, run.status_reason) == ("failed", "model_unavailable")
    assert run.run_token_hash is None


def test_missing_model_key_fails_the_run_at_dispatch(
    control_plane: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODEXK8S_OPENAI_API_KEY")
    reset_caches()
    run_id = create_run(issue=10)
    claims = dispatch.claim_runs(get_engine(), owner="test", callback_url=control_plane)
    assert claims == []  # nothing launched, no slot taken
    run = load_run(run_id)
    assert (run.status, run.status_reason) == ("failed", "precondition")
    assert "CODEXK8S_OPENAI_API_KEY" in (run.status_message or "")


def test_key_removed_after_dispatch_fails_the_run_as_precondition(
    control_plane: str, remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed = claim(create_run(issue=11), control_plane)
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "")
    get_settings.cache_clear()
    process = run_agent(claimed, tmp_path / "run")
    assert process.returncode == 1, output_of(process)
    assert "runner: failed (precondition)" in process.stdout
    assert settle(claimed, process.returncode) == "failed"
    run = load_run(claimed.run_id)
    assert (run.status, run.status_reason) == ("failed", "precondition")
    assert "CODEXK8S_OPENAI_API_KEY" in (run.status_message or "")


COMMAND_AGENT = r"""
import json, os, pathlib
brief = json.loads(pathlib.Path(os.environ["CODEXK8S_BRIEF_FILE"]).read_text())
assert brief["repository"]["token"] is None
pathlib.Path("NOTES.md").write_text("notes for " + brief["issue_title"] + "\n")
print("model key I was given:", os.environ["OPENAI_API_KEY"])
print("model base:", os.environ["OPENAI_BASE_URL"])
print("env has run token var:", "CODEXK8S_RUN_TOKEN" in os.environ)
pathlib.Path(os.environ["CODEXK8S_SUMMARY_FILE"]).write_text("Wrote NOTES.md")
"""


def test_command_engine_runs_in_the_cloned_workspace(
    control_plane: str, remote: Remote, tmp_path: Path
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(COMMAND_AGENT)
    set_engine("dev", command=f"{sys.executable} {script}")
    claimed = claim(create_run(issue=12), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    output = output_of(process)
    assert process.returncode == 0, output
    assert remote.show("codex/issue-12", "NOTES.md") == "notes for Say hello\n"
    assert load_run(claimed.run_id).summary == "Wrote NOTES.md"
    # The command reaches the model only through this run's proxy; its key is masked in logs.
    assert f"model base: {control_plane}/api/v1/agent/runs/{claimed.run_id}/openai" in output
    assert "model key I was given: ********" in output
    assert "env has run token var: False" in output
    assert claimed.token not in output and REPO_TOKEN not in output

    # `agent set dev --engine codex` switches back: the workload is the runner driving Codex.
    set_engine("dev", engine="codex")
    with session_scope() as session:
        settings = agents.get_settings_for(session=session, key="dev")
    assert (settings.engine, settings.workload) == ("codex", agents.DEFAULT_COMMAND)


def test_reviewer_run_pushes_nothing_and_returns_the_review(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    # The pull request's head, as GitHub keeps it at refs/pull/<n>/head.
    seed = tmp_path / "pr"
    git("clone", "--quiet", str(remote.bare), str(seed), cwd=tmp_path)
    (seed / "feature.txt").write_text("from the pull request\n")
    git("add", "feature.txt", cwd=seed)
    git("commit", "--quiet", "-m", "feature", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:refs/pull/13/head", cwd=seed)
    openai_api.command = "cat feature.txt"
    openai_api.final_message = "Looks good; one nit in feature.txt."
    run_id = create_run(issue=13, stage="review", agent_key="reviewer", pr_number=13)
    claimed = claim(run_id, control_plane)
    process = run_agent(claimed, tmp_path / "run")
    output = output_of(process)
    assert process.returncode == 0, output
    assert "runner: reviewing pull request #13" in output
    assert "  | from the pull request" in output  # Codex's command ran on the PR's files
    assert remote.branches() == ["main"]  # nothing pushed
    (result,) = events(claimed.run_id, "run_result")
    assert result["review_body"] == "Looks good; one nit in feature.txt."
    assert result["branch"] is None and result["pr_title"] is None
    assert result["changed_files"] == ["feature.txt"]
    assert result["head_sha"] == remote.sha("refs/pull/13/head")


def test_rejected_push_fails_with_push_rejected(
    control_plane: str, remote: Remote, tmp_path: Path
) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    claimed = claim(create_run(issue=14), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    assert process.returncode == 1, output_of(process)
    assert settle(claimed, process.returncode) == "failed"
    assert load_run(claimed.run_id).status_reason == "push_rejected"


async def test_control_loop_runs_the_runner_in_the_local_runtime(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    """The whole loop on one machine: dispatch → local runtime → `codexk8s agent run` → Codex →
    push → result → the control loop settles the run and stores the runner's log lines."""
    runtime = LocalRuntime(
        tmp_path / "runs", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        poll_interval=0.05, kill_grace_seconds=1,
    )  # fmt: skip
    control_loop = ControlLoop(
        engine=get_engine(), runtime=runtime, callback_url=control_plane,
        timings=ControlLoopTimings(dispatch_seconds=0.1, leader_seconds=0.2, sweep_seconds=1,
                              lease_seconds=1, cleanup_seconds=3600, cancel_grace_seconds=2),
    )  # fmt: skip
    run_id = create_run(issue=21)
    await control_loop.start()
    try:
        deadline = time.monotonic() + 240
        while load_run(run_id).status not in ("succeeded", "failed", "canceled"):
            assert time.monotonic() < deadline, "the run did not finish"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # the log pump's last round
    finally:
        await control_loop.stop()
    run = load_run(run_id)
    stored = [line.line for line in run_logs.read_lines(get_engine(), run_id=run_id)]
    assert (run.status, run.status_reason) == ("succeeded", None), stored
    assert remote.show("codex/issue-21", "HELLO.md") == "hello from codex\n"
    assert run.summary == "Added HELLO.md with a greeting." and run.tokens_output == 600
    assert run.run_token_hash is None
    assert "runner: pushed codex/issue-21" in stored
    assert not any(REPO_TOKEN in line or openai_api.api_key in line for line in stored)


def test_repository_token_authenticates_git_over_http_and_stays_out_of_the_clone(
    control_plane: str, remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a smart-HTTP remote that wants a GitHub-style token: clone and push succeed, the
    token never appears in URLs, `.git/config` or the output."""
    script = tmp_path / "agent.py"
    script.write_text(COMMAND_AGENT)
    set_engine("dev", command=f"{sys.executable} {script}")
    with serve_git_http(remote.root, REPO_TOKEN) as (git_url, git_log):
        monkeypatch.setenv("CODEXK8S_GITHUB_GIT_URL", git_url)
        get_settings.cache_clear()
        claimed = claim(create_run(issue=30), control_plane)
        process = run_agent(claimed, tmp_path / "run")
    output = output_of(process)
    assert process.returncode == 0, output
    assert remote.show("codex/issue-30", "NOTES.md") == "notes for Say hello\n"
    assert any("git-receive-pack" in url for url in git_log.urls)  # the push went over HTTP
    assert git_log.refused == 0  # the header was there from the first request
    assert not any(REPO_TOKEN in url for url in git_log.urls)
    config = (tmp_path / "run" / "workspace" / ".git" / "config").read_text()
    assert REPO_TOKEN not in config and git_url in config
    assert REPO_TOKEN not in output
