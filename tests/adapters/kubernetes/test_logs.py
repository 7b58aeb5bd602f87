"""Log following: timestamps and cursors, exact resume after a dropped stream or a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from codexk8s.adapters.kubernetes.logs import LineReader, LogCursor, timestamp_nanos
from codexk8s.adapters.kubernetes.permissions import LOG_READER_ROLE_NAME
from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime
from codexk8s.domain.runtime import LogLine, WorkloadHandle, WorkloadRuntimeError
from tests.adapters.kubernetes.conftest import Sleeps, make_runtime, make_spec
from tests.adapters.kubernetes.fake_api import FakeApiServer, FakeCluster, stamp

POD = "codexk8s-run-7-x7k2p"
TERMINATED = {"terminated": {"exitCode": 0, "reason": "Completed"}}


def moments(count: int, seconds_ago: float = 20) -> list[datetime]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    return [base + timedelta(seconds=i) for i in range(count)]


def burst() -> list[tuple[str, str]]:
    """Six lines where several share a timestamp, some with nanosecond precision."""
    t0, t1, t2 = moments(3)
    same = stamp(t1, 123456789)
    return [
        (stamp(t0), "one"),
        (stamp(t0), "two"),
        (same, "three"),
        (same, "four"),
        (same, "five"),
        (stamp(t2, 500_000_000), "six"),
    ]


async def collect(lines: AsyncIterator[LogLine], limit: int | None = None) -> list[LogLine]:
    out: list[LogLine] = []

    async def run() -> None:
        async for line in lines:
            out.append(line)
            if limit is not None and len(out) >= limit:
                return

    await asyncio.wait_for(run(), timeout=10)
    return out


async def running_pod(runtime: KubernetesRuntime, cluster: FakeCluster) -> WorkloadHandle:
    handle = await runtime.launch(make_spec(7))
    cluster.start_pod(handle.namespace or "", handle.name)
    return handle


def finish(cluster: FakeCluster, handle: WorkloadHandle) -> None:
    namespace = handle.namespace or ""
    container = {"name": "agent", "state": TERMINATED}
    cluster.set_status(
        "pods", namespace, POD, {"phase": "Succeeded", "containerStatuses": [container]}
    )
    cluster.end_log(namespace, POD)


def expected_since(cursor: str) -> float:
    """How far back a resume from `cursor` must reach: its age plus the 30 s skew margin."""
    written = datetime.fromtimestamp((timestamp_nanos(cursor.rsplit("#", 1)[0]) or 0) / 1e9, UTC)
    return (datetime.now(UTC) - written).total_seconds() + 30


def log_requests(api: FakeApiServer) -> list[dict[str, str]]:
    return [dict(r.params) for r in api if r.url.path.endswith(f"/pods/{POD}/log")]


def test_timestamps_are_exact_nanoseconds() -> None:
    assert timestamp_nanos("2026-01-02T03:04:05Z") == 1767323045 * 10**9
    assert timestamp_nanos("2026-01-02T03:04:05.5Z") == 1767323045 * 10**9 + 500_000_000
    assert timestamp_nanos("2026-01-02T03:04:05.000000001Z") == 1767323045 * 10**9 + 1
    assert timestamp_nanos("2026-01-02T05:04:05.25+02:00") == 1767323045 * 10**9 + 250_000_000
    assert timestamp_nanos("hello") is None


def test_cursor_round_trip_and_rejects_garbage() -> None:
    cursor = LogCursor.parse("2026-01-02T03:04:05.5Z#3")
    assert (str(cursor), cursor.count) == ("2026-01-02T03:04:05.5Z#3", 3)
    for bad in ("", "12", "2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z#0", "x#1"):
        with pytest.raises(WorkloadRuntimeError):
            LogCursor.parse(bad)


def test_line_reader_numbers_lines_sharing_a_timestamp() -> None:
    reader = LineReader(None)
    lines = [reader.read(f"{ts} {text}".encode()) for ts, text in burst()]
    cursors = [line.cursor for line in lines if line is not None]
    assert [c.rsplit("#", 1)[1] for c in cursors] == ["1", "2", "1", "2", "3", "1"]
    resumed = LineReader(LogCursor.parse(cursors[3]))
    rest = [resumed.read(f"{ts} {text}".encode()) for ts, text in burst()]
    assert [line.line for line in rest if line is not None] == ["five", "six"]


async def test_reading_a_finished_pods_log(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    cluster.write_log(handle.namespace or "", POD, *burst())
    finish(cluster, handle)

    lines = await collect(runtime.stream_logs(handle, follow=False))

    assert [line.line for line in lines] == ["one", "two", "three", "four", "five", "six"]
    assert {line.stream for line in lines} == {"stdout"}
    assert lines[2].cursor == f"{burst()[2][0]}#1"
    assert lines[4].cursor == f"{burst()[2][0]}#3"
    assert lines[2].ts.microsecond == 123456
    assert lines[2].ts.tzinfo is not None
    (request,) = log_requests(api)
    assert request["timestamps"] == "true"
    assert request["container"] == "agent"
    assert request.get("follow", "false") == "false"


async def test_a_run_from_before_the_log_reader_binds_it_when_its_log_is_refused(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    """A run launched by an older release (no log reader in its namespace) that is still going
    after the upgrade: the first refused read applies the binding, the next one reads."""
    handle = await running_pod(runtime, cluster)
    namespace = handle.namespace or ""
    cluster.delete("rolebindings", namespace, LOG_READER_ROLE_NAME)
    cluster.write_log(namespace, POD, *burst())
    finish(cluster, handle)

    lines = await collect(runtime.stream_logs(handle, follow=True))

    assert [line.line for line in lines] == ["one", "two", "three", "four", "five", "six"]
    assert cluster.get("rolebindings", namespace, LOG_READER_ROLE_NAME) is not None
    assert len(log_requests(api)) == 2  # refused, then read
    assert len(sleeps) == 1


async def test_a_log_still_refused_after_binding_the_reader_is_an_error(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    cluster.log_reader = "someone-elses-role"  # whatever the binding, the cluster says no
    cluster.write_log(handle.namespace or "", POD, *burst())

    with pytest.raises(WorkloadRuntimeError, match="403"):
        await collect(runtime.stream_logs(handle, follow=True))
    assert len(log_requests(api)) == 2  # one grant, one retry: no loop
    assert len(api.requests_with("PATCH", "rolebindings")) == 2 + 1


async def test_resuming_from_a_cursor_skips_exactly_what_was_read(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    cluster.write_log(handle.namespace or "", POD, *burst())
    finish(cluster, handle)
    everything = await collect(runtime.stream_logs(handle, follow=False))

    rest = await collect(runtime.stream_logs(handle, follow=False, after=everything[3].cursor))

    assert [line.line for line in rest] == ["five", "six"]
    assert [line.cursor for line in rest] == [line.cursor for line in everything[4:]]
    # The resume asks the server for a window reaching back past the cursor, not for all.
    since = int(log_requests(api)[-1]["sinceSeconds"])
    assert (
        expected_since(everything[3].cursor) - 1
        <= since
        <= expected_since(everything[3].cursor) + 1
    )


async def test_a_dropped_follow_resumes_without_loss_or_repeat(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    namespace = handle.namespace or ""
    cluster.write_log(namespace, POD, *burst())
    # The connection breaks after "three": in the middle of a run of equal timestamps.
    cluster.pod_log(namespace, POD).cuts.append(3)
    stream = runtime.stream_logs(handle, follow=True)

    first = await collect(stream, limit=6)
    later = moments(1, seconds_ago=1)[0]
    cluster.write_log(namespace, POD, (stamp(later), "seven"), (stamp(later), "eight"))
    more = await collect(stream, limit=2)
    finish(cluster, handle)
    tail = await collect(stream)

    assert [line.line for line in first + more] == [
        "one", "two", "three", "four", "five", "six", "seven", "eight",
    ]  # fmt: skip
    assert tail == []
    requests = log_requests(api)
    assert requests[0]["follow"] == "true"
    assert "sinceSeconds" not in requests[0]
    assert requests[1]["follow"] == "true"
    since = int(requests[1]["sinceSeconds"])
    assert expected_since(first[2].cursor) - 1 <= since <= expected_since(first[2].cursor) + 1


async def test_a_follow_waits_for_the_pod_to_start(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    lines = asyncio.create_task(collect(runtime.stream_logs(handle, follow=True)))
    await asyncio.sleep(0.2)
    cluster.start_pod(namespace, handle.name, phase="Pending", state={"waiting": {}})
    await asyncio.sleep(0.2)
    assert not lines.done()

    cluster.set_status(
        "pods",
        namespace,
        POD,
        {"phase": "Running", "containerStatuses": [{"name": "agent", "state": {"running": {}}}]},
    )
    cluster.write_log(namespace, POD, *burst()[:2])
    await asyncio.sleep(0.2)
    finish(cluster, handle)

    assert [line.line for line in await lines] == ["one", "two"]


async def test_lines_written_between_a_cut_and_the_end_are_not_lost(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    namespace = handle.namespace or ""
    lines = burst()
    cluster.write_log(namespace, POD, *lines[:3])
    cluster.pod_log(namespace, POD).cuts.append(3)
    stream = runtime.stream_logs(handle, follow=True)
    assert len(await collect(stream, limit=3)) == 3

    # The stream is cut; before it is reopened, the rest is written and the container ends.
    cluster.write_log(namespace, POD, *lines[3:])
    finish(cluster, handle)

    assert [line.line for line in await collect(stream)] == ["four", "five", "six"]


async def test_a_follow_of_a_job_that_never_started_ends(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    task = asyncio.create_task(collect(runtime.stream_logs(handle, follow=True)))
    await asyncio.sleep(0.1)
    cluster.set_status(
        "jobs",
        handle.namespace or "",
        handle.name,
        {"conditions": [{"type": "Failed", "status": "True"}]},
    )
    assert await task == []


async def test_without_follow_a_pod_not_started_yields_nothing(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    assert await collect(runtime.stream_logs(handle, follow=False)) == []


async def test_a_pod_deleted_mid_follow_ends_the_stream(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    namespace = handle.namespace or ""
    cluster.write_log(namespace, POD, *burst()[:2])
    stream = runtime.stream_logs(handle, follow=True)
    assert len(await collect(stream, limit=2)) == 2
    cluster.delete("pods", namespace, POD)

    assert await collect(stream) == []


async def test_stopping_a_follow_releases_its_thread_at_once(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    runtime = make_runtime(api, sleeps, stream_workers=1, log_read_timeout=30)
    handle = await running_pod(runtime, cluster)
    cluster.write_log(handle.namespace or "", POD, *burst()[:1])
    stream = runtime.stream_logs(handle, follow=True)
    assert len(await collect(stream, limit=1)) == 1
    # The next read blocks in a pool thread; closing must unblock it rather than wait for data.
    reader = asyncio.create_task(collect(stream, limit=1))
    await asyncio.sleep(0.1)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()  # type: ignore[attr-defined]

    # With a single stream thread, this only runs if the blocked read was released.
    executor = runtime._stream_executor
    try:
        done = await asyncio.wait_for(asyncio.wrap_future(executor.submit(lambda: 1)), timeout=2)
    finally:
        runtime.close()
    assert done == 1


async def test_an_invalid_cursor_is_an_error(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await running_pod(runtime, cluster)
    with pytest.raises(WorkloadRuntimeError, match="cursor"):
        await collect(runtime.stream_logs(handle, follow=False, after="42"))
