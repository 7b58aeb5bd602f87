"""Change notifications for live pages: which project or run changed (a topic), never what.

Writers call `publish("run-7")` (or `publish_on_commit(connection, ...)` inside a transaction) and
carry on: publishing is synchronous, cheap, thread-safe and never raises. Readers consume
`subscribe()` and reload what they show from the database, so a lost or repeated notification
costs a reload, never a wrong page.

Fan-out: always in-process; across replicas through Redis pub/sub when `CODEXK8S_REDIS_URL` is
set, else PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL, else nothing more (the
embedded SQLite mode is one process). Bursts are coalesced: a topic published many times within
`COALESCE_SECONDS` goes out once (the first publish goes out at once, later ones wait for the
window), so a log pump storing batches does not flood viewers.

Notifications published from a process whose hub was never started (a CLI command) go nowhere:
pages that missed them resync on their next load or reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

from codexk8s.adapters.notify.transports import PostgresTransport, RedisTransport

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.1
# PostgreSQL caps a NOTIFY payload at 8000 bytes; stay well below with room for the envelope.
MAX_PAYLOAD_BYTES = 7000
RECONNECT_MAX_SECONDS = 10.0
TOPIC_PATTERN = re.compile(r"^(project|run)-[0-9]+$")
_PENDING_KEY = "codexk8s.notifications.pending"
_COMMITTED_KEY = "codexk8s.notifications.committed"


def project_topic(project_id: int) -> str:
    return f"project-{project_id}"


def run_topic(run_id: int) -> str:
    return f"run-{run_id}"


def is_topic(topic: str) -> bool:
    return bool(TOPIC_PATTERN.match(topic))


class Transport(Protocol):
    """How notifications cross process boundaries (Redis pub/sub, PostgreSQL NOTIFY:
    `adapters/notify/transports.py`)."""

    name: str

    async def send(self, payload: str) -> None: ...

    def messages(self) -> AsyncIterator[str]:
        """Every payload sent by any process (this one included) from now on; raises when the
        connection is lost (the hub reconnects)."""
        ...

    async def close(self) -> None: ...


class _Subscriber:
    """One consumer's topics not yet taken; a set, so repeats collapse while it is busy."""

    def __init__(self) -> None:
        self.topics: set[str] = set()
        self.ready = asyncio.Event()

    def offer(self, topics: Iterable[str]) -> None:
        self.topics.update(topics)
        self.ready.set()


class _Watch(_Subscriber):
    """A subscriber woken by one topic only (`Hub.watching`)."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def offer(self, topics: Iterable[str]) -> None:
        if self.topic in topics:
            self.ready.set()

    async def changed(self, within: float) -> bool:
        """Wait until the topic changes (True) or WITHIN seconds pass (False)."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout=within)
        except TimeoutError:
            return False
        self.ready.clear()
        return True


