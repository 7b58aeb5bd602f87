"""Tokens of a revise run that resumes the revised run's Codex session, against one that starts
cold (issue #19).

The real runner and the real Codex binary (`openai-codex-cli-bin`) work against the scripted
Responses server of the tests (tests/codex_server.py), through the control plane's model proxy,
on the embedded default (SQLite): a dev run reads three files of the repository, edits one and
answers; then a revise run of the same issue either resumes that session (its history already
holds the files it read) or, with the stored session deleted, starts cold with the full revise
prompt and reads them again. The scripted model behaves the same way in both: it reads what is
not in its history yet, then edits, then answers. Usage is estimated by the server from each
request's size (4 bytes of JSON per token; cached input = the longest prefix shared with an
earlier request *of the same run*, so a revise run days after its dev run finds the cache cold)
and metered by the control plane's proxy, as for real runs; cost at gpt-5 list prices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.db.models import AgentSession
from codexk8s.domain.runtime import WorkloadPhase, WorkloadStatus
from codexk8s.services import reconcile
from codexk8s.web.http.app import build_http_app
from tests.agent.conftest import OWNER_REPO, claim, create_run, git, load_run, run_agent
from tests.codex_server import ScriptedResponses, build_app
from tests.conftest import reset_caches, serve_in_thread

RESULTS = Path(__file__).resolve().parent / "results" / "session_resume.json"
FILES = {
    "README.md": "# octo-repo\n\n" + "A service that greets people in many languages. " * 90,
    "app.py": "".join(
        f"def greet_{i}(name):\n    return f'Hello {{name}} #{i}'\n\n" for i in range(120)
    ),
    "docs/architecture.md": "# Architecture\n\n"
    + "The app is one module of pure functions. " * 110,
}
EXPLORE = ("cat README.md", "cat app.py", "cat docs/architecture.md")


@dataclass
class Figures:
    run: str
    resumed: bool
    model_requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: str


def make_remote(root: Path) -> Path:
    bare = root / "remotes" / f"{OWNER_REPO}.git"
    bare.parent.mkdir(parents=True)
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=root)
    seed = root / "seed"
    git("init", "--quiet", "--initial-branch=main", str(seed), cwd=root)
    for name, text in FILES.items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_text(text)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "initial", cwd=seed)
    git("push", "--quiet", str(bare), "main", cwd=seed)
    return root / "remotes"


def settle(run_id: int, code: int) -> None:
    phase = WorkloadPhase.SUCCEEDED if code == 0 else WorkloadPhase.FAILED
    reconcile.apply_workload_status(
        get_engine(), WorkloadStatus(run_id=run_id, phase=phase, exit_code=code)
    )


def one_run(
    script: ScriptedResponses, callback: str, workdir: Path, *, issue: int, revise: bool
) -> tuple[int, subprocess.CompletedProcess[str], int]:
    script.forget_cache()
    before = len(script.requests)
    claimed = claim(create_run(issue=issue, is_revise=revise), callback)
    process = run_agent(claimed, workdir)
    if process.returncode != 0:
        sys.exit(f"run {claimed.run_id} failed:\n{process.stdout}\n{process.stderr}")
    settle(claimed.run_id, 0)
    return claimed.run_id, process, len(script.requests) - before


def figures(label: str, run_id: int, resumed: bool, requests: int) -> Figures:
    run = load_run(run_id)
    return Figures(label, resumed, requests, run.tokens_input, run.tokens_cached,
                   run.tokens_output, str(run.cost_usd))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codexk8s-resume-") as tmp:
        root = Path(tmp)
        os.environ.update({
            "CODEXK8S_DATA_DIR": str(root / "data"),
            "CODEXK8S_DATABASE_URL": f"sqlite:///{root / 'codexk8s.db'}",
            "CODEXK8S_SECRET_KEY": "bench-secret-key-0123456789abcdef",
            "CODEXK8S_GITHUB_GIT_URL": f"file://{make_remote(root)}",
        })  # fmt: skip
        script = ScriptedResponses(
            command="printf 'def greet_revised(name):\\n    return name\\n' >> app.py",
            final_message="Added greet_revised to app.py.",
            explore=EXPLORE, usage_from_size=True,
        )  # fmt: skip
        rows: list[Figures] = []
        with serve_in_thread(build_app(script)) as model_url:
            os.environ["CODEXK8S_OPENAI_BASE_URL"] = f"{model_url}/v1"
            os.environ["CODEXK8S_OPENAI_API_KEY"] = script.api_key
            reset_caches()
            upgrade_to_head(os.environ["CODEXK8S_DATABASE_URL"])
            with serve_in_thread(build_http_app()) as callback:
                for issue, resume in ((1, True), (2, False)):
                    dev_id, _, dev_requests = one_run(
                        script, callback, root / f"dev-{issue}", issue=issue, revise=False
                    )
                    rows.append(figures(f"dev #{issue}", dev_id, False, dev_requests))
                    if not resume:
                        with session_scope() as session:
                            session.execute(sa.delete(AgentSession))
                    script.final_message = "Renamed it as the review asked."
                    revise_id, process, requests = one_run(
                        script, callback, root / f"revise-{issue}", issue=issue, revise=True
                    )
                    resumed = "resuming the session of run" in process.stdout
                    if resumed != resume:
                        sys.exit(f"revise run {revise_id}: expected resumed={resume}")
                    label = f"revise #{issue} " + ("resumed" if resume else "cold")
                    rows.append(figures(label, revise_id, resumed, requests))
                    script.final_message = "Added greet_revised to app.py."
    print(f"{'run':<20} {'requests':>8} {'input':>8} {'cached':>8} {'output':>7} {'cost USD':>9}")
    for row in rows:
        print(f"{row.run:<20} {row.model_requests:>8} {row.input_tokens:>8} "
              f"{row.cached_tokens:>8} {row.output_tokens:>7} {row.cost_usd:>9}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    print(f"results written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
