"""The transports that carry change notifications between replicas: Redis pub/sub and
PostgreSQL LISTEN/NOTIFY, each on one channel. Both implement `services.notifications.Transport`
(the hub reconnects when `messages` raises); which one runs is the hub's choice."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.engine import Engine

CHANNEL = "codexk8s_live"


class RedisTransport:
    """Redis pub/sub on one channel."""

    name = "redis"

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
        self.channel = channel

    async def send(self, payload: str) -> None:
        await self._client.publish(self.channel, payload)

    async def messages(self) -> AsyncIterator[str]:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            yield ""
            while True:
                message = await pubsub.get_message(timeout=30.0)
                if message is None:
                    await pubsub.ping()  # a dead connection raises here instead of hanging
                    continue
                data = message.get("data")
                if message.get("type") == "message" and data is not None:
                    yield data.decode() if isinstance(data, bytes) else str(data)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        await self._client.aclose()


class PostgresTransport:
    """PostgreSQL LISTEN/NOTIFY on one channel, on connections of its own (autocommit)."""

    name = "postgresql"

    def __init__(self, dsn: str, *, channel: str = CHANNEL) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", channel):
            raise ValueError(f"not a channel name: {channel!r}")
        self._dsn = dsn
        self.channel = channel
        self._sender: Any = None
        self._send_lock = asyncio.Lock()

    @classmethod
    def from_engine(cls, engine: Engine, *, channel: str = CHANNEL) -> PostgresTransport:
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), channel=channel)

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=5)

    async def send(self, payload: str) -> None:
        async with self._send_lock:
            try:
                if self._sender is None or self._sender.closed:
                    self._sender = await self._connect()
                await self._sender.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except Exception:
                await self._close_sender()
                raise

    async def messages(self) -> AsyncIterator[str]:
        connection = await self._connect()
        try:
            await connection.execute(f"LISTEN {self.channel}")
            yield ""
            while True:
                # A timeout bounds how long a silently dead connection goes unnoticed.
                async for notify in connection.notifies(timeout=30.0):
                    yield notify.payload
                await connection.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _close_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender.close()

    async def close(self) -> None:
        await self._close_sender()
