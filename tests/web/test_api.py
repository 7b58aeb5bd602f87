"""The staff JSON API over the real routes and a real database: who gets what, pages, logs,
starts, and the cross-site check for cookie-authenticated writes."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlmodel import Session, select
from starlette.testclient import TestClient

from codexk8s import urls
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import AgentRun, FlowEvent, ProjectMember, User, utcnow
from codexk8s.domain.runtime import LogLine
from codexk8s.services import api_tokens, projects, repositories, run_logs, sessions, users
from codexk8s.web.http import api
from codexk8s.web.http.app import build_http_app
from codexk8s.web.http.auth import SESSION_COOKIE
from tests.conftest import reset_caches

PUBLIC_URL = "http://testserver"
ROLES = ("anonymous", "outsider", "read", "read_write", "admin", "platform_admin", "owner")
_issues = itertools.count(100)


@dataclass
class World:
    tokens: dict[str, str]
    project_id: int
    other_project_id: int
    repository_id: int
    users: dict[str, int]


@pytest.fixture
def world(app_db: str, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("CODEXK8S_PUBLIC_URL", PUBLIC_URL)
    reset_caches()
    tokens: dict[str, str] = {}
    user_ids: dict[str, int] = {}
    with session_scope() as session:
        alpha = projects.create_project(session=session, key="alpha", name="Alpha")
        beta = projects.create_project(session=session, key="beta", name="Beta")
        repo = repositories.add_repository(
            session=session, box=get_secret_box(), project_key="alpha", full_name="acme/app"
        )
        for role in ROLES[1:]:
            platform = {"platform_admin": "admin", "owner": "owner"}.get(role, "user")
            user = users.add_user(session=session, email=f"{role}@example.com", role=platform)
            assert user.id is not None
            user_ids[role] = user.id
            if role in ("read", "read_write", "admin"):
                projects.add_member(
                    session=session, project_key="alpha", email=user.email, role=role
                )
        # The outsider belongs to another project only.
        projects.add_member(
            session=session, project_key="beta", email="outsider@example.com", role="admin"
        )
        for role in ROLES[1:]:
            _, tokens[role] = api_tokens.create_token(session=session, email=f"{role}@example.com")
        assert alpha.id and beta.id and repo.id
        return World(tokens, alpha.id, beta.id, repo.id, user_ids)


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(build_http_app(), follow_redirects=False)


def auth(world: World, role: str) -> dict[str, str]:
    return {} if role == "anonymous" else {"Authorization": f"Bearer {world.tokens[role]}"}


def make_run(
    world: World, *, status: str = "pending", project_id: int | None = None, **values: Any
) -> int:
    with session_scope() as session:
        run = AgentRun(
            correlation_id=f"c-{next(_issues)}-{utcnow().timestamp()}",
            project_id=project_id or world.project_id,
            repository_id=world.repository_id,
            issue_number=values.pop("issue_number", next(_issues)),
            agent_key="dev",
            stage="dev",
            status=status,
            **values,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def run_url(template: str, run_id: int | str) -> str:
    return template.format(run_id=run_id)


# --- the role matrix ------------------------------------------------------------------------------

OK_FOR_MEMBERS = {
    "anonymous": 401, "outsider": 404, "read": 200, "read_write": 200, "admin": 200,
    "platform_admin": 200, "owner": 200,
}  # fmt: skip


def write_matrix(ok: int) -> dict[str, int]:
    return {**OK_FOR_MEMBERS, "read": 403, "read_write": ok, "admin": ok,
            "platform_admin": ok, "owner": ok}  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(client: TestClient, world: World, role: str) -> None:
    headers = auth(world, role)
    seen = make_run(world, status="running")
    got: dict[str, int] = {}
    got["projects"] = client.get(urls.API_PROJECTS, headers=headers).status_code
    got["runs_of_project"] = client.get(
        urls.API_RUNS, params={"project": "alpha"}, headers=headers
    ).status_code
    got["run"] = client.get(run_url(urls.API_RUN, seen), headers=headers).status_code
    got["events"] = client.get(run_url(urls.API_RUN_EVENTS, seen), headers=headers).status_code
    got["logs"] = client.get(run_url(urls.API_RUN_LOGS, seen), headers=headers).status_code
    got["start"] = client.post(
        urls.API_RUNS, headers=headers,
        json={"project": "alpha", "repository": "acme/app", "issue": next(_issues),
              "stage": "dev"},
    ).status_code  # fmt: skip
    got["cancel_running"] = client.post(
        run_url(urls.API_RUN_CANCEL, make_run(world, status="running")), headers=headers
    ).status_code
    got["cancel_pending"] = client.post(
        run_url(urls.API_RUN_CANCEL, make_run(world, status="pending")), headers=headers
    ).status_code
    got["rerun"] = client.post(
        run_url(urls.API_RUN_RERUN, make_run(world, status="failed")), headers=headers
    ).status_code
    expected = {
        "projects": 401 if role == "anonymous" else 200,
        "runs_of_project": OK_FOR_MEMBERS[role],
        "run": OK_FOR_MEMBERS[role],
        "events": OK_FOR_MEMBERS[role],
        "logs": OK_FOR_MEMBERS[role],
        "start": write_matrix(201)[role],
        "cancel_running": write_matrix(202)[role],
        "cancel_pending": write_matrix(200)[role],
        "rerun": write_matrix(201)[role],
    }
    assert got == expected


@pytest.mark.parametrize("role", ROLES[1:])
def test_lists_show_only_visible_projects(client: TestClient, world: World, role: str) -> None:
    alpha_run = make_run(world)
    beta_run = make_run(world, project_id=world.other_project_id)
    listed = client.get(urls.API_PROJECTS, headers=auth(world, role)).json()["projects"]
    listed_runs = client.get(urls.API_RUNS, headers=auth(world, role)).json()["runs"]
    run_ids = {run["id"] for run in listed_runs}
    if role == "outsider":
        assert [(p["key"], p["role"]) for p in listed] == [("beta", "admin")]
        assert run_ids == {beta_run}
    elif role in ("platform_admin", "owner"):
        assert [(p["key"], p["role"]) for p in listed] == [("alpha", None), ("beta", None)]
        assert run_ids == {alpha_run, beta_run}
    else:
        assert [(p["key"], p["name"], p["role"]) for p in listed] == [("alpha", "Alpha", role)]
        assert listed[0]["settings"]["slots"] >= 1
        assert run_ids == {alpha_run}


def test_unknown_run_and_wrong_methods(client: TestClient, world: World) -> None:
    headers = auth(world, "owner")
    assert client.get(run_url(urls.API_RUN, 999999), headers=headers).status_code == 404
    assert client.get(run_url(urls.API_RUN, "abc"), headers=headers).json()["error"] == (
        "not_found"
    )
    assert client.delete(run_url(urls.API_RUN, 1), headers=headers).status_code == 405
    response = client.get(run_url(urls.API_RUN_CANCEL, 1), headers=headers)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert client.put(urls.API_RUNS, headers=headers).status_code == 405


def test_run_detail_and_events(client: TestClient, world: World) -> None:
    response = client.post(
        urls.API_RUNS, headers=auth(world, "read_write"),
        json={"project": "alpha", "repository": "acme/app", "issue": 12, "stage": "plan",
              "model": "gpt-x", "reasoning_effort": "low"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    run = response.json()["run"]
    assert (run["project_key"], run["repository"], run["issue_number"], run["stage"]) == (
        "alpha", "acme/app", 12, "plan",
    )  # fmt: skip
    assert (run["agent_key"], run["status"], run["model"], run["reasoning_effort"]) == (
        "em", "pending", "gpt-x", "low",
    )  # fmt: skip
    assert run["cost_usd"] == "0.000000" and run["tokens_input"] == 0
    cancel = client.post(run_url(urls.API_RUN_CANCEL, run["id"]), headers=auth(world, "admin"))
    assert cancel.status_code == 200
    assert cancel.json() == {"id": run["id"], "status": "canceled", "is_immediate": True}
    detail = client.get(run_url(urls.API_RUN, run["id"]), headers=auth(world, "read")).json()
    assert detail["run"]["status"] == "canceled"
    events = client.get(run_url(urls.API_RUN_EVENTS, run["id"]), headers=auth(world, "read"))
    listed = events.json()["events"]
    assert [e["event_type"] for e in listed] == ["run_created", "run_canceled"]
    assert [(e["actor_type"], e["actor_id"]) for e in listed] == [
        ("human", str(world.users["read_write"])), ("human", str(world.users["admin"])),
    ]  # fmt: skip
    # Ended: cancel again is a conflict; rerun makes a new run, and a second rerun conflicts.
    assert client.post(
        run_url(urls.API_RUN_CANCEL, run["id"]), headers=auth(world, "admin")
    ).status_code == 409  # fmt: skip
    rerun = client.post(run_url(urls.API_RUN_RERUN, run["id"]), headers=auth(world, "admin"))
    assert rerun.status_code == 201 and rerun.json()["rerun_of"] == run["id"]
    again = client.post(run_url(urls.API_RUN_RERUN, run["id"]), headers=auth(world, "admin"))
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    still = client.post(
        run_url(urls.API_RUN_RERUN, rerun.json()["id"]), headers=auth(world, "admin")
    )
    assert still.status_code == 409


# --- listing --------------------------------------------------------------------------------------


def test_keyset_pages_have_no_gap_and_no_duplicate(client: TestClient, world: World) -> None:
    now = utcnow()
    # Several runs share a timestamp, so the id must break ties.
    stamps = [now - timedelta(minutes=m) for m in (0, 0, 0, 1, 2, 2, 3, 5, 5, 8)]
    ids = [make_run(world, created_at=stamp) for stamp in stamps]
    make_run(world, project_id=world.other_project_id)  # not visible to the reader
    with Session(get_engine()) as session:
        rows = session.exec(
            select(AgentRun.id, AgentRun.created_at).where(AgentRun.project_id == world.project_id)
        ).all()
    expected = [run_id for run_id, _ in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]
    assert sorted(expected) == sorted(ids)

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.get(urls.API_RUNS, params=params, headers=auth(world, "read")).json()
        seen += [run["id"] for run in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 4  # 3 + 3 + 3 + 1, and the last page says there is no next one
    # Filters combine with the cursor.
    make_run(world, status="failed")
    failed = client.get(
        urls.API_RUNS, params={"status": "failed", "project": "alpha"},
        headers=auth(world, "read"),
    ).json()  # fmt: skip
    assert [run["status"] for run in failed["runs"]] == ["failed"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 400),
        ({"limit": "501"}, 400),
        ({"limit": "x"}, 400),
        ({"status": "bogus"}, 400),
        ({"cursor": "not-a-cursor"}, 400),
        ({"project": "nope"}, 404),
        ({"project": "beta"}, 404),  # exists, but the reader may not see it
    ],
)
def test_list_parameters(
    client: TestClient, world: World, params: dict[str, str], status: int
) -> None:
    response = client.get(urls.API_RUNS, params=params, headers=auth(world, "read"))
    assert response.status_code == status
    assert set(response.json()) == {"error", "message"}


# --- starting runs --------------------------------------------------------------------------------


def start(client: TestClient, world: World, **body: Any) -> httpx.Response:
    payload = {"project": "alpha", "repository": "acme/app", "issue": 1, "stage": "dev", **body}
    return client.post(urls.API_RUNS, json=payload, headers=auth(world, "read_write"))


def test_start_conflicts_and_bad_input(client: TestClient, world: World) -> None:
    assert start(client, world).status_code == 201
    conflict = start(client, world)
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    assert start(client, world, stage="qa").status_code == 201
    review = start(client, world, stage="review", issue=2)
    assert review.status_code == 201 and review.json()["run"]["pr_number"] == 2
    for bad in (
        {"stage": "nope"}, {"issue": "1"}, {"issue": -1}, {"repository": "acme/unknown"},
        {"reasoning_effort": "max"}, {"extra": 1}, {"stage": None},
    ):  # fmt: skip
        response = start(client, world, **bad)
        assert response.status_code == 400, (bad, response.text)
    not_json = client.post(
        urls.API_RUNS, content=b"{", headers=auth(world, "read_write")
    )  # fmt: skip
    assert not_json.status_code == 400
    assert start(client, world, project="beta").status_code == 404
    with Session(get_engine()) as session:
        assert len(session.exec(select(AgentRun)).all()) == 3
        created = session.exec(select(FlowEvent).where(FlowEvent.event_type == "run_created"))
        assert {(e.actor_type, e.actor_id) for e in created} == {
            ("human", str(world.users["read_write"]))
        }


# --- logs -----------------------------------------------------------------------------------------


def store(run_id: int, after: int, count: int) -> None:
    lines = [
        LogLine(stream="stdout", line=f"line {after + i + 1}", ts=utcnow(), cursor=str(after + i))
        for i in range(count)
    ]
    assert run_logs.store_batch(get_engine(), run_id=run_id, expected_sequence=after, lines=lines)


def sse(client: TestClient, world: World, run_id: int, **headers: str) -> list[dict[str, str]]:
    """The events of one follow stream, each as its fields."""
    events: list[dict[str, str]] = []
    with client.stream(
        "GET", run_url(urls.API_RUN_LOGS, run_id), params={"follow": "1"},
        headers={**auth(world, "read"), **headers},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    for frame in text.split("\n\n"):
        if frame.strip():
            events.append(dict(line.split(": ", 1) for line in frame.splitlines()))
    return events


def test_log_page(client: TestClient, world: World) -> None:
    run_id = make_run(world, status="running")
    store(run_id, 0, 5)
    page = client.get(
        run_url(urls.API_RUN_LOGS, run_id), params={"since": "2"}, headers=auth(world, "read")
    ).json()
    assert [line["sequence"] for line in page["lines"]] == [3, 4, 5]
    assert page["lines"][0]["line"] == "line 3" and page["lines"][0]["stream"] == "stdout"
    assert page["next"] == 5
    empty = client.get(
        run_url(urls.API_RUN_LOGS, run_id), params={"since": "5"}, headers=auth(world, "read")
    ).json()
    assert empty == {"lines": [], "next": 5}
    bad = client.get(
        run_url(urls.API_RUN_LOGS, run_id), params={"since": "-1"}, headers=auth(world, "read")
    )
    assert bad.status_code == 400


def test_follow_resumes_from_last_event_id_without_repeats(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "FOLLOW_SECONDS", 0.6)
    monkeypatch.setattr(api, "FOLLOW_POLL_SECONDS", 0.05)
    run_id = make_run(world, status="running")
    store(run_id, 0, 3)
    # The run goes on: the bounded stream stops without an end event.
    first = sse(client, world, run_id)
    assert [event["id"] for event in first] == ["1", "2", "3"]
    assert all("event" not in event for event in first)
    assert '"line": "line 2"' in first[1]["data"]
    # More lines, then the run ends with no workload log to wait for.
    store(run_id, 3, 2)
    with session_scope() as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        run.status, run.finished_at = "succeeded", utcnow()
        session.add(run)
    resumed = sse(client, world, run_id, **{"Last-Event-ID": first[-1]["id"]})
    assert [event.get("id") for event in resumed] == ["4", "5", None]
    assert resumed[-1]["event"] == "end"
    # Last-Event-ID wins over ?since, and a finished log ends at once.
    assert [e.get("id") for e in sse(client, world, run_id, **{"Last-Event-ID": "5"})] == [None]


def test_follow_is_refused_to_outsiders(client: TestClient, world: World) -> None:
    run_id = make_run(world, status="running")
    response = client.get(
        run_url(urls.API_RUN_LOGS, run_id), params={"follow": "1"},
        headers=auth(world, "outsider"),
    )  # fmt: skip
    assert response.status_code == 404


def _lose_access(world: World, how: str) -> None:
    with session_scope() as session:
        if how == "membership_removed":
            member = session.exec(
                select(ProjectMember).where(ProjectMember.user_id == world.users["read"])
            ).one()
            session.delete(member)
        elif how == "user_disabled":
            users.set_disabled(session=session, user_id=world.users["read"], disabled=True,
                               actor=None)  # fmt: skip
        elif how == "token_revoked":
            tokens = api_tokens.list_tokens(session=session, actor=None)
            token = next(t for t in tokens if t.owner_email == "read@example.com")
            api_tokens.revoke_token(session=session, actor=None, token_id=token.id)


@pytest.mark.parametrize("how", ["membership_removed", "user_disabled", "token_revoked"])
def test_follow_ends_soon_after_the_reader_loses_access(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Before issue #14 (item 6) a stream went on for FOLLOW_SECONDS (600 s) whatever happened.
    monkeypatch.setattr(api, "FOLLOW_SECONDS", 8.0)
    monkeypatch.setattr(api, "FOLLOW_POLL_SECONDS", 0.05)
    monkeypatch.setattr(api, "ACCESS_RECHECK_SECONDS", 0.3)
    run_id = make_run(world, status="running")
    store(run_id, 0, 2)
    frames: list[str] = []
    with client.stream(
        "GET", run_url(urls.API_RUN_LOGS, run_id), params={"follow": "1"},
        headers=auth(world, "read"),
    ) as response:  # fmt: skip
        assert response.status_code == 200
        lines = response.iter_lines()
        while len([f for f in frames if f.startswith("id: ")]) < 2:
            frames.append(next(lines))
        _lose_access(world, how)
        started = time.monotonic()
        store(run_id, 2, 1)  # lines stored after the loss are not delivered (or only one is)
        frames.extend(lines)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the stream lived {elapsed:.1f}s after access was lost"
    assert "event: denied" in frames
    denied = json.loads(frames[frames.index("event: denied") + 1].removeprefix("data: "))
    assert denied["error"] in ("not_found", "unauthorized") and denied["message"]


# --- cross-site requests with the session cookie --------------------------------------------------


# --- cross-site requests with the session cookie --------------------------------------------------


def cookie_client(world: World, role: str) -> TestClient:
    with Session(get_engine()) as session:
        user = session.exec(select(User).where(User.email == f"{role}@example.com")).one()
    token = sessions.create_session(get_engine(), user=user, ttl=timedelta(hours=1))
    client = TestClient(build_http_app(), follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, token)
    return client


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "http://testserver:8080"}, 403),
        ({"Origin": "null"}, 403),
        ({"Referer": "https://evil.example/runs"}, 403),
        ({"Origin": "http://testserver"}, 202),
        ({"Origin": "HTTP://TestServer:80"}, 202),
        ({"Referer": "http://testserver/runs/1"}, 202),
    ],
)
def test_cookie_writes_need_our_origin(world: World, headers: dict[str, str], status: int) -> None:
    client = cookie_client(world, "read_write")
    run_id = make_run(world, status="running")
    response = client.post(run_url(urls.API_RUN_CANCEL, run_id), headers=headers)
    assert response.status_code == status, response.text
    with Session(get_engine()) as session:
        run = session.get(AgentRun, run_id)
        assert run is not None
        assert (run.cancel_requested_at is not None) == (status == 202)
    if status == 403:
        assert "Origin" in response.json()["message"]


def test_cookie_reads_and_bearer_writes_need_no_origin(world: World) -> None:
    cookie = cookie_client(world, "read_write")
    assert cookie.get(urls.API_PROJECTS).status_code == 200
    start_body = {"project": "alpha", "repository": "acme/app", "issue": 77, "stage": "dev"}
    assert cookie.post(urls.API_RUNS, json=start_body).status_code == 403
    bearer = TestClient(build_http_app())
    response = bearer.post(urls.API_RUNS, json=start_body, headers=auth(world, "read_write"))
    assert response.status_code == 201
    # A bad bearer token is not rescued by a valid cookie.
    mixed = cookie.post(
        urls.API_RUNS, json={**start_body, "issue": 78},
        headers={"Authorization": "Bearer nope", "Origin": PUBLIC_URL},
    )  # fmt: skip
    assert mixed.status_code == 401


def test_membership_removed_hides_the_project(client: TestClient, world: World) -> None:
    run_id = make_run(world)
    with session_scope() as session:
        member = session.exec(
            select(ProjectMember).where(ProjectMember.user_id == world.users["read"])
        ).one()
        session.delete(member)
    response = client.get(run_url(urls.API_RUN, run_id), headers=auth(world, "read"))
    assert response.status_code == 404


def _api_rejected(route: str, reason: str) -> float:
    labels = {"route": route, "reason": reason}
    return REGISTRY.get_sample_value("codexk8s_api_requests_rejected_total", labels) or 0.0


DEEP_JSON = b'{"project":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("method", "path", "body", "reason", "message"),
    [
        # 100,000 nested arrays made json.loads raise RecursionError (issue #14, item 7).
        ("POST", urls.API_RUNS, DEEP_JSON, "too_deep", "nested too deeply"),
        (
            "POST",
            urls.API_RUNS,
            b'{"project": "al\\u0000pha", "repository": "acme/app", "stage": "dev"}',
            "nul_byte",
            "NUL",
        ),
        ("POST", urls.API_RUNS, b"{not json", "bad_json", "not valid JSON"),
        # A NUL in a query parameter reached PostgreSQL, which refuses NUL in text.
        ("GET", urls.API_RUNS + "?project=al%00pha", b"", "nul_byte", "NUL"),
        ("GET", urls.API_RUNS + "?status=%00", b"", "nul_byte", "NUL"),
    ],
)
def test_malformed_input_is_a_400_that_is_audited_and_counted(
    world: World, method: str, path: str, body: bytes, reason: str, message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    client = TestClient(build_http_app(), raise_server_exceptions=False)
    before = _api_rejected(urls.API_RUNS, reason)
    with Session(get_engine()) as session:
        events_before = len(session.exec(select(FlowEvent)).all())
        runs_before = len(session.exec(select(AgentRun)).all())
    response = client.request(
        method, path, content=body or None,
        headers={**auth(world, "read_write"), "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_argument"
    assert message in response.json()["message"]
    assert _api_rejected(urls.API_RUNS, reason) == before + 1
    with Session(get_engine()) as session:
        events = session.exec(select(FlowEvent).order_by(FlowEvent.id)).all()
        assert len(session.exec(select(AgentRun)).all()) == runs_before
    assert len(events) == events_before + 1
    rejection = events[-1]
    assert rejection.event_type == "request_rejected"
    assert rejection.actor_id == str(world.users["read_write"])
    assert rejection.payload["route"] == urls.API_RUNS
    assert rejection.payload["reason"] == reason
    assert "Traceback" not in caplog.text


# --- the inbox: questions and approvals of waiting runs ------------------------------------------


def open_question(world: World) -> tuple[int, int]:
    from codexk8s.domain.run_requests import RequestKind
    from codexk8s.services import run_requests
    from codexk8s.services.run_states import RUNS

    run_id = make_run(world, status="running")
    with get_engine().connect() as connection:
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    request_id = run_requests.open_request(
        get_engine(), run=run, kind=RequestKind.QUESTION, text="Which port?", wait_minutes=5
    )
    assert isinstance(request_id, int)
    return run_id, request_id


ANSWER_BY_ROLE = {
    "anonymous": 401, "outsider": 404, "read": 403, "read_write": 200, "admin": 200,
    "platform_admin": 200, "owner": 200,
}  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_the_inbox_lists_and_answers_by_role(client: TestClient, world: World, role: str) -> None:
    _, request_id = open_question(world)
    listed = client.get(urls.API_REQUESTS, headers=auth(world, role))
    if role == "anonymous":
        assert listed.status_code == 401
    else:
        ids = [r["id"] for r in listed.json()["requests"]]
        assert ids == ([request_id] if ANSWER_BY_ROLE[role] == 200 else [])
    url = urls.API_REQUEST_ANSWER.format(request_id=request_id)
    response = client.post(url, json={"answer": "8080"}, headers=auth(world, role))
    assert response.status_code == ANSWER_BY_ROLE[role], response.text
    if response.status_code == 200:
        assert response.json()["request"]["status"] == "answered"
        again = client.post(url, json={"answer": "9090"}, headers=auth(world, role))
        assert again.status_code == 409


def test_inbox_answers_refuse_bad_input_and_foreign_origins(
    client: TestClient, world: World
) -> None:
    _, request_id = open_question(world)
    url = urls.API_REQUEST_ANSWER.format(request_id=request_id)
    headers = auth(world, "read_write")
    for body in ({"answer": ""}, {"answer": 5}, {"approve": "yes"}, {"other": 1}, []):
        assert client.post(url, json=body, headers=headers).status_code == 400
    assert client.post(urls.API_REQUEST_ANSWER.format(request_id="x"), json={},
                       headers=headers).status_code == 404  # fmt: skip
    assert client.post(urls.API_REQUEST_ANSWER.format(request_id=999999), json={"answer": "a"},
                       headers=headers).status_code == 404  # fmt: skip
    cookie = cookie_client(world, "read_write")
    foreign = cookie.post(url, json={"answer": "a"}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    ours = cookie.post(url, json={"answer": "a"}, headers={"Origin": PUBLIC_URL})
    assert ours.status_code == 200
