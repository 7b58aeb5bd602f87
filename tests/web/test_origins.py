"""Which origins may use the session cookie, and the dashboard handlers refusing every other one
(the second lock behind the Socket.IO handshake's own Origin check)."""

from __future__ import annotations

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import Session

from codexk8s.config import Settings, get_settings
from codexk8s.db.engine import get_engine
from codexk8s.services import users
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.origins import allowed_origins, cross_site_problem, is_allowed_origin, origin_of
from codexk8s.web.state.auth import AuthState
from codexk8s.web.state.users import UsersState
from tests.conftest import run_async
from tests.web.test_users_browser import add_user, session_for


def test_origin_of_spells_origins_as_browsers_do() -> None:
    assert origin_of("https://CK8S.example.com:443/dashboard?x=1") == "https://ck8s.example.com"
    assert origin_of("http://127.0.0.1:3000") == "http://127.0.0.1:3000"
    assert origin_of("http://[::1]:3000/") == "http://[::1]:3000"
    for junk in (None, "", "null", "file:///etc/passwd", "http://", "http://x:99999", "evil"):
        assert origin_of(junk) is None, junk


def test_embedded_default_accepts_both_loopback_spellings_of_its_port() -> None:
    embedded = Settings(host="127.0.0.1", port=3000)
    assert allowed_origins(embedded) == [
        "http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000",
    ]  # fmt: skip
    assert is_allowed_origin("http://localhost:3000", embedded)
    assert not is_allowed_origin("http://localhost:3001", embedded)
    assert not is_allowed_origin("https://localhost:3000", embedded)
    assert not is_allowed_origin(None, embedded)


def test_an_explicit_public_url_is_the_only_origin() -> None:
    public = Settings(public_url="https://ck8s.example.com", host="127.0.0.1")
    assert allowed_origins(public) == ["https://ck8s.example.com"]
    assert not is_allowed_origin("http://localhost:3000", public)
    assert not is_allowed_origin("https://evil.ck8s.example.com", public)
    replica = Settings(public_url="http://127.0.0.1:4101")
    assert allowed_origins(replica) == ["http://127.0.0.1:4101"]


def test_cross_site_problem_reads_origin_then_referer() -> None:
    public = Settings(public_url="https://ck8s.example.com")
    assert cross_site_problem({"origin": "https://ck8s.example.com"}, public) is None
    assert cross_site_problem({"referer": "https://ck8s.example.com/runs/1"}, public) is None
    assert "Origin" in (cross_site_problem({"origin": "https://evil.example"}, public) or "")
    assert "must send" in (cross_site_problem({}, public) or "")


def _states(token: str, origin: str | None) -> tuple[UsersState, AuthState]:
    root = State(_reflex_internal_init=True)
    headers = {"cookie": f"{SESSION_COOKIE}={token}"}
    if origin is not None:
        headers["origin"] = origin
    root.router_data = {"headers": headers, "pathname": "/users"}
    root.router = RouterData.from_router_data(root.router_data)

    async def get() -> tuple[UsersState, AuthState]:
        return await root.get_state(UsersState), await root.get_state(AuthState)

    return run_async(get())


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:3001", "null", None])
def test_a_connection_from_another_origin_resolves_nobody(app_db: str, origin: str | None) -> None:
    engine = get_engine()
    owner = add_user(engine, "owner@example.com", "owner")
    token = session_for(engine, owner)

    state, auth = _states(token, origin)
    run_async(UsersState.load_users.fn(state))
    assert not auth.is_signed_in and state.users == []
    state.new_email, state.new_role = "intruder@example.com", "admin"
    run_async(UsersState.add_user.fn(state))
    with Session(engine) as session:
        assert users.get_by_email(session=session, email="intruder@example.com") is None

    # The same cookie from our own page acts.
    state, auth = _states(token, allowed_origins(get_settings())[0])
    run_async(UsersState.load_users.fn(state))
    assert auth.is_signed_in and [row.email for row in state.users] == ["owner@example.com"]
