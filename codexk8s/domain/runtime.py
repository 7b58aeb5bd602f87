"""The contract between the control loop and a runtime (local processes, Kubernetes Jobs).

A runtime runs one workload per run and reports on it; the control loop owns run states, slots and
log storage. Everything here is plain data plus a Protocol: no I/O.

Naming is deterministic (`workload_name(run_id)`), so launching the same run twice finds the
existing workload instead of starting a second one; that is what makes a restart of the control
plane between "claimed" and "launched" safe.
"""

from __future__ import annotations

import re
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
    # The cluster refused to create the pod (quota, LimitRange, Pod Security, an admission
    # webhook): it will not run without a change of settings.
    POD_REJECTED = "pod_rejected"
    # No node can take the pod (resources, node selector, taints) within the start-up grace.
    UNSCHEDULABLE = "unschedulable"
    RUNTIME_ERROR = "runtime_error"  # anything else the runtime reports


def workload_name(run_id: int) -> str:
    """Deterministic, DNS-label-safe name of a run's workload (Job name, process tag)."""
    return f"codexk8s-run-{run_id}"


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
POD_PROFILE_KEYS = frozenset(
    {"resources", "nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountAnnotations"}
)


class PodProfileError(ValueError):
    """A pod profile (CODEXK8S_RUN_POD, an agent's `pod`) is malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class PodProfile:
    """Where and how big a run's pod is: what an installation (CODEXK8S_RUN_POD) or an agent
    (`codexk8s agent set ROLE --pod JSON`) sets, in Kubernetes' own spelling.

    `requests` / `limits` map a resource (cpu, memory, ephemeral-storage) to a quantity; the
    other fields go to the pod (node selector, tolerations, pull secrets) and to the run's
    ServiceAccount (annotations, e.g. for workload identity). The Kubernetes runtime lays an
    agent's profile over the installation's (maps merge, lists replace); runtimes without pods
    ignore it.
    """

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        resources = {
            kind: dict(values)
            for kind, values in (("requests", self.requests), ("limits", self.limits))
            if values
        }
        if resources:
            data["resources"] = resources
        if self.node_selector:
            data["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            data["tolerations"] = [dict(t) for t in self.tolerations]
        if self.image_pull_secrets:
            data["imagePullSecrets"] = list(self.image_pull_secrets)
        if self.service_account_annotations:
            data["serviceAccountAnnotations"] = dict(self.service_account_annotations)
        return data


def _given(raw: Mapping[str, Any], key: str, empty: Any) -> Any:
    """RAW[KEY], with a missing key or JSON null meaning EMPTY (but [] for a map stays wrong)."""
    value = raw.get(key)
    return empty if value is None else value


def _string_map(value: Any, where: str, *, keys: re.Pattern[str] = _LABEL_KEY) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise PodProfileError(f"{where} must be an object of strings")
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not keys.match(key) or not isinstance(item, str):
            raise PodProfileError(f"{where}: {key!r} must be a valid key with a string value")
        result[key] = item
    return result


def parse_pod_profile(raw: Any, where: str = "pod profile") -> PodProfile:
    """Validate a profile given as JSON data; raises PodProfileError naming the bad field."""
    if raw is None:
        return PodProfile()
    if not isinstance(raw, Mapping):
        raise PodProfileError(f"{where} must be a JSON object")
    unknown = set(raw) - POD_PROFILE_KEYS
    if unknown:
        raise PodProfileError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(POD_PROFILE_KEYS))}"
        )
    resources = _given(raw, "resources", {})
    if not isinstance(resources, Mapping) or set(resources) - {"requests", "limits"}:
        raise PodProfileError(f"{where}: resources takes only requests and limits")
    sized: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        values = _given(resources, kind, {})
        if not isinstance(values, Mapping):
            raise PodProfileError(f"{where}: resources.{kind} must be an object")
        for resource, quantity in values.items():
            if resource not in _RESOURCES:
                raise PodProfileError(
                    f"{where}: resources.{kind}.{resource}: only {', '.join(_RESOURCES)}"
                )
            if not isinstance(quantity, str) or not _QUANTITY.match(quantity):
                raise PodProfileError(
                    f"{where}: resources.{kind}.{resource}: {quantity!r} is not a quantity "
                    "such as 500m, 2 or 4Gi"
                )
        sized[kind] = dict(values)
    tolerations = _given(raw, "tolerations", [])
    if not isinstance(tolerations, list) or not all(
        isinstance(t, Mapping) and set(t) <= _TOLERATION_KEYS for t in tolerations
    ):
        raise PodProfileError(
            f"{where}: tolerations must be a list of objects with "
            f"{', '.join(sorted(_TOLERATION_KEYS))}"
        )
    secrets = _given(raw, "imagePullSecrets", [])
    if not isinstance(secrets, list) or not all(
        isinstance(name, str) and _DNS_NAME.match(name) for name in secrets
    ):
        raise PodProfileError(f"{where}: imagePullSecrets must be a list of Secret names")
    return PodProfile(
        requests=sized["requests"],
        limits=sized["limits"],
        node_selector=_string_map(_given(raw, "nodeSelector", {}), f"{where}: nodeSelector"),
        tolerations=tuple(dict(t) for t in tolerations),
        image_pull_secrets=tuple(secrets),
        service_account_annotations=_string_map(
            _given(raw, "serviceAccountAnnotations", {}), f"{where}: serviceAccountAnnotations"
        ),
    )


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
    # Time the run may spend waiting for people (the platform MCP tools `ask`/`request_approval`)
    # on top of its timeout. The control plane pauses the run's deadline while it waits and stops
    # it at that deadline; the runtime's own timer, fixed at launch, is the backstop and so allows
    # for the wait too.
    wait_allowance_seconds: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    # The agent's own pod profile, laid over the installation's by runtimes with pods.
    pod: PodProfile | None = None

    @property
    def name(self) -> str:
        return workload_name(self.run_id)

    @property
    def limit_seconds(self) -> int:
        """How long the runtime lets the workload run before it kills it (its own timer)."""
        return self.timeout_seconds + self.wait_allowance_seconds


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

    `cursor` is opaque to the control loop: passing it back as `after=` resumes the stream right
    after this line (a byte offset for local files, a timestamp plus a tie-break for Kubernetes).
    """

    stream: str  # "stdout" | "stderr"
    line: str
    ts: datetime
    cursor: str


@dataclass(frozen=True, slots=True)
class Leftover:
    """What a runtime keeps around for runs (a namespace, a work folder), found by listing it
    rather than through a run's stored handle: how the control loop finds what a crash orphaned."""

    handle: WorkloadHandle  # what `cleanup` takes to remove it
    run_id: int | None  # the latest run that used it, as the runtime recorded it
    created_at: datetime | None


class WorkloadRuntimeError(Exception):
    """A runtime call failed in a way the caller should record (not a bug in codexk8s)."""


class WorkloadDeferredError(WorkloadRuntimeError):
    """The workload cannot be launched yet for a reason that passes by itself (its lineage's
    namespace is still being deleted): the run goes back to the queue, it does not fail."""

    def __init__(self, message: str, *, retry_after_seconds: float = 15.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


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

    async def list_leftovers(self) -> list[Leftover]:
        """Everything of this installation that `cleanup` could remove, found by listing."""
        ...
