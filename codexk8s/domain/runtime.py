"""The contract between the engine and a runtime (local processes, Kubernetes Jobs).

A runtime runs one workload per run and reports on it; the engine owns run states, slots and
log storage. Everything here is plain data plus a Protocol: no I/O.

Naming is deterministic (`workload_name(run_id)`), so launching the same run twice finds the
existing workload instead of starting a second one; that is what makes a restart of the control
plane between "claimed" and "launched" safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class WorkloadPhase(StrEnum):
    PENDING = "pending"  # accepted by the runtime, not running yet (image pull, scheduling)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"  # the runtime has no such workload (deleted, lost, never created)

    @property
    def is_finished(self) -> bool:
        return self in (WorkloadPhase.SUCCEEDED, WorkloadPhase.FAILED, WorkloadPhase.MISSING)


class FailureReason(StrEnum):
    """Why a workload failed, as far as the runtime can tell."""

    EXIT_CODE = "exit_code"  # the command exited non-zero
    TIMEOUT = "timeout"  # the deadline passed (activeDeadlineSeconds, local timer)
    CANCELED = "canceled"  # the runtime was asked to stop it
    OOM_KILLED = "oom_killed"
    IMAGE_PULL = "image_pull"
    EVICTED = "evicted"
    RUNTIME_ERROR = "runtime_error"  # anything else the runtime reports


def workload_name(run_id: int) -> str:
    """Deterministic, DNS-label-safe name of a run's workload (Job name, process tag)."""
    return f"codexk8s-run-{run_id}"


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What to run for one agent run.

    `env` holds plain values; `secret_env` holds credentials (the run token, ...) that a runtime
    must keep out of manifests and logs (a Kubernetes Secret, a child-only environment).
    `lineage` groups revise runs of one (project, repository, issue, agent) so that a runtime
    with namespaces can reuse one namespace for them.
    """

    run_id: int
    correlation_id: str
    project_key: str
    lineage: str
    command: tuple[str, ...]
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: int = 3600
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return workload_name(self.run_id)


@dataclass(frozen=True, slots=True)
class WorkloadHandle:
    """How to find a workload again, also after a restart; stored on the run as JSON."""

    runtime: str  # "local" | "kubernetes"
    name: str
    namespace: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # pid, start time, work dir, uid

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "name": self.name,
            "namespace": self.namespace,
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkloadHandle:
        return cls(
            runtime=str(data["runtime"]),
            name=str(data["name"]),
            namespace=data.get("namespace"),
            details=dict(data.get("details") or {}),
        )


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    run_id: int
    phase: WorkloadPhase
    handle: WorkloadHandle | None = None
    exit_code: int | None = None
    reason: FailureReason | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a workload's output.

    `cursor` is opaque to the engine: passing it back as `after=` resumes the stream right after
    this line (a byte offset for local files, a timestamp plus a tie-break for Kubernetes).
    """

    stream: str  # "stdout" | "stderr"
    line: str
    ts: datetime
    cursor: str


class WorkloadRuntimeError(Exception):
    """A runtime call failed in a way the caller should record (not a bug in codexk8s)."""


@runtime_checkable
class Runtime(Protocol):
    """A place where runs execute. Every method is idempotent and safe to call after a restart."""

    name: str

    async def launch(self, spec: WorkloadSpec) -> WorkloadHandle:
        """Start the workload, or return the handle of the one that already exists for it."""
        ...

    async def status(self, handle: WorkloadHandle, run_id: int) -> WorkloadStatus:
        """The workload's current state; MISSING if the runtime does not know it."""
        ...

    async def list_workloads(self) -> list[WorkloadStatus]:
        """Every workload this control plane manages (adoption after a restart, safety sweeps)."""
        ...

    def watch(self) -> AsyncIterator[WorkloadStatus]:
        """Status changes of all managed workloads, as they happen, until cancelled."""
        ...

    def stream_logs(
        self, handle: WorkloadHandle, *, follow: bool, after: str | None = None
    ) -> AsyncIterator[LogLine]:
        """The workload's output from just after `after` (or the start); with `follow`, keep
        yielding until the workload ends."""
        ...

    async def cancel(self, handle: WorkloadHandle, *, grace_seconds: float = 10.0) -> None:
        """Stop the workload: a graceful signal, then a kill after the grace period."""
        ...

    async def cleanup(self, handle: WorkloadHandle) -> None:
        """Remove what the workload left behind (namespace, work folder)."""
        ...
