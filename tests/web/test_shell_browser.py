"""The app served in production mode, driven in Debian's Chromium."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from codexk8s import urls
from codexk8s.db.engine import make_engine, session_scope
from codexk8s.services import users
from codexk8s.web.components.layout import NAV_ITEMS
from tests.conftest import ServedApp, free_port, wait_for_http
from tests.github_server import CLIENT_ID, email_entry
from tests.servers import stop_process_group

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


def test_sign_in_button_goes_through_github_and_back(served_app: ServedApp, page: Page) -> None:
    suffix = uuid.uuid4().hex[:8]
    email, login = f"shell-{suffix}@example.com", f"shell-{suffix}"
    engine = make_engine(served_app.database_url)
    try:
        with session_scope(engine) as session:
            users.add_user(session=session, email=email, role="user")
    finally:
        engine.dispose()
    served_app.next_github_user(login, [email_entry(email)])
    github = served_app.github.base_url

    page.goto(served_app.base_url + "/")
    with page.expect_request(lambda r: r.url.startswith(github + "/login/oauth/authorize")) as sent:
        page.get_by_test_id("sign-in").click()
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [served_app.base_url + urls.AUTH_GITHUB_CALLBACK]
    assert query["code_challenge_method"] == ["S256"] and query["state"][0]
    expect(page).to_have_url(served_app.base_url + "/")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(email)


def test_a_second_server_in_the_same_checkout_leaves_the_first_one_alone(
    served_app: ServedApp, page: Page, tmp_path: Path
) -> None:
    """`make run` while `make test` runs: each server builds its frontend into its own data
    folder, so neither serves the other's build (which answered "Not Found")."""
    first_web = Path(served_app.env["CODEXK8S_DATA_DIR"]) / "web"
    built_before = (first_web / "build").stat().st_mtime_ns
    port = free_port()
    env = {**served_app.env, "CODEXK8S_DATA_DIR": str(tmp_path / "second"),
           "CODEXK8S_PUBLIC_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    env.pop("REFLEX_WEB_WORKDIR", None)
    log = (tmp_path / "serve.log").open("wb")
    second = subprocess.Popen(
        [str(Path(sys.executable).parent / "codexk8s"), "serve", "--port", str(port)],
        env=env, cwd=Path(__file__).resolve().parents[2], stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/")
        except TimeoutError:
            raise RuntimeError((tmp_path / "serve.log").read_text()[-4000:]) from None
        assert (tmp_path / "second" / "web" / "build").is_dir()
        assert (first_web / "build").stat().st_mtime_ns == built_before
        for base_url in (served_app.base_url, f"http://127.0.0.1:{port}"):
            page.goto(base_url + "/runs")
            expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    finally:
        stop_process_group(second)
        log.close()
