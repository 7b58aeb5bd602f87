"""Another site cannot act with a signed-in person's cookie (issue #14, item 1).

SameSite=Lax keeps the cookie on requests from the same *site*, and another port of the same
host is the same site: here the attacker's page is served from a second loopback port. It tries
what the probe did: read the API with credentials (CORS) and drive the dashboard's Socket.IO
connection (`/_event`), in Chromium and with a raw Socket.IO client that adds an admin user.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import socketio
from playwright.sync_api import Browser
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from codexk8s.db.engine import make_engine, session_scope
from codexk8s.services import sessions, users
from codexk8s.web.http.auth import SESSION_COOKIE
from codexk8s.web.state.users import UsersState
from tests.conftest import ServedApp, serve_in_thread

pytestmark = pytest.mark.browser

EVIL_ORIGIN = "https://evil.example"
# What the attacker's page runs: a credentialed read of /api/v1/me, and the dashboard's
# websocket opened and its namespace joined, each outcome written to window.outcome.
ATTACK_SCRIPT = """
window.outcome = {me: null, socket: []};
fetch(TARGET + "/api/v1/me", {credentials: "include"})
  .then((answer) => answer.text())
  .then((text) => { window.outcome.me = text; },
        (error) => { window.outcome.me = "refused: " + error; });
