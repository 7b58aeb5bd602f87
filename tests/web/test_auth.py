"""Sign-in through the real routes against a loopback fake GitHub: OAuth, links, sessions, /me."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from codexk8s import urls
from codexk8s.adapters.github.oauth import verified_primary_email
from codexk8s.cli import app as cli_app
from codexk8s.crypto import get_secret_box, hash_token
from codexk8s.db.engine import get_engine, session_scope
from codexk8s.db.models import ApiToken, FlowEvent, SignInLink, User, UserSession, utcnow
from codexk8s.services import api_tokens, sessions, users
from codexk8s.web.http.app import build_http_app
from codexk8s.web.http.auth import OAUTH_COOKIE, SESSION_COOKIE, SESSION_COOKIE_MAX_AGE
from tests.conftest import free_port, reset_caches, serve_in_thread
from tests.github_server import CLIENT_ID, CLIENT_SECRET, FakeGitHub, email_entry, running_github

OWNER = "octocat@github.com"
TTL_SECONDS = 12 * 3600


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with running_github() as fake:
        yield fake


def configure(
    monkeypatch: pytest.MonkeyPatch, fake: FakeGitHub, public_url: str = "http://testserver"
) -> None:
    monkeypatch.setenv("CODEXK8S_GITHUB_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("CODEXK8S_GITHUB_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("CODEXK8S_GITHUB_OAUTH_URL", fake.oauth_url)
    monkeypatch.setenv("CODEXK8S_GITHUB_API_URL", fake.base_url)
    monkeypatch.setenv("CODEXK8S_PUBLIC_URL", public_url)
    reset_caches()


@pytest.fixture
def oauth(app_db: str, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> FakeGitHub:
    """OAuth configured against the fake; the owner (the fake's octocat) added by an admin."""
    configure(monkeypatch, github)
    with session_scope() as session:
        users.add_user(session=session, email=OWNER, role="owner")
    return github


@pytest.fixture
def client(oauth: FakeGitHub) -> TestClient:
    return TestClient(build_http_app(), follow_redirects=False)


# --- helpers --------------------------------------------------------------------------------------


def set_cookies(response: httpx.Response) -> dict[str, Any]:
    """Set-Cookie headers by cookie name, with their attributes."""
    found: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            found[name] = morsel
    return found


def start(client: TestClient) -> httpx.Response:
    response = client.get(urls.AUTH_GITHUB_LOGIN)
    assert response.status_code == 302, response.text
    return response


def authorize(location: str) -> str:
    """The browser at GitHub: returns where GitHub sends it back (the callback URL)."""
    at_github = httpx.get(location, follow_redirects=False)
    assert at_github.status_code == 302
    return at_github.headers["location"]


def sign_in(client: TestClient) -> httpx.Response:
    return client.get(authorize(start(client).headers["location"]))


def count(model: type) -> int:
    with Session(get_engine()) as session:
        return session.exec(sa.select(sa.func.count()).select_from(model)).one()[0]


def counts() -> dict[str, int]:
    return {m.__tablename__: count(m) for m in (User, UserSession, SignInLink, FlowEvent)}


def last_event() -> FlowEvent:
    with Session(get_engine()) as session:
        return session.exec(select(FlowEvent).order_by(FlowEvent.id.desc())).first()  # type: ignore[union-attr]


def me(client: TestClient, **kwargs: Any) -> httpx.Response:
    return client.get(urls.API_ME, **kwargs)


# --- the full flow --------------------------------------------------------------------------------


def test_full_github_sign_in(client: TestClient, oauth: FakeGitHub) -> None:
    started = start(client)
    location = urlsplit(started.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{oauth.oauth_url}/authorize"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
    assert query["redirect_uri"] == "http://testserver/auth/github/callback"
    assert query["scope"] == "read:user user:email"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    flow = set_cookies(started)[OAUTH_COOKIE]
    assert flow["httponly"] and flow["samesite"].lower() == "lax" and not flow["secure"]
    assert flow["path"] == "/auth/github" and flow["max-age"] == "600"
    # The state and the PKCE verifier travel encrypted: neither is readable in the cookie.
    assert query["state"] not in flow.value
    assert started.headers["cache-control"] == "no-store"

    done = client.get(authorize(started.headers["location"]))
    assert done.status_code == 302 and done.headers["location"] == "/"
    cookies = set_cookies(done)
    session_cookie = cookies[SESSION_COOKIE]
    assert session_cookie["httponly"] and session_cookie["samesite"].lower() == "lax"
    assert session_cookie["path"] == "/"
    assert session_cookie["max-age"] == str(SESSION_COOKIE_MAX_AGE)
    assert not session_cookie["secure"]
    assert cookies[OAUTH_COOKIE]["max-age"] == "0"  # the flow cookie is spent

    answer = me(client)
    assert answer.status_code == 200
    with Session(get_engine()) as session:
        owner = session.exec(select(User)).one()
    assert answer.json() == {"id": owner.id, "email": OWNER, "github_login": "octocat",
                             "role": "owner"}  # fmt: skip

    # The token exchange carried the verifier and the client's credentials as form fields, and
    # the API was read with the access token and GitHub's media type.
    (exchange,) = oauth.token_requests
    assert exchange["client_secret"] == CLIENT_SECRET and len(exchange["code_verifier"]) >= 43
    assert [path for path, _ in oauth.api_requests] == ["/user", "/user/emails"]
    for _, headers in oauth.api_requests:
        assert headers["accept"] == "application/vnd.github+json"
        assert headers["authorization"].startswith("Bearer gho_")

    # Only the hash of the session token is stored; no access token is stored at all.
    token = session_cookie.value
    with get_engine().connect() as connection:
        (row,) = connection.execute(sa.select(UserSession.__table__)).mappings().all()  # type: ignore[attr-defined]
        dump = json.dumps(
            [dict(r) for t in ("users", "sessions", "flow_events")
             for r in connection.execute(sa.text(f"SELECT * FROM {t}")).mappings()],  # noqa: S608
            default=str,
        )  # fmt: skip
    assert row["token_hash"] == hash_token(token)
    assert token not in dump
    assert not any(access in dump for access in oauth.tokens)
    assert last_event().event_type == "user_signed_in"


def test_secure_cookies_when_the_public_url_is_https(
    oauth: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, oauth, public_url="https://testserver")
    client = TestClient(build_http_app(), base_url="https://testserver", follow_redirects=False)
    started = start(client)
    assert set_cookies(started)[OAUTH_COOKIE]["secure"]
    callback = authorize(started.headers["location"])
    assert callback.startswith("https://testserver/auth/github/callback?")
    done = client.get(callback)
    assert done.status_code == 302
    assert set_cookies(done)[SESSION_COOKIE]["secure"]
    assert me(client).status_code == 200


def test_live_server_sign_in_following_redirects_by_hand(
    oauth: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    configure(monkeypatch, oauth, public_url=base)
    with (
        serve_in_thread(build_http_app(), port=port),
        httpx.Client(follow_redirects=False, timeout=10) as browser,
    ):
        hop = browser.get(f"{base}{urls.AUTH_GITHUB_LOGIN}")
        assert hop.status_code == 302 and hop.headers["location"].startswith(oauth.oauth_url)
        hop = browser.get(hop.headers["location"])
        assert hop.status_code == 302
        assert hop.headers["location"].startswith(f"{base}{urls.AUTH_GITHUB_CALLBACK}?")
        hop = browser.get(hop.headers["location"])
        assert hop.status_code == 302 and hop.headers["location"] == "/"
        assert SESSION_COOKIE in browser.cookies
        answer = browser.get(f"{base}{urls.API_ME}")
        assert answer.status_code == 200 and answer.json()["github_login"] == "octocat"
        hop = browser.post(f"{base}{urls.AUTH_LOGOUT}", headers={"Origin": base})
        assert hop.status_code == 303
        assert browser.get(f"{base}{urls.API_ME}").status_code == 401


# --- refusals -------------------------------------------------------------------------------------


def test_email_not_added_is_refused_with_only_an_audit_event(
    client: TestClient, oauth: FakeGitHub
) -> None:
    oauth.login = "stranger"
    oauth.emails = [email_entry("stranger@example.com")]
    before = counts()
    response = sign_in(client)
    assert response.status_code == 403
    assert "not allowed" in response.text and "platform admin" in response.text
    assert SESSION_COOKIE not in set_cookies(response)
    assert counts() == {**before, "flow_events": before["flow_events"] + 1}
    event = last_event()
    assert event.event_type == "sign_in_refused"
    assert event.payload["reason"] == "email_not_allowed"
    assert event.payload["email"] == "stranger@example.com"
    assert me(client).status_code == 401


@pytest.mark.parametrize(
    "emails",
    [
        [email_entry(OWNER, verified=False), email_entry("other@example.com", primary=False)],
        [email_entry(OWNER, primary=False)],
        [],
    ],
    ids=["primary-unverified", "no-primary", "no-emails"],
)
def test_unverified_primary_email_is_refused(
    client: TestClient, oauth: FakeGitHub, emails: list[dict[str, Any]]
) -> None:
    oauth.emails = emails
    before = counts()
    response = sign_in(client)
    assert response.status_code == 403 and "verified primary email" in response.text
    assert counts() == {**before, "flow_events": before["flow_events"] + 1}
    assert last_event().payload["reason"] == "no_verified_primary_email"
    assert me(client).status_code == 401


@pytest.mark.parametrize(
    ("emails", "expected"),
    [
        ([email_entry("a@x.io", primary=False), email_entry("b@x.io")], "b@x.io"),
        ([email_entry("a@x.io", verified=False)], None),
        ([{"email": "a@x.io", "primary": "true", "verified": True}], None),
        ({"message": "Not Found"}, None),
    ],
)
def test_verified_primary_email(emails: Any, expected: str | None) -> None:
    assert verified_primary_email(emails) == expected


def test_state_mismatch_is_refused_without_exchanging_the_code(
    client: TestClient, oauth: FakeGitHub
) -> None:
    callback = authorize(start(client).headers["location"])
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    response = client.get(forged)
    assert response.status_code == 400 and "state does not match" in response.text
    assert oauth.token_requests == []
    assert count(UserSession) == 0 and me(client).status_code == 401


def test_missing_forged_or_stale_flow_cookie_is_refused(
    client: TestClient, oauth: FakeGitHub
) -> None:
    started = start(client)
    callback = authorize(started.headers["location"])
    state = parse_qs(urlsplit(callback).query)["state"][0]
    client.cookies.delete(OAUTH_COOKIE)
    assert client.get(callback).status_code == 400

    fresh = TestClient(build_http_app(), follow_redirects=False)
    assert fresh.get(callback).status_code == 400  # never started in this browser
    fresh.cookies.set(OAUTH_COOKIE, "gAAAA-not-ours", path="/auth/github")
    assert fresh.get(callback).status_code == 400
    # A genuine cookie, but older than ten minutes.
    stale = get_secret_box().encrypt(
        json.dumps({"s": state, "v": "x" * 64, "t": int(time.time()) - 601})
    )
    fresh.cookies.set(OAUTH_COOKIE, stale, path="/auth/github")
    response = fresh.get(callback)
    assert response.status_code == 400 and "Sign-in expired" in response.text
    assert oauth.token_requests == [] and count(UserSession) == 0


def test_replayed_callback_code_fails_cleanly(client: TestClient, oauth: FakeGitHub) -> None:
    callback = authorize(start(client).headers["location"])
    assert client.get(callback).status_code == 302
    assert count(UserSession) == 1
    # The same callback again: the flow cookie is spent.
    again = client.get(callback)
    assert again.status_code == 400 and SESSION_COOKIE not in set_cookies(again)
    # An attacker who starts their own flow and injects the stolen code: GitHub refuses it.
    attacker = TestClient(build_http_app(), follow_redirects=False)
    own_state = parse_qs(urlsplit(authorize(start(attacker).headers["location"])).query)["state"]
    stolen_code = parse_qs(urlsplit(callback).query)["code"][0]
    replay = attacker.get(
        urls.AUTH_GITHUB_CALLBACK, params={"code": stolen_code, "state": own_state[0]}
    )
    assert replay.status_code == 400 and "did not accept" in replay.text
    assert len(oauth.token_requests) == 2
    assert SESSION_COOKIE not in set_cookies(replay) and count(UserSession) == 1
    assert me(attacker).status_code == 401


def test_denied_authorization_is_refused(client: TestClient, oauth: FakeGitHub) -> None:
    oauth.deny = True
    response = sign_in(client)
    assert response.status_code == 403 and "did not authorize" in response.text
    assert oauth.token_requests == [] and count(UserSession) == 0


def test_login_without_oauth_configured(app_db: str) -> None:
    client = TestClient(build_http_app(), follow_redirects=False)
    response = client.get(urls.AUTH_GITHUB_LOGIN)
    assert response.status_code == 503 and "CODEXK8S_GITHUB_CLIENT_ID" in response.text
    assert OAUTH_COOKIE not in set_cookies(response)


# --- sessions over HTTP ---------------------------------------------------------------------------


def test_expired_session_answers_401(client: TestClient) -> None:
    assert sign_in(client).status_code == 302
    assert me(client).status_code == 200
    with get_engine().begin() as connection:
        connection.execute(
            sa.update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    answer = me(client)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized" and answer.json()["message"]


def test_logout_kills_the_old_cookie(client: TestClient) -> None:
    done = sign_in(client)
    token = set_cookies(done)[SESSION_COOKIE].value
    out = client.post(urls.AUTH_LOGOUT, headers={"Origin": "http://testserver"})
    assert out.status_code == 303
    assert out.headers["location"] == "/"
    cleared = set_cookies(out)[SESSION_COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/"
    # Even a client that kept the cookie is no longer signed in.
    keeper = TestClient(build_http_app(), cookies={SESSION_COOKIE: token})
    assert me(keeper).status_code == 401
    with Session(get_engine()) as session:
        assert session.exec(select(UserSession.revoked_at)).one() is not None


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        # Any page could sign its visitors out with a link or an <img> (issue #14, item 8).
        ("GET", {}, 405),
        ("GET", {"Origin": "http://testserver"}, 405),
        # A form on another site (or another port of this host) posting to us.
        ("POST", {"Origin": "https://evil.example"}, 403),
        ("POST", {"Origin": "http://testserver:8080"}, 403),
        ("POST", {"Referer": "https://evil.example/page"}, 403),
        ("POST", {}, 403),
    ],
)
def test_sign_out_is_a_post_from_our_own_pages(
    client: TestClient, method: str, headers: dict[str, str], status: int
) -> None:
    assert sign_in(client).status_code == 302
    out = client.request(method, urls.AUTH_LOGOUT, headers=headers)
    assert out.status_code == status
    assert out.json()["error"] and out.json()["message"]
    assert SESSION_COOKIE not in set_cookies(out)
    # The session lives on and nothing was written.
    assert me(client).status_code == 200
    with Session(get_engine()) as session:
        assert session.exec(select(UserSession.revoked_at)).one() is None
        assert not session.exec(
            select(FlowEvent).where(FlowEvent.event_type == "user_signed_out")
        ).all()


def test_disabled_user_is_refused_and_their_session_dies(client: TestClient) -> None:
    assert sign_in(client).status_code == 302
    assert me(client).status_code == 200
    with session_scope() as session:
        owner = session.exec(select(User)).one()
        owner.disabled = True
        session.add(owner)
    assert me(client).status_code == 401
    before = counts()
    again = sign_in(client)
    assert again.status_code == 403 and "disabled" in again.text
    assert counts() == {**before, "flow_events": before["flow_events"] + 1}
    assert last_event().payload["reason"] == "user_disabled"


# --- one-time links -------------------------------------------------------------------------------


def test_signin_link_works_once(client: TestClient) -> None:
    token = sessions.create_signin_link(get_engine(), email=OWNER)
    used = client.get(urls.AUTH_LINK.format(token=token))
    assert used.status_code == 302 and used.headers["location"] == "/"
    assert used.headers["referrer-policy"] == "no-referrer"
    assert set_cookies(used)[SESSION_COOKIE]["httponly"]
    assert me(client).json()["email"] == OWNER

    other = TestClient(build_http_app(), follow_redirects=False)
    again = other.get(urls.AUTH_LINK.format(token=token))
    assert again.status_code == 403 and "already been used" in again.text
    assert SESSION_COOKIE not in set_cookies(again) and me(other).status_code == 401
    assert other.get(urls.AUTH_LINK.format(token="made-up")).status_code == 403


def test_a_signin_link_opens_the_page_it_names_on_this_site_only(client: TestClient) -> None:
    """`codexk8s demo` prints a link that opens the run's page; `next` never leaves the site."""
    for wanted, lands in [
        ("/runs/7", "/runs/7"),
        ("/runs?status=failed", "/runs?status=failed"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/runs/7\r\nSet-Cookie: x=1", "/"),
    ]:
        token = sessions.create_signin_link(get_engine(), email=OWNER)
        fresh = TestClient(build_http_app(), follow_redirects=False)
        used = fresh.get(urls.AUTH_LINK.format(token=token), params={"next": wanted})
        assert used.status_code == 302 and used.headers["location"] == lands, wanted


def test_expired_signin_link_is_refused(client: TestClient) -> None:
    token = sessions.create_signin_link(get_engine(), email=OWNER)
    with get_engine().begin() as connection:
        connection.execute(sa.update(SignInLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = client.get(urls.AUTH_LINK.format(token=token))
    assert response.status_code == 403 and "expired" in response.text
    assert count(UserSession) == 0


# --- bearer API tokens ----------------------------------------------------------------------------


def test_bearer_api_token(client: TestClient) -> None:
    with session_scope() as session:
        row, token = api_tokens.create_token(session=session, email=OWNER)
    answer = me(client, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["email"] == OWNER
    with Session(get_engine()) as session:
        stored = session.get(ApiToken, row.id)
        assert stored is not None and stored.last_used_at is not None

    for bad in (f"Bearer {token}x", f"Basic {token}", "Bearer ", token):
        assert me(client, headers={"Authorization": bad}).status_code == 401, bad

    with get_engine().begin() as connection:
        connection.execute(sa.update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert me(client, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    with get_engine().begin() as connection:
        connection.execute(sa.update(ApiToken).values(expires_at=None, revoked_at=utcnow()))
    assert me(client, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_an_invalid_bearer_is_not_rescued_by_the_cookie(client: TestClient) -> None:
    assert sign_in(client).status_code == 302
    assert me(client).status_code == 200
    assert me(client, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_me_without_credentials_and_with_other_methods(client: TestClient) -> None:
    answer = me(client)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {
        "error": "unauthorized",
        "message": "sign in, or send an API token as `Authorization: Bearer <token>`",
    }
    assert client.post(urls.API_ME).status_code == 405


# --- the printed link of `codexk8s serve` --------------------------------------------------------


class _Exec(Exception):
    pass


def _serve(monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run `codexk8s serve` up to the point where it would hand over to Reflex."""
    exec_calls: list[list[str]] = []

    def fake_supervise(_current: object, argv: list[str], env: dict[str, str], url: str) -> int:
        exec_calls.append(argv)
        raise _Exec

    monkeypatch.setattr("codexk8s.cli._supervise_server", fake_supervise)
    monkeypatch.setattr("codexk8s.cli.shutil.which", lambda *_a, **_k: "/usr/bin/bun")
    result = CliRunner().invoke(cli_app, ["serve", "--port", "3999"])
    assert isinstance(result.exception, _Exec), result.output
    assert len(exec_calls) == 1
    return result.exit_code, result.stderr


def test_serve_prints_a_one_time_link_for_the_owner(
    app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEXK8S_OWNER_EMAIL", OWNER)
    reset_caches()
    _, err = _serve(monkeypatch)
    (line,) = [line for line in err.splitlines() if "sign in once" in line]
    found = re.fullmatch(
        r"sign in once at http://127\.0\.0\.1:3999/auth/link/(\S+) \(valid 15 minutes\)", line
    )
    assert found is not None, line
    client = TestClient(build_http_app(), follow_redirects=False)
    assert client.get(f"/auth/link/{found.group(1)}").status_code == 302
    assert me(client).json()["role"] == "owner"
    assert client.get(f"/auth/link/{found.group(1)}").status_code == 403


def test_serve_without_owner_says_how_to_get_a_link(
    app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, err = _serve(monkeypatch)
    assert "set CODEXK8S_OWNER_EMAIL" in err and "sign in once" not in err
    assert count(SignInLink) == 0


def test_serve_with_oauth_prints_no_link(
    app_db: str, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, github)
    monkeypatch.setenv("CODEXK8S_OWNER_EMAIL", OWNER)
    reset_caches()
    _, err = _serve(monkeypatch)
    assert "sign in once" not in err and "CODEXK8S_OWNER_EMAIL" not in err
    assert count(SignInLink) == 0
