"""Status changes of every managed run from one watch per kind (Jobs, Pods), never polling.

Both kinds are listed and then watched across all namespaces with the runtime's label selector
(`app.kubernetes.io/managed-by=codexk8s` and the installation's id; objects outside this
runtime's namespace prefix are ignored). The Job gives the phase, the pod the reasons (see
status.py); a change of either recomputes that run's status, which is yielded only when it
differs from the last one yielded.

Resume and relist, per kind:
- every event's `metadata.resourceVersion` (and BOOKMARK events) advances the position; a
  stream that ends (server timeout) or breaks (reset connection, read timeout, 5xx, 429) is
  reopened from that position, after a backoff when it failed;
- a position the server no longer has (HTTP 410 Gone, or an ERROR event with code 410) makes
  the loop list the kind again and watch from the list's resourceVersion. The list replaces the
  cached objects of that kind: runs whose Job vanished meanwhile are yielded as MISSING, the
  others are recomputed, so no change between the drop and the relist is lost.

At start the pods are listed before the Jobs, so the first statuses already see both. When a
Job fails and the cached pod cannot explain it yet (the two streams are not ordered with
respect to each other), the run's pods are read once before its status is yielded, so a
failure is never reported with a vaguer reason than the pod holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from codexk8s import metrics
from codexk8s.adapters.kubernetes.client import ApiCaller, describe, is_retryable
from codexk8s.adapters.kubernetes.manifests import MANAGED_SELECTOR
from codexk8s.adapters.kubernetes.status import (
    dig,
    handle_of,
    is_explained,
    latest_pod,
    run_id_of,
    workload_status,
)
from codexk8s.domain.runtime import WorkloadPhase, WorkloadStatus

log = logging.getLogger(__name__)

JOBS = "jobs"
PODS = "pods"
HTTP_GONE = 410
# A stream that ends sooner than this without an event counts as a failure (backoff).
MIN_HEALTHY_STREAM_SECONDS = 1.0

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    kind: str
    items: list[Obj]


@dataclass(frozen=True, slots=True)
class _Change:
    kind: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj


class _Gone(Exception):
    """The watch position is too old: list again."""


class WorkloadWatcher:
    """One `watch()` call: two list-then-watch loops feeding one status stream."""

    def __init__(
        self,
        caller: ApiCaller,
        *,
        list_jobs: Callable[..., Any],
        list_pods: Callable[..., Any],
        read_pods: Callable[[str, int], Any],
        owns_namespace: Callable[[str], bool],
        timeout_seconds: int,
        startup_grace_seconds: float,
        selector: str = MANAGED_SELECTOR,
    ) -> None:
        self._caller = caller
        self._selector = selector
        self._list = {JOBS: list_jobs, PODS: list_pods}
        self._read_pods = read_pods
        self._owns = owns_namespace
        self._timeout_seconds = timeout_seconds
        self._grace = startup_grace_seconds
        self._jobs: dict[int, Obj] = {}
        self._pods: dict[int, dict[str, Obj]] = {}
        self._last: dict[int, WorkloadStatus] = {}
        # Jobs that vanished since the last status of their run was computed.
        self._missing: dict[int, Obj] = {}
        # Which resourceVersion each loop resumes from (exposed for tests and debugging).
        self.positions: dict[str, str | None] = {JOBS: None, PODS: None}

    async def statuses(self) -> AsyncIterator[WorkloadStatus]:
        queue: asyncio.Queue[_Snapshot | _Change] = asyncio.Queue()
        pods_listed = asyncio.Event()
        tasks = [
            asyncio.create_task(self._loop(PODS, queue, listed=pods_listed)),
            asyncio.create_task(self._loop(JOBS, queue, after=pods_listed)),
        ]
        try:
            while True:
                item = await queue.get()
                for run_id in self._apply(item):
                    status = await self._status(run_id)
                    if status is not None and self._last.get(run_id) != status:
                        if status.phase is WorkloadPhase.MISSING:
                            self._last.pop(run_id, None)
                            self._pods.pop(run_id, None)
                        else:
                            self._last[run_id] = status
                        yield status
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- cache ---------------------------------------------------------------------------

    def _ours(self, obj: Obj) -> int | None:
        namespace = dig(obj, "metadata", "namespace")
        if not isinstance(namespace, str) or not self._owns(namespace):
            return None
        return run_id_of(obj)

    def _apply(self, item: _Snapshot | _Change) -> list[int]:
        """Update the cache; return the runs whose status may have changed."""
        if isinstance(item, _Snapshot):
            return self._apply_snapshot(item)
        run_id = self._ours(item.obj)
        if run_id is None:
            return []
        name = str(dig(item.obj, "metadata", "name"))
        if item.kind == JOBS:
            if item.type == "DELETED":
                if self._jobs.pop(run_id, None) is None:
                    return []
                self._missing[run_id] = item.obj
            else:
                self._jobs[run_id] = item.obj
        elif item.type == "DELETED":
            self._pods.get(run_id, {}).pop(name, None)
        else:
            self._pods.setdefault(run_id, {})[name] = item.obj
        return [run_id]

    def _apply_snapshot(self, snapshot: _Snapshot) -> list[int]:
        fresh: dict[int, dict[str, Obj]] = {}
        for obj in snapshot.items:
            run_id = self._ours(obj)
            if run_id is not None:
                fresh.setdefault(run_id, {})[str(dig(obj, "metadata", "name"))] = obj
        if snapshot.kind == PODS:
            touched = set(self._pods) | set(fresh)
            self._pods = fresh
            return sorted(run_id for run_id in touched if run_id in self._jobs)
        gone = set(self._jobs) - set(fresh)
        for run_id in gone:
            self._missing[run_id] = self._jobs.pop(run_id)
        # One Job per run: the deterministic name makes a second one impossible.
        self._jobs.update({run_id: next(iter(jobs.values())) for run_id, jobs in fresh.items()})
        return sorted(gone | set(fresh))

    async def _status(self, run_id: int) -> WorkloadStatus | None:
        job = self._jobs.get(run_id)
        if job is None:
            vanished = self._missing.pop(run_id, None)
            if vanished is None:
                return None
            return WorkloadStatus(
                run_id=run_id,
                phase=WorkloadPhase.MISSING,
                handle=handle_of(vanished),
                message="the job was deleted",
            )
        pods = list(self._pods.get(run_id, {}).values())
        if not is_explained(job, latest_pod(pods)):
            pods = await self._fetch_pods(job, run_id) or pods
        return workload_status(
            run_id, job, pods, now=datetime.now(UTC), startup_grace_seconds=self._grace
        )

    async def _fetch_pods(self, job: Obj, run_id: int) -> list[Obj] | None:
        namespace = str(dig(job, "metadata", "namespace"))
        try:
            found = await self._read_pods(namespace, run_id)
        except Exception as exc:  # the cached view still gives a (vaguer) status
            log.warning("reading pods of run %s failed: %s", run_id, describe(exc))
            return None
        pods = {str(dig(p, "metadata", "name")): p for p in (found or {}).get("items") or []}
        self._pods[run_id] = pods
        return list(pods.values())

    # -- list and watch loops ------------------------------------------------------------

    async def _loop(
        self,
        kind: str,
        queue: asyncio.Queue[_Snapshot | _Change],
        *,
        listed: asyncio.Event | None = None,
        after: asyncio.Event | None = None,
    ) -> None:
        if after is not None:
            await after.wait()
        position: str | None = None
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            error: Exception | None = None
            relisted = False
            try:
                if position is None:
                    position = await self._relist(kind, queue)
                    relisted = True
                    if listed is not None:
                        listed.set()
                    failures = 0
                opened_at = loop.time()
                events = 0
                async with aclosing(self._stream(kind, position)) as stream:
                    async for event_type, obj in stream:
                        new_position = dig(obj, "metadata", "resourceVersion")
                        if event_type != "BOOKMARK":
                            await queue.put(_Change(kind, event_type, obj))
                        if new_position:
                            position = str(new_position)
                            self.positions[kind] = position
                        events += 1
                        failures = 0
                if events == 0 and loop.time() - opened_at < MIN_HEALTHY_STREAM_SECONDS:
                    error = ConnectionError("the watch ended at once")
            except asyncio.CancelledError:
                raise
            except (_Gone, ApiException) as exc:
                if isinstance(exc, ApiException) and exc.status != HTTP_GONE:
                    error = exc
                else:
                    log.info("watch of %s expired at %s; relisting", kind, position)
                    metrics.KUBERNETES_WATCH_RELISTS.labels(kind).inc()
                    position = None
                    if not relisted:
                        continue
                    # Gone right after a fresh list: the server is confused; do not spin.
                    error = exc
            except Exception as exc:
                error = exc
            if error is not None:
                failures += 1
                delay = self._caller.retry.delay_for(error, failures)
                if not is_retryable(error):
                    log.warning("watch of %s failed: %s", kind, describe(error))
                await self._caller.sleep(delay)

    async def _relist(self, kind: str, queue: asyncio.Queue[_Snapshot | _Change]) -> str:
        found = await self._caller.call(
            f"list {kind}", self._list[kind], label_selector=self._selector
        )
        found = found or {}
        await queue.put(_Snapshot(kind, list(found.get("items") or [])))
        position = str(dig(found, "metadata", "resourceVersion") or "")
        self.positions[kind] = position
        return position

    async def _stream(self, kind: str, position: str) -> AsyncIterator[tuple[str, Obj]]:
        stream = await self._caller.open_stream(
            self._list[kind],
            executor=self._caller.watch_executor,
            label_selector=self._selector,
            watch=True,
            resource_version=position or None,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout_seconds,
            # Past the server-side timeout plus slack, silence means a dead connection.
            read_timeout=self._timeout_seconds + 30,
        )
        try:
            async for line in stream.lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                event_type = event.get("type")
                obj = event.get("object") or {}
                if event_type == "ERROR":
                    if obj.get("code") == HTTP_GONE:
                        raise _Gone()
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
                if event_type in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                    yield event_type, obj
        finally:
            stream.close()


def pods_by_run(items: list[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for pod in items:
        run_id = run_id_of(pod)
        if run_id is not None:
            grouped.setdefault(run_id, []).append(pod)
    return grouped
