"""Redelivery of failed webhooks: GitHub never retries a delivery on its own.

A leader job lists each registered hook's recent deliveries and asks GitHub to redeliver the
ones that failed (our endpoint was down, timed out or refused), so an outage of the control plane
loses no event. Each GUID is asked for once: the ask is recorded in `github_redeliveries` (unique
GUID) before it is sent, and deliveries we already recorded in `webhook_deliveries` are skipped.
A send that fails removes the record again, so the next cycle tries once more.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from codexk8s.adapters.github.client import GitHubClient
from codexk8s.config import Settings
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.models import GitHubRedelivery, Repository, WebhookDelivery, table_of, utcnow
from codexk8s.domain.repository_provider import HookDelivery, ProviderError
from codexk8s.services import repositories

log = logging.getLogger(__name__)
REDELIVERIES = table_of(GitHubRedelivery)
REPOSITORIES = table_of(Repository)
DELIVERIES = table_of(WebhookDelivery)
# GitHub keeps deliveries for 3 days; older failures are left alone (stale events do more harm).
WINDOW = timedelta(hours=24)
FORGET_AFTER = timedelta(days=4)


@dataclass(slots=True)
class RedeliveryResult:
    requested: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def failed_guids(deliveries: list[HookDelivery], *, since: Any) -> dict[str, int]:
    """GUID → delivery id to redeliver: failed within the window and never delivered since."""
    succeeded = {d.guid for d in deliveries if d.is_success}
    chosen: dict[str, int] = {}
    for delivery in sorted(deliveries, key=lambda d: d.delivered_at):
        if delivery.guid in succeeded or delivery.delivered_at < since:
            continue
        chosen.setdefault(delivery.guid, delivery.id)
    return chosen


def _repositories(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(
                    REPOSITORIES.c.id, REPOSITORIES.c.owner, REPOSITORIES.c.name,
                    REPOSITORIES.c.webhook_id, REPOSITORIES.c.token_ciphertext,
                    REPOSITORIES.c.global_token_allowed,
                ).where(REPOSITORIES.c.webhook_id.is_not(None))
            ).all()
        )  # fmt: skip


def _reserve(engine: Engine, repository_id: int, guids: dict[str, int]) -> list[str]:
    """Record the asks that were not made before; return the GUIDs to send now."""
    if not guids:
        return []
    now = utcnow()
    with engine.begin() as connection:
        received = set(
            connection.execute(
                sa.select(DELIVERIES.c.delivery_id).where(DELIVERIES.c.delivery_id.in_(guids))
            ).scalars()
        )
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        reserved = []
        for guid, delivery_id in guids.items():
            if guid in received:
                continue  # it reached us after all (GitHub saw a timeout, we stored it)
            inserted = connection.execute(
                insert(REDELIVERIES)
                .values(
                    repository_id=repository_id, guid=guid, delivery_id=delivery_id,
                    requested_at=now,
                )
                .on_conflict_do_nothing(index_elements=["guid"])
                .returning(REDELIVERIES.c.id)
            ).first()  # fmt: skip
            if inserted is not None:
                reserved.append(guid)
        connection.execute(
            REDELIVERIES.delete().where(REDELIVERIES.c.requested_at < now - FORGET_AFTER)
        )
    return reserved


def _unreserve(engine: Engine, guid: str) -> None:
    with engine.begin() as connection:
        connection.execute(REDELIVERIES.delete().where(REDELIVERIES.c.guid == guid))


async def redeliver_failed(
    *,
    engine: Engine,
    settings: Settings,
    box: SecretBox,
    client_options: dict[str, Any] | None = None,
    window: timedelta = WINDOW,
) -> RedeliveryResult:
    result = RedeliveryResult()
    since = utcnow() - window
    for repo in await asyncio.to_thread(_repositories, engine):
        full_name = f"{repo.owner}/{repo.name}"
        try:
            token = repositories.token_for(repo, settings=settings, box=box)
        except DecryptionError:
            result.errors.append(f"{full_name}: token cannot be decrypted")
            continue
        if token is None:
            continue
        async with GitHubClient(
            token=token, api_url=settings.github_api_url, **(client_options or {})
        ) as github:
            try:
                deliveries = await github.list_hook_deliveries(
                    repo.owner, repo.name, repo.webhook_id
                )
            except ProviderError as exc:
                log.warning("listing deliveries of %s failed: %s", full_name, exc)
                result.errors.append(f"{full_name}: {exc}")
                continue
            guids = failed_guids(deliveries, since=since)
            for guid in await asyncio.to_thread(_reserve, engine, repo.id, guids):
                try:
                    await github.redeliver(repo.owner, repo.name, repo.webhook_id, guids[guid])
                except ProviderError as exc:
                    log.warning("redelivery of %s for %s failed: %s", guid, full_name, exc)
                    result.errors.append(f"{full_name} {guid}: {exc}")
                    await asyncio.to_thread(_unreserve, engine, guid)
                    continue
                log.info("asked GitHub to redeliver %s for %s", guid, full_name)
                result.requested.append(guid)
    return result
