"""The repository-provider contract (GitHub today) and the errors every provider maps to.

Services talk to a code host only through `RepositoryProvider`; the GitHub adapter
(`codexk8s.adapters.github.client`) implements it over REST. Plain dataclasses and a Protocol:
no HTTP library leaks past this line, so a fake or another host can stand in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ProviderError(Exception):
    """A provider call failed. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderAuthError(ProviderError):
    """The token is missing, wrong or expired (401)."""


class ProviderForbiddenError(ProviderError):
    """The token works but may not do this (403 without a rate limit)."""


class ProviderNotFoundError(ProviderError):
    """The repository or object does not exist, or the token cannot see it (404)."""


class ProviderValidationError(ProviderError):
    """The provider refused the request's content (422)."""


class ProviderRateLimitedError(ProviderError):
    """A rate limit would make us wait longer than allowed; try again after `retry_after`."""

    def __init__(self, message: str, *, status: int | None, retry_after: float) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """The provider could not be reached or kept failing (5xx, timeouts) after retries."""


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    full_name: str
    default_branch: str
    can_push: bool
    can_admin: bool
    is_private: bool = False


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    body: str
    html_url: str = ""


@dataclass(frozen=True, slots=True)
class PullRequest:
    number: int
    html_url: str
    head: str
    base: str
    state: str = "open"
    title: str = ""


@dataclass(frozen=True, slots=True)
class Hook:
    id: int
    url: str
    events: tuple[str, ...] = ()
    active: bool = True
    content_type: str = "json"


@dataclass(frozen=True, slots=True)
class HookDelivery:
    id: int
    guid: str
    delivered_at: datetime
    status_code: int
    redelivery: bool = False
    event: str = ""
    action: str | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class HookConfig:
    url: str
    secret: str
    events: tuple[str, ...]
    content_type: str = "json"
    active: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of model calls made around a run (added to the run's counters)."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.cached + other.cached,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )


class RepositoryProvider(Protocol):
    """What the control plane asks of a code host, for one repository's token."""

    async def get_repository(self, owner: str, name: str) -> RepositoryInfo: ...

    async def create_comment(self, owner: str, name: str, number: int, body: str) -> Comment: ...

    async def update_comment(
        self, owner: str, name: str, comment_id: int, body: str
    ) -> Comment: ...

    async def find_comment(
        self, owner: str, name: str, number: int, marker: str
    ) -> Comment | None: ...

    async def add_labels(
        self, owner: str, name: str, number: int, labels: Sequence[str]
    ) -> None: ...

    async def remove_label(self, owner: str, name: str, number: int, label: str) -> None: ...

    async def ensure_label(
        self, owner: str, name: str, label: str, *, color: str, description: str = ""
    ) -> None: ...

    async def find_open_pull(self, owner: str, name: str, head: str) -> PullRequest | None: ...

    async def create_pull(
        self, owner: str, name: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest: ...

    async def update_pull(
        self, owner: str, name: str, number: int, *, title: str, body: str
    ) -> PullRequest: ...

    async def list_hooks(self, owner: str, name: str) -> list[Hook]: ...

    async def create_hook(self, owner: str, name: str, config: HookConfig) -> Hook: ...

    async def update_hook(
        self, owner: str, name: str, hook_id: int, config: HookConfig
    ) -> Hook: ...

    async def list_hook_deliveries(
        self, owner: str, name: str, hook_id: int, *, per_page: int = 100
    ) -> list[HookDelivery]: ...

    async def redeliver(self, owner: str, name: str, hook_id: int, delivery_id: int) -> None: ...
