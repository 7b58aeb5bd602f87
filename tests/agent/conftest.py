"""Fixtures for agent runner tests: a bare git remote, a fake OpenAI Responses server, the
control plane's HTTP app on PostgreSQL, and runs claimed by the real dispatcher."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent
from codexk8s.services import agents, dispatch, projects, repositories
from tests.codex_server import ScriptedResponses, build_app
from tests.conftest import reset_caches, serve_in_thread

OWNER_REPO = "octo-org/octo-repo"
REPO_TOKEN = "ghs_repositoryTokenThatMustNeverBeLogged123"
CODEXK8S_BIN = Path(sys.executable).parent / "codexk8s"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"},
    ).stdout  # fmt: skip


@dataclass
class Remote:
    root: Path  # what CODEXK8S_GITHUB_GIT_URL points at (file://)
    bare: Path

    def branches(self) -> list[str]:
        out = git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=self.bare)
        return out.split()

    def show(self, ref: str, path: str) -> str:
        return git("show", f"{ref}:{path}", cwd=self.bare)

    def sha(self, ref: str) -> str:
        return git("rev-parse", ref, cwd=self.bare).strip()

    def log(self, ref: str) -> str:
        return git("log", "--format=%an <%ae>|%s", ref, cwd=self.bare)


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Remote:
    root = tmp_path / "remotes"
    bare = root / f"{OWNER_REPO}.git"
    bare.parent.mkdir(parents=True)
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("init", "--quiet", "--initial-branch=main", str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("# octo-repo\n")
    git("add", "README.md", cwd=seed)
    git("commit", "--quiet", "-m", "initial", cwd=seed)
    git("push", "--quiet", str(bare), "main", cwd=seed)
    monkeypatch.setenv("CODEXK8S_GITHUB_GIT_URL", f"file://{root}")
    return Remote(root=root, bare=bare)


@pytest.fixture
def openai_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedResponses]:
    script = ScriptedResponses()
    with serve_in_thread(build_app(script)) as url:
        monkeypatch.setenv("CODEXK8S_OPENAI_BASE_URL", f"{url}/v1")
        monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", script.api_key)
        yield script


@pytest.fixture
def control_plane(app_db: str, remote: Remote, openai_api: ScriptedResponses) -> Iterator[str]:
    """The control plane's HTTP routes served on loopback; yields the callback URL."""
    from codexk8s.web.http.app import build_http_app

    reset_caches()
    with serve_in_thread(build_http_app()) as url:
        yield url


@dataclass
class ClaimedRun:
    run_id: int
    token: str
    env: dict[str, str]


def create_run(
    *, issue: int = 7, stage: str = "dev", agent_key: str = "dev", pr_number: int | None = None,
    is_revise: bool = False, mode: str = "work",
) -> int:  # fmt: skip
    with session_scope() as session:
        if projects.get_by_key(session=session, key="web") is None:
            projects.create_project(session=session, key="web", slots=2)
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key="web",
                full_name=OWNER_REPO, token=REPO_TOKEN,
            )  # fmt: skip
        project = projects.get_by_key(session=session, key="web")
        repository = repositories.get_by_full_name(session=session, full_name=OWNER_REPO)
        assert project is not None and repository is not None
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=project.id or 0,
            repository_id=repository.id, issue_number=issue, pr_number=pr_number,
            issue_title="Say hello",
            agent_key=agent_key, stage=stage, model="gpt-5", is_revise=is_revise, mode=mode,
        )  # fmt: skip
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def claim(run_id: int, callback_url: str) -> ClaimedRun:
    """Let the real dispatcher claim the run (pending → starting, token issued)."""
    claims = dispatch.claim_runs(get_engine(), owner="test", callback_url=callback_url)
    (found,) = [c for c in claims if c.run_id == run_id]
    return ClaimedRun(
        run_id=run_id, token=found.spec.secret_env["CODEXK8S_RUN_TOKEN"],
        env={**found.spec.env, **found.spec.secret_env},
    )  # fmt: skip


def run_agent(
    claimed: ClaimedRun, workdir: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """`codexk8s agent run` as its own process, with only what a run's workload gets."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "LANG": "C.UTF-8", **claimed.env}
    return subprocess.run(
        [str(CODEXK8S_BIN), "agent", "run"], cwd=workdir, env=env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def load_run(run_id: int) -> AgentRun:
    with Session(get_engine()) as session:
        found = session.get(AgentRun, run_id)
        assert found is not None
        return found


def set_engine(role: str, **changes: object) -> None:
    with session_scope() as session:
        agents.set_agent(session=session, key=role, **changes)  # type: ignore[arg-type]


def events(run_id: int, event_type: str) -> list[dict]:
    """The payloads of the run's flow events of EVENT_TYPE, oldest first."""
    with Session(get_engine()) as session:
        rows = session.exec(
            select(FlowEvent).where(FlowEvent.run_id == run_id, FlowEvent.event_type == event_type)
            .order_by(sa.asc(FlowEvent.id))
        ).all()  # fmt: skip
        return [row.payload for row in rows]


def output_of(process: subprocess.CompletedProcess[str]) -> str:
    return f"{process.stdout}\n{process.stderr}"
