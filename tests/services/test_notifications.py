"""Change notifications: in-process fan-out and coalescing, publishing only after commit, and
delivery between two hubs (two replicas) over PostgreSQL LISTEN/NOTIFY and over Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from codexk8s.adapters.notify.transports import PostgresTransport, RedisTransport
from codexk8s.crypto import get_secret_box
from codexk8s.db.engine import get_engine, make_engine, session_scope
from codexk8s.domain.runtime import LogLine
from codexk8s.errors import ConflictError
from codexk8s.services import notifications, projects, repositories, run_control, run_logs
from codexk8s.services.notifications import Hub
from codexk8s.services.run_start import start_run
from tests.conftest import run_async


class Collector:
    """Reads a subscription in the background and keeps what arrived, in order."""

    def __init__(self, topics: AsyncIterator[str]) -> None:
        self.received: list[str] = []
        self._task = asyncio.create_task(self._read(topics))

    async def _read(self, topics: AsyncIterator[str]) -> None:
        async for topic in topics:
            self.received.append(topic)

    async def wait_for(self, *expected: str, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not set(expected) <= set(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {expected}, got {self.received}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def settle() -> None:
    """Long enough for any delivery still under way (several coalescing windows)."""
    await asyncio.sleep(notifications.COALESCE_SECONDS * 4)


def test_in_process_fan_out_to_every_subscriber_and_from_other_threads() -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub.running():
            first, second = Collector(hub.subscribe()), Collector(hub.subscribe())
            await asyncio.sleep(0)
            hub.publish("project-7")
            threading.Thread(target=hub.publish, args=("run-12",)).start()
            await first.wait_for("project-7", "run-12")
            await second.wait_for("project-7", "run-12")
            # Not a topic: dropped with a warning, never raised into the caller.
            hub.publish("project-7; DROP TABLE runs")
            hub.publish("")
            await settle()
            assert sorted(first.received) == sorted(second.received) == ["project-7", "run-12"]
            await first.close()
            await second.close()
        # A stopped hub (or one never started, as in a CLI process) accepts and drops.
        hub.publish("run-1")

    run_async(scenario())


def test_bursts_are_coalesced_per_window() -> None:
    async def scenario() -> None:
        hub = Hub()
        async with hub.running():
            seen = Collector(hub.subscribe())
            await asyncio.sleep(0)
            started = time.monotonic()
            for _ in range(300):  # a log pump storing many batches in half a second
                hub.publish("run-5")
                await asyncio.sleep(0.5 / 300)
            elapsed = time.monotonic() - started
            await settle()
            windows = elapsed / notifications.COALESCE_SECONDS
            assert 1 <= seen.received.count("run-5") <= windows + 2
            # The first publish went out at once, not after a window.
            seen.received.clear()
            await asyncio.sleep(notifications.COALESCE_SECONDS * 2)
            sent = time.monotonic()
            hub.publish("run-6")
            await seen.wait_for("run-6")
            assert time.monotonic() - sent < notifications.COALESCE_SECONDS / 2
            await seen.close()

    run_async(scenario())


@pytest.fixture
def alpha_run(app_db: str) -> int:
    with session_scope() as session:
        projects.create_project(session=session, key="alpha")
        repositories.add_repository(
            session=session, box=get_secret_box(), project_key="alpha", full_name="acme/app"
        )
    return start_run(get_engine(), project_key="alpha", repository="acme/app", issue=3, stage="dev")


def _project_id(key: str) -> int:
    with get_engine().connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT id FROM projects WHERE key = :k"), {"k": key}
            ).scalar_one()
        )


def test_published_only_after_commit_and_never_on_rollback(alpha_run: int) -> None:
    engine = get_engine()

    async def scenario() -> None:
        hub = notifications.get_hub()
        async with hub.running():
            seen = Collector(hub.subscribe())
            await asyncio.sleep(0)

            def slow_transaction() -> None:
                with engine.begin() as connection:
                    notifications.publish_on_commit(connection, ["run-100"])
                    time.sleep(0.5)  # nothing may be delivered while this is uncommitted

            worker = asyncio.create_task(asyncio.to_thread(slow_transaction))
            await asyncio.sleep(0.3)
            assert seen.received == []
            await worker
            await seen.wait_for("run-100")

            def rolled_back() -> None:
                with engine.connect() as connection:
                    notifications.publish_on_commit(connection, ["run-101"])
                    connection.rollback()
                with pytest.raises(RuntimeError), engine.begin() as connection:
                    notifications.publish_on_commit(connection, ["run-102"])
                    raise RuntimeError("boom")
                # Not committed at all (closed without commit): not published either.
                with engine.connect() as connection:
                    notifications.publish_on_commit(connection, ["run-103"])
                # The pooled connection carries nothing over to its next user.
                with engine.begin() as connection:
                    connection.execute(sa.text("SELECT 1"))

            await asyncio.to_thread(rolled_back)
            await settle()
            assert seen.received == ["run-100"]

            # The services publish after their transactions: a cancel tells the run's and the
            # project's viewers; a stored log batch tells the run's.
            seen.received.clear()
            await asyncio.to_thread(run_control.cancel_run, engine, run_id=alpha_run)
            project = f"project-{_project_id('alpha')}"
            await seen.wait_for(f"run-{alpha_run}", project)
            seen.received.clear()
            line = LogLine(stream="stdout", line="hello", ts=_now(), cursor="c1")
            stored = await asyncio.to_thread(
                run_logs.store_batch, engine, run_id=alpha_run, expected_sequence=0, lines=[line]
            )
            assert stored is not None and stored.sequence == 1
            await seen.wait_for(f"run-{alpha_run}")
            await settle()
            assert project not in seen.received
            # A refused action publishes nothing.
            seen.received.clear()
            with pytest.raises(ConflictError):
                await asyncio.to_thread(run_control.cancel_run, engine, run_id=alpha_run)
            await settle()
            assert seen.received == []
            await seen.close()

    run_async(scenario())


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def _two_replicas(make_transport) -> None:  # type: ignore[no-untyped-def]
    """Hub A publishes; hub B's subscriber receives it, and A's own subscriber gets it once."""
    a, b = Hub(), Hub()
    async with a.running(make_transport()), b.running(make_transport()):
        on_a, on_b = Collector(a.subscribe()), Collector(b.subscribe())
        await asyncio.sleep(0)
        a.publish("project-3")
        a.publish("run-9")
        await on_b.wait_for("project-3", "run-9")
        b.publish("run-10")
        await on_a.wait_for("run-10")
        await settle()
        assert sorted(on_a.received) == ["project-3", "run-10", "run-9"]
        assert sorted(on_b.received) == ["project-3", "run-10", "run-9"]
        # Many topics at once travel in several payloads (NOTIFY caps a payload at 8000 bytes).
        many = [f"run-{n}" for n in range(100_000, 102_000)]
        for topic in many:
            a.publish(topic)
        await on_b.wait_for(*many, within=10)
        await on_a.close()
        await on_b.close()


def test_postgres_notify_reaches_the_other_replica(app_db: str) -> None:
    engine = make_engine(app_db)
    try:
        run_async(_two_replicas(lambda: PostgresTransport.from_engine(engine)))
    finally:
        engine.dispose()


def test_redis_reaches_the_other_replica(redis_server_url: str) -> None:
    channel = f"codexk8s_test_{uuid.uuid4().hex}"
    url = f"{redis_server_url}/0"
    run_async(_two_replicas(lambda: RedisTransport(url, channel=channel)))


def test_a_lost_transport_is_reconnected(app_db: str) -> None:
    """Killing the listening PostgreSQL session (a restart, a network cut) only delays delivery."""
    engine = make_engine(app_db)
    channel = f"live_{uuid.uuid4().hex[:12]}"

    async def scenario() -> None:
        a, b = Hub(), Hub()
        transport_b = PostgresTransport.from_engine(engine, channel=channel)
        async with (
            a.running(PostgresTransport.from_engine(engine, channel=channel)),
            b.running(transport_b),
        ):
            on_b = Collector(b.subscribe())
            await asyncio.sleep(0)
            with engine.begin() as connection:
                killed = connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE query LIKE :q AND pid <> pg_backend_pid()"
                    ),
                    {"q": f"LISTEN {channel}%"},
                ).scalar_one()
            assert killed == 2
            deadline = time.monotonic() + 15
            while "run-1" not in on_b.received:
                assert time.monotonic() < deadline, "the listener did not come back"
                a.publish("run-1")
                await asyncio.sleep(0.3)
            await on_b.close()

    try:
        run_async(scenario())
    finally:
        engine.dispose()


def test_transport_choice() -> None:
    sqlite = make_engine("sqlite://")
    assert notifications.transport_for(redis_url=None, engine=sqlite) is None
    assert isinstance(
        notifications.transport_for(redis_url="redis://redis.example:6379/0", engine=sqlite),
        RedisTransport,
    )
    postgres = sa.create_engine("postgresql+psycopg://u:p@db.example:5432/codexk8s")
    chosen = notifications.transport_for(redis_url=None, engine=postgres)
    assert isinstance(chosen, PostgresTransport)
    assert chosen._dsn == "postgresql://u:p@db.example:5432/codexk8s"
