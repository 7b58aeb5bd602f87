"""Live pages: service notifications pushed to the browsers that watch a project or a run.

A page that wants to follow changes links a shared state to a watch token in one of its handlers
(`await watch(self, ProjectLive, "project-7")`) and renders `refresh_trigger(ProjectLive, ...)`,
an invisible element whose effect depends on the shared `version`: a bump runs it again, and it
asks the page's own handler to reload from the database, with that viewer's access checked on
the server.
Nothing but a counter crosses from one viewer to another.

Tokens: `project-<id>` and `run-<id>` (the notification topics) and `runs-all`, bumped for every
project change, for lists that span projects (the Runs page without a project filter).

The lifespan task `live_updates` starts the notification hub (Redis, PostgreSQL or in-process)
and bumps the tokens that viewers on this replica watch. There are no per-viewer background
tasks: a closed tab leaves at most a registry entry, dropped at the next bump that finds none of
its viewers connected. After a dropped websocket Reflex rehydrates and runs the page's `on_load`
again, which reloads from the database and links again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import reflex as rx
from reflex_base.constants import EventTriggers
from reflex_base.vars.base import LiteralVar

from codexk8s.config import get_settings
from codexk8s.db.engine import get_engine
from codexk8s.services import notifications

log = logging.getLogger(__name__)

ALL_PROJECTS = "runs-all"
# The inbox (and its badge in the navigation) of every viewer: any project change may open or
# settle a question; each viewer's handler reloads only what that person may answer.
INBOX = "inbox"
BUMP_TIMEOUT_SECONDS = 5.0


class ProjectLive(rx.SharedState):
    """Bumped when a run of the watched project (or of any project, `runs-all`) changes."""

    version: int = 0


class InboxLive(rx.SharedState):
    """Bumped when a run of any project changes (a question opened, answered or withdrawn)."""

    version: int = 0


class RunLive(rx.SharedState):
    """Bumped when the watched run changes: its state, its events or its stored log."""

    version: int = 0


def project_token(project_id: int | None) -> str:
    """The token a list of runs watches: one project's, or every project's."""
    return notifications.project_topic(project_id) if project_id is not None else ALL_PROJECTS


def run_token(run_id: int) -> str:
    return notifications.run_topic(run_id)


# Watch tokens linked by viewers on this replica, by shared state class, with when last linked.
_watched: dict[tuple[type[rx.SharedState], str], float] = {}


async def watch(state: rx.State, live_cls: type[rx.SharedState], token: str) -> int:
    """Link the viewer's LIVE_CLS to TOKEN (from inside one of the viewer's event handlers) and
    remember that this replica has a viewer of it; return the token's current version."""
    live = await state.get_state(live_cls)
    linked = await live._link_to(token)
    _watched[(live_cls, token)] = time.monotonic()
    return int(linked.version)


def refresh_trigger(live_cls: type[rx.SharedState], on_change: Any) -> rx.Component:
    """An invisible element that fires ON_CHANGE (an event handler taking the version) when it
    mounts and each time the linked token's version moves (a React effect on the version)."""
    version = live_cls.version  # type: ignore[attr-defined]
    return _trigger_class(live_cls).create(
        rx.box(display="none", data_testid="live-version", data_version=version),
        on_mount=on_change(version),
    )


@functools.cache
def _trigger_class(live_cls: type[rx.SharedState]) -> type[rx.Fragment]:
    dependency = str(live_cls.version)  # type: ignore[attr-defined]

    class VersionTrigger(rx.Fragment):
        """A fragment whose `on_mount` effect also runs again when the version changes."""

        def _get_mount_lifecycle_hook(self) -> str | None:
            return None  # replaced by the effect below, which must follow the state hooks

        def add_hooks(self) -> list[str | rx.Var]:
            on_mount = self.event_triggers.get(EventTriggers.ON_MOUNT)
            if on_mount is None:
                return []
            call = str(LiteralVar.create(on_mount)) + "()"
            return [f"useEffect(() => {{ {call} }}, [{dependency}]);"]

    # The compiled component is named after the class: keep it a valid JS identifier.
    VersionTrigger.__name__ = VersionTrigger.__qualname__ = f"{live_cls.__name__}Trigger"
    return VersionTrigger


def tokens_for(topic: str) -> list[tuple[type[rx.SharedState], str]]:
    """The watch tokens a notification topic moves."""
    if topic.startswith("project-"):
        return [(ProjectLive, topic), (ProjectLive, ALL_PROJECTS), (InboxLive, INBOX)]
    if topic.startswith("run-"):
        return [(RunLive, topic)]
    return []


async def bump(app: Any, live_cls: type[rx.SharedState], token: str) -> bool:
    """Move TOKEN's version so every viewer linked to it reloads; False (and forgotten) when
    none of its viewers is connected any more."""
    namespace = app.event_namespace
    if namespace is None:
        return False
    async with app.modify_state(rx.BaseStateToken(ident=token, cls=live_cls)) as root:
        live = await root.get_state(live_cls)
        manager = namespace._token_manager
        connected = {t for t in live._linked_from if await manager.is_token_connected(t)}
        if connected != live._linked_from:
            # Closed tabs: no push goes to them, and the set must not grow forever.
            live._linked_from = connected
        if not connected:
            return False
        live.version += 1
    return True


async def _bump_watched(app: Any, topic: str) -> None:
    for live_cls, token in tokens_for(topic):
        key = (live_cls, token)
        if key not in _watched:
            continue
        try:
            alive = await asyncio.wait_for(bump(app, live_cls, token), BUMP_TIMEOUT_SECONDS)
        except Exception:
            log.warning("pushing %s to its viewers failed", token, exc_info=True)
            continue
        if not alive:
            _watched.pop(key, None)


async def consume(app: Any, topics: AsyncIterator[str]) -> None:
    """Bump the watched tokens of every topic, one at a time: the hub already coalesced them."""
    async for topic in topics:
        await _bump_watched(app, topic)


@contextlib.asynccontextmanager
async def live_updates(app: Any) -> AsyncIterator[None]:
    """Lifespan task: run the notification hub and push its topics to this replica's viewers."""
    settings = get_settings()
    hub = notifications.get_hub()
    # One hub per process: a second app in the same process (tests) shares the running one.
    owns_hub = not hub.is_running
    if owns_hub:
        transport = notifications.transport_for(redis_url=settings.redis_url, engine=get_engine())
        await hub.start(transport)
    consumer = asyncio.create_task(consume(app, hub.subscribe()), name="live-updates")
    try:
        yield
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        if owns_hub:
            await hub.stop()
