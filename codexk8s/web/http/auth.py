"""Sign-in over HTTP: GitHub OAuth, one-time links, sign-out, and who is asking (`/api/v1/me`).

Cookies: `codexk8s_session` holds the session token (HttpOnly, SameSite=Lax, Path=/, Secure when
the public URL is https, kept 30 days by the browser while the server-side expiry slides);
`codexk8s_oauth` carries the OAuth state and PKCE verifier between the redirect to GitHub and its
callback, encrypted and authenticated with the secret key so it can be neither read nor forged,
and lives ten minutes on /auth/github only.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from codexk8s import urls
from codexk8s.adapters.github.oauth import (
    AuthorizationRequest,
    CodeRejectedError,
    GitHubOAuth,
    GitHubUnavailableError,
)
from codexk8s.config import Settings, get_settings
from codexk8s.crypto import DecryptionError, get_secret_box, tokens_equal
from codexk8s.domain.authorization import Principal
from codexk8s.services import sessions
from codexk8s.web import origins
from codexk8s.web.http.errors import error_response

SESSION_COOKIE = "codexk8s_session"
OAUTH_COOKIE = "codexk8s_oauth"
OAUTH_COOKIE_PATH = "/auth/github"
OAUTH_FLOW_SECONDS = 600
# The browser keeps the session cookie this long; whether the session is still valid is decided
# on the server, whose expiry slides with use (CODEXK8S_SESSION_TTL_HOURS since the last request).
# A cookie that expired with the first TTL would end an active session mid-work.
SESSION_COOKIE_MAX_AGE = 30 * 24 * 3600
# Tokens must never linger in caches or leak to other sites through the Referer header.
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def session_ttl(settings: Settings) -> timedelta:
    return timedelta(hours=settings.session_ttl_hours)


def _is_secure(settings: Settings) -> bool:
    return settings.effective_public_url.startswith("https://")


def _page(status: int, title: str, message: str, *, retry: bool = False) -> HTMLResponse:
    again = f'<p><a href="{urls.AUTH_GITHUB_LOGIN}">Sign in again</a></p>' if retry else ""
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)} · codexk8s</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{again}"
        f'<p><a href="{urls.OVERVIEW}">codexk8s</a></p></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)


def _redirect(location: str, status: int = 302) -> RedirectResponse:
    return RedirectResponse(location, status_code=status, headers=_NO_STORE)


# --- the OAuth flow cookie ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flow:
    state: str
    code_verifier: str


def _seal_flow(request: AuthorizationRequest) -> str:
    payload = {"s": request.state, "v": request.code_verifier, "t": int(time.time())}
    return get_secret_box().encrypt(json.dumps(payload))


def _open_flow(sealed: str | None) -> _Flow | None:
    """The flow this browser started, if the cookie is ours, intact and under ten minutes old."""
    if not sealed:
        return None
    try:
        payload = json.loads(get_secret_box().decrypt(sealed))
    except (DecryptionError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    state, verifier, issued = payload.get("s"), payload.get("v"), payload.get("t")
    if not (isinstance(state, str) and isinstance(verifier, str) and isinstance(issued, int)):
        return None
    if not 0 <= time.time() - issued <= OAUTH_FLOW_SECONDS:
        return None
    return _Flow(state=state, code_verifier=verifier)


def _forget_flow(response: Response, settings: Settings) -> Response:
    response.delete_cookie(
        OAUTH_COOKIE, path=OAUTH_COOKIE_PATH, secure=_is_secure(settings), httponly=True,
        samesite="lax",
    )  # fmt: skip
    return response


def _oauth(settings: Settings) -> GitHubOAuth:
    assert settings.github_client_id and settings.github_client_secret
    return GitHubOAuth(
        client_id=settings.github_client_id,
        client_secret=settings.github_client_secret.get_secret_value(),
        oauth_url=settings.github_oauth_url,
        api_url=settings.github_api_url,
        redirect_uri=f"{settings.effective_public_url}{urls.AUTH_GITHUB_CALLBACK}",
    )


def _not_configured() -> HTMLResponse:
    return _page(
        503, "GitHub sign-in is not configured",
        "Set CODEXK8S_GITHUB_CLIENT_ID and CODEXK8S_GITHUB_CLIENT_SECRET to sign in with GitHub. "
        "On one machine, `codexk8s serve` prints a one-time sign-in link for "
        "CODEXK8S_OWNER_EMAIL instead.",
    )  # fmt: skip


# --- sessions -------------------------------------------------------------------------------------


def local_path(value: str | None) -> str:
    """VALUE when it is a path on this site (`/runs/5`), else the Overview: a sign-in link's
    `next` never sends anyone to another site (`//evil.example`, `https://…`, `/\\evil`)."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(ch) < 0x21 for ch in value)
        or len(value) > 512
    ):
        return urls.OVERVIEW
    return value


def _signed_in(token: str, settings: Settings, *, next_path: str | None = None) -> Response:
    """Off to NEXT_PATH with the new session's cookie (TOKEN)."""
    response = _redirect(local_path(next_path))
    response.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_COOKIE_MAX_AGE, path="/",
        secure=_is_secure(settings), httponly=True, samesite="lax",
    )  # fmt: skip
    return response


# What a refused sign-in page says, by the refusal's type: the first that matches (the link
# errors before their base class).
_REFUSALS: tuple[tuple[type[sessions.SignInRefusedError], str, str], ...] = (
    (
        sessions.UnverifiedEmailError, "No verified email",
        "Your GitHub account has no verified primary email address. Verify your primary "
        "email on GitHub, then sign in again.",
    ),
    (
        sessions.UserDisabledError, "Account disabled",
        "Your account is disabled. Ask a platform admin.",
    ),
    (
        sessions.GitHubLoginMismatchError, "Not allowed",
        "This email address is linked to a different GitHub account. Sign in with that "
        "account, or ask a platform admin.",
    ),
    (sessions.SignInLinkUsedError, "Link already used", "This sign-in link has already been used."),
    (sessions.SignInLinkExpiredError, "Link expired", "This sign-in link has expired."),
    (sessions.SignInLinkError, "Link not valid", "This sign-in link is not valid."),
)  # fmt: skip


