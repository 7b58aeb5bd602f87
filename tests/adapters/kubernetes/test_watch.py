"""The two-kind watch: statuses as they change, resumed after drops, relisted after 410 Gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager, suppress

import kmock
import pytest

from codexk8s import metrics
from codexk8s.adapters.kubernetes.runtime import KubernetesRuntime
from codexk8s.adapters.kubernetes.watch import WorkloadWatcher
from codexk8s.domain.runtime import FailureReason, WorkloadHandle, WorkloadPhase, WorkloadStatus
from tests.adapters.kubernetes.conftest import Sleeps, make_runtime, make_spec
from tests.adapters.kubernetes.fake_api import FakeApiServer, FakeCluster

COMPLETE = {
    "conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-03-01T11:40:00Z"}
    ],
    "completionTime": "2026-03-01T11:40:00Z",
}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}


class Statuses:
    """Consumes a watch in a task, so that waiting with a timeout never cancels the watch."""

    def __init__(self, stream: AsyncIterator[WorkloadStatus]) -> None:
        self._queue: asyncio.Queue[WorkloadStatus] = asyncio.Queue()
        self._task = asyncio.create_task(self._consume(stream))

    async def _consume(self, stream: AsyncIterator[WorkloadStatus]) -> None:
        async with aclosing(stream):  # type: ignore[type-var]
            async for status in stream:
                self._queue.put_nowait(status)

    async def next(self) -> WorkloadStatus:
        return await asyncio.wait_for(self._queue.get(), timeout=5)

    async def none(self) -> None:
        await asyncio.sleep(0.3)
        assert self._queue.empty(), self._queue.get_nowait()

    async def close(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


@asynccontextmanager
async def watching(stream: AsyncIterator[WorkloadStatus]) -> AsyncIterator[Statuses]:
    statuses = Statuses(stream)
    try:
        yield statuses
    finally:
        await statuses.close()


def watch_requests(api: FakeApiServer, plural: str) -> list[kmock.Request]:
    return [
        request
        for request in api
        if request.params.get("watch") == "true" and request.url.path.endswith(f"/{plural}")
    ]


def list_requests(api: FakeApiServer, plural: str) -> list[kmock.Request]:
    return [
        request
        for request in api
        if request.method.value == "GET"
        and "watch" not in request.params
        and request.url.path in (f"/apis/batch/v1/{plural}", f"/api/v1/{plural}")
    ]


@contextmanager
def watches_refused(api: FakeApiServer) -> Iterator[None]:
    """While inside, every new watch request gets 503: changes pile up unseen."""
    closed = True
    api[lambda request: closed and request.params.get("watch") == "true"] << 503
    try:
        yield
    finally:
        closed = False


async def until_watching(cluster: FakeCluster) -> None:
    """Until both watches (jobs, pods) are open on the server."""
    for _ in range(200):
        if len(cluster.watches) == 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the watches did not open")


async def until_reconnect_attempted(api: FakeApiServer, count: int) -> None:
    for _ in range(200):
        if len(watch_requests(api, "jobs")) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the watch did not try to reconnect")


async def test_initial_statuses_then_each_change_once(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    async with watching(runtime.watch()) as stream:
        first = await stream.next()
        assert (first.run_id, first.phase) == (7, WorkloadPhase.PENDING)
        assert first.handle == handle

        cluster.start_pod(namespace, handle.name)
        assert (await stream.next()).phase is WorkloadPhase.RUNNING

        # A change that does not change the status yields nothing.
        cluster.patch("jobs", namespace, handle.name, {"metadata": {"annotations": {"a": "b"}}})
        await stream.none()

        cluster.set_status("jobs", namespace, handle.name, COMPLETE)
        done = await stream.next()
        assert (done.phase, done.exit_code) == (WorkloadPhase.SUCCEEDED, 0)

    for plural in ("jobs", "pods"):
        (listed,) = list_requests(api, plural)
        assert listed.params["labelSelector"] == "app.kubernetes.io/managed-by=codexk8s"
        (watched,) = watch_requests(api, plural)
        assert watched.url.path in ("/apis/batch/v1/jobs", "/api/v1/pods")  # all namespaces
        assert watched.params["labelSelector"] == "app.kubernetes.io/managed-by=codexk8s"
        assert watched.params["allowWatchBookmarks"] == "true"
        assert int(watched.params["timeoutSeconds"]) > 0
    # The pods are listed first, so the first statuses already know the pods.
    assert list(api).index(list_requests(api, "pods")[0]) < list(api).index(
        list_requests(api, "jobs")[0]
    )


async def test_a_new_run_appears_and_a_deleted_one_goes_missing(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    async with watching(runtime.watch()) as stream:
        await asyncio.sleep(0.1)
        handle = await runtime.launch(make_spec(7))
        assert (await stream.next()).phase is WorkloadPhase.PENDING

        cluster.delete("jobs", handle.namespace, handle.name)
        gone = await stream.next()
        assert (gone.run_id, gone.phase) == (7, WorkloadPhase.MISSING)
        assert gone.handle == handle


@pytest.mark.parametrize("abrupt", [True, False], ids=["connection-reset", "clean-end"])
async def test_a_dropped_watch_resumes_from_the_last_resource_version(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster, abrupt: bool
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    watcher: WorkloadWatcher = runtime.watcher()
    async with watching(watcher.statuses()) as stream:
        assert (await stream.next()).phase is WorkloadPhase.PENDING
        cluster.start_pod(namespace, handle.name)
        assert (await stream.next()).phase is WorkloadPhase.RUNNING
        await until_watching(cluster)
        seen = watcher.positions["jobs"]

        with watches_refused(api):
            cluster.drop_watches(abrupt=abrupt)
            await until_reconnect_attempted(api, 2)
            # Happens while nobody watches: only the resourceVersion can bring it back.
            cluster.set_status("jobs", namespace, handle.name, COMPLETE)

        done = await stream.next()
        assert (done.run_id, done.phase) == (7, WorkloadPhase.SUCCEEDED)
        await stream.none()

    resumed = watch_requests(api, "jobs")[-1]
    assert resumed.params["resourceVersion"] == seen
    assert len(list_requests(api, "jobs")) == 1  # resumed, not relisted


async def test_410_gone_relists_and_reports_what_happened_meanwhile(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    first = await runtime.launch(make_spec(7))
    second = await runtime.launch(make_spec(8, lineage="demo/1/43/dev"))
    relists = metrics.KUBERNETES_WATCH_RELISTS.labels("jobs")._value.get()
    async with watching(runtime.watch()) as stream:
        initial = {(await stream.next()).run_id for _ in range(2)}
        assert initial == {7, 8}
        await until_watching(cluster)

        with watches_refused(api):
            cluster.drop_watches(abrupt=True)
            await until_reconnect_attempted(api, 2)
            cluster.set_status("jobs", first.namespace or "", first.name, COMPLETE)
            cluster.delete("jobs", second.namespace, second.name)
            cluster.compact()

        changes = {}
        for _ in range(2):
            status = await stream.next()
            changes[status.run_id] = status
        assert changes[7].phase is WorkloadPhase.SUCCEEDED
        assert changes[8].phase is WorkloadPhase.MISSING
        assert changes[8].handle == second

    assert len(list_requests(api, "jobs")) == 2  # the first list, and the relist after 410
    assert metrics.KUBERNETES_WATCH_RELISTS.labels("jobs")._value.get() == relists + 1


async def test_an_http_410_answer_also_relists(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))

    def jobs_watch(request: kmock.Request) -> bool:
        return request.params.get("watch") == "true" and request.url.path == "/apis/batch/v1/jobs"

    api[jobs_watch][1:2] << 410  # the first resume is answered 410 Gone
    async with watching(runtime.watch()) as stream:
        await stream.next()
        await until_watching(cluster)
        cluster.drop_watches(abrupt=False)
        cluster.set_status("jobs", handle.namespace or "", handle.name, COMPLETE)
        assert (await stream.next()).phase is WorkloadPhase.SUCCEEDED

    assert "resourceVersion" in watch_requests(api, "jobs")[1].params  # a resume, refused
    assert len(list_requests(api, "jobs")) == 2


async def test_a_failed_job_is_reported_with_its_pods_reason_even_if_the_pod_event_lags(
    runtime: KubernetesRuntime, api: FakeApiServer, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    cluster.start_pod(namespace, handle.name)
    async with watching(runtime.watch()) as stream:
        assert (await stream.next()).phase is WorkloadPhase.RUNNING
        # The kubelet's update is stored but its watch event has not arrived yet.
        pod = cluster.get("pods", namespace, "codexk8s-run-7-x7k2p")
        assert pod is not None
        pod["status"] = {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "agent", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ],
        }
        cluster.set_status("jobs", namespace, handle.name, FAILED)

        failed = await stream.next()
        assert (failed.phase, failed.reason, failed.exit_code) == (
            WorkloadPhase.FAILED,
            FailureReason.OOM_KILLED,
            137,
        )
    reads = [
        r
        for r in api
        if r.url.path == f"/api/v1/namespaces/{namespace}/pods" and "watch" not in r.params
    ]
    assert reads[-1].params["labelSelector"] == f"batch.kubernetes.io/job-name={handle.name}"


async def test_pod_events_alone_move_the_status(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    handle = await runtime.launch(make_spec(7))
    namespace = handle.namespace or ""
    async with watching(runtime.watch()) as stream:
        await stream.next()
        cluster.start_pod(
            namespace,
            handle.name,
            phase="Pending",
            state={"waiting": {"reason": "InvalidImageName", "message": "bad ref"}},
        )
        failed = await stream.next()
        assert (failed.phase, failed.reason) == (WorkloadPhase.FAILED, FailureReason.IMAGE_PULL)


async def test_jobs_outside_the_namespace_prefix_are_ignored(
    runtime: KubernetesRuntime, cluster: FakeCluster
) -> None:
    cluster.create("namespaces", None, {"metadata": {"name": "other-team"}})
    async with watching(runtime.watch()) as stream:
        await asyncio.sleep(0.1)
        cluster.create(
            "jobs",
            "other-team",
            {
                "metadata": {
                    "name": "codexk8s-run-5",
                    "labels": {
                        "app.kubernetes.io/managed-by": "codexk8s",
                        "codexk8s.io/run-id": "5",
                    },
                },
                "spec": {},
            },
        )
        await stream.none()


async def test_watch_errors_back_off_and_recover(
    runtime: KubernetesRuntime, api: FakeApiServer, sleeps: Sleeps
) -> None:
    handle = await runtime.launch(make_spec(7))
    api["get /apis/batch/v1/jobs"][:3] << 429 << {"Retry-After": "2"}
    async with watching(runtime.watch()) as stream:
        status = await stream.next()
        assert (status.run_id, status.phase) == (7, WorkloadPhase.PENDING)
        assert status.handle == handle
    assert sleeps.count(2.0) == 3


async def test_a_watch_that_keeps_failing_keeps_backing_off(
    runtime: KubernetesRuntime, api: FakeApiServer, sleeps: Sleeps
) -> None:
    await runtime.launch(make_spec(7))
    with watches_refused(api):
        async with watching(runtime.watch()) as stream:
            await stream.next()
            await until_reconnect_attempted(api, 6)
    # Never gave up, and never hammered: every attempt waited, with growing delays.
    assert len(sleeps) >= 5
    assert max(sleeps) > min(sleeps)


async def test_status_changes_arrive_while_log_follows_fill_their_pool(
    api: FakeApiServer, cluster: FakeCluster, sleeps: Sleeps
) -> None:
    """More quiet log follows than log threads: the watches have threads of their own, so a
    run's end is still reported at once (with one shared pool they would wait for a follow
    to time out)."""
    runtime = make_runtime(api, sleeps, stream_workers=2, log_read_timeout=60)
    follows: list[asyncio.Task[None]] = []
    try:
        handles = [await runtime.launch(make_spec(run_id, lineage="")) for run_id in (1, 2, 3)]
        for handle in handles:
            cluster.start_pod(handle.namespace or "", handle.name)

        async def follow(handle: WorkloadHandle) -> None:
            async for _ in runtime.stream_logs(handle, follow=True):
                pass

        follows = [asyncio.create_task(follow(handle)) for handle in handles]
        for _ in range(200):  # until both log threads block on a quiet follow
            if len(cluster.logs) >= 2:
                break
            await asyncio.sleep(0.01)
        async with watching(runtime.watch()) as statuses:
            seen = {(await statuses.next()).run_id for _ in range(3)}
            assert seen == {1, 2, 3}
            cluster.set_status("jobs", handles[0].namespace or "", handles[0].name, COMPLETE)
            done = await statuses.next()
            assert (done.run_id, done.phase) == (1, WorkloadPhase.SUCCEEDED)
    finally:
        for task in follows:
            task.cancel()
        cluster.close_streams()
        await asyncio.gather(*follows, return_exceptions=True)
        runtime.close()
