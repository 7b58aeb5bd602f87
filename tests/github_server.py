"""A loopback stand-in for GitHub's OAuth web flow and the two REST endpoints sign-in reads.

It speaks GitHub's documented wire format: `GET /login/oauth/authorize` sends the browser back to
the redirect URI with `code` and `state` (it approves at once for the configured user, or answers
`error=access_denied` when told to deny); `POST /login/oauth/access_token` takes the form
parameters client_id, client_secret, code, redirect_uri and code_verifier, answers JSON when asked
with `Accept: application/json` (form-encoded otherwise) and, like GitHub, reports a bad code with
HTTP 200 and an `error` field; `GET /user` and `GET /user/emails` need the access token as a bearer.
Codes are single-use and bound to the S256 PKCE challenge the authorize request carried.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import serve_in_thread

CLIENT_ID = "Iv1.fakeclientid0001"
CLIENT_SECRET = "fake-client-secret-0001"
DOCS = "https://docs.github.com/apps/oauth-apps"


def email_entry(
    email: str, *, primary: bool = True, verified: bool = True, visibility: str | None = "public"
) -> dict[str, Any]:
    """One element of GitHub's `GET /user/emails` answer."""
    return {"email": email, "primary": primary, "verified": verified, "visibility": visibility}


@dataclass
class _Grant:
    redirect_uri: str | None
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    used: bool = False


@dataclass
class FakeGitHub:
    """The fake's state: who signs in, and everything it was asked (for assertions)."""

    login: str = "octocat"
    user_id: int = 583231
    emails: list[dict[str, Any]] = field(
        default_factory=lambda: [email_entry("octocat@github.com")]
    )
    deny: bool = False
    base_url: str = ""
    grants: dict[str, _Grant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> scope
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def oauth_url(self) -> str:
        return f"{self.base_url}/login/oauth"

    # --- handlers -------------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        params = request.query_params
        if params.get("client_id") != CLIENT_ID:
            return PlainTextResponse("unknown client_id", status_code=404)
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            return PlainTextResponse("redirect_uri required by this fake", status_code=400)
        state = params.get("state")
        answer: dict[str, str] = {}
        if self.deny:
            answer = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": DOCS,
            }
        else:
            code = secrets.token_hex(10)
            self.grants[code] = _Grant(
                redirect_uri=redirect_uri,
                scope=params.get("scope", ""),
                code_challenge=params.get("code_challenge"),
                code_challenge_method=params.get("code_challenge_method"),
            )
            answer = {"code": code}
        if state is not None:
            answer["state"] = state
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    def _token_answer(self, request: Request, values: dict[str, str]) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(values)
        return PlainTextResponse(urlencode(values), media_type="application/x-www-form-urlencoded")

    def _token_error(self, request: Request, error: str, description: str) -> Response:
        values = {"error": error, "error_description": description, "error_uri": DOCS}
        return self._token_answer(request, values)

    async def access_token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self._token_error(
                request, "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )  # fmt: skip
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.used:
            if grant is not None:
                grant.used = True
            return self._token_error(
                request, "bad_verification_code", "The code passed is incorrect or expired."
            )
        grant.used = True
        if form.get("redirect_uri") and form["redirect_uri"] != grant.redirect_uri:
            return self._token_error(
                request, "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )  # fmt: skip
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if grant.code_challenge_method != "S256" or expected != grant.code_challenge:
                return self._token_error(
                    request, "bad_verification_code", "The code_verifier does not match."
                )
        token = "gho_" + secrets.token_hex(18)
        self.tokens[token] = grant.scope
        scope = ",".join(grant.scope.split())
        return self._token_answer(
            request, {"access_token": token, "scope": scope, "token_type": "bearer"}
        )

    def _authorized_scope(self, request: Request) -> str | None:
        self.api_requests.append((request.url.path, dict(request.headers)))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.tokens.get(token.strip())

    def _bad_credentials(self) -> Response:
        return JSONResponse(
            {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            status_code=401,
        )

    async def user(self, request: Request) -> Response:
        if self._authorized_scope(request) is None:
            return self._bad_credentials()
        return JSONResponse(
            {
                "login": self.login,
                "id": self.user_id,
                "node_id": "MDQ6VXNlcjE=",
                "type": "User",
                "site_admin": False,
                "name": "The Octocat",
                "email": None,
            }
        )

    async def user_emails(self, request: Request) -> Response:
        scope = self._authorized_scope(request)
        if scope is None:
            return self._bad_credentials()
        if not {"user", "user:email"} & set(scope.split()):
            # GitHub hides the endpoint from tokens without the scope.
            return JSONResponse(
                {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
                status_code=404,
            )
        return JSONResponse(self.emails)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/login/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/user", self.user, methods=["GET"]),
                Route("/user/emails", self.user_emails, methods=["GET"]),
            ]
        )


@contextmanager
def running_github(fake: FakeGitHub | None = None) -> Iterator[FakeGitHub]:
    """Serve FAKE on a free loopback port for the duration of the block."""
    fake = fake or FakeGitHub()
    with serve_in_thread(fake.app()) as base_url:
        fake.base_url = base_url
        yield fake
