"""The Overview, Audit and project pages and the theme toggle, in Chromium on the served app."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from codexk8s.adapters.notify import transports
from codexk8s.db.engine import make_engine, session_scope
from codexk8s.db.models import AgentRun, Project, Repository
from codexk8s.services import audit, notifications, projects, users
from tests.conftest import ServedApp
from tests.web.test_users_browser import sign_in

pytestmark = pytest.mark.browser

TOKEN = "ghp_browser-token-must-not-come-back"
HOOK_SECRET = "browser-hook-secret-must-not-come-back"


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def member_of_new_project(engine: Engine, role: str = "admin") -> tuple[str, str]:
    """A fresh user who is ROLE on a fresh project: (email, project key)."""
    suffix = uuid.uuid4().hex[:8]
    email, key = f"dash-{suffix}@example.com", f"dash-{suffix}"
    with session_scope(engine) as session:
        users.add_user(session=session, email=email, role="user")
        projects.create_project(session=session, key=key, name=f"Dashboard {suffix}", slots=2)
        projects.add_member(session=session, project_key=key, email=email, role=role)
    return email, key


def set_theme(page: Page, theme: str) -> None:
    page.evaluate(f"localStorage.setItem('theme', '{theme}')")
    page.reload()
    expect(page.locator("html")).to_have_class(_has(theme))


def _has(theme: str) -> re.Pattern[str]:
    return re.compile(rf"\b{theme}\b")


def shoot(page: Page, artifacts_dir: Path, name: str) -> None:
    for theme in ("light", "dark"):
        set_theme(page, theme)
        page.wait_for_timeout(300)  # charts animate in
        page.screenshot(path=str(artifacts_dir / f"{name}-{theme}.png"), full_page=True)


def test_overview_shows_charts_and_the_same_figures_as_text(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, key = member_of_new_project(served_engine, "read")
    sign_in(page, served_app, served_engine, email)
    # No runs yet: the empty state says how to start one.
    expect(page.get_by_test_id("overview-empty")).to_contain_text("run:<stage>")
    page.screenshot(path=str(artifacts_dir / "overview-empty.png"), full_page=True)

    now = datetime.now(UTC)
    with session_scope(served_engine) as session:
        project = projects.require_by_key(session=session, key=key)
        for number, (status, stage, seconds, cost) in enumerate(
            [("succeeded", "dev", 100, "0.40"), ("succeeded", "dev", 300, "0.60"),
             ("failed", "plan", 50, "0.25")]
        ):  # fmt: skip
            created = now - timedelta(hours=number + 1)
            session.add(
                AgentRun(
                    correlation_id=f"{key}-{number}", project_id=project.id or 0,
                    agent_key="dev" if stage == "dev" else "em", stage=stage, status=status,
                    created_at=created, started_at=created,
                    finished_at=created + timedelta(seconds=seconds),
                    tokens_input=1000, tokens_output=100, cost_usd=Decimal(cost),
                )
            )  # fmt: skip
    page.reload()
    figures = page.get_by_test_id("overview-figures")
    expect(figures).to_be_visible()
    expect(page.get_by_test_id("stat-success")).to_have_text("66.7%")
    expect(page.get_by_test_id("stat-slots")).to_have_text("0 / 2")
    expect(page.get_by_test_id("stat-active")).to_have_text("0")
    # Every chart is drawn as SVG...
    for chart in ("chart-runs-per-day", "chart-durations", "usage-project", "usage-agent"):
        expect(page.get_by_test_id(chart).locator("svg.recharts-surface").first).to_be_visible()
    # ...and its figures are there as text.
    durations = page.get_by_test_id("durations-table")
    dev = durations.get_by_test_id("duration-figure").filter(has_text="dev")
    expect(dev.get_by_test_id("duration-p50")).to_have_text("3m 20s")  # 100 s and 300 s
    expect(dev.get_by_test_id("duration-p95")).to_have_text("4m 50s")
    expect(page.get_by_test_id("days-table").get_by_test_id("day-figure")).to_have_count(14)
    usage = page.get_by_test_id("usage-project").get_by_test_id("usage-figure")
    expect(usage).to_have_count(1)
    expect(usage.get_by_test_id("usage-cost")).to_have_text("$1.25")
    expect(page.get_by_test_id("slot-use").get_by_test_id("slot-figure")).to_contain_text(key)

    # The open page is pushed changes: one more failed run, announced on the notification
    # channel as another replica's engine would announce it, shows up without a reload.
    with session_scope(served_engine) as session:
        project = projects.require_by_key(session=session, key=key)
        session.add(AgentRun(correlation_id=f"{key}-late", project_id=project.id or 0,
                             agent_key="dev", stage="dev", status="failed"))  # fmt: skip
    with served_engine.begin() as connection:
        topic = notifications.project_topic(project.id or 0)
        for payload in notifications._payloads("another-replica", [topic]):
            connection.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"),
                {"channel": transports.CHANNEL, "payload": payload},
            )
    expect(page.get_by_test_id("stat-success")).to_have_text("50.0%", timeout=15_000)
    shoot(page, artifacts_dir, "overview")

    # Issue #16: the recently failed runs are listed, and the counts open the filtered list.
    failed = page.get_by_test_id("overview-failed").get_by_test_id("overview-run")
    expect(failed).to_have_count(2)
    expect(failed.first.locator("[data-status]")).to_have_attribute("data-status", "failed")
    expect(page.get_by_test_id("overview-running")).to_contain_text("Nothing is running.")
    # The current page is marked in the navigation.
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_test_id("nav-overview")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_test_id("nav-runs")).to_have_attribute("aria-current", "false")
    page.get_by_test_id("stat-queued-link").click()
    expect(page).to_have_url(re.compile(r"/runs\?status=pending$"))
    expect(page.get_by_test_id("filter-status")).to_contain_text("pending")
    expect(nav.get_by_test_id("nav-runs")).to_have_attribute("aria-current", "page")
    # The app's static files are served (the favicon answered 404 before).
    icon = httpx.get(served_app.base_url + "/favicon.ico", timeout=30)
    assert icon.status_code == 200 and icon.content[:4] == b"\x00\x00\x01\x00"


def test_audit_filters(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, key = member_of_new_project(served_engine, "read")
    with session_scope(served_engine) as session:
        project = projects.require_by_key(session=session, key=key)
        audit.record_event(session=session, correlation_id="c-1", event_type="browser_probe",
                           actor_id="probe@example.com", project_id=project.id,
                           payload={"note": "visible to members", "nested": {"n": 1}})  # fmt: skip
        audit.record_event(session=session, correlation_id="c-2", event_type="browser_hidden",
                           payload={"note": "no project: admins only"})  # fmt: skip
    sign_in(page, served_app, served_engine, email)
    page.get_by_role("navigation", name="Main").get_by_test_id("nav-audit").click()
    events = page.get_by_test_id("audit-event")
    expect(events.first).to_be_visible()
    types = page.get_by_test_id("audit-event-type")
    # Their project's events (creation, their membership, the probe), no event without project.
    expect(types).to_have_text(["browser_probe", "member_added", "project_created"])

    page.get_by_test_id("audit-type").click()
    page.get_by_role("option", name="browser_probe").click()
    expect(types).to_have_text(["browser_probe"])
    # One line each, in words.
    expect(events.first.get_by_test_id("audit-summary")).to_have_text("Browser probe")
    events.first.locator("summary").click()
    expect(events.first.get_by_test_id("audit-payload")).to_contain_text('"note": "visible to')

    page.get_by_test_id("audit-clear").click()
    expect(types).to_have_count(3)
    page.get_by_test_id("audit-actor").fill("nobody-like-this")
    page.get_by_test_id("audit-apply").click()
    expect(page.get_by_test_id("audit-empty")).to_be_visible()
    page.get_by_test_id("audit-actor").fill("PROBE@")
    page.get_by_test_id("audit-apply").click()
    expect(types).to_have_text(["browser_probe"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    page.get_by_test_id("audit-since").fill(tomorrow)
    page.get_by_test_id("audit-apply").click()
    expect(page.get_by_test_id("audit-empty")).to_be_visible()
    page.get_by_test_id("audit-clear").click()
    expect(types).to_have_count(3)
    shoot(page, artifacts_dir, "audit")


def test_project_page_settings_repository_and_delete(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, key = member_of_new_project(served_engine, "admin")
    sign_in(page, served_app, served_engine, email)
    page.goto(served_app.base_url + "/projects")
    page.get_by_test_id("project-row").filter(has_text=key).get_by_role("link").click()
    expect(page).to_have_url(f"{served_app.base_url}/projects/{key}")
    expect(page.get_by_test_id("project-page-key")).to_have_text(key)
    expect(page.get_by_test_id("members-table").get_by_test_id("member-email")).to_have_text(
        [email]
    )

    page.get_by_test_id("settings-slots").fill("3")
    page.get_by_test_id("settings-model").fill("gpt-5-codex")
    page.get_by_test_id("settings-learning").click()
    page.get_by_test_id("settings-save").click()
    expect(page.get_by_test_id("project-notice")).to_have_text("Settings saved.")
    with Session(served_engine) as session:
        project = session.exec(select(Project).where(Project.key == key)).one()
    assert project.settings == {
        "slots": 3, "learning_mode_default": True, "default_model": "gpt-5-codex"
    }  # fmt: skip

    # The token is checked against the repository on GitHub before anything is stored.
    page.get_by_test_id("repository-full-name").fill(f"octo-org/other-{key}")
    page.get_by_test_id("repository-token-input").fill(TOKEN)
    page.get_by_test_id("add-repository").click()
    expect(page.get_by_test_id("project-error")).to_contain_text("GitHub rejected the token")
    expect(page.get_by_test_id("repository-row").filter(has_text=f"other-{key}")).to_have_count(0)

    served_app.github.add_repo(f"octo-org/{key}", token=TOKEN)
    page.get_by_test_id("repository-full-name").fill(f"octo-org/{key}")
    page.get_by_test_id("repository-token-input").fill(TOKEN)
    page.get_by_test_id("repository-secret-input").fill(HOOK_SECRET)
    page.get_by_test_id("add-repository").click()
    row = page.get_by_test_id("repository-row").filter(has_text=key)
    expect(row.get_by_test_id("repository-token")).to_have_text("set")
    expect(row.get_by_test_id("repository-webhook-secret")).to_have_text("set")
    # The secrets went in, and nothing brings them back: not the form, not the page.
    expect(page.get_by_test_id("repository-token-input")).to_have_value("")
    expect(page.get_by_test_id("repository-secret-input")).to_have_value("")
    page.reload()
    expect(row).to_be_visible()
    html = page.content()
    assert TOKEN not in html and HOOK_SECRET not in html
    with Session(served_engine) as session:
        stored = session.exec(select(Repository).where(Repository.name == key)).one()
    assert stored.token_ciphertext and TOKEN not in stored.token_ciphertext
    shoot(page, artifacts_dir, "project")

    page.get_by_test_id("delete-project").click()
    confirm = page.get_by_test_id("confirm-delete")
    expect(confirm).to_be_disabled()
    page.get_by_test_id("delete-confirmation").fill(key[:-1])
    expect(confirm).to_be_disabled()
    page.get_by_test_id("delete-confirmation").fill(key)
    page.screenshot(path=str(artifacts_dir / "project-delete-dialog.png"))
    confirm.click()
    expect(page).to_have_url(served_app.base_url + "/projects")
    with Session(served_engine) as session:
        assert session.exec(select(Project).where(Project.key == key)).first() is None


def test_theme_toggle_persists_and_the_nav_collapses_on_a_phone(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, key = member_of_new_project(served_engine, "admin")
    sign_in(page, served_app, served_engine, email)
    html = page.locator("html")
    set_theme(page, "light")
    page.get_by_test_id("theme-toggle").click()
    expect(html).to_have_class(_has("dark"))
    page.reload()
    expect(html).to_have_class(_has("dark"))
    page.get_by_test_id("theme-toggle").click()
    expect(html).to_have_class(_has("light"))

    shoot(page, artifacts_dir, "overview-empty")
    for name, path in (("projects", "/projects"), ("users", "/users"), ("runs", "/runs"),
                       ("agents", "/agents")):  # fmt: skip
        page.goto(served_app.base_url + path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        shoot(page, artifacts_dir, name)

    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", "/projects", f"/projects/{key}", "/audit"):
        page.goto(served_app.base_url + path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.get_by_test_id("nav-menu")).to_be_visible()
        expect(page.get_by_role("navigation", name="Main", exact=True)).to_be_hidden()
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    shoot(page, artifacts_dir, "phone-audit")
    page.get_by_test_id("nav-menu").click()
    page.get_by_test_id("nav-menu-projects").click()
    expect(page).to_have_url(served_app.base_url + "/projects")
    shoot(page, artifacts_dir, "phone-projects")
