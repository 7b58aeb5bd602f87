"""The runner's internal API (web/http/agent_api.py) over the real routes on PostgreSQL:
run-token authentication, the brief, progress, the result (stored once), and the model proxy."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlmodel import Session, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from codexk8s import urls
from codexk8s.db.engine import get_engine
from codexk8s.db.models import AgentRun, AgentSession, FlowEvent
from codexk8s.domain import sessions as session_wire
from codexk8s.domain.runtime import WorkloadPhase, WorkloadStatus
from codexk8s.services import agent_runs, reconcile
from codexk8s.web.http.app import build_http_app
from tests.agent.conftest import REPO_TOKEN, ClaimedRun, Remote, claim, create_run, load_run
from tests.codex_server import ScriptedResponses
from tests.conftest import reset_caches, serve_in_thread

CALLBACK = "http://control-plane.test"


@pytest.fixture
def client(app_db: str, remote: Remote, openai_api: ScriptedResponses) -> Iterator[TestClient]:
    reset_caches()
    with TestClient(build_http_app()) as test_client:
        yield test_client


@pytest.fixture
def two_runs(client: TestClient) -> tuple[ClaimedRun, ClaimedRun]:
    return claim(create_run(issue=1), CALLBACK), claim(create_run(issue=2), CALLBACK)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(template: str, run_id: int | str) -> str:
    return template.format(run_id=run_id)


def snapshot(run_id: int) -> tuple[Any, ...]:
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        count = session.exec(
            select(sa.func.count()).select_from(FlowEvent).where(FlowEvent.run_id == run_id)
        ).one()
        return run.status, run.summary, run.tokens_input, run.run_token_hash, count


RESULT = {
    "outcome": "succeeded", "branch": "codex/issue-1", "base_branch": "main",
    "head_sha": "a" * 40, "changed_files": ["HELLO.md"], "summary": "Done",
    "pr_title": "[dev] Say hello", "pr_body": "Done\n\nCloses #1", "review_body": None,
    "usage": {"input": 1000, "cached": 0, "output": 100, "reasoning": 10}, "model": "gpt-5",
}  # fmt: skip


def test_brief_is_given_only_for_the_runs_own_token(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun]
) -> None:
    first, second = two_runs
    path = url(urls.API_AGENT_BRIEF, first.run_id)
    before = snapshot(first.run_id)
    for headers in ({}, bearer("ck8s_wrong"), bearer(second.token), {"Authorization": first.token}):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    # A run that does not exist answers like a wrong token; a malformed id is not a route.
    assert (
        client.get(url(urls.API_AGENT_BRIEF, 999_999), headers=bearer(first.token)).status_code
        == 401
    )
    assert (
        client.get(url(urls.API_AGENT_BRIEF, "abc"), headers=bearer(first.token)).status_code == 404
    )
    assert snapshot(first.run_id) == before

    answer = client.get(path, headers=bearer(first.token))
    assert answer.status_code == 200
    brief = answer.json()
    assert brief["run_id"] == first.run_id
    assert "Say hello" in brief["prompt"] and brief["model"] == "gpt-5"
    assert brief["repository"]["clone_url"].endswith("/octo-org/octo-repo.git")
    assert brief["repository"]["work_branch"] == "codex/issue-1"
    assert brief["repository"]["token"] == REPO_TOKEN
    assert brief["provider"]["path"] == f"/api/v1/agent/runs/{first.run_id}/openai"
    assert brief["push"] is True and brief["sandbox"] == "workspace-write"
    assert brief["agent"]["engine"] == "codex"
    assert answer.headers["cache-control"] == "no-store"


def test_refused_writes_change_nothing(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun]
) -> None:
    first, second = two_runs
    before = snapshot(first.run_id)
    progress = {"kind": "command", "message": "ls"}
    for template, body in ((urls.API_AGENT_RESULT, RESULT), (urls.API_AGENT_EVENTS, progress)):
        answer = client.post(url(template, first.run_id), json=body, headers=bearer(second.token))
        assert answer.status_code == 401
    assert snapshot(first.run_id) == before
    assert (
        client.get(
            url(urls.API_AGENT_RESULT, first.run_id), headers=bearer(first.token)
        ).status_code
        == 405
    )


def test_result_is_stored_once_and_bad_results_are_refused(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun]
) -> None:
    first, _ = two_runs
    path = url(urls.API_AGENT_RESULT, first.run_id)
    before = snapshot(first.run_id)
    for bad in (
        {**RESULT, "outcome": "great"},
        {**RESULT, "usage": {"input": -1}},
        {**RESULT, "changed_files": "HELLO.md"},
        {**RESULT, "outcome": "failed", "reason": "bad_luck"},
    ):
        answer = client.post(path, json=bad, headers=bearer(first.token))
        assert answer.status_code == 400, bad
    assert snapshot(first.run_id) == before
    # Not JSON at all is no runner's doing: refused the same, and its audit event is the one row.
    answer = client.post(path, content=b"not json", headers=bearer(first.token))
    assert answer.status_code == 400
    assert snapshot(first.run_id) == (*before[:4], before[4] + 1)

    answer = client.post(path, json=RESULT, headers=bearer(first.token))
    assert answer.status_code == 200
    # Tokens and cost are what the model proxy metered (nothing here), not what the runner says.
    assert answer.json()["cost_usd"] == "0.000000"
    again = client.post(path, json={**RESULT, "summary": "Other"}, headers=bearer(first.token))
    assert again.status_code == 409
    run = load_run(first.run_id)
    assert run.summary == "Done" and run.tokens_input == 0
    with Session(get_engine()) as session:
        results = session.exec(
            select(FlowEvent).where(FlowEvent.run_id == first.run_id,
                                    FlowEvent.event_type == "run_result")
        ).all()  # fmt: skip
    assert [event.payload for event in results] == [
        {key: RESULT[key] for key in RESULT if key not in ("outcome", "usage", "model")}
    ]
    assert results[0].actor_type == "agent" and results[0].actor_id == "dev"
    with Session(get_engine()) as session:
        (usage,) = session.exec(
            select(FlowEvent).where(FlowEvent.run_id == first.run_id,
                                    FlowEvent.event_type == "run_usage")
        ).all()  # fmt: skip
    assert usage.payload["reported"] == RESULT["usage"]
    assert usage.payload["metered"] == {"input": 0, "cached": 0, "output": 0, "reasoning": 0}


def test_token_is_revoked_when_the_run_ends(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun]
) -> None:
    first, second = two_runs
    reconcile.apply_workload_status(
        get_engine(), WorkloadStatus(run_id=first.run_id, phase=WorkloadPhase.SUCCEEDED)
    )
    assert load_run(first.run_id).run_token_hash is None
    assert load_run(second.run_id).run_token_hash is not None
    answer = client.get(url(urls.API_AGENT_BRIEF, first.run_id), headers=bearer(first.token))
    assert answer.status_code == 401
    answer = client.post(url(urls.API_AGENT_RESULT, first.run_id), json=RESULT,
                         headers=bearer(first.token))  # fmt: skip
    assert answer.status_code == 401
    assert load_run(first.run_id).summary is None


def test_progress_events_reach_the_timeline(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun]
) -> None:
    first, _ = two_runs
    path = url(urls.API_AGENT_EVENTS, first.run_id)
    answer = client.post(path, json={"kind": "command", "message": "ls", "exit_code": 0},
                         headers=bearer(first.token))  # fmt: skip
    assert answer.status_code == 202
    assert client.post(path, json={"kind": 3}, headers=bearer(first.token)).status_code == 400
    with Session(get_engine()) as session:
        (event,) = session.exec(
            select(FlowEvent).where(FlowEvent.run_id == first.run_id,
                                    FlowEvent.event_type == "run_progress")
        ).all()  # fmt: skip
    assert event.payload == {"kind": "command", "message": "ls", "exit_code": 0}


def test_model_proxy_swaps_the_run_token_for_the_key(
    client: TestClient,
    two_runs: tuple[ClaimedRun, ClaimedRun],
    openai_api: ScriptedResponses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _ = two_runs
    base = url(urls.API_AGENT_OPENAI_BASE, first.run_id)
    request = {
        "model": "gpt-5",
        "stream": True,
        "input": [],
        "tools": [{"type": "function", "name": "shell"}],
    }
    answer = client.post(f"{base}/responses", json=request, headers=bearer(first.token))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "event: response.completed" in answer.text
    (seen,) = openai_api.requests
    assert seen.headers["authorization"] == f"Bearer {openai_api.api_key}"
    assert first.token not in str(seen.headers)
    # The proxy metered the answer's usage onto the run, priced at the requested model:
    # (1200-200) input at 1.25 + 200 cached at 0.125 + 300 output at 10.0 per million.
    run = load_run(first.run_id)
    assert (run.tokens_input, run.tokens_cached, run.tokens_output, run.tokens_reasoning) == (
        1200, 200, 300, 100,
    )  # fmt: skip
    assert str(run.cost_usd) == "0.004275"

    # Upstream refusals pass through with their status and Retry-After.
    openai_api.fail_statuses = [429]
    answer = client.post(f"{base}/responses", json=request, headers=bearer(first.token))
    assert answer.status_code == 429 and answer.headers["retry-after"] == "0"
    assert load_run(first.run_id).tokens_input == 1200  # a refusal costs nothing

    # Only the model endpoints; only with the run's token; only with a key configured.
    assert client.get(f"{base}/files", headers=bearer(first.token)).status_code == 404
    assert client.post(f"{base}/responses", json=request, headers=bearer("x")).status_code == 401
    monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", "")
    reset_caches()
    answer = client.post(f"{base}/responses", json=request, headers=bearer(first.token))
    assert answer.status_code == 422
    assert "CODEXK8S_OPENAI_API_KEY" in answer.json()["message"]
    assert len(openai_api.requests) == 2


def test_deeply_nested_json_is_a_counted_400_that_changes_nothing(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun], caplog: pytest.LogCaptureFixture
) -> None:
    first, _second = two_runs
    path = url(urls.API_AGENT_EVENTS, first.run_id)
    labels = {"route": urls.API_AGENT_EVENTS, "reason": "too_deep"}
    before_count = REGISTRY.get_sample_value("codexk8s_api_requests_rejected_total", labels) or 0
    before = snapshot(first.run_id)
    deep = b'{"kind": "command", "message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    quiet = TestClient(build_http_app(), raise_server_exceptions=False)
    answer = quiet.post(
        path, content=deep, headers={**bearer(first.token), "Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_argument",
        "message": "the body is not valid JSON: it is nested too deeply",
    }
    assert REGISTRY.get_sample_value("codexk8s_api_requests_rejected_total", labels) == (
        before_count + 1
    )
    # Only the audit event of the rejection was added.
    status, summary, tokens, token_hash, events = snapshot(first.run_id)
    assert (status, summary, tokens, token_hash, events) == (*before[:4], before[4] + 1)
    with Session(get_engine()) as session:
        last = session.exec(
            select(FlowEvent).where(FlowEvent.run_id == first.run_id).order_by(FlowEvent.id.desc())  # type: ignore[union-attr]
        ).first()
    assert last is not None and last.event_type == "request_rejected"
    assert last.payload["reason"] == "too_deep" and last.actor_type == "agent"
    assert "Traceback" not in caplog.text


# --- the model proxy's wire rules (issue #14, items 4 and 5) -------------------------------------

UPSTREAM_KEY = "sk-proxy-test-key-0123456789abcdef"


@dataclass
class Upstream:
    """A provider that records every request and can misbehave: echo the key back, in an error
    body, a header, or a streamed body cut into pieces inside the key."""

    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    misbehave: str = ""
    response_id: str = "resp_0123abcd"


@pytest.fixture
def upstream(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    state: dict[str, Upstream] = {}

    async def anything(request: Request) -> Response:
        fake = state["fake"]
        fake.requests.append((request.method, request.url.path, dict(request.headers)))
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if fake.misbehave == "error":
            body = {"error": {"message": f"Incorrect API key provided: {key}."}}
            return JSONResponse(body, status_code=401, headers={"x-request-id": f"req-{key}"})
        if fake.misbehave == "stream":
            created = {"type": "response.created", "response": {"id": fake.response_id}}
            text = (
                f"event: response.created\ndata: {json.dumps(created)}\n\n"
                f'event: response.output_text.delta\ndata: {{"delta": "your key is {key}!"}}\n\n'
            )
            cut = text.index(key) + 7

            async def pieces() -> AsyncIterator[bytes]:
                for piece in (text[:cut], text[cut : cut + 9], text[cut + 9 :]):
                    yield piece.encode()
                    await asyncio.sleep(0.05)

            return StreamingResponse(pieces(), media_type="text/event-stream")
        if request.url.path == "/v1/responses" and request.method == "POST":
            created = {"type": "response.created", "response": {"id": fake.response_id}}
            return Response(
                f"event: response.created\ndata: {json.dumps(created)}\n\n",
                media_type="text/event-stream",
            )
        return JSONResponse({"id": request.url.path.rsplit("/", 1)[-1], "object": "thing"})

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "DELETE"])])
    with serve_in_thread(app) as base:
        state["fake"] = Upstream(url=base)
        monkeypatch.setenv("CODEXK8S_OPENAI_BASE_URL", f"{base}/v1")
        monkeypatch.setenv("CODEXK8S_OPENAI_API_KEY", UPSTREAM_KEY)
        reset_caches()
        yield state["fake"]


def test_proxy_forwards_only_known_headers_and_sets_billing_from_configuration(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun], upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    first, _ = two_runs
    base = url(urls.API_AGENT_OPENAI_BASE, first.run_id)
    sent = {
        **bearer(first.token),
        # What a run chose for billing before issue #14 (item 4), and other headers of its own.
        "OpenAI-Organization": "org-chosen-by-the-run", "OpenAI-Project": "proj-chosen-by-run",
        "ChatGPT-Account-ID": "acct-1", "X-Anything": "1", "Cookie": "a=b",
        # What Codex sends and the provider may use.
        "originator": "codex_exec", "session_id": "s-1", "OpenAI-Beta": "responses=experimental",
        "x-codex-turn-state": "t-1", "Content-Type": "application/json",
    }  # fmt: skip
    answer = client.post(f"{base}/responses", json={"model": "gpt-5"}, headers=sent)
    assert answer.status_code == 200
    [(_, _, seen)] = upstream.requests
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "openai-organization" not in seen and "openai-project" not in seen
    for name in ("chatgpt-account-id", "x-anything", "cookie"):
        assert name not in seen, name
    for name in ("originator", "session_id", "openai-beta", "x-codex-turn-state"):
        assert seen[name] == sent[next(k for k in sent if k.lower() == name)], name

    monkeypatch.setenv("CODEXK8S_OPENAI_ORGANIZATION", "org-platform")
    monkeypatch.setenv("CODEXK8S_OPENAI_PROJECT", "proj-platform")
    reset_caches()
    client.post(f"{base}/responses", json={"model": "gpt-5"}, headers=sent)
    seen = upstream.requests[-1][2]
    assert seen["openai-organization"] == "org-platform"
    assert seen["openai-project"] == "proj-platform"


@pytest.mark.parametrize("misbehave", ["error", "stream"])
def test_proxy_never_relays_the_key(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun], upstream: Upstream,
    misbehave: str,
) -> None:  # fmt: skip
    first, _ = two_runs
    upstream.misbehave = misbehave
    base = url(urls.API_AGENT_OPENAI_BASE, first.run_id)
    answer = client.post(f"{base}/responses", json={"model": "gpt-5"}, headers=bearer(first.token))
    assert upstream.requests, "the request reached the provider"
    assert answer.status_code == (401 if misbehave == "error" else 200)
    assert UPSTREAM_KEY not in answer.text
    assert UPSTREAM_KEY not in str(answer.headers)
    assert "[redacted]" in answer.text
    if misbehave == "stream":
        assert answer.text.endswith('"your key is [redacted]!"}\n\n')


ESCAPES = [
    # The probe's path: Starlette decodes once, so the provider was sent `%2e%2e`, which a
    # normalising proxy in front of it turns into `..` (issue #14, item 5).
    ("GET", "responses/%252e%252e/organization/admin_api_keys"),
    ("GET", "responses/%2e%2e/organization/admin_api_keys"),
    ("GET", "responses/..%2Forganization"),
    ("GET", "models/%2E%2E%2Forganization"),
    ("POST", "responses/%20"),
    ("GET", "files"),
    ("GET", "organization/projects"),
    ("GET", "responses/resp_1/../../organization"),
    ("GET", "responses/resp_1/input_items/extra"),
    ("POST", "models"),
    ("GET", "models/gpt-5/extra"),
]


@pytest.mark.parametrize(("method", "path"), ESCAPES)
def test_proxy_forwards_only_the_model_routes(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun], upstream: Upstream,
    method: str, path: str,
) -> None:  # fmt: skip
    first, _ = two_runs
    base = url(urls.API_AGENT_OPENAI_BASE, first.run_id)
    # A real server: the test client decodes the path once more than a server does.
    with serve_in_thread(build_http_app()) as control_plane:
        answer = httpx.request(
            method, f"{control_plane}{base}/{path}", headers=bearer(first.token), timeout=10
        )
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"] in ("invalid_argument", "not_found")
    assert upstream.requests == []


def test_a_run_reads_only_the_responses_it_created(
    client: TestClient, two_runs: tuple[ClaimedRun, ClaimedRun], upstream: Upstream
) -> None:
    first, second = two_runs
    first_base = url(urls.API_AGENT_OPENAI_BASE, first.run_id)
    second_base = url(urls.API_AGENT_OPENAI_BASE, second.run_id)
    # Nobody created this one through the proxy: someone else's, or a guess.
    for suffix in ("", "/input_items"):
        answer = client.get(f"{first_base}/responses/resp_0123abcd{suffix}",
                            headers=bearer(first.token))  # fmt: skip
        assert answer.status_code == 404
    assert upstream.requests == []

    created = client.post(
        f"{first_base}/responses", json={"model": "gpt-5", "stream": True},
        headers=bearer(first.token),
    )  # fmt: skip
    assert created.status_code == 200 and "resp_0123abcd" in created.text
    for method, suffix in (("GET", ""), ("GET", "/input_items"), ("POST", "/cancel")):
        answer = client.request(
            method, f"{first_base}/responses/resp_0123abcd{suffix}", headers=bearer(first.token)
        )
        assert answer.status_code == 200, (method, suffix)
    assert [path for _, path, _ in upstream.requests] == [
        "/v1/responses", "/v1/responses/resp_0123abcd", "/v1/responses/resp_0123abcd/input_items",
        "/v1/responses/resp_0123abcd/cancel",
    ]  # fmt: skip
    # The other run may not read it.
    answer = client.get(f"{second_base}/responses/resp_0123abcd", headers=bearer(second.token))
    assert answer.status_code == 404
    # Models are anyone's.
    assert client.get(f"{first_base}/models/gpt-5", headers=bearer(first.token)).status_code == 200
    assert client.get(f"{first_base}/models", headers=bearer(first.token)).status_code == 200


# --- sessions and documents (issue #19) --------------------------------------------------------

THREAD = "01a23b27-23c9-7121-93c5-c30fbd78b04e"
SESSION_PATH = f"sessions/2026/12/03/rollout-2026-12-03T09-05-50-{THREAD}.jsonl"
# A well-formed path, but of another thread than the header names.
OTHER_THREAD_PATH = SESSION_PATH.replace(THREAD, "00000000-0000-0000-0000-000000000000")


def session_headers(token: str, **extra: str) -> dict[str, str]:
    return {
        **bearer(token), "Content-Type": "application/gzip",
        session_wire.THREAD_HEADER: THREAD, session_wire.PATH_HEADER: SESSION_PATH, **extra,
    }  # fmt: skip


def rollout(text: str = "the prompt and the work") -> bytes:
    line = json.dumps({"type": "response_item", "payload": {"text": text}})
    return gzip.compress(line.encode() + b"\n")


def finish(run_id: int) -> None:
    for phase in (WorkloadPhase.RUNNING, WorkloadPhase.SUCCEEDED):
        reconcile.apply_workload_status(
            get_engine(), WorkloadStatus(run_id=run_id, phase=phase, exit_code=0)
        )


def test_a_session_is_stored_once_encrypted_and_resumed_by_the_revise_run(
    client: TestClient,
) -> None:
    first = claim(create_run(issue=5), CALLBACK)
    path = url(urls.API_AGENT_SESSION, first.run_id)
    # Nothing to resume for a first run.
    assert client.get(path, headers=bearer(first.token)).status_code == 404
    body = rollout("secret-free prompt text, plus the key sk-test-upstream-key by accident")
    stored = client.put(path, content=body, headers=session_headers(first.token))
    assert stored.status_code == 200 and stored.json()["version"] == 1
    # The same upload again is the retry of a lost answer; another one is a conflict.
    assert client.put(path, content=body, headers=session_headers(first.token)).status_code == 200
    other = client.put(path, content=rollout("else"), headers=session_headers(first.token))
    assert other.status_code == 409
    with Session(get_engine()) as session:
        (row,) = session.exec(select(AgentSession)).all()
        assert b"secret-free prompt text" not in row.data_ciphertext  # encrypted at rest
        assert row.thread_id == THREAD and row.path == SESSION_PATH
    finish(first.run_id)

    revise = claim(create_run(issue=5, is_revise=True), CALLBACK)
    brief = client.get(url(urls.API_AGENT_BRIEF, revise.run_id), headers=bearer(revise.token))
    offer = brief.json()["session"]["resume"]
    assert offer["from_run"] == first.run_id and offer["version"] == 1
    assert "What is new since your last session" in offer["prompt"]
    got = client.get(
        url(urls.API_AGENT_SESSION, revise.run_id), params={"id": offer["id"]},
        headers=bearer(revise.token),
    )  # fmt: skip
    assert got.status_code == 200 and got.headers[session_wire.THREAD_HEADER] == THREAD
    text = gzip.decompress(got.content).decode()
    # The control plane's model key was scrubbed before it was stored.
    assert "sk-test-upstream-key" not in text and "[redacted]" in text
    assert "secret-free prompt text" in text
    # Another run's token gets nothing, and a stale id is not this run's session.
    stranger = claim(create_run(issue=6, is_revise=True), CALLBACK)
    assert (
        client.get(
            url(urls.API_AGENT_SESSION, revise.run_id), headers=bearer(stranger.token)
        ).status_code
        == 401
    )
    assert (
        client.get(
            url(urls.API_AGENT_SESSION, stranger.run_id), headers=bearer(stranger.token)
        ).status_code
        == 404
    )
    stored = client.put(
        url(urls.API_AGENT_SESSION, revise.run_id), content=rollout("v2"),
        headers=session_headers(revise.token, **{session_wire.PARENT_HEADER: str(offer["id"])}),
    )  # fmt: skip
    assert stored.json()["version"] == 2
    with Session(get_engine()) as session:
        events_of = session.exec(
            select(FlowEvent.event_type).where(FlowEvent.run_id == revise.run_id)
        ).all()
    assert "session_resume_started" in events_of and "session_stored" in events_of


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({session_wire.THREAD_HEADER: "not-a-uuid"}, 400),
        ({session_wire.PATH_HEADER: "../../etc/passwd"}, 400),
        ({session_wire.PATH_HEADER: OTHER_THREAD_PATH}, 400),
        ({session_wire.PARENT_HEADER: "first"}, 400),
    ],
)
def test_a_session_upload_with_bad_headers_is_refused(
    client: TestClient, change: dict[str, str], status: int
) -> None:
    run = claim(create_run(issue=5), CALLBACK)
    answer = client.put(
        url(urls.API_AGENT_SESSION, run.run_id), content=rollout(),
        headers={**session_headers(run.token), **change},
    )  # fmt: skip
    assert answer.status_code == status, answer.text
    with Session(get_engine()) as session:
        assert session.exec(select(AgentSession)).all() == []


def test_a_session_that_is_not_gzip_too_large_or_a_bomb_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = claim(create_run(issue=5), CALLBACK)
    path = url(urls.API_AGENT_SESSION, run.run_id)
    headers = session_headers(run.token)
    assert client.put(path, content=b"plain text", headers=headers).status_code == 400
    monkeypatch.setenv("CODEXK8S_AGENT_SESSION_MAX_BYTES", "2048")
    reset_caches()
    big = gzip.compress(os.urandom(4096))
    assert client.put(path, content=big, headers=headers).status_code == 413
    bomb = gzip.compress(b"\0" * (2048 * 17))  # small compressed, more than 16x inflated
    assert len(bomb) <= 2048
    assert client.put(path, content=bomb, headers=headers).status_code == 413


def test_documents_are_recorded_and_checked(client: TestClient) -> None:
    run = claim(create_run(issue=5), CALLBACK)
    path = url(urls.API_AGENT_DOCUMENTS, run.run_id)
    good = {
        "services_yaml": "services.yaml", "found": True, "problems": [],
        "documents": [
            {"path": "docs/arch.md", "bytes": 120, "chars": 118, "truncated": False,
             "skipped": None},
            {"path": "docs/big.md", "bytes": 90000, "chars": 0, "skipped": "budget"},
        ],
    }  # fmt: skip
    assert client.post(path, json=good, headers=bearer(run.token)).status_code == 202
    for bad in (
        {"documents": "docs/arch.md"},
        {"documents": [{"path": "a", "bytes": -1, "chars": 0}]},
        {"documents": [{"path": "a", "bytes": 1, "chars": 0, "skipped": "stolen"}]},
    ):
        assert client.post(path, json=bad, headers=bearer(run.token)).status_code == 400
    with Session(get_engine()) as session:
        (event,) = session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "run_documents")
        ).all()
    assert event.payload["chars"] == 118 and event.payload["documents"][1]["skipped"] == "budget"
    detail = agent_runs.get_run(session=Session(get_engine()), run_id=run.run_id)
    assert [d["path"] for d in detail.documents["documents"]] == ["docs/arch.md", "docs/big.md"]
