"""`codexk8s agent run`: the program a run's pod or local process executes.

It holds only the run id, the callback URL and the run token. It fetches the brief, clones the
repository into a fresh workspace, checks out the work branch, hands the work to the engine
(Codex, or the agent's own command), commits and pushes the work branch (reviewer runs push
nothing: their final message is the review), and reports the result. Every line it prints is
stored as the run's log; secrets are masked out of all of them.

Exit codes: 0 succeeded, 1 failed (reason reported to the control plane), 3 the control plane
could not be reached or refused the run (nothing could be reported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from codexk8s.agent.brief import BriefPreconditionError, ControlPlane, ControlPlaneError
from codexk8s.agent.codex import EngineOutcome, run_codex
from codexk8s.agent.events import Progress, RunLog, Usage
from codexk8s.agent.git import GitError, Identity, Workspace
from codexk8s.config import ENV_PREFIX, Settings
from codexk8s.domain.runs import AgentFailure

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREPORTED = 3
BRIEF_FILE_ENV = "CODEXK8S_BRIEF_FILE"
SUMMARY_FILE_ENV = "CODEXK8S_SUMMARY_FILE"
COMMAND_OUTPUT_TAIL = 20


class RunFailure(Exception):
    def __init__(self, reason: AgentFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class AgentRunner:
    def __init__(self, *, run_id: int, callback_url: str, token: str, root: Path) -> None:
        self.run_id = run_id
        self.callback_url = callback_url.rstrip("/")
        self.token = token
        self.root = root
        self.log = RunLog()
        self.log.add_secret(token)
        self.control = ControlPlane(callback_url=callback_url, run_id=run_id, token=token)
        self.usage = Usage()
        self.model: str | None = None

    # --- reporting ------------------------------------------------------------------------------

    def emit(self, progress: Progress) -> None:
        payload = progress.as_payload()
        payload["message"] = self.log.mask(str(payload["message"]))
        self.control.post_progress(payload)

    def _report(self, payload: dict[str, Any]) -> bool:
        payload = {**payload, "usage": self.usage.as_dict(), "model": self.model}
        try:
            self.control.post_result(payload)
        except ControlPlaneError as exc:
            self.log(f"runner: could not report the result: {exc}")
            return False
        return True

    def fail(self, reason: AgentFailure, message: str) -> int:
        message = self.log.mask(message)
        self.log(f"runner: failed ({reason.value}): {message}")
        reported = self._report({"outcome": "failed", "reason": reason.value, "message": message})
        return EXIT_FAILED if reported else EXIT_UNREPORTED

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            brief = self.control.fetch_brief()
        except BriefPreconditionError as exc:
            return self.fail(AgentFailure.PRECONDITION, str(exc))
        except ControlPlaneError as exc:
            self.log(f"runner: cannot get the brief of run {self.run_id}: {exc}")
            return EXIT_UNREPORTED
        repository = brief["repository"]
        self.log.add_secret(repository.get("token"))
        self.model = brief.get("model")
        self.log(
            f"runner: run {self.run_id} · {brief['stage']} · issue #{brief.get('issue_number')} · "
            f"{repository['full_name']} · engine {brief['agent']['engine']} · model "
            f"{brief['model']} ({brief['reasoning_effort']})"
        )
        try:
            return self._work(brief)
        except RunFailure as exc:
            return self.fail(exc.reason, exc.message)
        except GitError as exc:
            reason = AgentFailure.PUSH_REJECTED if exc.is_push_rejected else AgentFailure.GIT_ERROR
            return self.fail(reason, str(exc))
        except Exception as exc:  # a bug or a broken image: still tell the control plane why
            self.log(traceback.format_exc())
            return self.fail(AgentFailure.AGENT_ERROR, f"runner error: {type(exc).__name__}: {exc}")
        finally:
            self.control.close()

    def _work(self, brief: dict[str, Any]) -> int:
        repository = brief["repository"]
        workspace = Workspace(
            self.root / "workspace", token=repository.get("token"), mask=self.log.mask
        )
        if workspace.path.exists():
            shutil.rmtree(workspace.path)
        self.log(f"runner: cloning {repository['full_name']}")
        workspace.clone(repository["clone_url"])
        base = repository.get("base_branch") or workspace.default_branch()
        work = repository["work_branch"]
        pull_request = brief.get("pull_request")
        if not brief.get("push", True) and pull_request:
            # A review reads the pull request as it is; nothing is committed.
            start = workspace.checkout_pull_request(pull_request["head_ref"])
            self.log(f"runner: reviewing pull request #{pull_request['number']} at {start[:12]}")
        else:
            start = workspace.checkout_work_branch(base=base, work=work)
            self.log(f"runner: on {work} at {start[:12]} (base {base})")
        self.emit(Progress("workspace", f"cloned; working from {start[:12]} (base {base})"))

        if brief["agent"]["engine"] == "codex":
            outcome = run_codex(
                brief, workspace=workspace.path, codex_home=self.root / "codex-home",
                base_url=self.callback_url + brief["provider"]["path"], token=self.token,
                log=self.log, emit=self.emit,
            )  # fmt: skip
        else:
            outcome = self._run_command(brief, workspace.path)
        self.usage = outcome.usage
        if not outcome.is_ok:
            assert outcome.failure is not None
            raise RunFailure(outcome.failure, outcome.message or "the engine failed")
        summary = outcome.summary or "(the agent left no summary)"

        if not brief.get("push", True):
            self.log("runner: review run: nothing is pushed; the summary is the review")
            return self._succeed(brief, summary=summary, base=base, branch=None,
                                 head=workspace.head(),
                                 changed=workspace.changed_files(base=base))  # fmt: skip
        identity = Identity(brief["agent"]["git_name"], brief["agent"]["git_email"])
        committed = workspace.commit_all(message=self._commit_message(brief, summary),
                                         identity=identity)  # fmt: skip
        head = workspace.head()
        changed = workspace.changed_files(base=base)
        if head == start and not committed:
            self.log("runner: the agent changed nothing; nothing to push")
            return self._succeed(brief, summary=summary, base=base, branch=None, head=head,
                                 changed=[])  # fmt: skip
        self.log(f"runner: committed {head[:12]} ({len(changed)} files differ from {base})")
        workspace.push(work)
        self.log(f"runner: pushed {work}")
        self.emit(Progress("push", f"pushed {work} at {head[:12]}", {"files": len(changed)}))
        return self._succeed(brief, summary=summary, base=base, branch=work, head=head,
                             changed=changed)  # fmt: skip

    @staticmethod
    def _target(brief: dict[str, Any]) -> str:
        number = brief.get("issue_number")
        return f"#{number}" if number is not None else f"run {brief['run_id']}"

    def _commit_message(self, brief: dict[str, Any], summary: str) -> str:
        title = brief.get("issue_title") or f"issue {self._target(brief)}"
        return f"{brief['stage']}: {title} ({self._target(brief)})\n\n{summary}\n"

    def _succeed(
        self, brief: dict[str, Any], *, summary: str, base: str, branch: str | None, head: str,
        changed: list[str],
    ) -> int:  # fmt: skip
        is_review = not brief.get("push", True)
        number = brief.get("issue_number")
        title = brief.get("issue_title") or f"Issue {self._target(brief)}"
        closing = "Closes" if brief["stage"] == "dev" else "Refs"
        files = "\n".join(f"- `{path}`" for path in changed[:50])
        body = f"{summary}\n\n" + (f"Changed files:\n{files}\n\n" if files else "")
        body += f"{closing} #{number}\n" if number is not None else ""
        result = {
            "outcome": "succeeded",
            "branch": branch,
            "base_branch": base,
            "head_sha": head,
            "changed_files": changed,
            "summary": summary,
            "pr_title": None if is_review or branch is None else f"[{brief['stage']}] {title}",
            "pr_body": None if is_review or branch is None else body,
            "review_body": summary if is_review else None,
        }
        if not self._report(result):
            return EXIT_UNREPORTED
        self.log("runner: done")
        return EXIT_OK

    # --- the command engine ---------------------------------------------------------------------

    def _run_command(self, brief: dict[str, Any], workspace: Path) -> EngineOutcome:
        """Run the agent's own command in the workspace; the brief (without the repository
        token) is a JSON file named by CODEXK8S_BRIEF_FILE, the model is reachable through the
        control plane's proxy with the standard OPENAI_BASE_URL / OPENAI_API_KEY variables."""
        command = brief["agent"]["command"] or []
        if not command:
            raise RunFailure(
                AgentFailure.PRECONDITION, "the agent's engine is command but it has none"
            )
        public = {**brief, "repository": {**brief["repository"], "token": None}}
        brief_file = self.root / "brief.json"
        summary_file = self.root / "summary.md"
        brief_file.write_text(json.dumps(public, indent=2))
        summary_file.unlink(missing_ok=True)
        # The command sees no CODEXK8S_* variable; its model key is the run token, which only
        # opens this run's proxy.
        env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
        env.update({
            BRIEF_FILE_ENV: str(brief_file), SUMMARY_FILE_ENV: str(summary_file),
            "OPENAI_BASE_URL": self.callback_url + brief["provider"]["path"],
            "OPENAI_API_KEY": self.token,
        })  # fmt: skip
        self.log(f"runner: running the agent's command: {' '.join(command)}")
        try:
            process = subprocess.Popen(
                command, cwd=workspace, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            )  # fmt: skip
        except OSError as exc:
            raise RunFailure(AgentFailure.AGENT_ERROR, f"cannot start the command: {exc}") from None
        tail: list[str] = []
        assert process.stdout
        for line in process.stdout:
            self.log(f"| {line.rstrip()}")
            tail = [*tail[-COMMAND_OUTPUT_TAIL:], line.rstrip()]
        code = process.wait()
        if code != 0:
            return EngineOutcome(
                summary=None, failure=AgentFailure.AGENT_ERROR,
                message=f"the agent's command exited with code {code}",
            )  # fmt: skip
        summary = summary_file.read_text().strip() if summary_file.exists() else ""
        if not summary:
            summary = next((line for line in reversed(tail) if line.strip()), "")
        return EngineOutcome(summary=self.log.mask(summary) or None)


def run_from_settings(settings: Settings) -> int:
    """Entry point of `codexk8s agent run`."""
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for name, value in (
            ("run_id", settings.run_id), ("callback_url", settings.callback_url),
            ("run_token", settings.run_token),
        )
        if not value
    ]  # fmt: skip
    if missing:
        print(
            f"error: {', '.join(missing)} must be set (dispatch sets them for a run's workload)",
            file=sys.stderr,
        )
        return 2
    assert settings.run_id and settings.callback_url and settings.run_token
    root = (settings.agent_workdir or Path.cwd()).resolve()
    runner = AgentRunner(
        run_id=settings.run_id, callback_url=settings.callback_url,
        token=settings.run_token.get_secret_value(), root=root,
    )  # fmt: skip
    return runner.run()
