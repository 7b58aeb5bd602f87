"""An in-memory runtime shared by several control loops, standing in for one cluster.

It is a test double for the Runtime protocol (the control loop is what is under test): it records
every launch, runs each workload for a short random time, and tracks how many workloads of each
project run at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from codexk8s.domain.runtime import (
    Leftover,
    LogLine,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)


class FakeClusterRuntime:
    name = "fake"

    def __init__(self, *, min_seconds: float = 0.01, max_seconds: float = 0.05) -> None:
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.launch_calls: Counter[int] = Counter()
        self.created: Counter[int] = Counter()
        self.statuses: dict[int, WorkloadStatus] = {}
        self.project_of: dict[int, str] = {}
        self.running_now: Counter[str] = Counter()
        self.max_running: defaultdict[str, int] = defaultdict(int)
        self.calls: Counter[str] = Counter()
        self._subscribers: list[asyncio.Queue[WorkloadStatus]] = []

    def _publish(self, status: WorkloadStatus) -> None:
        self.statuses[status.run_id] = status
        for queue in self._subscribers:
            queue.put_nowait(status)

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        self.calls["launch"] += 1
        self.launch_calls[spec.run_id] += 1
        handle = WorkloadHandle(runtime=self.name, name=spec.name, namespace=spec.project_key)
        if spec.run_id in self.statuses:
            return handle
        self.created[spec.run_id] += 1
        self.project_of[spec.run_id] = spec.project_key
        self.running_now[spec.project_key] += 1
        self.max_running[spec.project_key] = max(
            self.max_running[spec.project_key], self.running_now[spec.project_key]
        )
        self._publish(
            WorkloadStatus(run_id=spec.run_id, phase=WorkloadPhase.RUNNING, handle=handle)
        )
        asyncio.get_running_loop().call_later(
            random.uniform(self.min_seconds, self.max_seconds), self._finish, spec.run_id, handle
        )
        return handle

    def _finish(self, run_id: int, handle: WorkloadHandle) -> None:
        self.running_now[self.project_of[run_id]] -= 1
        now = datetime.now(UTC)
        self._publish(
            WorkloadStatus(run_id=run_id, phase=WorkloadPhase.SUCCEEDED, handle=handle,
                           exit_code=0, finished_at=now)
        )  # fmt: skip

    async def status(self, handle: WorkloadHandle, run_id: int) -> WorkloadStatus:
        self.calls["status"] += 1
        return self.statuses.get(run_id) or WorkloadStatus(
            run_id=run_id, phase=WorkloadPhase.MISSING
        )

    async def list_workloads(self) -> list[WorkloadStatus]:
        self.calls["list"] += 1
        return list(self.statuses.values())

    async def watch(self) -> AsyncIterator[WorkloadStatus]:
        queue: asyncio.Queue[WorkloadStatus] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        self.calls["logs"] += 1
        if after is None:
            yield LogLine(
                stream="stdout", line=f"{handle.name} done", ts=datetime.now(UTC), cursor="1"
            )

    async def cancel(self, handle: WorkloadHandle, *, grace_seconds: float = 10.0) -> None:
        self.calls["cancel"] += 1

    async def cleanup(self, handle: WorkloadHandle) -> None:
        self.calls["cleanup"] += 1

    async def list_leftovers(self) -> list[Leftover]:
        self.calls["leftovers"] += 1
        return []
