"""The Runs page in Chromium on the served app: runs appear and change without a reload (webhook,
engine, API cancel), the page resyncs after its websocket dropped, filters and paging work."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from playwright.sync_api import Locator, Page, WebSocketRoute, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.adapters.github.webhooks import sign
from codexk8s.adapters.notify import transports
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.models import AgentRun
from codexk8s.services import agents, api_tokens, projects, repositories, users
from codexk8s.urls import API_RUN_CANCEL, WEBHOOK_GITHUB
from codexk8s.web.state.runs import PAGE_SIZE
from tests.conftest import (
    ServedApp,
    _admin_execute,
    _with_database,
    free_port,
    link_member,
    wait_for_http,
)
from tests.servers import stop_process_group
from tests.web.test_users_browser import sign_in
from tests.webhook_examples import example, with_labels

pytestmark = pytest.mark.browser
LIVE_TIMEOUT = 10_000  # ms; pushes take ~0.1 s, but the machine is shared and slow
PAGE_TIMEOUT = 30_000  # ms; a page the browser has not loaded yet in this session
RUNS = AgentRun.__table__  # type: ignore[attr-defined]


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


class Team:
    """A project with a repository, a read_write member signed in, and an API token."""

    def __init__(self, served_app: ServedApp, engine: Engine) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.served_app, self.engine = served_app, engine
        self.email = f"runner-{suffix}@example.com"
        self.project = f"live-{suffix}"
        self.repository = f"octo-{suffix}/app"
        with session_scope(engine) as session:
            users.add_user(session=session, email=self.email, role="user")
            projects.create_project(session=session, key=self.project, name="Live project")
            projects.add_member(
                session=session, project_key=self.project, email=self.email, role="read_write"
            )
            repositories.add_repository(
                session=session, box=get_secret_box(), project_key=self.project,
                full_name=self.repository,
            )  # fmt: skip
            # The engine launches `sleep` through the local runtime: the run stays running until
            # it is canceled.
            agents.set_agent(session=session, key="dev", command="sleep 120", engine="process")
            _, self.api_token = api_tokens.create_token(session=session, email=self.email)
        link_member(self.project, engine=engine)

    def label_issue(self, number: int, title: str) -> httpx.Response:
        """POST a signed `issues.labeled run:dev` delivery, as GitHub sends it."""
        payload = with_labels(example("issues", "labeled"), "issue", ["run:dev"], "run:dev")
        owner, name = self.repository.split("/")
        payload["repository"].update(full_name=self.repository, name=name)
        payload["repository"]["owner"]["login"] = owner
        payload["issue"].update(number=number, title=title)
        body = json.dumps(payload).encode()
        response = httpx.post(
            self.served_app.base_url + WEBHOOK_GITHUB,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(ServedApp.webhook_secret, body),
            },
            timeout=30,
        )
        assert response.status_code in (200, 201, 202), response.text
        return response

    def run_id(self, number: int) -> int:
        with Session(self.engine) as session:
            return int(
                session.exec(
                    sa.select(RUNS.c.id).where(RUNS.c.issue_number == number)  # type: ignore[call-overload]
                ).one()[0]
            )

    def cancel(self, run_id: int) -> None:
        response = httpx.post(
            self.served_app.base_url + API_RUN_CANCEL.format(run_id=run_id),
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=30,
        )
        assert response.status_code in (200, 202), response.text


def row_for(page: Page, number: int) -> Locator:
    # The target reads `owner/name#42`.
    return page.get_by_test_id("run-row").filter(
        has=page.get_by_test_id("run-target").get_by_text(re.compile(rf"#{number}$"))
    )


def mark_document(page: Page) -> None:
    """Leave a mark that a reload would wipe out."""
    page.evaluate("window.__not_reloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"


def open_runs(page: Page, team: Team) -> None:
    sign_in(page, team.served_app, team.engine, team.email)
    page.goto(team.served_app.base_url + "/runs")
    expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    expect(page.get_by_test_id("runs-loading")).to_have_count(0, timeout=LIVE_TIMEOUT)


def test_webhook_run_appears_and_changes_without_reload(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    team = Team(served_app, served_engine)
    open_runs(page, team)
    expect(page.get_by_test_id("empty-state")).to_contain_text("No runs yet")
    page.screenshot(path=str(artifacts_dir / "runs-empty.png"), full_page=True)
    mark_document(page)

    team.label_issue(4101, "Live rows please")
    row = row_for(page, 4101)
    expect(row).to_have_count(1, timeout=LIVE_TIMEOUT)
    expect(row).to_contain_text("Live rows please")
    expect(row.get_by_test_id("run-project")).to_have_text(team.project)
    run_id = team.run_id(4101)
    expect(row.get_by_test_id("run-link")).to_have_attribute("href", f"/runs/{run_id}")
    # The engine launches it: pending → starting → running, pushed as it happens.
    expect(row.get_by_test_id("run-status")).to_have_text("running", timeout=LIVE_TIMEOUT * 3)
    page.screenshot(path=str(artifacts_dir / "runs-live-running.png"), full_page=True)

    team.cancel(run_id)
    expect(row.get_by_test_id("run-status")).to_have_text("canceled", timeout=LIVE_TIMEOUT * 3)
    assert_not_reloaded(page)
    page.screenshot(path=str(artifacts_dir / "runs-live-canceled.png"), full_page=True)


def test_page_resyncs_after_its_websocket_dropped(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    team = Team(served_app, served_engine)
    sockets: list[WebSocketRoute] = []
    is_blocked = False

    def route(ws: WebSocketRoute) -> None:
        if is_blocked:
            ws.close(code=1011, reason="test: network down")
            return
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket("**/_event/**", route)
    open_runs(page, team)
    team.label_issue(4201, "Before the drop")
    row = row_for(page, 4201)
    expect(row.get_by_test_id("run-status")).to_have_text("running", timeout=LIVE_TIMEOUT * 3)
    mark_document(page)

    # The network goes away: the socket drops and reconnects are refused for a while.
    is_blocked = True
    for ws in sockets:
        ws.close(code=1006, reason="test: dropped")
    team.cancel(team.run_id(4201))
    team.label_issue(4202, "While disconnected")
    with session_scope(served_engine) as session:
        status = session.exec(
            sa.select(RUNS.c.status).where(RUNS.c.issue_number == 4201)  # type: ignore[call-overload]
        ).one()[0]
    page.wait_for_timeout(1500)
    # Nothing can have reached the page: it still shows what it had.
    expect(row_for(page, 4202)).to_have_count(0)
    expect(row.get_by_test_id("run-status")).to_have_text("running")

    is_blocked = False  # the network is back: the page reconnects and reloads by itself
    expect(row_for(page, 4202)).to_have_count(1, timeout=LIVE_TIMEOUT * 2)
    expect(row.get_by_test_id("run-status")).not_to_have_text("running", timeout=LIVE_TIMEOUT * 3)
    assert status in ("running", "canceled")  # cancel was requested while it ran
    assert_not_reloaded(page)
    # And it is live again.
    team.label_issue(4203, "After the drop")
    expect(row_for(page, 4203)).to_have_count(1, timeout=LIVE_TIMEOUT)
    page.screenshot(path=str(artifacts_dir / "runs-after-reconnect.png"), full_page=True)


def add_runs(engine: Engine, project_key: str, count: int, **values: Any) -> list[int]:
    with engine.begin() as connection:
        project_id = connection.execute(
            sa.text("SELECT id FROM projects WHERE key = :k"), {"k": project_key}
        ).scalar_one()
        base = datetime(2025, 6, 1, tzinfo=UTC)
        rows = [
            {
                "correlation_id": uuid.uuid4().hex,
                "project_id": project_id,
                "issue_number": 5000 + n,
                "issue_title": f"Paged issue {n}",
                "agent_key": values.get("agent_key", "dev"),
                "stage": values.get("stage", "dev"),
                "status": values.get("status", "succeeded"),
                "status_reason": values.get("status_reason"),
                "repository_id": values.get("repository_id"),
                "attempt": values.get("attempt", 1),
                "parent_run_id": values.get("parent_run_id"),
                "created_at": values.get("created_at", base + timedelta(minutes=n)),
                "started_at": base + timedelta(minutes=n),
                "finished_at": base + timedelta(minutes=n, seconds=95),
            }
            for n in range(count)
        ]
        return list(connection.execute(RUNS.insert().returning(RUNS.c.id), rows).scalars())


def choose(page: Page, testid: str, option: str) -> None:
    page.get_by_test_id(testid).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_filters_sort_and_paging(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    team = Team(served_app, served_engine)
    ids = add_runs(served_engine, team.project, PAGE_SIZE + 5)
    (failed,) = add_runs(served_engine, team.project, 1, status="failed", stage="plan",
                         agent_key="em")  # fmt: skip
    open_runs(page, team)
    rows = page.get_by_test_id("run-row")
    expect(rows).to_have_count(PAGE_SIZE)
    expect(rows.first.get_by_test_id("run-duration")).to_have_text("1m 35s")
    expect(page.get_by_test_id("previous-page")).to_be_disabled()

    page.get_by_test_id("next-page").click()
    expect(rows).to_have_count(6)
    expect(page.get_by_test_id("next-page")).to_be_disabled()
    expect(rows.last.get_by_test_id("run-link")).to_have_text(f"#{ids[0]}")
    page.get_by_test_id("previous-page").click()
    expect(rows).to_have_count(PAGE_SIZE)

    choose(page, "filter-status", "failed")
    expect(rows).to_have_count(1)
    expect(rows.get_by_test_id("run-link")).to_have_text(f"#{failed}")
    expect(rows.get_by_test_id("run-status")).to_have_attribute("data-status", "failed")
    choose(page, "filter-stage", "dev")
    expect(page.get_by_test_id("empty-state")).to_contain_text("No runs match these filters")
    page.screenshot(path=str(artifacts_dir / "runs-no-match.png"), full_page=True)
    page.get_by_test_id("clear-filters").first.click()
    expect(rows).to_have_count(PAGE_SIZE)

    page.get_by_test_id("filter-search").fill("#5003")
    expect(rows).to_have_count(1)
    expect(rows.get_by_test_id("run-link")).to_have_text(f"#{ids[3]}")
    page.get_by_test_id("filter-search").fill("")
    expect(rows).to_have_count(PAGE_SIZE)

    choose(page, "sort", "Oldest first")
    expect(rows.first.get_by_test_id("run-link")).to_have_text(f"#{ids[0]}")
    page.screenshot(path=str(artifacts_dir / "runs-table.png"), full_page=True)

    # Phone width: cards with the status first instead of the table; the page keeps its width.
    page.set_viewport_size({"width": 390, "height": 844})
    cards = page.get_by_test_id("run-card")
    expect(cards.first).to_be_visible()
    expect(page.get_by_test_id("runs-table")).to_be_hidden()
    status_box = cards.first.get_by_test_id("run-status").bounding_box()
    assert status_box is not None and status_box["x"] + status_box["width"] <= 390
    wide = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .slice(0, 8).map(e => e.tagName + ' ' + e.getAttribute('data-testid'))"""
    )
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), wide
    page.screenshot(path=str(artifacts_dir / "runs-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="dark")
    expect(rows.first).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "runs-dark.png"), full_page=True)


