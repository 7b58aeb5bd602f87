"""The Projects page in Chromium: a project admin sees their project and manages its members."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.db.engine import make_engine
from codexk8s.domain.run_requests import WAITING_SLOT_WORDS
from codexk8s.services import projects, users
from tests.conftest import ServedApp
from tests.web.test_users_browser import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def test_project_admin_adds_a_member(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    with Session(served_engine) as session:
        users.add_user(session=session, email="lead@example.com", role="user")
        users.add_user(session=session, email="newcomer@example.com", role="user")
        projects.create_project(session=session, key="browser-proj", name="Browser project")
        projects.add_member(
            session=session, project_key="browser-proj", email="lead@example.com", role="admin"
        )
        session.commit()
    sign_in(page, served_app, served_engine, "lead@example.com")
    page.goto(served_app.base_url + "/projects")
    row = page.get_by_test_id("project-row").filter(has_text="browser-proj")
    expect(row.get_by_test_id("project-role")).to_have_text("admin")
    row.get_by_test_id("show-members").click()
    members = page.get_by_test_id("members-table")
    expect(members.get_by_test_id("member-email")).to_have_text(["lead@example.com"])

    page.get_by_test_id("new-member-email").fill("newcomer@example.com")
    page.get_by_test_id("add-member").click()
    expect(members.get_by_test_id("member-email")).to_have_count(2)
    expect(members.get_by_text("newcomer@example.com")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "projects-members.png"), full_page=True)
    with Session(served_engine) as session:
        listed = projects.list_members(session=session, actor=None, project_key="browser-proj")
    assert {(m.email, m.role) for m in listed} == {
        ("lead@example.com", "admin"),
        ("newcomer@example.com", "read"),
    }


def test_member_changes_on_the_project_page_say_what_happened(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    """Issue #16: on a project's page, adding someone without an account did nothing visible,
    a successful add said nothing, and Remove acted at once. Each outcome is now shown in the
    members panel and a removal asks first."""
    with Session(served_engine) as session:
        users.add_user(session=session, email="lead2@example.com", role="user")
        users.add_user(session=session, email="joiner@example.com", role="user")
        projects.create_project(session=session, key="members-page", name="Members page")
        projects.add_member(
            session=session, project_key="members-page", email="lead2@example.com", role="admin"
        )
        session.commit()
    sign_in(page, served_app, served_engine, "lead2@example.com")
    page.goto(served_app.base_url + "/projects/members-page")
    members = page.get_by_test_id("members-table")
    expect(members.get_by_test_id("member-email")).to_have_text(["lead2@example.com"])

    page.get_by_test_id("new-member-email").fill("nobody@example.com")
    page.get_by_test_id("add-member").click()
    expect(page.get_by_test_id("members-error")).to_contain_text(
        "nobody@example.com has no account here yet"
    )
    page.get_by_test_id("new-member-email").fill("joiner@example.com")
    page.get_by_test_id("add-member").click()
    expect(page.get_by_test_id("members-notice")).to_have_text(
        "Added joiner@example.com to members-page as read."
    )
    expect(page.get_by_test_id("members-error")).to_have_count(0)
    joiner = members.get_by_test_id("member-row").filter(has_text="joiner@example.com")

    # Remove asks first; keeping them changes nothing.
    joiner.get_by_test_id("remove-member").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("Remove joiner@example.com?")
    page.get_by_test_id("remove-member-dismiss").click()
    expect(members.get_by_test_id("member-email")).to_have_count(2)
    joiner.get_by_test_id("remove-member").click()
    page.screenshot(path=str(artifacts_dir / "project-member-remove.png"), full_page=True)
    page.get_by_test_id("remove-member-confirm").click()
    expect(page.get_by_test_id("members-notice")).to_have_text(
        "Removed joiner@example.com from members-page."
    )
    expect(members.get_by_test_id("member-email")).to_have_text(["lead2@example.com"])
    with Session(served_engine) as session:
        listed = projects.list_members(session=session, actor=None, project_key="members-page")
    assert [m.email for m in listed] == ["lead2@example.com"]

    # Issue #19's settings on the same page: the bots that may start runs, discussions first.
    card = page.get_by_test_id("conversation-settings")
    card.get_by_test_id("conversation-bots").fill("renovate[bot]")
    card.get_by_test_id("conversation-stages").fill("plan")
    card.get_by_test_id("conversation-save").click()
    expect(page.get_by_test_id("project-notice")).to_have_text("Conversation settings saved.")
    page.reload()
    expect(card.get_by_test_id("conversation-bots")).to_have_value("renovate[bot]", timeout=60_000)
    expect(card.get_by_test_id("conversation-stages")).to_have_value("plan")
    with Session(served_engine) as session:
        stored = projects.require_by_key(session=session, key="members-page").settings
    assert (stored["trigger_bots"], stored["discussion_stages"]) == (["renovate[bot]"], ["plan"])

    # Issue #18's waiting-slot policy: a select among the agent tools' settings.
    policies = page.get_by_test_id("tool-policies")
    expect(policies.get_by_test_id("waiting-slot")).to_have_text("keeps its slot")
    policies.get_by_test_id("waiting-slot").click()
    page.get_by_role("option", name=WAITING_SLOT_WORDS["release"], exact=True).click()
    expect(page.get_by_test_id("project-notice")).to_have_text(
        f"A run waiting for a person {WAITING_SLOT_WORDS['release']}."
    )
    with Session(served_engine) as session:
        stored = projects.require_by_key(session=session, key="members-page").settings
    assert stored["waiting_slot"] == "release"


def test_platform_admin_creates_a_project(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    with Session(served_engine) as session:
        users.add_user(session=session, email="platform@example.com", role="admin")
        session.commit()
    sign_in(page, served_app, served_engine, "platform@example.com")
    page.goto(served_app.base_url + "/projects")
    page.get_by_test_id("new-project-key").fill("made-in-browser")
    page.get_by_test_id("new-project-name").fill("Made in the browser")
    page.get_by_test_id("new-project-slots").fill("3")
    page.get_by_test_id("new-project-submit").click()
    row = page.get_by_test_id("project-row").filter(has_text="made-in-browser")
    expect(row).to_contain_text("Made in the browser")
    expect(page.get_by_test_id("new-project-key")).to_have_value("")  # the form was reset
    page.screenshot(path=str(artifacts_dir / "projects-created.png"), full_page=True)
    with Session(served_engine) as session:
        created = projects.require_by_key(session=session, key="made-in-browser")
        assert created.settings["slots"] == 3
