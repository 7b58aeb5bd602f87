"""Counting instruments for bench/control_loop.py: database statements per call site, runtime calls.

`StatementCounter` hooks a SQLAlchemy engine (`before_cursor_execute`, `after_cursor_execute`,
pool `checkout`) and, while armed, counts every cursor execute (an executemany counts once; its
parameter sets are reported as `executemany_rows`), the rows SELECTs returned, the rows DML
touched, and connection checkouts (each one is a transaction: pre-ping, BEGIN, COMMIT/ROLLBACK).
Every statement is attributed to the innermost codexk8s functions on the stack plus its verb and
table, so a statement count that grows with N points at the query that does it.

`CountingRuntime` is an in-memory stand-in for the Kubernetes runtime that implements the
Runtime protocol and counts each protocol call, converted into the Kubernetes API requests the
real `KubernetesRuntime` makes for it (`K8S_REQUESTS_PER_CALL`).
"""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codexk8s.domain.runtime import (
    FailureReason,
    Leftover,
    LogLine,
    WorkloadHandle,
    WorkloadPhase,
    WorkloadSpec,
    WorkloadStatus,
)

# Kubernetes API requests per Runtime protocol call, as codexk8s/adapters/kubernetes/runtime.py
# makes them (checked against the fake API server of tests/adapters/kubernetes with
# `bench/control_loop.py --calibrate-k8s`):
#   launch         10: create Namespace, ServiceAccount, Role, RoleBinding, ResourceQuota,
#                      LimitRange, NetworkPolicy, Secret, Job, then replace the Secret (owner).
#                      A lineage's reused namespace costs 12 (409, get, patch); re-launching an
#                      existing Job 14. Every run here has its own lineage, so 10.
#   status          2: get Job + list its pods (1 when the Job is gone: 404).
#   list_workloads  2: list Jobs + list Pods, across namespaces, by label selector.
#   cancel          3: delete Job + list its pods + delete each pod (one pod per run).
#   cleanup         1: delete Namespace.
#   watch           2: list Jobs + list Pods when (re)started, then streamed events (0 per event).
#   stream_logs     1: one log follow request per pod (long-lived).
K8S_REQUESTS_PER_CALL: dict[str, int] = {
    "launch": 10,
    "status": 2,
    "list_workloads": 2,
    "cancel": 3,
    "cleanup": 1,
    "watch": 2,
    "stream_logs": 1,
}

_VERB_TABLE = re.compile(
    r"^\s*(?:(SELECT)\b.*?\bFROM\s+(\w+)|(UPDATE)\s+(\w+)|(INSERT)\s+INTO\s+(\w+)"
    r"|(DELETE)\s+FROM\s+(\w+)|(SELECT)\b)",
    re.IGNORECASE | re.DOTALL,
)
_PRODUCT_MARK = "/codexk8s/"


def statement_shape(statement: str) -> str:
    """`SELECT agent_runs`, `UPDATE slots`, ...: the verb and the first table."""
    match = _VERB_TABLE.match(statement)
    if match is None:
        return statement.split(None, 1)[0].upper() if statement.strip() else "?"
    parts = [p for p in match.groups() if p]
    return " ".join([parts[0].upper(), *parts[1:2]])


def product_callers(depth: int = 3) -> str:
    """The innermost codexk8s functions on the stack, outermost first (`a.f > b.g`)."""
    names: list[str] = []
    frame = sys._getframe(2)
    while frame is not None and len(names) < depth:
        filename = frame.f_code.co_filename
        if _PRODUCT_MARK in filename and "site-packages" not in filename:
            module = filename.rsplit("/", 1)[-1].removesuffix(".py")
            names.append(f"{module}.{frame.f_code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    return " > ".join(reversed(names)) or "(bench)"


@dataclass(slots=True)
class DbCounts:
    statements: int = 0
    executemany_rows: int = 0
    rows_read: int = 0
    rows_written: int = 0
    checkouts: int = 0
    sites: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "statements": self.statements,
            "executemany_rows": self.executemany_rows,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "transactions": self.checkouts,
            "sites": dict(self.sites.most_common()),
        }


