"""Drives OpenAI's Codex CLI (`codex exec --json`, the binary pinned by `openai-codex-cli-bin`)
in the run's workspace, against the control plane's model proxy.

Codex retries each model request itself (with backoff, honouring Retry-After); when a session
still fails on a transient model error before it did anything, the runner starts it once more
after a pause. Failures are classified into the run's status reason.

A run that continues an earlier one (a revise run, a later discussion turn) resumes that run's
session (`codex exec ... resume <thread> -`, the rollout file restored under CODEX_HOME) with a
prompt that says only what is new. When Codex does not take the session up (no `thread.started`
for that thread: a missing, damaged or foreign rollout), the runner says so and starts a fresh
session with the full prompt. Codex reports a resumed thread's usage since its very start, so
the usage the earlier runs already paid for is taken off.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexk8s.agent.events import EventTranslator, Progress, RunLog, Usage
from codexk8s.domain.runs import AgentFailure

PROVIDER = "codexk8s"
TOKEN_ENV = "CODEXK8S_RUN_TOKEN"  # Codex sends it as the bearer; the proxy swaps in the key
REQUEST_MAX_RETRIES = 4
STREAM_MAX_RETRIES = 4
STREAM_IDLE_TIMEOUT_MS = 300_000
MCP_STARTUP_TIMEOUT_SECONDS = 30
SESSION_RETRY_DELAYS = (10.0,)
TRANSIENT = frozenset(
    {AgentFailure.MODEL_RATE_LIMITED, AgentFailure.MODEL_UNAVAILABLE, AgentFailure.MODEL_TIMEOUT}
)
# What Codex's own environment may hold; everything else (secrets above all) stays out.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "LOGNAME", "SHELL", "TZ")
_STATUS = re.compile(r"\b(?:status:?|status code:?)\s*(\d{3})\b", re.IGNORECASE)


def codex_binary() -> Path:
    """The Codex binary shipped in the `openai-codex-cli-bin` wheel."""
    from codex_cli_bin import bundled_codex_path

    return bundled_codex_path()


def classify(message: str) -> AgentFailure:
    """Map Codex's error text to the run's failure reason."""
    text = message.lower()
    match = _STATUS.search(message)
    status = int(match.group(1)) if match else None
    if status == 429 or "too many requests" in text or "rate limit" in text:
        return AgentFailure.MODEL_RATE_LIMITED
    if (status is not None and status >= 500) or any(
        hint in text
        for hint in ("high demand", "internal server error", "service unavailable", "bad gateway")
    ):
        return AgentFailure.MODEL_UNAVAILABLE
    if "timeout" in text or "timed out" in text or "idle" in text:
        return AgentFailure.MODEL_TIMEOUT
    if status is not None and 400 <= status < 500:
        return AgentFailure.MODEL_ERROR
    if "unauthorized" in text or "api key" in text:
        return AgentFailure.MODEL_ERROR
    return AgentFailure.AGENT_ERROR


@dataclass(frozen=True, slots=True)
class Resume:
    """An earlier session to continue: its thread, the prompt saying what is new, and what the
    thread had used before (Codex counts a resumed thread's usage from its start)."""

    thread_id: str
    prompt: str
    baseline: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class EngineOutcome:
    """How the engine's work ended."""

    summary: str | None
    usage: Usage = field(default_factory=Usage)
    failure: AgentFailure | None = None
    message: str | None = None
    # The Codex session (thread) the work ran in; whether it resumed an earlier one; why a
    # resume offered by the brief did not happen.
    thread_id: str | None = None
    resumed: bool = False
    resume_failure: str | None = None
    # Whether Codex got as far as a turn (a session it could not open never does).
    started: bool = True

    @property
    def is_ok(self) -> bool:
        return self.failure is None


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def codex_argv(
    brief: dict[str, Any], *, workspace: Path, base_url: str, resume_thread: str | None = None
) -> list[str]:
    provider = (
        f"model_providers.{PROVIDER}={{name={_toml(PROVIDER)}, base_url={_toml(base_url)}, "
        f'env_key={_toml(TOKEN_ENV)}, wire_api="responses", '
        f"request_max_retries={REQUEST_MAX_RETRIES}, stream_max_retries={STREAM_MAX_RETRIES}, "
        f"stream_idle_timeout_ms={STREAM_IDLE_TIMEOUT_MS}}}"
    )
    argv = [
        str(codex_binary()), "exec", "--json", "--skip-git-repo-check", "--cd", str(workspace),
        "--model", str(brief["model"]),
        "-c", f"model_provider={PROVIDER}", "-c", provider,
        "-c", f"model_reasoning_effort={_toml(str(brief['reasoning_effort']))}",
        "-c", 'approval_policy="never"',
        # Commands the model runs see only core variables (PATH, HOME, ...), never the token.
        "-c", 'shell_environment_policy.inherit="core"',
    ]  # fmt: skip
    mcp = brief.get("mcp")
    if mcp and mcp.get("url"):
        # The platform's tools, reached with the run token like the model provider.
        server = f"mcp_servers.{mcp['name']}"
        argv += [
            "-c", f"{server}.url={_toml(str(mcp['url']))}",
            "-c", f"{server}.bearer_token_env_var={_toml(TOKEN_ENV)}",
            "-c", f"{server}.tool_timeout_sec={int(mcp['tool_timeout_seconds'])}",
            "-c", f"{server}.startup_timeout_sec={MCP_STARTUP_TIMEOUT_SECONDS}",
            # Codex would refuse every call under approval_policy=never: the platform applies
            # its own per-project policy to each call instead (services.run_requests).
            "-c", f'{server}.default_tools_approval_mode="approve"',
        ]  # fmt: skip
    if brief.get("sandbox") in ("workspace-write", "read-only"):
        argv += ["--sandbox", str(brief["sandbox"])]
    else:
        # In a pod the pod is the sandbox (non-root, no capabilities, default-deny network).
        argv.append("--dangerously-bypass-approvals-and-sandbox")
    if resume_thread is not None:
        argv += ["resume", resume_thread]
    argv.append("-")  # the prompt comes on stdin: no size limit, not in the process list
    return argv


def _codex_env(*, codex_home: Path, token: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
    env.update(HOME=str(codex_home), CODEX_HOME=str(codex_home), **{TOKEN_ENV: token})
    return env


def _session(
    brief: dict[str, Any],
    *,
    prompt: str,
    resume_thread: str | None,
    workspace: Path,
    codex_home: Path,
    base_url: str,
    token: str,
    log: RunLog,
    emit: Callable[[Progress], None],
) -> tuple[EventTranslator, int]:
    translator = EventTranslator(log, emit)
    codex_home.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        codex_argv(brief, workspace=workspace, base_url=base_url, resume_thread=resume_thread),
        cwd=workspace, env=_codex_env(codex_home=codex_home, token=token),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        bufsize=1,
    )  # fmt: skip
    assert process.stdin and process.stdout and process.stderr

    def relay_stderr() -> None:
        assert process.stderr
        for line in process.stderr:
            if line.strip() and "Reading additional input from stdin" not in line:
                log(f"codex stderr: {line.rstrip()}")
                if line.startswith("Error:"):
                    # Codex's own fatal error (a session it cannot open, a bad option).
                    translator.record.errors.append(log.mask(line.strip()))

    stderr_thread = threading.Thread(target=relay_stderr, daemon=True)
    stderr_thread.start()
    process.stdin.write(prompt)
    process.stdin.close()
    for line in process.stdout:
        translator.feed(line)
    code = process.wait()
    stderr_thread.join(timeout=5)
    return translator, code


def run_codex(
    brief: dict[str, Any],
    *,
    workspace: Path,
    codex_home: Path,
    base_url: str,
    token: str,
    log: RunLog,
    emit: Callable[[Progress], None],
    retry_delays: tuple[float, ...] = SESSION_RETRY_DELAYS,
    resume: Resume | None = None,
) -> EngineOutcome:
    """Do the brief's work with Codex: in RESUME's session when given and Codex takes it up,
    else in a fresh one with the brief's full prompt."""
    common: dict[str, Any] = {
        "workspace": workspace, "codex_home": codex_home, "base_url": base_url, "token": token,
        "log": log, "emit": emit, "retry_delays": retry_delays,
    }  # fmt: skip
    if resume is None:
        return _run(brief, prompt=str(brief["prompt"]), resume_thread=None, **common)
    log(f"codex: resuming session {resume.thread_id}")
    resumed = _run(brief, prompt=resume.prompt, resume_thread=resume.thread_id, **common)
    if resumed.started:
        if resumed.thread_id == resume.thread_id:
            resumed.usage = resumed.usage.minus(resume.baseline)
            resumed.resumed = True
        else:
            # It worked, in a thread of its own: done, but without the earlier context.
            resumed.resume_failure = f"Codex started thread {resumed.thread_id} instead"
        return resumed
    reason = resumed.message or "Codex did not continue the session"
    log(f"codex: could not resume session {resume.thread_id} ({reason}); starting a fresh one")
    emit(Progress("session", f"resume failed, fresh session: {reason}"[:300]))
    fresh = _run(brief, prompt=str(brief["prompt"]), resume_thread=None, **common)
    fresh.resume_failure = reason[:2000]
    for key, value in resumed.usage.as_dict().items():
        setattr(fresh.usage, key, getattr(fresh.usage, key) + value)
    return fresh


def _run(
    brief: dict[str, Any],
    *,
    prompt: str,
    resume_thread: str | None,
    workspace: Path,
    codex_home: Path,
    base_url: str,
    token: str,
    log: RunLog,
    emit: Callable[[Progress], None],
    retry_delays: tuple[float, ...],
) -> EngineOutcome:
    usage = Usage()
    attempt = 0
    while True:
        translator, code = _session(
            brief, prompt=prompt, resume_thread=resume_thread, workspace=workspace,
            codex_home=codex_home, base_url=base_url, token=token, log=log, emit=emit,
        )  # fmt: skip
        record = translator.record
        for key, value in record.usage.as_dict().items():
            setattr(usage, key, getattr(usage, key) + value)
        if resume_thread is not None and not record.turn_started:
            # Codex could not open the session (it says why on stderr): nothing to retry.
            message = record.turn_failed or (record.errors[-1] if record.errors else None)
            return EngineOutcome(
                summary=None, usage=usage, failure=AgentFailure.AGENT_ERROR,
                message=(message or f"codex exited with code {code}")[:2000],
                thread_id=record.thread_id, started=False,
            )  # fmt: skip
        if record.turn_completed and record.turn_failed is None and code == 0:
            return EngineOutcome(
                summary=record.final_message, usage=usage, thread_id=record.thread_id
            )
        message = record.turn_failed or (record.errors[-1] if record.errors else None)
        message = message or f"codex exited with code {code}"
        failure = classify(message)
        untouched = record.commands == 0 and not record.files
        if failure in TRANSIENT and untouched and attempt < len(retry_delays):
            log(f"codex: {failure.value}; starting the session again in {retry_delays[attempt]:g}s")
            time.sleep(retry_delays[attempt])
            attempt += 1
            continue
        return EngineOutcome(
            summary=record.final_message, usage=usage, failure=failure, message=message[:2000],
            thread_id=record.thread_id,
        )  # fmt: skip
