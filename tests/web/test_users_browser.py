"""The Users page and the signed-in top bar: driven in Chromium on the served app, and the same
event handlers called directly with a session cookie to show the server refuses non-admins."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from reflex.istate.data import RouterData
from reflex.state import State
from sqlalchemy.engine import Engine
from sqlmodel import Session

from codexk8s.crypto import hash_token
from codexk8s.db.engine import get_engine, make_engine, session_scope
from codexk8s.db.models import User
from codexk8s.domain.access import PlatformRole
from codexk8s.domain.authorization import Principal
from codexk8s.errors import ForbiddenError
from codexk8s.services import api_tokens, sessions, users
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.users import NOT_ALLOWED, NOT_OWNER, UsersState
from tests.conftest import ServedApp, run_async
from tests.web.live_context import dashboard_headers


def add_user(engine: Engine, email: str, role: str) -> Principal:
    with session_scope(engine) as session:
        user = users.add_user(session=session, email=email, role=role)
        assert user.id is not None
        return Principal(user_id=user.id, platform_role=PlatformRole(role))


def role_of(engine: Engine, email: str) -> tuple[str, bool]:
    with Session(engine) as session:
        user = users.get_by_email(session=session, email=email)
        assert user is not None
        return user.role, user.disabled


# --- the handlers, without a browser --------------------------------------------------------------


def states_for(token: str | None) -> tuple[UsersState, AuthState]:
    """The Users and Auth states as an event from a browser holding TOKEN would see them."""
    root = State(_reflex_internal_init=True)
    cookie = f"theme=dark; {SESSION_COOKIE}={token}" if token else "theme=dark"
    root.router_data = {"headers": dashboard_headers(cookie), "pathname": "/users"}
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> tuple[UsersState, AuthState]:
        return await root.get_state(UsersState), await root.get_state(AuthState)

    return run_async(get())


def session_for(engine: Engine, principal: Principal) -> str:
    with Session(engine) as session:
        user = session.get(User, principal.user_id)
    assert user is not None
    return sessions.create_session(engine, user=user, ttl=timedelta(hours=1))


def test_handlers_act_for_admins_and_refuse_everyone_else(app_db: str) -> None:
    engine = get_engine()
    owner = add_user(engine, "owner@example.com", "owner")
    admin = add_user(engine, "admin@example.com", "admin")
    plain = add_user(engine, "plain@example.com", "user")

    state, auth = states_for(session_for(engine, owner))
    run_async(UsersState.load_users.fn(state))
    assert auth.email == "owner@example.com" and auth.is_platform_admin
    assert [row.email for row in state.users] == [
        "admin@example.com",
        "owner@example.com",
        "plain@example.com",
    ]
    state.new_email, state.new_role = "new@example.com", "user"
    run_async(UsersState.add_user.fn(state))
    assert state.error == "" and "new@example.com" in [row.email for row in state.users]
    run_async(UsersState.change_role.fn(state, plain.user_id, "admin"))
    assert state.error == "" and role_of(engine, "plain@example.com") == ("admin", False)
    run_async(UsersState.change_role.fn(state, plain.user_id, "user"))

    # A plain user's browser: the page shows no list, and every handler is refused.
    state, auth = states_for(session_for(engine, plain))
    run_async(UsersState.load_users.fn(state))
    assert auth.is_signed_in and not auth.is_platform_admin
    assert state.users == [] and state.error == NOT_ALLOWED
    for call in (
        lambda: UsersState.change_role.fn(state, plain.user_id, "owner"),
        lambda: UsersState.disable_user.fn(state, admin.user_id),
        lambda: UsersState.enable_user.fn(state, admin.user_id),
    ):
        state.error = ""
        run_async(call())
        assert state.error == NOT_ALLOWED
    state.new_email, state.new_role = "sneaky@example.com", "owner"
    run_async(UsersState.add_user.fn(state))
    assert state.error == NOT_ALLOWED
    assert role_of(engine, "plain@example.com") == ("user", False)
    assert role_of(engine, "admin@example.com") == ("admin", False)
    with Session(engine) as session:
        assert users.get_by_email(session=session, email="sneaky@example.com") is None

    # An admin manages plain users but may not make owners or admins.
    state, _ = states_for(session_for(engine, admin))
    run_async(UsersState.load_users.fn(state))
    run_async(UsersState.change_role.fn(state, plain.user_id, "owner"))
    assert state.error == NOT_OWNER and role_of(engine, "plain@example.com") == ("user", False)
    run_async(UsersState.disable_user.fn(state, owner.user_id))
    assert state.error == NOT_OWNER and role_of(engine, "owner@example.com")[1] is False
    run_async(UsersState.disable_user.fn(state, plain.user_id))
    assert state.error == "" and role_of(engine, "plain@example.com") == ("user", True)

    # No session, or a revoked one: signed out, nothing listed.
    for token in (None, "not-a-session"):
        state, auth = states_for(token)
        run_async(UsersState.load_users.fn(state))
        assert not auth.is_signed_in and state.users == []
        run_async(UsersState.disable_user.fn(state, admin.user_id))
        assert role_of(engine, "admin@example.com") == ("admin", False)


def test_admins_see_and_revoke_api_tokens_and_nobody_else_does(app_db: str) -> None:
    engine = get_engine()
    owner = add_user(engine, "owner@example.com", "owner")
    plain = add_user(engine, "plain@example.com", "user")
    with session_scope(engine) as session:
        row, plaintext = api_tokens.create_token(
            session=session, email="plain@example.com", name="ci"
        )
        token_id = row.id
    assert token_id is not None and sessions.resolve_api_token(engine, plaintext) is not None

    # A plain user lists no tokens and cannot revoke one, even their own.
    state, _ = states_for(session_for(engine, plain))
    run_async(UsersState.load_users.fn(state))
    assert state.tokens == []
    run_async(UsersState.revoke_token.fn(state, token_id))
    assert state.error == NOT_ALLOWED
    assert sessions.resolve_api_token(engine, plaintext) is not None

    state, _ = states_for(session_for(engine, owner))
    run_async(UsersState.load_users.fn(state))
    [shown] = state.tokens
    assert (shown.id, shown.name, shown.owner_email, shown.status) == (
        token_id, "ci", "plain@example.com", "active",
    )  # fmt: skip
    assert shown.prefix == plaintext[:9] and shown.last_used != "never"
    # What the browser is sent holds neither the token nor its hash.
    sent = json.dumps(state.dict(), default=repr)
    assert plaintext not in sent and hash_token(plaintext) not in sent

    run_async(UsersState.revoke_token.fn(state, token_id))
    assert state.error == "" and "Revoked" in state.notice
    assert [t.status for t in state.tokens] == ["revoked"]
    assert sessions.resolve_api_token(engine, plaintext) is None


# --- in the browser -------------------------------------------------------------------------------


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def sign_in(page: Page, served_app: ServedApp, engine: Engine, email: str) -> None:
    token = sessions.create_signin_link(engine, email=email)
    page.goto(f"{served_app.base_url}/auth/link/{token}")
    expect(page).to_have_url(served_app.base_url + "/")
    expect(page.get_by_test_id("signed-in-as")).to_have_text(email)
    expect(page.get_by_test_id("sign-in")).to_have_count(0)


def user_row(page: Page, email: str) -> Locator:
    return page.get_by_test_id("user-row").filter(
        has=page.get_by_test_id("user-email").get_by_text(email, exact=True)
    )


@pytest.mark.browser
def test_an_owner_manages_users_and_a_plain_user_cannot(
    served_app: ServedApp,
    served_engine: Engine,
    page: Page,
    browser: Browser,
    artifacts_dir: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    owner_email, plain_email = f"owner-{suffix}@example.com", f"plain-{suffix}@example.com"
    new_email = f"new-{suffix}@example.com"
    add_user(served_engine, owner_email, "owner")
    plain = add_user(served_engine, plain_email, "user")

    sign_in(page, served_app, served_engine, owner_email)
    page.get_by_role("navigation", name="Main").get_by_test_id("nav-users").click()
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()
    expect(user_row(page, owner_email)).to_be_visible()

    page.get_by_test_id("new-user-email").fill(new_email)
    page.get_by_test_id("add-user").click()
    row = user_row(page, new_email)
    expect(row).to_be_visible()
    expect(page.get_by_test_id("users-notice")).to_contain_text(f"Added {new_email}")
    expect(row.get_by_test_id("user-status")).to_have_text("active")

    row.get_by_role("combobox").click()
    page.get_by_role("option", name="admin", exact=True).click()
    expect(page.get_by_test_id("users-notice")).to_have_text(f"{new_email} is now admin.")
    expect(row.get_by_role("combobox")).to_have_text("admin")
    assert role_of(served_engine, new_email) == ("admin", False)

    row.get_by_test_id("disable-user").click()
    expect(row.get_by_test_id("user-status")).to_have_text("disabled")
    expect(row.get_by_test_id("enable-user")).to_be_visible()
    assert role_of(served_engine, new_email) == ("admin", True)
    page.screenshot(path=str(artifacts_dir / "users-owner.png"), full_page=True)

    # A plain user, in a browser of their own.
    context = browser.new_context()
    try:
        other = context.new_page()
        sign_in(other, served_app, served_engine, plain_email)
        other.goto(served_app.base_url + "/users")
        expect(other.get_by_test_id("users-admins-only")).to_contain_text("for platform admins")
        expect(other.get_by_test_id("add-user")).to_have_count(0)
        expect(other.get_by_test_id("user-row")).to_have_count(0)
        other.screenshot(path=str(artifacts_dir / "users-plain.png"), full_page=True)
        with pytest.raises(ForbiddenError), session_scope(served_engine) as session:
            users.set_role(session=session, user_id=plain.user_id, role="owner", actor=plain)

        # Disabling them ends their session: the next page load finds them signed out.
        user_row(page, plain_email).get_by_test_id("disable-user").click()
        expect(user_row(page, plain_email).get_by_test_id("user-status")).to_have_text("disabled")
        other.reload()
        expect(other.get_by_test_id("sign-in")).to_be_visible()
        expect(other.get_by_test_id("users-sign-in-prompt")).to_be_visible()
    finally:
        context.close()

    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(served_app.base_url + "/")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    expect(page.get_by_test_id("signed-in-as")).to_have_count(0)
    page.goto(served_app.base_url + "/users")
    expect(page.get_by_test_id("users-sign-in-prompt")).to_be_visible()


@pytest.mark.browser
def test_an_owner_revokes_an_api_token_from_the_users_page(
    served_app: ServedApp, served_engine: Engine, page: Page, artifacts_dir: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    owner_email, holder_email = f"owner-{suffix}@example.com", f"holder-{suffix}@example.com"
    add_user(served_engine, owner_email, "owner")
    add_user(served_engine, holder_email, "user")
    with session_scope(served_engine) as session:
        _row, plaintext = api_tokens.create_token(
            session=session, email=holder_email, name=f"ci-{suffix}"
        )
    me = served_app.base_url + "/api/v1/me"
    assert httpx.get(me, headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200

    sign_in(page, served_app, served_engine, owner_email)
    page.goto(served_app.base_url + "/users")
    row = page.get_by_test_id("token-row").filter(has_text=f"ci-{suffix}")
    expect(row.get_by_test_id("token-owner")).to_have_text(holder_email)
    expect(row.get_by_test_id("token-prefix")).to_have_text(plaintext[:9])
    expect(row.get_by_test_id("token-status")).to_have_text("active")
    assert plaintext not in page.content()
    row.get_by_test_id("revoke-token").click()
    expect(row.get_by_test_id("token-status")).to_have_text("revoked")
    expect(page.get_by_test_id("users-notice")).to_contain_text(f"ci-{suffix} of {holder_email}")
    expect(row.get_by_test_id("revoke-token")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "users-tokens.png"), full_page=True)
    assert httpx.get(me, headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401
