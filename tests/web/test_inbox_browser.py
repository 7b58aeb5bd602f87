"""The Inbox in Chromium against the served app: the navigation badge counts what waits for the
signed-in member, a question is answered in place (the run's request is answered in the
database), and a question asked while the page is open appears without a reload."""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s import urls
from codexk8s.crypto import hash_token
from codexk8s.db.models import AgentRun
from codexk8s.domain.run_requests import RequestKind
from codexk8s.services import projects, run_requests, users
from codexk8s.services.run_states import RUNS
from tests.conftest import ServedApp
from tests.web.test_projects_browser import served_engine  # noqa: F401 (a fixture)
from tests.web.test_users_browser import sign_in

pytestmark = pytest.mark.browser

LONG = 60_000  # ms: the first page load may wait for a busy machine


def project_with_member(engine: Engine, role: str) -> tuple[str, str]:
    """A new project and a user with ROLE on it: (key, email)."""
    suffix = uuid.uuid4().hex[:8]
    key, email = f"inbox-{suffix}", f"m-{suffix}@example.com"
    with Session(engine) as session:
        users.add_user(session=session, email=email, role="user")
        projects.create_project(session=session, key=key, name="Inbox")
        projects.add_member(session=session, project_key=key, email=email, role=role)
        session.commit()
    return key, email


def running_run(engine: Engine, key: str, token: str = "") -> int:
    with Session(engine) as session:
        project = projects.require_by_key(session=session, key=key)
        run = AgentRun(
            correlation_id=uuid.uuid4().hex, project_id=project.id or 0, agent_key="dev",
            stage="dev", status="running", issue_number=9,
            run_token_hash=hash_token(token) if token else None,
        )  # fmt: skip
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def waiting_run(engine: Engine, key: str, question: str) -> int:
    run_id = running_run(engine, key)
    with engine.connect() as connection:
        row = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    opened = run_requests.open_request(
        engine, run=row, kind=RequestKind.QUESTION, text=question, wait_minutes=30
    )
    assert isinstance(opened, int)
    return opened


def test_a_member_answers_in_the_inbox_and_new_questions_arrive_live(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
) -> None:
    key, writer = project_with_member(served_engine, "read_write")
    first = waiting_run(served_engine, key, "Which port should the service listen on?")

    sign_in(page, served_app, served_engine, writer)
    expect(page.get_by_test_id("inbox-badge").first).to_have_text("1", timeout=LONG)
    page.goto(served_app.base_url + urls.INBOX)
    item = page.get_by_test_id("inbox-item")
    expect(item).to_have_count(1, timeout=LONG)
    expect(item).to_contain_text("Which port should the service listen on?")
    expect(item).to_contain_text("members with write access")
    page.screenshot(path=str(artifacts_dir / "inbox-question.png"), full_page=True)

    item.get_by_test_id("inbox-answer").fill("8080")
    item.get_by_test_id("inbox-send").click()
    expect(page.get_by_test_id("inbox-notice")).to_have_text("Answered: the run goes on.")
    expect(page.get_by_test_id("inbox-item")).to_have_count(0)
    expect(page.get_by_test_id("inbox-badge")).to_have_count(0)
    decision = run_requests.check_request(served_engine, request_id=first)
    assert decision is not None and (decision.status, decision.answer) == ("answered", "8080")
    assert decision.answered_by == writer

    # Asked by an agent through the served platform MCP server while the page is open: pushed,
    # no reload. (The call waits for its answer; the server's shutdown ends it.)
    token = uuid.uuid4().hex
    run_id = running_run(served_engine, key, token)

    def call_ask() -> None:
        with contextlib.suppress(httpx.HTTPError):  # cut when the test's server stops
            httpx.post(
                served_app.base_url + urls.API_AGENT_MCP.format(run_id=run_id),
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "ask",
                                 "arguments": {"question": "May I add a dependency?"}}},
                headers={"Authorization": f"Bearer {token}",
                         "MCP-Protocol-Version": "2025-06-18",
                         "Accept": "application/json, text/event-stream"},
                timeout=120,
            )  # fmt: skip

    ask = threading.Thread(target=call_ask, daemon=True)
    ask.start()
    expect(page.get_by_test_id("inbox-item")).to_contain_text(
        "May I add a dependency?", timeout=LONG
    )
    expect(page.get_by_test_id("inbox-badge").first).to_have_text("1")


def approval(engine: Engine, key: str, action: str) -> int:
    run_id = running_run(engine, key)
    with engine.connect() as connection:
        row = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
    opened = run_requests.open_request(
        engine, run=row, kind=RequestKind.APPROVAL, text=action, wait_minutes=30
    )
    assert isinstance(opened, int)  # the default policy of request_approval asks an admin
    return opened


def test_a_project_admin_approves_and_denies_in_the_inbox(
    served_app: ServedApp,
    served_engine: Engine,  # noqa: F811
    page: Page,
    artifacts_dir: Path,
) -> None:
    key, admin = project_with_member(served_engine, "admin")
    denied = approval(served_engine, key, "Drop the sessions table")
    approved = approval(served_engine, key, "Force-push the release branch")

    sign_in(page, served_app, served_engine, admin)
    page.goto(served_app.base_url + urls.INBOX)
    items = page.get_by_test_id("inbox-item")
    expect(items).to_have_count(2, timeout=LONG)
    expect(page.get_by_test_id("inbox-badge").first).to_have_text("2")
    page.screenshot(path=str(artifacts_dir / "inbox-approvals.png"), full_page=True)

    drop = items.filter(has_text="Drop the sessions table")
    drop.get_by_role("radio", name="Deny").click()
    drop.get_by_test_id("inbox-note").fill("not on a Friday")
    drop.get_by_test_id("inbox-decide").click()
    expect(page.get_by_test_id("inbox-notice")).to_have_text(
        "Denied: the run stops and fails with your reason."
    )
    expect(items).to_have_count(1)
    expect(page.get_by_test_id("inbox-badge").first).to_have_text("1")

    push = items.filter(has_text="Force-push the release branch")
    push.get_by_role("radio", name="Approve").click()
    push.get_by_test_id("inbox-decide").click()
    expect(page.get_by_test_id("inbox-notice")).to_have_text("Approved: the run goes on.")
    expect(items).to_have_count(0)
    expect(page.get_by_test_id("inbox-badge")).to_have_count(0)

    no = run_requests.check_request(served_engine, request_id=denied)
    yes = run_requests.check_request(served_engine, request_id=approved)
    assert no is not None and (no.status, no.answer, no.answered_by) == (
        "denied",
        "not on a Friday",
        admin,
    )
    assert yes is not None and (yes.status, yes.answered_by) == ("approved", admin)