class Hub:
    """Collects published topics and delivers them, coalesced, to subscribers of this process
    and (through a transport) of every other replica."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._subscribers: set[_Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._transport: Transport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_send_error = 0.0

    @property
    def is_running(self) -> bool:
        return self._loop is not None

    @property
    def transport_name(self) -> str:
        return self._transport.name if self._transport is not None else "in-process"

    # --- publishing (any thread) ----------------------------------------------------------

    def publish(self, topic: str) -> None:
        """Queue TOPIC for delivery; a no-op when the hub is not running. Never raises."""
        try:
            if not is_topic(topic):
                log.warning("notification topic %r ignored: not project-<id> or run-<id>", topic)
                return
            with self._lock:
                loop, wake = self._loop, self._wake
                if loop is None or wake is None:
                    return
                was_empty = not self._pending
                self._pending.add(topic)
            if was_empty:
                loop.call_soon_threadsafe(wake.set)
        except Exception:  # the loop may be closing; a notification is never worth an error
            log.debug("notification %s dropped", topic, exc_info=True)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, transport: Transport | None = None) -> None:
        """Bind the hub to the running loop and start delivering (and receiving, with a
        transport)."""
        if self._loop is not None:
            raise RuntimeError("notification hub already running")
        self._transport = transport
        self._wake = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._flush_forever(), name="notifications-flush")]
        if transport is not None:
            ready = asyncio.Event()
            self._tasks.append(
                asyncio.create_task(self._receive_forever(ready), name="notifications-receive")
            )
            # Wait (briefly) until we listen, so nothing published right after start is missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), timeout=5)

    async def stop(self) -> None:
        with self._lock:
            self._loop = None
            self._pending.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
            self._transport = None

    @contextlib.asynccontextmanager
    async def running(self, transport: Transport | None = None) -> AsyncIterator[Hub]:
        await self.start(transport)
        try:
            yield self
        finally:
            await self.stop()

    # --- consuming (the hub's loop) ---------------------------------------------------------

    async def subscribe(self) -> AsyncIterator[str]:
        """Yield each changed topic; topics repeated while the consumer was busy come once."""
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        try:
            while True:
                await subscriber.ready.wait()
                subscriber.ready.clear()
                topics, subscriber.topics = subscriber.topics, set()
                for topic in sorted(topics):
                    yield topic
        finally:
            self._subscribers.discard(subscriber)

    @contextlib.asynccontextmanager
    async def watching(self, topic: str | None) -> AsyncIterator[_Watch | None]:
        """Within the block, a watch that wakes its waiter when TOPIC changes; None when there
        is no topic or the hub does not run on this loop (the caller then polls). Enter it
        before reading what it guards, so a change between the read and the wait is not
        missed."""
        if topic is None or self._loop is not asyncio.get_running_loop():
            yield None
            return
        watch = _Watch(topic)
        self._subscribers.add(watch)
        try:
            yield watch
        finally:
            self._subscribers.discard(watch)

    def _deliver(self, topics: Iterable[str]) -> None:
        topics = [t for t in topics if is_topic(t)]
        if not topics:
            return
        for subscriber in list(self._subscribers):
            subscriber.offer(topics)

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                topics, self._pending = self._pending, set()
            if not topics:
                continue
            self._deliver(topics)
            if self._transport is not None:
                await self._send(topics)
            # The coalescing window: whatever arrives meanwhile goes out together after it.
            await asyncio.sleep(COALESCE_SECONDS)
            with self._lock:
                if self._pending:
                    self._wake.set()

    async def _send(self, topics: set[str]) -> None:
        assert self._transport is not None
        try:
            for payload in _payloads(self.origin, topics):
                await self._transport.send(payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Other replicas miss this change; their pages resync on their next load. Log at most
            # once a minute: a down Redis must not flood the log.
            now = time.monotonic()
            if now - self._last_send_error > 60:
                self._last_send_error = now
                log.warning(
                    "sending notifications over %s failed", self.transport_name, exc_info=True
                )

    async def _receive_forever(self, ready: asyncio.Event) -> None:
        assert self._transport is not None
        backoff = 0.5
        while True:
            try:
                messages = self._transport.messages()
                async for payload in _announce_first(messages, ready):
                    backoff = 0.5
                    origin, topics = _decode(payload)
                    if origin != self.origin:
                        self._deliver(topics)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "listening for notifications over %s failed; retrying in %.1fs",
                    self.transport_name, backoff, exc_info=True,
                )  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)


async def _announce_first(messages: AsyncIterator[str], ready: asyncio.Event) -> AsyncIterator[str]:
    """Pass MESSAGES through; set READY once the transport listens (its first `""` marker)."""
    async for payload in messages:
        if payload == "":
            ready.set()
            continue
        yield payload


def _payloads(origin: str, topics: Iterable[str]) -> list[str]:
    """TOPICS in as few envelopes as fit the NOTIFY payload limit."""
    chunks: list[list[str]] = [[]]
    size = 0
    for topic in sorted(topics):
        if size + len(topic) + 3 > MAX_PAYLOAD_BYTES and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(topic)
        size += len(topic) + 3
    return [json.dumps({"o": origin, "t": chunk}, separators=(",", ":")) for chunk in chunks]


def _decode(payload: str | bytes) -> tuple[str, list[str]]:
    try:
        data = json.loads(payload)
        origin, topics = data["o"], data["t"]
        if isinstance(origin, str) and isinstance(topics, list):
            return origin, [t for t in topics if isinstance(t, str)]
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("ignoring a malformed notification payload")
    return "", []


def transport_for(*, redis_url: str | None, engine: Engine | None) -> Transport | None:
    """Redis when configured, else PostgreSQL when the database is PostgreSQL, else None."""
    if redis_url:
        return RedisTransport(redis_url)
    if engine is not None and engine.dialect.name == "postgresql":
        return PostgresTransport.from_engine(engine)
    return None


# --- the process-wide hub ---------------------------------------------------------------------

_hub = Hub()


def get_hub() -> Hub:
    return _hub


def publish(topic: str) -> None:
    """Tell every viewer of TOPIC (`project-<id>`, `run-<id>`) that it changed. Call it after
    the change committed; it never raises."""
    _hub.publish(topic)


def subscribe() -> AsyncIterator[str]:
    """The changed topics, as they come, on the running hub's event loop."""
    return _hub.subscribe()


# --- publishing after commit ------------------------------------------------------------------


def publish_on_commit(connection: Connection, topics: Iterable[str]) -> None:
    """Publish TOPICS once CONNECTION's transaction committed (nothing if it rolls back).

    Services call this inside `engine.begin()` blocks: viewers told earlier would reload before
    the change is visible. The topics ride on the pooled connection until it is checked in,
    which `engine.begin()` does right after the commit.
    """
    try:
        connection.info.setdefault(_PENDING_KEY, set()).update(topics)
    except Exception:
        log.debug("notification topics dropped", exc_info=True)


@sa.event.listens_for(Engine, "commit")
def _on_commit(connection: Connection) -> None:
    info = connection.info
    pending = info.pop(_PENDING_KEY, None)
    if pending:
        info.setdefault(_COMMITTED_KEY, set()).update(pending)


@sa.event.listens_for(Engine, "rollback")
def _on_rollback(connection: Connection) -> None:
    connection.info.pop(_PENDING_KEY, None)


@sa.event.listens_for(Pool, "checkin")
def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is None:
        return
    info = record.info
    info.pop(_PENDING_KEY, None)  # never committed
    committed = info.pop(_COMMITTED_KEY, None)
    for topic in committed or ():
        publish(topic)
