"""Issue #19 through the real runner and the real Codex binary against the scripted Responses
server: project documents in the prompt, discussion turns that push nothing, and revise runs
and discussion turns that resume the session their lineage left (or start fresh when it cannot
be resumed)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentSession
from codexk8s.domain.runtime import WorkloadPhase, WorkloadStatus
from codexk8s.services import agent_runs, reconcile
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
)
from tests.codex_server import ScriptedResponses

ARCHITECTURE = "# Architecture\n\nThe control plane owns state; GitHub owns labels.\n"
RUNBOOK = "# Deploy runbook\n\nRoll out with kubectl apply.\n"


def settle(claimed: ClaimedRun, exit_code: int) -> str | None:
    phase = WorkloadPhase.SUCCEEDED if exit_code == 0 else WorkloadPhase.FAILED
    return reconcile.apply_workload_status(
        get_engine(), WorkloadStatus(run_id=claimed.run_id, phase=phase, exit_code=exit_code)
    )


def push_files(remote: Remote, tmp_path: Path, files: dict[str, str]) -> None:
    seed = tmp_path / "seed-docs"
    git("clone", "--quiet", str(remote.bare), str(seed), cwd=tmp_path)
    for name, text in files.items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_text(text)
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "docs", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)


def first_input(script: ScriptedResponses, start: int = 0) -> str:
    return json.dumps(script.requests[start].body["input"])


def test_the_documents_of_the_runs_role_reach_its_prompt_and_are_recorded(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("TOKEN-OUTSIDE-THE-CLONE")
    services = {
        "docs": [
            {"path": "docs/architecture.md", "roles": ["dev", "sa"], "title": "Architecture"},
            {"path": "docs/runbook.md", "roles": ["sre"]},
            {"path": "docs/missing.md", "roles": ["all"]},
            {"path": "docs/escape.md", "roles": ["dev"]},
            {"path": "../../etc/passwd", "roles": ["dev"]},
        ]
    }
    push_files(remote, tmp_path, {
        "services.yaml": json.dumps(services),  # JSON is YAML
        "docs/architecture.md": ARCHITECTURE, "docs/runbook.md": RUNBOOK,
    })  # fmt: skip
    # A link out of the clone must not carry a file from outside into the prompt.
    seed = tmp_path / "seed-docs"
    os.symlink(outside, seed / "docs" / "escape.md")
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "link", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)

    claimed = claim(create_run(issue=40), control_plane)
    process = run_agent(claimed, tmp_path / "run")
    assert process.returncode == 0, output_of(process)
    prompt = first_input(openai_api)
    assert "Project documents" in prompt and "The control plane owns state" in prompt
    assert "Roll out with kubectl" not in prompt  # the sre's, not the dev's
    assert "TOKEN-OUTSIDE-THE-CLONE" not in prompt
    assert "[[codexk8s:project-docs:" not in prompt  # the marker was replaced

    (recorded,) = events(claimed.run_id, "run_documents")
    by_path = {d["path"]: d for d in recorded["documents"]}
    assert by_path["docs/architecture.md"]["bytes"] == len(ARCHITECTURE.encode())
    assert by_path["docs/architecture.md"]["chars"] == len(ARCHITECTURE)
    assert by_path["docs/architecture.md"]["skipped"] is None
    assert by_path["docs/missing.md"]["skipped"] == "missing"
    assert by_path["docs/escape.md"]["skipped"] == "outside_repository"
    assert "docs/runbook.md" not in by_path and "../../etc/passwd" not in by_path
    assert recorded["found"] is True and any("docs[4]" in p for p in recorded["problems"])
    # The runs API shows it.
    with Session(get_engine()) as session:
        detail = agent_runs.get_run(session=session, run_id=claimed.run_id)
    assert detail.documents is not None and detail.documents["chars"] == len(ARCHITECTURE)


def test_a_discussion_turn_reads_pushes_nothing_and_the_next_turn_resumes_it(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    openai_api.command = "cat README.md"
    openai_api.final_message = "The README says little; what should the greeting say?"
    first = claim(
        create_run(issue=41, stage="discussion", agent_key="pm", mode="discussion"),
        control_plane,
    )
    process = run_agent(first, tmp_path / "first")
    output = output_of(process)
    assert process.returncode == 0, output
    assert "runner: discussing on main" in output and "nothing is pushed" in output
    assert remote.branches() == ["main"]
    (result,) = events(first.run_id, "run_result")
    assert result["summary"] == openai_api.final_message and result["branch"] is None
    assert result["changed_files"] == [] and result["review_body"] is None
    assert "Rules of a discussion" in first_input(openai_api)
    assert settle(first, 0) == "succeeded"
    (stored,) = events(first.run_id, "session_stored")
    assert stored["version"] == 1

    start = len(openai_api.requests)
    openai_api.final_message = "Then I would greet in two languages."
    second = claim(
        create_run(issue=41, stage="discussion", agent_key="pm", mode="discussion"),
        control_plane,
    )
    process = run_agent(second, tmp_path / "second")
    output = output_of(process)
    assert process.returncode == 0, output
    assert f"resuming the session of run {first.run_id}" in output
    resumed_input = first_input(openai_api, start)
    # The earlier turn is in the session's history; the new prompt says only what is new.
    assert "The README says little" in resumed_input
    assert "The discussion on #41 continues" in resumed_input
    assert settle(second, 0) == "succeeded"
    (stored,) = events(second.run_id, "session_stored")
    assert stored["version"] == 2


def test_a_revise_run_resumes_the_session_of_the_run_it_revises(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    dev = claim(create_run(issue=42), control_plane)
    process = run_agent(dev, tmp_path / "dev")
    assert process.returncode == 0, output_of(process)
    assert settle(dev, 0) == "succeeded"
    with Session(get_engine()) as session:
        (row,) = session.exec(select(AgentSession)).all()
        rollout = gzip.decompress(get_secret_box().decrypt_bytes(row.data_ciphertext))
    assert b"Say hello" in rollout  # the session holds the prompt...
    for secret in (dev.token, REPO_TOKEN, openai_api.api_key):
        assert secret.encode() not in rollout  # ...and none of the secrets

    start = len(openai_api.requests)
    openai_api.command = "printf 'hello, revised\\n' > HELLO.md"
    openai_api.final_message = "Renamed the greeting as asked."
    revise = claim(create_run(issue=42, is_revise=True), control_plane)
    process = run_agent(revise, tmp_path / "revise")
    output = output_of(process)
    assert process.returncode == 0, output
    assert f"resuming the session of run {dev.run_id}" in output
    resumed_input = first_input(openai_api, start)
    assert "Added HELLO.md with a greeting." in resumed_input  # the earlier answer, in history
    assert "What is new since your last session" in resumed_input
    assert remote.show("codex/issue-42", "HELLO.md") == "hello, revised\n"
    # Codex counts a resumed thread from its start; the runner reports only this run's part,
    # which is what the proxy metered.
    (usage,) = events(revise.run_id, "run_usage")
    assert usage["reported"] == usage["metered"]
    assert settle(revise, 0) == "succeeded"
    (stored,) = events(revise.run_id, "session_stored")
    assert stored["version"] == 2 and stored["parent_session_id"] is not None
    with Session(get_engine()) as session:
        detail = agent_runs.get_run(session=session, run_id=revise.run_id)
    assert detail.session is not None
    assert detail.session["resumed"]["from_run"] == dev.run_id
    assert detail.session["stored"]["version"] == 2


def test_a_session_that_cannot_be_resumed_gives_way_to_a_fresh_one(
    control_plane: str, remote: Remote, openai_api: ScriptedResponses, tmp_path: Path
) -> None:
    dev = claim(create_run(issue=43), control_plane)
    assert run_agent(dev, tmp_path / "dev").returncode == 0
    assert settle(dev, 0) == "succeeded"
    # The stored rollout is damaged: Codex cannot open it.
    box = get_secret_box()
    with session_scope() as session:
        session.execute(
            sa.update(AgentSession).values(
                data_ciphertext=box.encrypt_bytes(gzip.compress(b"not a rollout\n"))
            )
        )
    start = len(openai_api.requests)
    revise = claim(create_run(issue=43, is_revise=True), control_plane)
    process = run_agent(revise, tmp_path / "revise")
    output = output_of(process)
    assert process.returncode == 0, output
    assert "could not resume session" in output and "starting a fresh one" in output
    fresh_input = first_input(openai_api, start)
    assert "# Revise stage `dev`: Say hello" in fresh_input  # the full revise prompt
    notes = [e["message"] for e in events(revise.run_id, "run_progress") if e["kind"] == "session"]
    assert any(note.startswith("resume failed, fresh session") for note in notes)
    assert settle(revise, 0) == "succeeded"
    assert load_run(revise.run_id).status == "succeeded"
