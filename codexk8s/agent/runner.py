"""`codexk8s agent run`: the program a run's pod or local process executes.

It holds only the run id, the callback URL and the run token. It fetches the brief, clones the
repository into a fresh workspace, checks out the work branch, puts the project documents of its
role into the prompt (services.yaml `docs`, read from the clone), hands the work to the engine
(Codex, or the agent's own command), commits and pushes the work branch (reviewer runs and
discussion turns push nothing: their final message is the review or the answer), leaves its
Codex session with the control plane for the next run of its lineage, and reports the result.
A revise run or a later discussion turn first fetches the session it continues and resumes it.
Every line it prints is stored as the run's log; secrets are masked out of all of them.

Exit codes: 0 succeeded, 1 failed (reason reported to the control plane), 3 the control plane
could not be reached or refused the run (nothing could be reported).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from codexk8s.agent.brief import BriefPreconditionError, ControlPlane, ControlPlaneError
from codexk8s.agent.codex import EngineOutcome, Resume, run_codex
from codexk8s.agent.documents import DocumentsOutcome, collect
from codexk8s.agent.events import MASK, Progress, RunLog, Usage
from codexk8s.agent.git import GitError, Identity, Workspace
from codexk8s.config import ENV_PREFIX, Settings
from codexk8s.domain.runs import AgentFailure, RunMode
from codexk8s.domain.sessions import is_session_path, is_thread_id

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
        self.secrets: list[str] = [token]

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
        if repository.get("token"):
            self.secrets.append(repository["token"])
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
        is_discussion = brief.get("mode") == RunMode.DISCUSSION.value
        if not brief.get("push", True) and pull_request:
            # A review (or a discussion on a pull request) reads it as it is; nothing is
            # committed.
            start = workspace.checkout_pull_request(pull_request["head_ref"])
            doing = "discussing" if is_discussion else "reviewing"
            self.log(f"runner: {doing} pull request #{pull_request['number']} at {start[:12]}")
        elif is_discussion:
            start = workspace.checkout_detached(base)
            self.log(f"runner: discussing on {base} at {start[:12]}; nothing will be pushed")
        else:
            start = workspace.checkout_work_branch(base=base, work=work)
            self.log(f"runner: on {work} at {start[:12]} (base {base})")
        self.emit(Progress("workspace", f"cloned; working from {start[:12]} (base {base})"))
        documents = self._place_documents(brief, workspace.path)

        codex_home = self.root / "codex-home"
        if brief["agent"]["engine"] == "codex":
            resume, offered = self._restore_session(brief, codex_home)
            if brief.get("mcp"):
                brief = {
                    **brief,
                    "mcp": {**brief["mcp"], "url": self.callback_url + brief["mcp"]["path"]},
                }
            outcome = run_codex(
                brief, workspace=workspace.path, codex_home=codex_home,
                base_url=self.callback_url + brief["provider"]["path"], token=self.token,
                log=self.log, emit=self.emit, resume=resume,
            )  # fmt: skip
        else:
            offered = None
            outcome = self._run_command(brief, workspace.path)
        self.usage = outcome.usage
        self._record_documents(documents, resumed=outcome.resumed)
        if not outcome.is_ok:
            assert outcome.failure is not None
            raise RunFailure(outcome.failure, outcome.message or "the engine failed")
        if brief["agent"]["engine"] == "codex":
            self._leave_session(brief, outcome, codex_home, offered if outcome.resumed else None)
        summary = outcome.summary or "(the agent left no summary)"

        if not brief.get("push", True):
            if is_discussion:
                if workspace.is_dirty():
                    self.log("runner: the agent changed files during a discussion; not pushed")
                self.log("runner: discussion turn: nothing is pushed; the summary is the answer")
                return self._succeed(brief, summary=summary, base=base, branch=None,
                                     head=workspace.head(), changed=[])  # fmt: skip
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

    # --- project documents ----------------------------------------------------------------------

    def _place_documents(self, brief: dict[str, Any], workspace: Path) -> DocumentsOutcome | None:
        """Put the documents of this run's role where the brief's marker is in its prompt."""
        spec = brief.get("documents") or {}
        marker = spec.get("marker")
        if not marker:
            return None
        try:
            outcome = collect(
                workspace, services_yaml=str(spec.get("services_yaml") or "services.yaml"),
                role=str(spec.get("role") or brief["agent"]["key"]),
                max_chars=int(spec.get("max_chars") or 0),
            )  # fmt: skip
        except OSError as exc:
            outcome = DocumentsOutcome(problems=[f"cannot read the documents: {exc}"])
        # The marker is replaced, never scanned for again, so document text stays as written.
        brief["prompt"] = str(brief["prompt"]).replace(marker, outcome.block)
        included = [d for d in outcome.documents if d.skipped is None]
        if included:
            names = ", ".join(d.path for d in included)
            self.log(f"runner: project documents for {spec.get('role')}: {names}")
        for problem in outcome.problems:
            self.log(f"runner: services.yaml: {problem}")
        return outcome

    def _record_documents(self, documents: DocumentsOutcome | None, *, resumed: bool) -> None:
        if documents is None:
            return
        payload = documents.as_payload()
        if resumed:
            # The continuation carries only what is new: the documents came with the session.
            payload["documents"], payload["chars"] = [], 0
        payload["resumed"] = resumed
        try:
            self.control.post_documents(payload)
        except ControlPlaneError as exc:
            self.log(f"runner: could not record the project documents: {exc}")

    # --- resumable sessions ---------------------------------------------------------------------

    def _restore_session(
        self, brief: dict[str, Any], codex_home: Path
    ) -> tuple[Resume | None, dict[str, Any] | None]:
        """Fetch the session the brief offers and put it under CODEX_HOME; None (with a note in
        the log and the timeline) when that cannot be done, so the run starts fresh."""
        offered = (brief.get("session") or {}).get("resume")
        if not offered:
            return None, None
        try:
            stored = self.control.fetch_session(int(offered["id"]))
        except ControlPlaneError as exc:
            stored, problem = None, f"cannot fetch it: {exc}"
        else:
            problem = "the control plane no longer has it"
        if stored is not None and not (
            is_thread_id(stored.thread_id) and is_session_path(stored.path, stored.thread_id)
        ):
            stored, problem = None, "it came with an invalid thread or path"
        if stored is not None:
            try:
                raw = gzip.decompress(stored.data)
            except (OSError, EOFError) as exc:
                stored, problem = None, f"it does not decompress: {exc}"
        if stored is None:
            note = f"session of run {offered.get('from_run')} not resumed ({problem}); fresh start"
            self.log(f"runner: {note}")
            self.emit(Progress("session", note))
            return None, None
        target = codex_home / stored.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        self.log(
            f"runner: resuming the session of run {offered.get('from_run')} "
            f"(version {stored.version}, {len(stored.data)} bytes)"
        )
        self.emit(Progress("session", f"resuming session v{stored.version} of run "
                                      f"{offered.get('from_run')}"))  # fmt: skip
        prompt = str(offered.get("prompt") or brief["prompt"])
        return Resume(stored.thread_id, prompt, baseline=_thread_usage(raw)), offered

    def _leave_session(
        self, brief: dict[str, Any], outcome: EngineOutcome, codex_home: Path,
        parent: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        """Upload the session the work ran in, for the next run of this lineage (best effort:
        without it the next run starts fresh)."""
        thread = outcome.thread_id
        if not thread or not is_thread_id(thread):
            return
        found = sorted((codex_home / "sessions").glob(f"*/*/*/rollout-*-{thread}.jsonl"))
        if not found:
            self.log(f"runner: no rollout of session {thread} to keep")
            return
        path = found[-1].relative_to(codex_home).as_posix()
        raw = found[-1].read_bytes()
        for secret in self.secrets:
            if secret and len(secret) >= 8:
                raw = raw.replace(secret.encode(), MASK.encode())
        data = gzip.compress(raw, mtime=0)
        limit = int((brief.get("session") or {}).get("max_bytes") or 0)
        if limit and len(data) > limit:
            self.log(f"runner: the session is {len(data)} bytes, above {limit}: not kept")
            return
        try:
            stored = self.control.put_session(
                data, thread_id=thread, path=path,
                parent_id=int(parent["id"]) if parent else None,
            )  # fmt: skip
        except ControlPlaneError as exc:
            self.log(f"runner: could not keep the session: {exc}")
            return
        self.log(f"runner: kept session {thread} as version {stored.get('version')}")

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
        is_discussion = brief.get("mode") == RunMode.DISCUSSION.value
        # A discussion's answer is its summary (posted as a comment), not a review.
        is_review = not brief.get("push", True) and not is_discussion
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


def _thread_usage(rollout: bytes) -> Usage:
    """The usage a session's thread had reached (its last `token_count` event)."""
    usage = Usage()
    for line in rollout.splitlines():
        if b'"token_count"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        payload = event.get("payload") if isinstance(event, dict) else None
        info = payload.get("info") if isinstance(payload, dict) else None
        total = info.get("total_token_usage") if isinstance(info, dict) else None
        if isinstance(total, dict):
            usage = Usage()
            usage.add(total)
    return usage


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
