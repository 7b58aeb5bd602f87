"""The app served in production mode, driven in Debian's Chromium."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from codexk8s.web.components.layout import NAV_ITEMS
from tests.conftest import ServedApp

pytestmark = pytest.mark.browser


def test_probes_on_the_served_app(served_app: ServedApp) -> None:
    assert httpx.get(f"{served_app.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{served_app.base_url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_navigation_renders_and_every_page_opens(
    served_app: ServedApp, page: Page, artifacts_dir: Path
) -> None:
    page.goto(served_app.base_url + "/")
    nav = page.get_by_role("navigation", name="Main")
    for label, _href, _icon in NAV_ITEMS:
        expect(nav.get_by_test_id(f"nav-{label.lower()}")).to_be_visible()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()

    for label, href, _icon in NAV_ITEMS:
        nav.get_by_test_id(f"nav-{label.lower()}").click()
        expect(page).to_have_url(
            served_app.base_url + href.rstrip("/") + ("/" if href == "/" else "")
        )
        expect(page.get_by_role("heading", name=label, level=1, exact=True)).to_be_visible()
        expect(page.get_by_test_id("empty-state")).to_be_visible()
        page.screenshot(path=str(artifacts_dir / f"shell-{label.lower()}.png"), full_page=True)


def test_shell_fits_a_phone(served_app: ServedApp, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(served_app.base_url + "/runs")
    expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390


def test_sign_in_button_leads_to_the_sign_in_flow(served_app: ServedApp, page: Page) -> None:
    page.goto(served_app.base_url + "/")
    page.get_by_test_id("sign-in").click()
    # The served app has no OAuth app configured: the flow says how to get in instead.
    expect(page.get_by_role("heading", name="GitHub sign-in is not configured")).to_be_visible()
    expect(page.get_by_text("one-time sign-in link")).to_be_visible()
