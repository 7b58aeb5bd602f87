"""The Agents page in Chromium: an admin edits a prompt template, saves a version, reads its
diff in the history and restores the older one; a plain user sees everything read-only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.services import agents, prompt_templates
from tests.conftest import ServedApp
from tests.web.test_users_browser import add_user, sign_in

pytestmark = pytest.mark.browser
TIMEOUT = 30_000


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def history(engine: Engine, scope: str, kind: str) -> list[tuple[int, str]]:
    with Session(engine) as session:
        found = prompt_templates.history(session=session, scope=scope, kind=kind)
    return [(v.version, v.body) for v in found]


def test_admin_edits_saves_and_restores_a_template_and_a_user_only_reads(
    served_app: ServedApp, served_engine: Engine, page: Page, browser: Browser, artifacts_dir: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    admin_email, plain_email = f"admin-{suffix}@example.com", f"plain-{suffix}@example.com"
    add_user(served_engine, admin_email, "admin")
    add_user(served_engine, plain_email, "user")
    # `codexk8s serve` seeded the shipped templates before it started.
    seeded = history(served_engine, "release", "work")
    assert [version for version, _ in seeded] == [1]
    original = seeded[0][1]

    sign_in(page, served_app, served_engine, admin_email)
    page.get_by_role("navigation", name="Main").get_by_test_id("nav-agents").click()
    expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()
    expect(page.get_by_test_id("agent-row")).to_have_count(8, timeout=TIMEOUT)
    expect(page.get_by_test_id("template-version")).to_have_text("version 1")

    templates = page.get_by_test_id("templates")
    templates.get_by_role("combobox").first.click()
    page.get_by_role("option", name="release", exact=True).click()
    editor = page.get_by_test_id("template-editor")
    expect(editor).to_have_value(original, timeout=TIMEOUT)
    expect(page.get_by_test_id("history-row")).to_have_count(1)

    # A mistyped placeholder is flagged while typing and cannot be saved.
    editor.fill(original + "\nMention {{isue_title}}.\n")
    expect(page.get_by_test_id("template-draft-error")).to_contain_text(
        "unknown placeholder {{isue_title}}"
    )
    expect(page.get_by_test_id("save-template")).to_be_disabled()

    edited = original + "\nLink the changelog entry for {{issue_title}}.\n"
    editor.fill(edited)
    expect(page.get_by_test_id("template-draft-error")).to_have_count(0)
    page.get_by_test_id("tab-changes").click()
    expect(page.get_by_test_id("draft-diff")).to_contain_text(
        "+Link the changelog entry for {{issue_title}}."
    )
    page.get_by_test_id("tab-preview").click()
    expect(page.get_by_test_id("template-preview")).to_contain_text(
        "Link the changelog entry for Add a /healthz endpoint."
    )
    page.get_by_test_id("tab-edit").click()
    page.get_by_test_id("save-template").click()
    expect(page.get_by_test_id("agents-notice")).to_have_text("Saved release/work as version 2.")
    expect(page.get_by_test_id("template-version")).to_have_text("version 2")
    rows = page.get_by_test_id("history-row")
    expect(rows).to_have_count(2)
    expect(rows.first.get_by_test_id("history-author")).to_have_text(admin_email)
    assert history(served_engine, "release", "work") == [(2, edited), (1, original)]

    rows.first.get_by_test_id("history-diff").click()
    expect(page.get_by_test_id("version-diff-title")).to_have_text("Version 2 against version 1")
    expect(page.get_by_test_id("version-diff")).to_contain_text(
        "+Link the changelog entry for {{issue_title}}."
    )
    page.screenshot(path=str(artifacts_dir / "agents-admin-diff.png"), full_page=True)

    rows.nth(1).get_by_test_id("history-restore").click()
    expect(page.get_by_test_id("agents-notice")).to_have_text(
        "Restored version 1 of release/work as version 3."
    )
    expect(rows).to_have_count(3)
    expect(editor).to_have_value(original)
    assert [v for v, _ in history(served_engine, "release", "work")] == [3, 2, 1]
    assert history(served_engine, "release", "work")[0][1] == original
    page.screenshot(path=str(artifacts_dir / "agents-admin.png"), full_page=True)

    # The admin gives the km agent a longer timeout and a model of its own.
    km = page.get_by_test_id("agent-row").filter(has=page.get_by_text("km", exact=True))
    km.get_by_test_id("edit-agent").click()
    page.get_by_test_id("agent-timeout-input").fill("45")
    page.get_by_test_id("agent-model").fill("gpt-5-codex")
    page.get_by_test_id("save-agent").click()
    expect(page.get_by_test_id("agents-notice")).to_have_text("Saved the settings of km.")
    expect(km.get_by_test_id("agent-timeout")).to_have_text("45 min")
    expect(km).to_contain_text("gpt-5-codex")

    # A process agent opens with its engine and command, and saving the timeout keeps both.
    with session_scope(served_engine) as session:
        agents.set_agent(session=session, key="sre", engine="process", command="sh -c 'echo hi'")
    page.reload()
    sre = page.get_by_test_id("agent-row").filter(has=page.get_by_text("sre", exact=True))
    expect(sre.get_by_test_id("agent-engine")).to_contain_text("own process")
    expect(sre.get_by_test_id("agent-engine")).to_contain_text("sh -c 'echo hi'")
    sre.get_by_test_id("edit-agent").click()
    expect(page.get_by_test_id("agent-engine-select")).to_contain_text("Own process")
    expect(page.get_by_test_id("agent-command")).to_have_value("sh -c 'echo hi'")
    page.get_by_test_id("agent-timeout-input").fill("7")
    page.get_by_test_id("save-agent").click()
    expect(page.get_by_test_id("agents-notice")).to_have_text("Saved the settings of sre.")
    expect(sre.get_by_test_id("agent-engine")).to_contain_text("own process")
    with Session(served_engine) as session:
        stored = agents.get_settings_for(session=session, key="sre")
    assert (stored.engine, stored.command, stored.timeout_minutes) == (
        "process", ("sh", "-c", "echo hi"), 7.0,
    )  # fmt: skip
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(artifacts_dir / "agents-admin-dark.png"), full_page=True)

    # A plain user, in a phone-sized browser of their own, reads the templates without controls.
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        other = context.new_page()
        sign_in(other, served_app, served_engine, plain_email)
        other.goto(served_app.base_url + "/agents")
        expect(other.get_by_test_id("agent-row")).to_have_count(8, timeout=TIMEOUT)
        expect(other.get_by_test_id("template-read-only")).to_be_visible()
        expect(other.get_by_test_id("template-editor")).to_have_attribute("readonly", "")
        for control in ("save-template", "edit-agent", "history-restore"):
            expect(other.get_by_test_id(control)).to_have_count(0)
        assert other.evaluate("document.documentElement.scrollWidth") <= 390
        other.screenshot(path=str(artifacts_dir / "agents-read-only.png"), full_page=True)
    finally:
        context.close()