const socket = new WebSocket(TARGET.replace("http", "ws") + "/_event/?EIO=4&transport=websocket");
socket.onmessage = (message) => {
  window.outcome.socket.push(message.data);
  if (message.data.startsWith("0")) socket.send("40/_event,");
};
socket.onerror = () => window.outcome.socket.push("error");
socket.onclose = () => window.outcome.socket.push("closed");
"""


@pytest.fixture
def served_engine(served_app: ServedApp) -> Iterator[Engine]:
    engine = make_engine(served_app.database_url)
    yield engine
    engine.dispose()


def owner_session(engine: Engine) -> tuple[str, str]:
    """A fresh owner and a live session token of theirs (the victim's cookie)."""
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    with session_scope(engine) as session:
        owner = users.add_user(session=session, email=email, role="owner")
    return email, sessions.create_session(engine, user=owner, ttl=timedelta(hours=1))


def user_role(engine: Engine, email: str) -> str | None:
    with Session(engine) as session:
        found = users.get_by_email(session=session, email=email)
        return found.role if found is not None else None


@pytest.fixture
def evil_site(served_app: ServedApp) -> Iterator[str]:
    """The attacker's page, on another loopback port of the same host."""
    page = (
        "<!doctype html><html><body><p>cute cats</p><script>"
        f"const TARGET = {json.dumps(served_app.base_url)};{ATTACK_SCRIPT}"
        "</script></body></html>"
    )

    async def index(_request: object) -> HTMLResponse:
        return HTMLResponse(page)

    with serve_in_thread(Starlette(routes=[Route("/", index)])) as url:
        yield url


def test_a_page_of_another_origin_can_neither_read_the_api_nor_open_the_dashboard_socket(
    served_app: ServedApp, served_engine: Engine, browser: Browser, evil_site: str
) -> None:
    email, token = owner_session(served_engine)
    context = browser.new_context()
    try:
        context.add_cookies(
            [{"name": SESSION_COOKIE, "value": token, "url": served_app.base_url,
              "httpOnly": True, "sameSite": "Lax"}]
        )  # fmt: skip
        page = context.new_page()
        page.goto(evil_site)
        page.wait_for_function(
            "window.outcome.me !== null && window.outcome.socket.includes('closed')"
            " || window.outcome.socket.some((m) => m.startsWith('40'))",
            timeout=15_000,
        )
        outcome = page.evaluate("window.outcome")
        # The credentialed read is refused by the browser: no CORS grant for this origin.
        assert outcome["me"] is not None and outcome["me"].startswith("refused"), outcome
        assert email not in outcome["me"]
        # The handshake is refused: the engine.io open packet ("0{sid...}") never arrives.
        assert not any(message.startswith(("0", "40")) for message in outcome["socket"]), outcome

        # The same cookie still works for the dashboard's own pages.
        own = context.new_page()
        own.goto(served_app.base_url + "/")
        own.get_by_test_id("signed-in-as").wait_for(timeout=30_000)
        assert own.get_by_test_id("signed-in-as").inner_text() == email
    finally:
        context.close()


def test_cors_grants_credentials_to_the_public_origin_only(
    served_app: ServedApp, served_engine: Engine
) -> None:
    _email, token = owner_session(served_engine)
    cookies = {SESSION_COOKIE: token}
    for origin in (EVIL_ORIGIN, "http://127.0.0.1:1", "null"):
        answer = httpx.get(
            served_app.base_url + "/api/v1/me", cookies=cookies, headers={"Origin": origin}
        )
        # Without Access-Control-Allow-Origin the browser keeps the answer from the page
        # (Starlette's constant Allow-Credentials header grants nothing on its own).
        assert "access-control-allow-origin" not in answer.headers, origin
        preflight = httpx.options(
            served_app.base_url + "/api/v1/runs",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers.get("access-control-allow-origin") != origin
    own = httpx.get(
        served_app.base_url + "/api/v1/me", cookies=cookies,
        headers={"Origin": served_app.base_url},
    )  # fmt: skip
    assert own.status_code == 200
    assert own.headers["access-control-allow-origin"] == served_app.base_url


def _drive_users_page(served_app: ServedApp, origin: str, token: str, new_email: str) -> bool:
    """What the probe did over Socket.IO: as the page would, set the Users page's form to NEW_EMAIL
    as admin and press "Add user". False when the connection is refused."""
    # The Origin goes through websocket-client's own option: in `headers` it would be sent twice.
    client = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin})
    client_token = str(uuid.uuid4())
    try:
        client.connect(
            f"{served_app.base_url}?token={client_token}",
            headers={"Cookie": f"{SESSION_COOKIE}={token}"},
            transports=["websocket"], socketio_path="/_event", namespaces=["/_event"],
            wait_timeout=10,
        )  # fmt: skip
    except socketio.exceptions.ConnectionError:
        return False
    try:
        state = UsersState.get_full_name()
        for handler, payload in (
            ("set_new_email", {"value": new_email}),
            ("set_new_role", {"value": "admin"}),
            ("add_user", {}),
        ):
            client.emit(
                "event",
                {"token": client_token, "name": f"{state}.{handler}", "payload": payload,
                 "router_data": {"pathname": "/users", "query": {}}},
                namespace="/_event",
            )  # fmt: skip
        time.sleep(0.2)
        return True
    finally:
        time.sleep(0.5)
        client.disconnect()


def _wait_for_role(engine: Engine, email: str, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (role := user_role(engine, email)) is not None:
            return role
        time.sleep(0.2)
    return None


def test_a_socketio_client_from_another_origin_cannot_act_with_the_cookie(
    served_app: ServedApp, served_engine: Engine
) -> None:
    _email, token = owner_session(served_engine)
    # The probe's attack: refused at the handshake, and nobody was added.
    intruder = f"intruder-{uuid.uuid4().hex[:8]}@example.com"
    _drive_users_page(served_app, EVIL_ORIGIN, token, intruder)
    assert _wait_for_role(served_engine, intruder, 5) is None
    # A sibling port of the same host (same site for SameSite=Lax) is refused as well.
    sibling = f"sibling-{uuid.uuid4().hex[:8]}@example.com"
    _drive_users_page(served_app, "http://127.0.0.1:1", token, sibling)
    assert _wait_for_role(served_engine, sibling, 3) is None

    # The same events from the dashboard's own origin work: the refusals above are the Origin's.
    colleague = f"colleague-{uuid.uuid4().hex[:8]}@example.com"
    assert _drive_users_page(served_app, served_app.base_url, token, colleague)
    assert _wait_for_role(served_engine, colleague, 15) == "admin"
