"""POST /api/v1/webhooks/github over HTTP: every bad input, both encodings, concurrent copies."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlmodel import Session
from starlette.testclient import TestClient

from codexk8s.adapters.github.webhooks import MAX_BODY_BYTES, sign
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, WebhookDelivery
from codexk8s.services import projects, repositories
from codexk8s.urls import WEBHOOK_GITHUB
from codexk8s.web.http.app import build_http_app
from tests.conftest import link_member, reset_caches, run_async, serve_in_thread
from tests.webhook_examples import example, with_labels

SECRET = "endpoint-secret"
# 100,000 nested arrays: Python's JSON decoder gives up with RecursionError (issue #14, item 7).
DEEP_JSON = b'{"action":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.fixture
def hooked(app_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEXK8S_GITHUB_WEBHOOK_SECRET", SECRET)
    reset_caches()
    with session_scope() as session:
        projects.create_project(session=session, key="hello")
        repositories.add_repository(
            session=session,
            box=get_secret_box(),
            project_key="hello",
            full_name="Codertocat/Hello-World",
        )
    link_member("hello")


@pytest.fixture
def client(hooked: None) -> TestClient:
    return TestClient(build_http_app())


def labeled_body() -> bytes:
    """A new `run:dev` labeling (each body differs, as GitHub's do)."""
    return json.dumps(
        with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
    ).encode()


def headers(body: bytes, **overrides: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    values.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return {k: v for k, v in values.items() if v is not None}


def counts() -> dict[str, int]:
    with Session(get_engine()) as session:
        return {
            model.__tablename__: session.exec(sa.select(sa.func.count()).select_from(model)).one()[
                0
            ]
            for model in (WebhookDelivery, AgentRun, FlowEvent)
        }


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("codexk8s_webhooks_rejected_total", {"reason": reason}) or 0.0


def audit_types() -> list[str]:
    with Session(get_engine()) as session:
        return [
            row[0]
            for row in session.exec(sa.select(FlowEvent.event_type).order_by(FlowEvent.id)).all()
        ]


def test_new_delivery_answers_202_with_its_runs(client: TestClient) -> None:
    body = labeled_body()
    response = client.post(
        WEBHOOK_GITHUB, content=body, headers=headers(body, X_GitHub_Delivery="abc-1")
    )
    assert response.status_code == 202
    answer = response.json()
    assert (
        answer["delivery_id"] == "abc-1"
        and answer["event"] == "issues"
        and answer["action"] == "labeled"
    )
    assert len(answer["runs"]) == 1 and answer["ignored"] is None
    again = client.post(
        WEBHOOK_GITHUB, content=body, headers=headers(body, X_GitHub_Delivery="abc-1")
    )
    assert again.status_code == 200 and again.json() == {"duplicate": True, "delivery_id": "abc-1"}
    assert counts()["agent_runs"] == 1


def test_form_encoded_delivery(client: TestClient) -> None:
    body = urlencode({"payload": labeled_body().decode()}).encode()
    response = client.post(
        WEBHOOK_GITHUB, content=body,
        headers=headers(body, Content_Type="application/x-www-form-urlencoded"),
    )  # fmt: skip
    assert response.status_code == 202 and len(response.json()["runs"]) == 1


def test_ping_answers_200(client: TestClient) -> None:
    body = json.dumps(example("ping")).encode()
    response = client.post(
        WEBHOOK_GITHUB, content=body, headers=headers(body, X_GitHub_Event="ping")
    )
    assert response.status_code == 200 and response.json()["event"] == "ping"


def test_ignored_event_answers_202_with_the_reason(client: TestClient) -> None:
    body = json.dumps(
        {"action": "started", "repository": {"full_name": "Codertocat/Hello-World"}}
    ).encode()
    response = client.post(
        WEBHOOK_GITHUB, content=body, headers=headers(body, X_GitHub_Event="watch")
    )
    assert response.status_code == 202 and response.json()["ignored"] == "unsupported_event"


BAD_INPUTS = [
    pytest.param(
        {"X_Hub_Signature_256": None},
        None,
        401,
        "unauthorized",
        "missing signature",
        "signature_rejected",
        id="no-signature",
    ),
    pytest.param(
        {"X_Hub_Signature_256": "sha256=" + "a" * 64},
        None,
        401,
        "unauthorized",
        "signature mismatch",
        "signature_rejected",
        id="wrong-signature",
    ),
    pytest.param(
        {"X_Hub_Signature_256": "md5=zzz"},
        None,
        401,
        "unauthorized",
        "signature mismatch",
        "signature_rejected",
        id="malformed-signature",
    ),
    pytest.param(
        {"X_GitHub_Event": None},
        None,
        400,
        "invalid_argument",
        "missing X-GitHub-Event header",
        "request_rejected",
        id="no-event",
    ),
    pytest.param(
        {"X_GitHub_Delivery": None},
        None,
        400,
        "invalid_argument",
        "missing X-GitHub-Delivery header",
        "request_rejected",
        id="no-delivery",
    ),
    pytest.param(
        {"X_GitHub_Event": "bad event!"},
        None,
        400,
        "invalid_argument",
        "X-GitHub-Event is not an event name",
        "request_rejected",
        id="odd-event",
    ),
    pytest.param(
        {"X_GitHub_Delivery": "x" * 101},
        None,
        400,
        "invalid_argument",
        "X-GitHub-Delivery must be at most 100",
        "request_rejected",
        id="long-delivery",
    ),
    pytest.param(
        {},
        b"{not json",
        400,
        "invalid_argument",
        "payload is not valid JSON",
        "request_rejected",
        id="bad-json",
    ),
    pytest.param(
        {},
        b"[]",
        400,
        "invalid_argument",
        "payload must be a JSON object",
        "request_rejected",
        id="json-array",
    ),
    pytest.param(
        {},
        DEEP_JSON,
        400,
        "invalid_argument",
        "nested too deeply",
        "request_rejected",
        id="deep-json",
    ),
    pytest.param(
        {"Content_Type": "application/x-www-form-urlencoded"},
        b"payload=" + DEEP_JSON,
        400,
        "invalid_argument",
        "nested too deeply",
        "request_rejected",
        id="deep-json-in-form",
    ),
    pytest.param(
        {"Content_Type": "application/x-www-form-urlencoded"},
        b"nopayload=1",
        400,
        "invalid_argument",
        "no `payload` field",
        "request_rejected",
        id="form-without-payload",
    ),
    pytest.param(
        {"Content_Type": "text/plain"},
        None,
        400,
        "invalid_argument",
        "unsupported content type",
        "request_rejected",
        id="content-type",
    ),
]


@pytest.mark.parametrize(("override", "raw", "status", "code", "message", "audit"), BAD_INPUTS)
def test_bad_input_is_refused_and_only_audited(
    client: TestClient, override: dict[str, str | None], raw: bytes | None,
    status: int, code: str, message: str, audit: str,
) -> None:  # fmt: skip
    body = raw if raw is not None else labeled_body()
    before = counts()
    response = client.post(WEBHOOK_GITHUB, content=body, headers=headers(body, **override))
    assert response.status_code == status
    assert response.json()["error"] == code and message in response.json()["message"]
    after = counts()
    assert after["webhook_deliveries"] == before["webhook_deliveries"]
    assert after["agent_runs"] == before["agent_runs"]
    assert after["flow_events"] == before["flow_events"] + 1
    assert audit_types()[-1] == audit


def test_deeply_nested_json_is_a_counted_rejection_not_a_crash(
    hooked: None, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(build_http_app(), raise_server_exceptions=False)
    before, events_before = rejected("bad_request"), counts()["flow_events"]
    # Unsigned, like the probe's request: the body is read before the signature can be checked.
    response = client.post(
        WEBHOOK_GITHUB, content=DEEP_JSON, headers=headers(DEEP_JSON, X_Hub_Signature_256=None)
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_argument",
        "message": "payload is not valid JSON: it is nested too deeply",
    }
    assert rejected("bad_request") == before + 1
    assert counts()["flow_events"] == events_before + 1
    assert audit_types()[-1] == "request_rejected"
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_a_captured_body_replayed_with_a_new_delivery_id_is_a_duplicate(
    client: TestClient,
) -> None:
    """Issue #14, item 9: the signature covers only the body, so a captured delivery re-sent
    with a fresh X-GitHub-Delivery used to start its run again once the first one was over."""
    body = labeled_body()
    first = client.post(WEBHOOK_GITHUB, content=body, headers=headers(body))
    assert first.status_code == 202 and len(first.json()["runs"]) == 1
    with session_scope() as session:
        session.execute(sa.update(AgentRun).values(status="succeeded"))
    before = counts()
    replayed_before = (
        REGISTRY.get_sample_value("codexk8s_webhooks_replayed_total", {"event": "issues"}) or 0.0
    )
    replay = client.post(WEBHOOK_GITHUB, content=body, headers=headers(body))
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert replay.json()["replay_of"] == first.json()["delivery_id"]
    after = counts()
    assert after["agent_runs"] == before["agent_runs"]
    assert after["webhook_deliveries"] == before["webhook_deliveries"]
    assert after["flow_events"] == before["flow_events"] + 1
    assert audit_types()[-1] == "delivery_replayed"
    assert (
        REGISTRY.get_sample_value("codexk8s_webhooks_replayed_total", {"event": "issues"})
        == replayed_before + 1
    )


def test_no_secret_configured_is_503(app_db: str) -> None:
    client = TestClient(build_http_app())
    body = labeled_body()
    response = client.post(WEBHOOK_GITHUB, content=body, headers=headers(body))
    assert response.status_code == 503
    assert "set CODEXK8S_GITHUB_WEBHOOK_SECRET" in response.json()["message"]
    assert counts() == {"webhook_deliveries": 0, "agent_runs": 0, "flow_events": 1}


def test_declared_oversize_body_is_413_before_reading(client: TestClient) -> None:
    hdrs = headers(b"", Content_Length=str(MAX_BODY_BYTES + 1))
    response = client.post(WEBHOOK_GITHUB, content=b"{}", headers=hdrs)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert counts()["webhook_deliveries"] == 0 and audit_types()[-1] == "request_rejected"


def test_streamed_oversize_body_is_cut_off(client: TestClient) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(40):
            sent += 1
            yield b" " * (1024 * 1024)

    response = client.post(WEBHOOK_GITHUB, content=chunks(), headers=headers(b""))
    assert response.status_code == 413
    assert "25 MiB" in response.json()["message"]
    assert counts()["webhook_deliveries"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(client: TestClient, method: str) -> None:
    response = client.request(method, WEBHOOK_GITHUB)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert counts()["webhook_deliveries"] == 0


@pytest.fixture
def live_server(hooked: None) -> Iterator[str]:
    """The routes on a real uvicorn server, so requests really arrive at the same time."""
    with serve_in_thread(build_http_app()) as base_url:
        yield base_url


def test_fifty_simultaneous_copies_make_one_delivery_and_one_run(live_server: str) -> None:
    body = labeled_body()
    hdrs = headers(body, X_GitHub_Delivery="same-delivery")

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=live_server, limits=limits, timeout=60) as http:
            start = asyncio.Event()

            async def one() -> httpx.Response:
                await start.wait()
                return await http.post(WEBHOOK_GITHUB, content=body, headers=hdrs)

            tasks = [asyncio.create_task(one()) for _ in range(50)]
            await asyncio.sleep(0.1)
            start.set()
            return await asyncio.gather(*tasks)

    responses = run_async(fire())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 49 + [202]
    assert sum(1 for r in responses if r.json().get("duplicate")) == 49
    (created,) = [r.json() for r in responses if r.status_code == 202]
    assert len(created["runs"]) == 1
    assert counts()["webhook_deliveries"] == 1 and counts()["agent_runs"] == 1
    types = audit_types()
    assert types.count("run_created") == 1 and types.count("delivery_duplicate") == 49


def test_different_deliveries_for_one_issue_start_one_run(live_server: str) -> None:
    bodies = [labeled_body() for _ in range(20)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as http:
            return await asyncio.gather(
                *(http.post(WEBHOOK_GITHUB, content=body, headers=headers(body)) for body in bodies)
            )

    responses = run_async(fire())
    assert all(r.status_code == 202 for r in responses)
    assert sum(len(r.json()["runs"]) for r in responses) == 1
    assert sum(1 for r in responses if r.json()["ignored"] == "already_active") == 19
    assert counts()["webhook_deliveries"] == 20 and counts()["agent_runs"] == 1