class StatementCounter:
    """Counts what one engine sends to the database while armed (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self._armed = False
        self.counts = DbCounts()
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine.pool, "checkout", self._checkout)

    def arm(self) -> None:
        with self._lock:
            self.counts = DbCounts()
            self._armed = True

    def disarm(self) -> DbCounts:
        with self._lock:
            self._armed = False
            return self.counts

    def _before(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if not self._armed:
            return
        site = f"{product_callers()}: {statement_shape(statement)}"
        with self._lock:
            self.counts.statements += 1
            if executemany:
                self.counts.executemany_rows += len(parameters)
            self.counts.sites[site] += 1

    def _after(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if not self._armed:
            return
        rows = max(getattr(cursor, "rowcount", 0) or 0, 0)
        with self._lock:
            if statement.lstrip()[:6].upper() == "SELECT":
                self.counts.rows_read += rows
            else:
                self.counts.rows_written += rows

    def _checkout(self, *_: Any) -> None:
        if self._armed:
            with self._lock:
                self.counts.checkouts += 1


class CountingRuntime:
    """The Runtime protocol in memory, standing in for one cluster; counts every call."""

    name = "kubernetes"

    def __init__(self, namespace_prefix: str = "codexk8s-run") -> None:
        self.prefix = namespace_prefix
        self.workloads: dict[int, WorkloadStatus] = {}
        self.calls: Counter[str] = Counter()
        self.listed = 0  # statuses returned by list_workloads: what the cluster had to list

    def handle_for(self, run_id: int) -> WorkloadHandle:
        return WorkloadHandle(
            runtime=self.name, name=f"codexk8s-run-{run_id}", namespace=f"{self.prefix}-{run_id}"
        )

    def add_running(self, run_ids: Iterable[int]) -> None:
        for run_id in run_ids:
            self.workloads[run_id] = WorkloadStatus(
                run_id=run_id, phase=WorkloadPhase.RUNNING, handle=self.handle_for(run_id)
            )

    def finish(self, run_id: int, *, failed: bool = False) -> None:
        self.workloads[run_id] = WorkloadStatus(
            run_id=run_id,
            phase=WorkloadPhase.FAILED if failed else WorkloadPhase.SUCCEEDED,
            handle=self.handle_for(run_id),
            exit_code=1 if failed else 0,
            reason=FailureReason.EXIT_CODE if failed else None,
            finished_at=datetime.now(UTC),
        )

    def k8s_requests(self, calls: Counter[str] | None = None) -> int:
        calls = self.calls if calls is None else calls
        return sum(K8S_REQUESTS_PER_CALL[name] * count for name, count in calls.items())

    # --- the Runtime protocol ---------------------------------------------------------------

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        self.calls["launch"] += 1
        if spec.run_id not in self.workloads:
            self.add_running([spec.run_id])
        return self.handle_for(spec.run_id)

    async def status(self, handle: WorkloadHandle, run_id: int) -> WorkloadStatus:
        self.calls["status"] += 1
        return self.workloads.get(run_id) or WorkloadStatus(
            run_id=run_id, phase=WorkloadPhase.MISSING, handle=handle
        )

    async def list_workloads(self) -> list[WorkloadStatus]:
        self.calls["list_workloads"] += 1
        self.listed += len(self.workloads)
        return list(self.workloads.values())

    async def watch(self) -> AsyncIterator[WorkloadStatus]:
        self.calls["watch"] += 1
        for status in list(self.workloads.values()):
            yield status

    async def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        self.calls["stream_logs"] += 1
        for _ in ():
            yield _

    async def cancel(self, handle: WorkloadHandle, *, grace_seconds: float = 10.0) -> None:
        self.calls["cancel"] += 1

    async def cleanup(self, handle: WorkloadHandle) -> None:
        self.calls["cleanup"] += 1

    async def list_leftovers(self) -> list[Leftover]:
        self.calls["leftovers"] += 1
        return []
