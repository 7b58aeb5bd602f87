"""Git operations on the run's workspace: clone, work branch, commit, push.

The repository token reaches git only through the environment of git's own processes (an
`http.extraheader` set with GIT_CONFIG_COUNT/KEY/VALUE), never through argv, the remote URL or
`.git/config`, so neither `ps`, the clone nor Codex's shell commands can see it.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_SECONDS = 600


class GitError(Exception):
    def __init__(self, message: str, *, is_push_rejected: bool = False) -> None:
        super().__init__(message)
        self.is_push_rejected = is_push_rejected


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    email: str


class Workspace:
    """A clone of the run's repository, driven with the `git` command line."""

    def __init__(
        self, path: Path, *, token: str | None, mask: Callable[[str], str] | None = None
    ) -> None:
        self.path = path
        self._token = token
        self._mask = mask or (lambda text: text)

    def _env(self, identity: Identity | None = None) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CODEXK8S_", "GIT_"))
        }
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
        if self._token:
            basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraheader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
            )
        if identity is not None:
            env.update(
                GIT_AUTHOR_NAME=identity.name, GIT_AUTHOR_EMAIL=identity.email,
                GIT_COMMITTER_NAME=identity.name, GIT_COMMITTER_EMAIL=identity.email,
            )  # fmt: skip
        return env

    def git(self, *args: str, identity: Identity | None = None, cwd: Path | None = None) -> str:
        try:
            completed = subprocess.run(
                ["git", *args], cwd=cwd or self.path, env=self._env(identity),
                capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT_SECONDS}s") from None
        except OSError as exc:
            raise GitError(f"cannot run git: {exc}") from None
        if completed.returncode != 0:
            detail = self._mask((completed.stderr or completed.stdout).strip())
            raise GitError(f"git {args[0]} failed ({completed.returncode}): {detail}")
        return completed.stdout

    def clone(self, url: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.git("clone", "--no-tags", "--", url, str(self.path), cwd=self.path.parent)

    def default_branch(self) -> str:
        """The remote's default branch (what `origin/HEAD` points at after the clone)."""
        try:
            ref = self.git("symbolic-ref", "--short", "refs/remotes/origin/HEAD").strip()
        except GitError:
            raise GitError("the remote has no default branch (is the repository empty?)") from None
        return ref.removeprefix("origin/")

    def has_remote_branch(self, branch: str) -> bool:
        try:
            self.git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}")
        except GitError:
            return False
        return True

    def checkout_work_branch(self, *, base: str, work: str) -> str:
        """Check out the work branch: the remote's copy if a previous run pushed one (revise),
        else a new branch from the base. Returns the commit the run starts from."""
        if not self.has_remote_branch(base):
            raise GitError(f"the base branch {base!r} does not exist on the remote")
        start = f"origin/{work}" if self.has_remote_branch(work) else f"origin/{base}"
        self.git("checkout", "-B", work, start)
        return self.head()

    def checkout_pull_request(self, head_ref: str) -> str:
        """Check out a pull request's head (detached) for reading; returns its commit."""
        local = "refs/remotes/origin/pull-head"
        self.git("fetch", "--no-tags", "origin", f"+{head_ref}:{local}")
        self.git("checkout", "--detach", local)
        return self.head()

    def checkout_detached(self, branch: str) -> str:
        """Check out the remote's BRANCH detached, for reading (a discussion); its commit."""
        if not self.has_remote_branch(branch):
            raise GitError(f"the branch {branch!r} does not exist on the remote")
        self.git("checkout", "--detach", f"origin/{branch}")
        return self.head()

    def is_dirty(self) -> bool:
        """Whether the work tree differs from its commit (untracked files included)."""
        return bool(self.git("status", "--porcelain").strip())

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def commit_all(self, *, message: str, identity: Identity) -> bool:
        """Commit every change in the work tree; False when there was nothing to commit."""
        self.git("add", "--all")
        if not self.git("status", "--porcelain").strip():
            return False
        self.git("commit", "--quiet", "--no-verify", "-m", message, identity=identity)
        return True

    def changed_files(self, *, base: str) -> list[str]:
        """Files the work branch changes compared with the base branch."""
        out = self.git("diff", "--name-only", f"origin/{base}...HEAD")
        return [line for line in out.splitlines() if line]

    def push(self, work: str) -> None:
        try:
            self.git("push", "--porcelain", "origin", f"HEAD:refs/heads/{work}")
        except GitError as exc:
            text = str(exc)
            rejected = "rejected" in text or "[remote rejected]" in text or "denied" in text
            raise GitError(text, is_push_rejected=rejected) from None