def _refusal_page(error: sessions.SignInRefusedError) -> HTMLResponse:
    for kind, title, text in _REFUSALS:
        if isinstance(error, kind):
            return _page(403, title, text)
    return _page(
        403, "Not allowed",
        "Your email address is not allowed to sign in to codexk8s. Ask a platform admin to "
        "add you.",
    )  # fmt: skip


async def current_principal(request: Request) -> Principal | None:
    """Who sent REQUEST: a bearer API token if the Authorization header is present (and then only
    that), else the session cookie. None when neither proves anyone."""
    ttl = session_ttl(get_settings())
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        return await asyncio.to_thread(
            sessions.authenticate, api_token=credentials.strip(), ttl=ttl
        )
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(sessions.authenticate, session_token=token, ttl=ttl)


# --- routes ---------------------------------------------------------------------------------------


async def github_login(request: Request) -> Response:
    """`GET /auth/github/login`: remember a fresh state and PKCE verifier, go to GitHub."""
    settings = get_settings()
    if not settings.is_oauth_configured:
        return _not_configured()
    flow = _oauth(settings).authorization_request()
    response = _redirect(flow.url)
    response.set_cookie(
        OAUTH_COOKIE, _seal_flow(flow), max_age=OAUTH_FLOW_SECONDS, path=OAUTH_COOKIE_PATH,
        secure=_is_secure(settings), httponly=True, samesite="lax",
    )  # fmt: skip
    return response


async def github_callback(request: Request) -> Response:
    """`GET /auth/github/callback`: check state, exchange the code, sign the person in."""
    settings = get_settings()
    if not settings.is_oauth_configured:
        return _not_configured()
    flow = _open_flow(request.cookies.get(OAUTH_COOKIE))
    # The flow cookie is good for one callback, whatever happens next.
    return _forget_flow(await _finish_github_sign_in(request, settings, flow), settings)


async def _finish_github_sign_in(
    request: Request, settings: Settings, flow: _Flow | None
) -> Response:
    if flow is None:
        return _page(
            400, "Sign-in expired",
            "This sign-in was not started in this browser or took longer than ten minutes.",
            retry=True,
        )  # fmt: skip
    if not tokens_equal(request.query_params.get("state", ""), flow.state):
        return _page(400, "Sign-in failed", "The sign-in state does not match.", retry=True)
    if request.query_params.get("error"):
        return _page(403, "Sign-in cancelled", "GitHub did not authorize the sign-in.", retry=True)
    code = request.query_params.get("code")
    if not code:
        return _page(400, "Sign-in failed", "GitHub sent no authorization code.", retry=True)
    try:
        identity = await _oauth(settings).identity_for_code(
            code=code, code_verifier=flow.code_verifier
        )
    except CodeRejectedError:
        return _page(400, "Sign-in failed", "GitHub did not accept this sign-in.", retry=True)
    except GitHubUnavailableError:
        return _page(502, "GitHub unavailable", "GitHub could not be reached.", retry=True)
    try:
        token = await asyncio.to_thread(
            sessions.open_session_with_github, github_login=identity.login,
            verified_primary_email=identity.verified_primary_email, ttl=session_ttl(settings),
            user_agent=request.headers.get("user-agent"),
        )  # fmt: skip
    except sessions.SignInRefusedError as exc:
        return _refusal_page(exc)
    return _signed_in(token, settings)


async def signin_link(request: Request) -> Response:
    """`GET /auth/link/{token}`: a one-time link (embedded mode) becomes a session."""
    settings = get_settings()
    try:
        token = await asyncio.to_thread(
            sessions.open_session_with_link, request.path_params["token"],
            ttl=session_ttl(settings), user_agent=request.headers.get("user-agent"),
        )  # fmt: skip
    except sessions.SignInRefusedError as exc:
        return _refusal_page(exc)
    # `codexk8s demo` links straight to the run it started.
    return _signed_in(token, settings, next_path=request.query_params.get("next"))


async def logout(request: Request) -> Response:
    """`POST /auth/logout` from one of our own pages: end the session on the server and forget
    the cookie. Not GET, and not from another origin: any page could otherwise sign its visitors
    out with a link, an image or a form of its own."""
    settings = get_settings()
    if request.method != "POST":
        return error_response(
            "method_not_allowed", "sign out with POST", headers={"Allow": "POST", **_NO_STORE}
        )
    problem = origins.cross_site_problem(request.headers, settings)
    if problem is not None:
        return error_response("forbidden", problem, headers=_NO_STORE)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await asyncio.to_thread(sessions.sign_out, token)
    response = _redirect(urls.OVERVIEW, 303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_is_secure(settings), httponly=True, samesite="lax",
    )  # fmt: skip
    return response


async def me(request: Request) -> Response:
    """`GET /api/v1/me`: the signed-in user, by session cookie or bearer API token."""
    if request.method not in ("GET", "HEAD"):
        return error_response("method_not_allowed", "use GET", headers={"Allow": "GET"})
    principal = await current_principal(request)
    profile = (
        await asyncio.to_thread(sessions.load_profile, user_id=principal.user_id)
        if principal is not None
        else None
    )
    if profile is None:
        return error_response(
            "unauthorized",
            "sign in, or send an API token as `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
        )
    return JSONResponse(asdict(profile), headers={"Cache-Control": "no-store"})
