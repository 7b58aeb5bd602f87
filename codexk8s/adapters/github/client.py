"""GitHub REST client (httpx) implementing the repository-provider contract.

Rate-limit aware the way GitHub documents it: when `X-RateLimit-Remaining` reaches 0 the next
request waits until `X-RateLimit-Reset`; a secondary limit (403/429, usually with
`Retry-After`) waits that long and tries again; every wait is bounded by `max_wait_seconds`, and a
longer one raises `ProviderRateLimitedError` so the caller retries later instead of hanging.
5xx answers and connection errors are retried with exponential backoff, except that a request
that creates something is not repeated once it may have reached GitHub (no double comments).
Each HTTP attempt increments `codexk8s_github_api_calls_total`. The token is sent as a header
and never appears in logs or error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from codexk8s import metrics
from codexk8s.domain.repository_provider import (
    Comment,
    Hook,
    HookConfig,
    HookDelivery,
    ProviderAuthError,
    ProviderError,
    ProviderForbiddenError,
    ProviderNotFoundError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
    ProviderValidationError,
    PullRequest,
    RepositoryInfo,
)

log = logging.getLogger(__name__)
GITHUB_JSON = "application/vnd.github+json"
API_VERSION = "2022-11-28"
USER_AGENT = "codexk8s"
# GitHub asks clients to wait at least a minute after a secondary limit without Retry-After.
SECONDARY_LIMIT_DEFAULT_SECONDS = 60.0
COMMENT_PAGES = 10  # find_comment looks at the first 1000 comments; ours is usually early


def _path(*parts: str | int) -> str:
    return "/" + "/".join(quote(str(part), safe="") for part in parts)


class GitHubClient:
    """One token's view of the GitHub REST API. Use as `async with GitHubClient(...) as gh`."""

    def __init__(
        self,
        *,
        token: str,
        api_url: str,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        max_wait_seconds: float = 60.0,
        backoff_seconds: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": GITHUB_JSON,
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            transport=transport,
            follow_redirects=False,
        )
        self.max_retries = max_retries
        self.max_wait_seconds = max_wait_seconds
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        # Epoch second before which the primary limit is exhausted (from X-RateLimit-Reset).
        self._blocked_until = 0.0

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ------------------------------------------------------------------------------

    async def _wait(self, seconds: float, why: str, status: int | None) -> None:
        if seconds > self.max_wait_seconds:
            raise ProviderRateLimitedError(
                f"GitHub {why}: retry in {seconds:.0f}s (longer than the "
                f"{self.max_wait_seconds:.0f}s this client waits)",
                status=status, retry_after=seconds,
            )  # fmt: skip
        if seconds > 0:
            log.info("GitHub %s: waiting %.1fs", why, seconds)
            await self._sleep(seconds)

    def _note_primary_limit(self, response: httpx.Response) -> None:
        if response.headers.get("x-ratelimit-remaining") == "0":
            try:
                self._blocked_until = float(response.headers.get("x-ratelimit-reset", "0"))
            except ValueError:
                self._blocked_until = time.time() + SECONDARY_LIMIT_DEFAULT_SECONDS

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Seconds to wait when RESPONSE is a rate-limit refusal, None when it is not one."""
        if response.status_code not in (403, 429):
            return None
        retry_after = response.headers.get("retry-after")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return SECONDARY_LIMIT_DEFAULT_SECONDS
        if response.headers.get("x-ratelimit-remaining") == "0":
            return max(0.0, self._blocked_until - time.time())
        if response.status_code == 429 or "rate limit" in _message(response).lower():
            return SECONDARY_LIMIT_DEFAULT_SECONDS
        return None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        creates: bool = False,
    ) -> httpx.Response:
        """Send one logical request; return a 2xx response or raise a ProviderError.

        ENDPOINT is the path template used as the metric label. CREATES marks a request that
        must not be repeated once GitHub may have acted on it.
        """
        attempt = 0
        while True:
            blocked = self._blocked_until - time.time()
            if blocked > 0:
                await self._wait(blocked + 0.05, "primary rate limit reached", None)
            metrics.GITHUB_API_CALLS.labels(f"{method} {endpoint}").inc()
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt >= self.max_retries or (creates and not never_sent):
                    raise ProviderUnavailableError(
                        f"GitHub unreachable ({type(exc).__name__}) on {method} {endpoint}"
                    ) from None
                attempt += 1
                await self._backoff(attempt)
                continue
            self._note_primary_limit(response)
            if response.is_success:
                return response
            wait = self._rate_limit_wait(response)
            if wait is not None:
                if attempt >= self.max_retries:
                    raise ProviderRateLimitedError(
                        f"GitHub rate limit on {method} {endpoint}",
                        status=response.status_code, retry_after=wait,
                    )  # fmt: skip
                attempt += 1
                await self._wait(wait, f"rate limit ({response.status_code})", response.status_code)
                continue
            if response.status_code >= 500 and attempt < self.max_retries and not creates:
                attempt += 1
                await self._backoff(attempt)
                continue
            raise _error_for(response, f"{method} {endpoint}")

    async def _backoff(self, attempt: int) -> None:
        delay = self.backoff_seconds * (2 ** (attempt - 1))
        await self._sleep(delay * (0.5 + random.random() / 2))

    # --- repositories ---------------------------------------------------------------------------

    async def get_repository(self, owner: str, name: str) -> RepositoryInfo:
        data = (await self._request("GET", _path("repos", owner, name), endpoint="/repos")).json()
        permissions = data.get("permissions") or {}
        return RepositoryInfo(
            full_name=data["full_name"],
            default_branch=data.get("default_branch") or "main",
            can_push=bool(permissions.get("push")),
            can_admin=bool(permissions.get("admin")),
            is_private=bool(data.get("private")),
        )

    # --- issue comments -------------------------------------------------------------------------

    async def create_comment(self, owner: str, name: str, number: int, body: str) -> Comment:
        response = await self._request(
            "POST", _path("repos", owner, name, "issues", number, "comments"),
            endpoint="/repos/issues/comments", json={"body": body}, creates=True,
        )  # fmt: skip
        return _comment(response.json())

    async def update_comment(self, owner: str, name: str, comment_id: int, body: str) -> Comment:
        response = await self._request(
            "PATCH", _path("repos", owner, name, "issues", "comments", comment_id),
            endpoint="/repos/issues/comments/{id}", json={"body": body},
        )  # fmt: skip
        return _comment(response.json())

    async def find_comment(self, owner: str, name: str, number: int, marker: str) -> Comment | None:
        """The first comment on issue/PR NUMBER whose body contains the hidden MARKER."""
        for page in range(1, COMMENT_PAGES + 1):
            response = await self._request(
                "GET", _path("repos", owner, name, "issues", number, "comments"),
                endpoint="/repos/issues/comments", params={"per_page": 100, "page": page},
            )  # fmt: skip
            items = response.json()
            for item in items:
                if marker in (item.get("body") or ""):
                    return _comment(item)
            if len(items) < 100 or 'rel="next"' not in response.headers.get("link", ""):
                return None
        return None

    # --- labels ---------------------------------------------------------------------------------

    async def add_labels(self, owner: str, name: str, number: int, labels: Sequence[str]) -> None:
        if labels:
            await self._request(
                "POST", _path("repos", owner, name, "issues", number, "labels"),
                endpoint="/repos/issues/labels", json={"labels": list(labels)},
            )  # fmt: skip

    async def remove_label(self, owner: str, name: str, number: int, label: str) -> None:
        # 404: the label is not on the issue, which is already the state we want.
        with contextlib.suppress(ProviderNotFoundError):
            await self._request(
                "DELETE", _path("repos", owner, name, "issues", number, "labels", label),
                endpoint="/repos/issues/labels/{name}",
            )  # fmt: skip

    async def ensure_label(
        self, owner: str, name: str, label: str, *, color: str, description: str = ""
    ) -> None:
        try:
            await self._request(
                "GET", _path("repos", owner, name, "labels", label), endpoint="/repos/labels/{name}"
            )
            return
        except ProviderNotFoundError:
            pass
        # 422 already_exists: someone created it meanwhile.
        with contextlib.suppress(ProviderValidationError):
            await self._request(
                "POST", _path("repos", owner, name, "labels"), endpoint="/repos/labels",
                json={"name": label, "color": color, "description": description}, creates=True,
            )  # fmt: skip

    # --- pull requests --------------------------------------------------------------------------

    async def find_open_pull(self, owner: str, name: str, head: str) -> PullRequest | None:
        response = await self._request(
            "GET", _path("repos", owner, name, "pulls"), endpoint="/repos/pulls",
            params={"state": "open", "head": f"{owner}:{head}", "per_page": 10},
        )  # fmt: skip
        items = response.json()
        return _pull(items[0]) if items else None

    async def create_pull(
        self, owner: str, name: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        response = await self._request(
            "POST", _path("repos", owner, name, "pulls"), endpoint="/repos/pulls",
            json={"title": title, "head": head, "base": base, "body": body}, creates=True,
        )  # fmt: skip
        return _pull(response.json())

    async def update_pull(
        self, owner: str, name: str, number: int, *, title: str, body: str
    ) -> PullRequest:
        response = await self._request(
            "PATCH", _path("repos", owner, name, "pulls", number), endpoint="/repos/pulls/{n}",
            json={"title": title, "body": body},
        )  # fmt: skip
        return _pull(response.json())

    # --- hooks ----------------------------------------------------------------------------------

    async def list_hooks(self, owner: str, name: str) -> list[Hook]:
        response = await self._request(
            "GET", _path("repos", owner, name, "hooks"), endpoint="/repos/hooks",
            params={"per_page": 100},
        )  # fmt: skip
        return [_hook(item) for item in response.json()]

    async def create_hook(self, owner: str, name: str, config: HookConfig) -> Hook:
        response = await self._request(
            "POST", _path("repos", owner, name, "hooks"), endpoint="/repos/hooks",
            json={"name": "web", **_hook_body(config)}, creates=True,
        )  # fmt: skip
        return _hook(response.json())

    async def update_hook(self, owner: str, name: str, hook_id: int, config: HookConfig) -> Hook:
        response = await self._request(
            "PATCH", _path("repos", owner, name, "hooks", hook_id), endpoint="/repos/hooks/{id}",
            json=_hook_body(config),
        )  # fmt: skip
        return _hook(response.json())

    async def list_hook_deliveries(
        self, owner: str, name: str, hook_id: int, *, per_page: int = 100
    ) -> list[HookDelivery]:
        response = await self._request(
            "GET", _path("repos", owner, name, "hooks", hook_id, "deliveries"),
            endpoint="/repos/hooks/{id}/deliveries", params={"per_page": per_page},
        )  # fmt: skip
        return [_delivery(item) for item in response.json()]

    async def redeliver(self, owner: str, name: str, hook_id: int, delivery_id: int) -> None:
        await self._request(
            "POST",
            _path("repos", owner, name, "hooks", hook_id, "deliveries", delivery_id, "attempts"),
            endpoint="/repos/hooks/{id}/deliveries/{id}/attempts", creates=True,
        )  # fmt: skip


# --- wire format → domain ---------------------------------------------------------------------


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = [str(e.get("message") or e.get("code") or "") for e in errors if e]
            message = f"{message}: {'; '.join(d for d in details if d)}".rstrip(": ")
        return message
    return ""


def _error_for(response: httpx.Response, what: str) -> ProviderError:
    status = response.status_code
    text = f"GitHub answered {status} to {what}: {_message(response) or response.reason_phrase}"
    if status == 401:
        return ProviderAuthError(text, status=status)
    if status == 403:
        return ProviderForbiddenError(text, status=status)
    if status == 404:
        return ProviderNotFoundError(text, status=status)
    if status == 422:
        return ProviderValidationError(text, status=status)
    if status >= 500:
        return ProviderUnavailableError(text, status=status)
    return ProviderError(text, status=status)


def _comment(data: dict[str, Any]) -> Comment:
    return Comment(
        id=int(data["id"]), body=data.get("body") or "", html_url=data.get("html_url", "")
    )


def _pull(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        html_url=data.get("html_url", ""),
        head=(data.get("head") or {}).get("ref", ""),
        base=(data.get("base") or {}).get("ref", ""),
        state=data.get("state", "open"),
        title=data.get("title", ""),
    )


def _hook(data: dict[str, Any]) -> Hook:
    config = data.get("config") or {}
    return Hook(
        id=int(data["id"]),
        url=config.get("url", ""),
        events=tuple(data.get("events") or ()),
        active=bool(data.get("active", True)),
        content_type=config.get("content_type", "form"),
    )


def _hook_body(config: HookConfig) -> dict[str, Any]:
    return {
        "active": config.active,
        "events": list(config.events),
        "config": {
            "url": config.url,
            "content_type": config.content_type,
            "secret": config.secret,
            "insecure_ssl": "0",
        },
    }


def _delivery(data: dict[str, Any]) -> HookDelivery:
    return HookDelivery(
        id=int(data["id"]),
        guid=str(data["guid"]),
        delivered_at=datetime.fromisoformat(str(data["delivered_at"]).replace("Z", "+00:00")),
        status_code=int(data.get("status_code") or 0),
        redelivery=bool(data.get("redelivery")),
        event=data.get("event", ""),
        action=data.get("action"),
    )
