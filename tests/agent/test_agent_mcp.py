"""The platform MCP server (web/http/agent_mcp.py) over the real routes: MCP JSON-RPC as Codex
sends it, the run token as the only key, a question answered while the call waits, and the
refusals (another run's token, an ended run, bad arguments) audited and never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from codexk8s import urls
from codexk8s.db.engine import get_engine
from codexk8s.domain.feedback import agent_comment_marker
from codexk8s.domain.runs import RunStatus
from codexk8s.services import run_requests
from codexk8s.services.run_states import RUNS, transition
from codexk8s.web.http.app import build_http_app
from tests.agent.conftest import OWNER_REPO, REPO_TOKEN, ClaimedRun, Remote, claim, create_run
from tests.codex_server import ScriptedResponses
from tests.conftest import reset_caches, serve_in_thread
from tests.github_server import FakeGitHub, running_github

HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


@pytest.fixture
def base(app_db: str, remote: Remote, openai_api: ScriptedResponses) -> Iterator[str]:
    reset_caches()
    with serve_in_thread(build_http_app()) as url:
        yield url


def running(claimed: ClaimedRun) -> ClaimedRun:
    with get_engine().begin() as connection:
        connection.execute(
            RUNS.update().where(RUNS.c.id == claimed.run_id).values(status="running")
        )
    return claimed


def call(
    base: str, run_id: int, token: str, method: str, params: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.post(
        base + urls.API_AGENT_MCP.format(run_id=run_id),
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
        headers={**HEADERS, "Authorization": f"Bearer {token}"},
        timeout=30,
    )


def tool(base: str, claimed: ClaimedRun, name: str, **arguments: Any) -> dict[str, Any]:
    response = call(
        base, claimed.run_id, claimed.token, "tools/call", {"name": name, "arguments": arguments}
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


def text(result: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in result["content"])


def trail(run_id: int) -> list[tuple[str, dict[str, Any]]]:
    with get_engine().connect() as connection:
        return [
            (row.event_type, row.payload)
            for row in connection.execute(
                sa.text(
                    "SELECT event_type, payload FROM flow_events WHERE run_id = :r ORDER BY id"
                ),
                {"r": run_id},
            )
        ]


def test_the_tools_are_listed_and_a_question_waits_for_its_answer(base: str) -> None:
    claimed = running(claim(create_run(issue=1), base))
    listed = call(base, claimed.run_id, claimed.token, "tools/list")
    assert listed.status_code == 200
    names = {t["name"] for t in listed.json()["result"]["tools"]}
    assert names == {
        "ask", "request_approval", "report_progress", "past_runs", "post_comment", "set_labels",
    }  # fmt: skip

    answered: dict[str, Any] = {}

    def answer_when_asked() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with get_engine().connect() as connection:
                pending = connection.execute(
                    sa.select(run_requests.REQUESTS.c.id).where(
                        run_requests.REQUESTS.c.status == "pending"
                    )
                ).scalar()
            if pending is not None:
                answered["at"] = time.monotonic()
                run_requests.answer_request(
                    get_engine(), principal=None, request_id=pending, answer="Use PostgreSQL",
                    by="owner@example.test", via="api",
                )  # fmt: skip
                return
            time.sleep(0.05)

    helper = threading.Thread(target=answer_when_asked)
    helper.start()
    result = tool(base, claimed, "ask", question="Which database?", options=["PostgreSQL"])
    returned = time.monotonic()
    helper.join()
    assert not result.get("isError")
    assert text(result) == "owner@example.test answered: Use PostgreSQL"
    assert returned - answered["at"] < 1.0  # resumed within a second of the answer
    types = [event for event, _ in trail(claimed.run_id)]
    assert types[-3:] == ["tool_called", "run_request_opened", "run_request_answered"]

    assert text(tool(base, claimed, "report_progress", message="half way")) == "Recorded."
    assert ("run_progress", {"kind": "agent", "message": "half way"}) in trail(claimed.run_id)
    shared = tool(base, claimed, "report_progress", message="tests pass", share_on_github=True)
    assert text(shared) == "Recorded and shared on GitHub."
    assert ("run_milestone", {"kind": "agent", "message": "tests pass"}) in trail(claimed.run_id)
    refused = tool(base, claimed, "report_progress", message="x", share_on_github="maybe")
    assert refused.get("isError") and trail(claimed.run_id)[-1][0] == "run_milestone"
    assert text(tool(base, claimed, "past_runs")) == "[]"


def test_refusals_are_clear_audited_and_never_a_500(base: str) -> None:
    mine, other = (running(claim(create_run(issue=n), base)) for n in (1, 2))
    # Another run's token: 401, and the attempt is on the trail of the run it knocked on.
    refused = call(base, mine.run_id, other.token, "tools/list")
    assert refused.status_code == 401 and "not valid for this run" in refused.text
    assert ("request_rejected", {"route": "mcp", "reason": "unauthorized",
            "message": refused.json()["message"]}) in trail(mine.run_id)  # fmt: skip
    assert call(base, mine.run_id, "no-such-token", "tools/list").status_code == 401
    assert call(base, 99999, mine.token, "tools/list").status_code == 401
    no_run = httpx.post(base + "/api/v1/agent/runs/x/mcp", json={}, headers=HEADERS)
    assert no_run.status_code == 404

    # Bad arguments: a tool error the model can read, nothing stored.
    bad = tool(base, mine, "ask", question="")
    assert bad["isError"] and "non-empty" in text(bad)
    assert tool(base, mine, "past_runs", limit=1000)["isError"]
    assert not any(event == "run_request_opened" for event, _ in trail(mine.run_id))

    # After the run ended its token opens nothing.
    with get_engine().begin() as connection:
        row = connection.execute(sa.select(RUNS).where(RUNS.c.id == mine.run_id)).one()
        transition(
            connection, run_id=row.id, correlation_id=row.correlation_id,
            project_id=row.project_id, from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.SUCCEEDED,
        )  # fmt: skip
    ended = call(base, mine.run_id, mine.token, "tools/call",
                 {"name": "report_progress", "arguments": {"message": "x"}})  # fmt: skip
    assert ended.status_code == 401


@pytest.fixture
def github_base(
    app_db: str, remote: Remote, openai_api: ScriptedResponses, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeGitHub, str]]:
    with running_github() as fake:
        monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
        fake.add_repo(OWNER_REPO, token=REPO_TOKEN)
        reset_caches()
        with serve_in_thread(build_http_app()) as url:
            yield fake, url


def test_comments_and_labels_go_only_to_the_runs_own_issue(
    github_base: tuple[FakeGitHub, str],
) -> None:
    fake, base = github_base
    repo = fake.repos[OWNER_REPO]
    claimed = running(claim(create_run(issue=7), base))
    done = tool(base, claimed, "post_comment", body="I found the cause: a stale cache.")
    assert not done.get("isError"), done
    (comment,) = repo.comments_on(7)
    assert comment["body"].startswith("I found the cause: a stale cache.")
    assert f"run [#{claimed.run_id}]" in comment["body"]
    assert agent_comment_marker(claimed.run_id) in comment["body"]  # ingest ignores it
    assert not tool(base, claimed, "set_labels", add=["bug"]).get("isError")
    assert "bug" in repo.issue_labels[7]

    # Another issue, another repository, codexk8s's own labels: refused, audited, not done.
    for name, arguments, words in [
        ("post_comment", {"body": "x", "issue": 8}, "its own issue, #7"),
        ("post_comment", {"body": "x", "repository": "evil/repo"}, "its own repository"),
        ("set_labels", {"add": ["run:dev"]}, "codexk8s's own labels"),
        ("set_labels", {"remove": ["state:in-progress"]}, "codexk8s's own labels"),
    ]:
        refused = tool(base, claimed, name, **arguments)
        assert refused["isError"] and words in text(refused), (name, refused)
    assert repo.comments_on(8) == [] and len(repo.comments_on(7)) == 1
    assert "run:dev" not in repo.issue_labels[7]
    refusals = [p for e, p in trail(claimed.run_id) if e == "tool_refused"]
    assert len(refusals) == 4
