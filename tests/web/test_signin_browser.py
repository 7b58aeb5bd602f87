"""The full GitHub sign-in in Debian's Chromium: the served app's Sign in button, the (fake)
GitHub authorize redirect, the callback, the session cookie, reload, sign-out, and refusals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, Response, expect
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s import urls
from codexk8s.db.engine import make_engine
from codexk8s.db.models import User, UserSession
from codexk8s.services import users
from codexk8s.web.http.auth import SESSION_COOKIE
from tests.conftest import ServedApp
from tests.github_server import email_entry

pytestmark = pytest.mark.browser


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def admin_adds(engine: Engine, email: str) -> None:
    with Session(engine) as session:
        users.add_user(session=session, email=email, role="user")
        session.commit()


def find_user(engine: Engine, email: str) -> User | None:
    with Session(engine) as session:
        return users.get_by_email(session=session, email=email)


def user_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(sa.select(sa.func.count()).select_from(User)).one()[0]  # type: ignore[call-overload]


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"signin-{suffix}@example.com", f"gh-signin-{suffix}"


def click_sign_in(page: Page, served_app: ServedApp) -> Response:
    """Sign in from the top bar; the callback's response once GitHub sent the browser back."""
    page.goto(served_app.base_url + "/")
    authorize = served_app.github.oauth_url + "/authorize"
    with (
        page.expect_request(lambda r: r.url.startswith(authorize)),
        page.expect_response(lambda r: urls.AUTH_GITHUB_CALLBACK in r.url) as callback,
    ):
        page.get_by_test_id("sign-in").click()
    return callback.value


def test_an_added_email_signs_in_stays_signed_in_and_signs_out(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, login = names()
    admin_adds(served_engine, email)
    served_app.next_github_user(
        login, [email_entry(f"other-{login}@example.com", primary=False), email_entry(email)]
    )

    callback = click_sign_in(page, served_app)
    assert callback.status == 302
    expect(page).to_have_url(served_app.base_url + "/")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(email)
    expect(page.get_by_test_id("sign-in")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "signin-signed-in.png"), full_page=True)
    user = find_user(served_engine, email)
    assert user is not None and user.github_login == login

    page.reload()
    expect(page.get_by_test_id("signed-in-as")).to_have_text(email)
    expect(page.get_by_test_id("sign-in")).to_have_count(0)

    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    old = {SESSION_COOKIE: cookie["value"]}
    me = httpx.get(served_app.base_url + urls.API_ME, cookies=old)
    assert me.status_code == 200 and me.json()["email"] == email

    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(served_app.base_url + "/")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    expect(page.get_by_test_id("signed-in-as")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "signin-signed-out.png"), full_page=True)
    assert SESSION_COOKIE not in {c["name"] for c in page.context.cookies()}
    assert httpx.get(served_app.base_url + urls.API_ME, cookies=old).status_code == 401


def test_an_email_nobody_added_is_refused(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, login = names()
    served_app.next_github_user(login, [email_entry(email)])
    before = user_count(served_engine)

    callback = click_sign_in(page, served_app)
    assert callback.status == 403
    expect(page.get_by_role("heading", name="Not allowed", level=1)).to_be_visible()
    expect(page.get_by_text("not allowed to sign in")).to_be_visible()
    expect(page.get_by_text("Ask a platform admin")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "signin-not-allowed.png"), full_page=True)
    assert SESSION_COOKIE not in {c["name"] for c in page.context.cookies()}
    assert find_user(served_engine, email) is None
    assert user_count(served_engine) == before

    page.goto(served_app.base_url + "/")
    expect(page.get_by_test_id("sign-in")).to_be_visible()


def test_an_unverified_primary_email_is_refused(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    email, login = names()
    admin_adds(served_engine, email)
    served_app.next_github_user(login, [email_entry(email, verified=False)])
    with Session(served_engine) as session:
        sessions_before = session.exec(
            sa.select(sa.func.count()).select_from(UserSession)  # type: ignore[call-overload]
        ).one()[0]

    callback = click_sign_in(page, served_app)
    assert callback.status == 403
    expect(page.get_by_role("heading", name="No verified email", level=1)).to_be_visible()
    expect(page.get_by_text("no verified primary email")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "signin-unverified.png"), full_page=True)
    assert SESSION_COOKIE not in {c["name"] for c in page.context.cookies()}
    user = find_user(served_engine, email)
    assert user is not None and user.github_login is None
    with Session(served_engine) as session:
        sessions_after = session.exec(
            sa.select(sa.func.count()).select_from(UserSession)  # type: ignore[call-overload]
        ).one()[0]
    assert sessions_after == sessions_before