def test_the_list_reads_at_a_glance_and_its_filters_are_shareable(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    """Issue #16: filters in the URL, a total, relative times with the absolute one on hover,
    repo#issue, reasons in words, whole rows clickable, reruns linked to their parent."""
    team = Team(served_app, served_engine)
    recent = datetime.now(UTC) - timedelta(minutes=5)
    with served_engine.connect() as connection:
        repository_id = connection.execute(
            sa.text("SELECT id FROM repositories WHERE owner || '/' || name = :n"),
            {"n": team.repository},
        ).scalar_one()
    (parent,) = add_runs(served_engine, team.project, 1, status="failed",
                         status_reason="agent_error", created_at=recent,
                         repository_id=repository_id)  # fmt: skip
    (child,) = add_runs(served_engine, team.project, 1, status="failed", attempt=2,
                        status_reason="unschedulable", parent_run_id=parent,
                        created_at=recent + timedelta(seconds=30),
                        repository_id=repository_id)  # fmt: skip
    add_runs(served_engine, team.project, 3)
    open_runs(page, team)
    expect(page.get_by_test_id("runs-total")).to_have_text("5 runs")
    choose(page, "filter-status", "failed")
    expect(page).to_have_url(re.compile(r"/runs\?status=failed$"))
    expect(page.get_by_test_id("runs-total")).to_have_text("2 runs match these filters")
    rows = page.get_by_test_id("run-row")
    first = rows.first
    expect(first.get_by_test_id("run-target")).to_contain_text(f"{team.repository}#5000")
    expect(first.get_by_test_id("run-reason")).to_have_text("No node could take the run's pod")
    expect(first.get_by_test_id("run-created")).to_have_text("4 min ago")
    expect(first.get_by_test_id("run-created")).to_have_attribute(
        "title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )
    expect(first.get_by_test_id("run-attempt")).to_have_text(f"attempt 2 of #{parent}")
    page.screenshot(path=str(artifacts_dir / "runs-at-a-glance.png"), full_page=True)

    # The filtered list is shareable: a new tab on the URL shows the same.
    other = page.context.new_page()
    other.goto(team.served_app.base_url + "/runs?status=failed&q=5000")
    expect(other.get_by_test_id("run-row")).to_have_count(2)
    expect(other.get_by_test_id("filter-status")).to_contain_text("failed")
    expect(other.get_by_test_id("filter-search")).to_have_value("5000")
    other.close()

    # A click anywhere on the row opens the run; the parent link opens the parent.
    first.get_by_test_id("run-stage").click()
    expect(page).to_have_url(re.compile(rf"/runs/{child}$"))
    # The address changes first; the run page replaces the list when its code and state are in
    # (slow at the end of a full suite on the shared machine): until then "run-attempt" also
    # names the list's two copies of the link.
    expect(page.get_by_test_id("run-title")).to_be_visible(timeout=PAGE_TIMEOUT)
    expect(page.get_by_test_id("run-attempt")).to_have_text(
        f"Attempt 2 · rerun of #{parent}", timeout=LIVE_TIMEOUT
    )
    page.get_by_test_id("run-attempt").click()
    expect(page).to_have_url(re.compile(rf"/runs/{parent}$"))
    expect(page.get_by_test_id("status-reason")).to_contain_text("The agent reported a failure")


def test_start_run_from_the_runs_page_and_sign_in_when_signed_out(
    served_app: ServedApp, served_engine: Engine, page: Page, browser: Any, artifacts_dir: Path
) -> None:
    team = Team(served_app, served_engine)
    open_runs(page, team)
    page.get_by_test_id("start-run").click()
    expect(page.get_by_test_id("start-run-repository")).to_contain_text(team.repository)
    page.get_by_test_id("start-run-submit").click()
    expect(page.get_by_test_id("start-run-error")).to_contain_text("number of the issue")
    page.get_by_test_id("start-run-number").fill("77")
    page.screenshot(path=str(artifacts_dir / "runs-start-run.png"), full_page=True)
    page.get_by_test_id("start-run-submit").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+$"), timeout=LIVE_TIMEOUT)
    run_id = team.run_id(77)
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}$"))
    with served_engine.connect() as connection:
        events = connection.execute(
            sa.text("SELECT event_type, actor_type FROM flow_events WHERE run_id = :r"),
            {"r": run_id},
        ).all()
    assert ("run_created", "human") in [tuple(e) for e in events]
    team.cancel(run_id)

    # A signed-out visitor is asked to sign in, not told there are no runs.
    context = browser.new_context()
    try:
        stranger = context.new_page()
        stranger.goto(team.served_app.base_url + "/runs")
        expect(stranger.get_by_test_id("runs-sign-in")).to_be_visible()
        expect(stranger.get_by_test_id("empty-state")).not_to_contain_text("No runs yet")
    finally:
        context.close()


# --- two replicas sharing Redis -------------------------------------------------------------------


@contextlib.contextmanager
def replica(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """One more `codexk8s serve` process with ENV (the served app's, changed)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    # Each server builds into its own data folder; starting from a copy of the session's served
    # app's folder (node_modules shared, read-only) saves the package install.
    source = Path(env["CODEXK8S_DATA_DIR"]) / "web"
    web = workdir / "web"
    shutil.copytree(source, web, ignore=shutil.ignore_patterns("node_modules"))
    (web / "node_modules").symlink_to(source / "node_modules")
    env = {
        **env, "CODEXK8S_PUBLIC_URL": base_url, "CODEXK8S_DATA_DIR": str(workdir),
        "REFLEX_WEB_WORKDIR": str(web),
    }  # fmt: skip
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        try:
            wait_for_http(f"{base_url}/healthz")
            wait_for_http(f"{base_url}/")
        except TimeoutError:
            raise RuntimeError((workdir / "serve.log").read_text()[-4000:]) from None
        yield base_url
    finally:
        stop_process_group(process)
        log.close()


def test_webhook_on_one_replica_reaches_a_page_on_the_other(
    served_app: ServedApp,
    pg_admin_url: str,
    pg_template: str,
    redis_server_url: str,
    tmp_path: Path,
    page: Page,
    artifacts_dir: Path,
) -> None:
    """Replicas A and B share the database and Redis (Reflex state and notifications): a
    delivery accepted by A shows up on a Runs page served by B without a reload."""
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    _admin_execute(pg_admin_url, f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    env = {
        **served_app.env,
        "CODEXK8S_DATABASE_URL": _with_database(pg_admin_url, name),
        "CODEXK8S_REDIS_URL": f"{redis_server_url}/7",
        "CODEXK8S_ENGINE_ENABLED": "false",
    }
    engine = make_engine(env["CODEXK8S_DATABASE_URL"])
    try:
        with replica(env, tmp_path / "a") as replica_a, replica(env, tmp_path / "b") as replica_b:
            # Both replicas listen on the Redis channel (the other replicas' pushes come there).
            client = redis.Redis.from_url(env["CODEXK8S_REDIS_URL"])
            listeners = dict(client.pubsub_numsub(transports.CHANNEL))
            client.close()
            assert listeners[transports.CHANNEL.encode()] >= 2
            team = Team(served_app, engine)
            viewer = ServedApp(replica_b, served_app.process, env, served_app.github)
            sign_in(page, viewer, engine, team.email)
            page.goto(replica_b + "/runs")
            expect(page.get_by_test_id("empty-state")).to_be_visible(timeout=LIVE_TIMEOUT)
            mark_document(page)
            team.served_app = ServedApp(replica_a, served_app.process, env, served_app.github)
            team.label_issue(4301, "Posted to replica A")
            expect(row_for(page, 4301)).to_have_count(1, timeout=LIVE_TIMEOUT)
            assert_not_reloaded(page)
            page.screenshot(path=str(artifacts_dir / "runs-two-replicas.png"), full_page=True)
    finally:
        engine.dispose()
        _admin_execute(pg_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
