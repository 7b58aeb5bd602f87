"""GitHub sign-in: the OAuth web flow (authorization code with PKCE) and the identity it proves.

Only the login and the verified primary email leave this module; the access token is used for
the two API reads and then dropped, never stored.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

SCOPE = "read:user user:email"
GITHUB_JSON = "application/vnd.github+json"
API_VERSION = "2022-11-28"
TIMEOUT_SECONDS = 10.0


class GitHubSignInError(Exception):
    """The OAuth exchange or the identity lookup did not succeed."""


class CodeRejectedError(GitHubSignInError):
    """GitHub refused the authorization code (used, expired, wrong verifier or client)."""


class GitHubUnavailableError(GitHubSignInError):
    """GitHub could not be reached or answered something unusable."""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """Where to send the browser, and the secrets the callback must check and present."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class GitHubIdentity:
    login: str
    verified_primary_email: str | None


class GitHubOAuth:
    """The OAuth app codexk8s is registered as, with GitHub's (configurable) endpoints."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        oauth_url: str,
        api_url: str,
        redirect_uri: str,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._authorize_url = f"{oauth_url.rstrip('/')}/authorize"
        self._token_url = f"{oauth_url.rstrip('/')}/access_token"
        self._api_url = api_url.rstrip("/")
        self._redirect_uri = redirect_uri
        self._timeout = timeout

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            # GitHub documents the client credentials as form parameters of the token request.
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
            scope=SCOPE,
            redirect_uri=self._redirect_uri,
            code_challenge_method="S256",
            timeout=self._timeout,
        )

    def authorization_request(self) -> AuthorizationRequest:
        """A fresh state and PKCE verifier, and the authorize URL carrying state and challenge."""
        state = secrets.token_urlsafe(32)
        code_verifier = secrets.token_urlsafe(48)
        client = self._client()
        url, _ = client.create_authorization_url(
            self._authorize_url, state=state, code_verifier=code_verifier
        )
        return AuthorizationRequest(url=url, state=state, code_verifier=code_verifier)

    async def identity_for_code(self, *, code: str, code_verifier: str) -> GitHubIdentity:
        """Exchange CODE for an access token, then read the login and the verified primary email."""
        async with self._client() as client:
            try:
                token = await client.fetch_token(
                    self._token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            except OAuthError as exc:
                raise CodeRejectedError(
                    f"GitHub refused the sign-in code ({exc.error}: {exc.description})"
                ) from None
            except (httpx.HTTPError, ValueError) as exc:
                raise GitHubUnavailableError(f"GitHub token exchange failed: {exc}") from None
            if not token.get("access_token"):
                raise GitHubUnavailableError("GitHub answered the token exchange without a token")
            user = await self._get_json(client, "/user")
            emails = await self._get_json(client, "/user/emails")
        login = user.get("login") if isinstance(user, dict) else None
        if not isinstance(login, str) or not login:
            raise GitHubUnavailableError("GitHub's /user answer has no login")
        return GitHubIdentity(login=login, verified_primary_email=verified_primary_email(emails))

    async def _get_json(self, client: AsyncOAuth2Client, path: str) -> Any:
        try:
            response = await client.get(
                f"{self._api_url}{path}",
                headers={"Accept": GITHUB_JSON, "X-GitHub-Api-Version": API_VERSION},
            )
        except httpx.HTTPError as exc:
            raise GitHubUnavailableError(f"GitHub API {path} failed: {exc}") from None
        if response.status_code != 200:
            raise GitHubUnavailableError(f"GitHub API {path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise GitHubUnavailableError(f"GitHub API {path} answered no JSON") from None


def verified_primary_email(emails: Any) -> str | None:
    """The primary address of a `/user/emails` answer, if GitHub has verified it."""
    if not isinstance(emails, list):
        return None
    for entry in emails:
        if isinstance(entry, dict) and entry.get("primary") is True:
            email = entry.get("email")
            if entry.get("verified") is True and isinstance(email, str) and email:
                return email
            return None
    return None
