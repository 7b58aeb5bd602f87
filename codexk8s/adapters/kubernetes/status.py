"""Turn a run's Job and pod (plain API dicts) into a WorkloadStatus; pure, tested case by case.

The Job decides the phase: its `Complete` / `Failed` conditions are final, and Kubernetes sets
them only after the pod has ended. The pod explains why: an evicted pod, an image that cannot
be pulled, an OOM kill or a non-zero exit code. Precedence for a failed Job: evicted, image
pull, deadline, OOM, exit code, else runtime error with the Job's own message.

An active Job whose container waits on an image pull or a broken container config, or whose
pod no node can take (`PodScheduled=False`, `Unschedulable`), is PENDING (the kubelet keeps
retrying, a registry hiccup heals, an autoscaler adds a node) until it has been stuck longer
than the startup grace; then it is FAILED with `image_pull` / `runtime_error` /
`unschedulable`, so a typo in an image tag or an impossible node selector does not hold a slot
until the run's deadline. An active Job without any pod that the cluster refused to create
(the caller found its `FailedCreate` events: quota, LimitRange, Pod Security, a webhook) is
FAILED with `pod_rejected` and the API server's own words. The Job itself is left to its
deadline: the caller decides whether to cancel it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from codexk8s.adapters.kubernetes.manifests import CONTAINER_NAME, RUN_ID_LABEL
from codexk8s.domain.runtime import FailureReason, WorkloadHandle, WorkloadPhase, WorkloadStatus

RUNTIME_NAME = "kubernetes"
DEFAULT_STARTUP_GRACE_SECONDS = 300.0
# The kubelet alternates between these while it retries a pull.
IMAGE_PULL_RETRYING = frozenset({"ErrImagePull", "ImagePullBackOff"})
# These never heal by retrying.
IMAGE_PULL_PERMANENT = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CONTAINER_SETUP_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
DISRUPTION_CONDITION = "DisruptionTarget"
MESSAGE_LIMIT = 500

Obj = Mapping[str, Any]


def dig(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]...; None as soon as a step is missing."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def run_id_of(obj: Obj) -> int | None:
    value = dig(obj, "metadata", "labels", RUN_ID_LABEL)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def handle_of(job: Obj) -> WorkloadHandle:
    uid = dig(job, "metadata", "uid")
    return WorkloadHandle(
        runtime=RUNTIME_NAME,
        name=str(dig(job, "metadata", "name")),
        namespace=dig(job, "metadata", "namespace"),
        details={"uid": uid} if uid else {},
    )


def latest_pod(pods: Sequence[Obj]) -> Obj | None:
    """The run's newest pod (a Job with backoffLimit 0 has one, unless it was replaced)."""
    if not pods:
        return None
    return max(pods, key=lambda pod: (dig(pod, "metadata", "creationTimestamp") or "", id(pod)))


def agent_container(pod: Obj | None) -> Obj:
    statuses = dig(pod, "status", "containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return status
    return statuses[0] if statuses else {}


def _true_conditions(obj: Obj) -> dict[str, Obj]:
    return {
        cond["type"]: cond
        for cond in dig(obj, "status", "conditions") or []
        if cond.get("status") == "True" and "type" in cond
    }


def _short(message: Any) -> str | None:
    if not message:
        return None
    text = str(message).strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _terminated(container: Obj) -> Obj | None:
    return dig(container, "state", "terminated") or dig(container, "lastState", "terminated")


def is_explained(job: Obj, pod: Obj | None) -> bool:
    """Whether a failed Job's reason can be told without fetching its pod again."""
    if dig(job, "metadata", "deletionTimestamp"):
        return True
    failed = _true_conditions(job).get("Failed")
    if failed is None or failed.get("reason") == "DeadlineExceeded":
        return True
    if pod is None:
        return False
    container = agent_container(pod)
    return bool(
        dig(pod, "status", "reason")
        or _terminated(container)
        or dig(container, "state", "waiting")
        or DISRUPTION_CONDITION in _true_conditions(pod)
    )


def _failure(failed: Obj, pod: Obj | None) -> tuple[FailureReason, int | None, str | None]:
    container = agent_container(pod)
    waiting = dig(container, "state", "waiting") or {}
    terminated = _terminated(container) or {}
    exit_code = terminated.get("exitCode")
    pod_reason = dig(pod, "status", "reason")
    pod_conditions = _true_conditions(pod) if pod is not None else {}
    if pod_reason == "Evicted" or DISRUPTION_CONDITION in pod_conditions:
        message = dig(pod, "status", "message") or dig(
            pod_conditions.get(DISRUPTION_CONDITION), "message"
        )
        return FailureReason.EVICTED, exit_code, _short(message or "the pod was evicted")
    waiting_reason = waiting.get("reason")
    if waiting_reason in IMAGE_PULL_RETRYING | IMAGE_PULL_PERMANENT:
        return FailureReason.IMAGE_PULL, None, _short(waiting.get("message") or waiting_reason)
    if failed.get("reason") == "DeadlineExceeded" or pod_reason == "DeadlineExceeded":
        return FailureReason.TIMEOUT, exit_code, _short(failed.get("message"))
    if terminated.get("reason") == "OOMKilled":
        return FailureReason.OOM_KILLED, exit_code, "the container ran out of memory (OOMKilled)"
    if isinstance(exit_code, int) and exit_code != 0:
        return FailureReason.EXIT_CODE, exit_code, _short(terminated.get("message"))
    if waiting_reason in CONTAINER_SETUP_ERRORS:
        return FailureReason.RUNTIME_ERROR, None, _short(waiting.get("message") or waiting_reason)
    message = failed.get("message") or failed.get("reason") or "the job failed"
    return FailureReason.RUNTIME_ERROR, exit_code, _short(message)


def _stuck_since(pod: Obj) -> datetime | None:
    return parse_time(dig(pod, "metadata", "creationTimestamp"))


def unschedulable_message(pod: Obj | None) -> str | None:
    """The scheduler's reason when it could not place POD (None: scheduled, or not tried)."""
    for cond in dig(pod, "status", "conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return str(cond.get("message") or "no node can run the pod")
    return None


def workload_status(
    run_id: int,
    job: Obj | None,
    pods: Sequence[Obj],
    *,
    now: datetime,
    startup_grace_seconds: float = DEFAULT_STARTUP_GRACE_SECONDS,
    rejection: str | None = None,
) -> WorkloadStatus:
    """The status of one run from its Job (None: there is none) and that Job's pods.

    `rejection` is why the cluster refused to create the Job's pod (a `FailedCreate` event's
    message), when the caller looked for one.
    """
    if job is None:
        return WorkloadStatus(run_id=run_id, phase=WorkloadPhase.MISSING)
    handle = handle_of(job)
    started_at = parse_time(dig(job, "status", "startTime"))
    conditions = _true_conditions(job)
    pod = latest_pod(pods)

    complete = conditions.get("Complete")
    if complete is not None:
        finished = parse_time(dig(job, "status", "completionTime")) or parse_time(
            complete.get("lastTransitionTime")
        )
        return WorkloadStatus(
            run_id=run_id,
            phase=WorkloadPhase.SUCCEEDED,
            handle=handle,
            exit_code=0,
            started_at=started_at,
            finished_at=finished,
        )
    failed = conditions.get("Failed")
    if failed is not None:
        reason, exit_code, message = _failure(failed, pod)
        return WorkloadStatus(
            run_id=run_id,
            phase=WorkloadPhase.FAILED,
            handle=handle,
            exit_code=exit_code,
            reason=reason,
            message=message,
            started_at=started_at,
            finished_at=parse_time(failed.get("lastTransitionTime")) or now,
        )
    if dig(job, "metadata", "deletionTimestamp"):
        return WorkloadStatus(
            run_id=run_id,
            phase=WorkloadPhase.FAILED,
            handle=handle,
            reason=FailureReason.CANCELED,
            message="the job is being deleted",
            started_at=started_at,
            finished_at=parse_time(dig(job, "metadata", "deletionTimestamp")),
        )

    def active(phase: WorkloadPhase, message: str | None = None) -> WorkloadStatus:
        return WorkloadStatus(
            run_id=run_id, phase=phase, handle=handle, message=message, started_at=started_at
        )

    def stuck(message: str | None, reason: FailureReason) -> WorkloadStatus:
        return WorkloadStatus(
            run_id=run_id,
            phase=WorkloadPhase.FAILED,
            handle=handle,
            reason=reason,
            message=message,
            started_at=started_at,
            finished_at=now,
        )

    if pod is None:
        if rejection is not None:
            return stuck(
                _short(f"the cluster refused the pod: {rejection}"), FailureReason.POD_REJECTED
            )
        return active(WorkloadPhase.PENDING)

    def past_grace() -> bool:
        since = _stuck_since(pod)
        return since is not None and (now - since).total_seconds() > startup_grace_seconds

    unscheduled = unschedulable_message(pod) if dig(pod, "status", "phase") == "Pending" else None
    if unscheduled is not None:
        if past_grace():
            return stuck(
                _short(f"no node can run the pod: {unscheduled}"), FailureReason.UNSCHEDULABLE
            )
        return active(WorkloadPhase.PENDING, _short(f"waiting for a node: {unscheduled}"))
    waiting = dig(agent_container(pod), "state", "waiting") or {}
    waiting_reason = waiting.get("reason")
    if waiting_reason in IMAGE_PULL_PERMANENT | IMAGE_PULL_RETRYING | CONTAINER_SETUP_ERRORS:
        message = _short(f"{waiting_reason}: {waiting.get('message') or ''}".rstrip(": "))
        if waiting_reason in IMAGE_PULL_PERMANENT or past_grace():
            image = waiting_reason not in CONTAINER_SETUP_ERRORS
            return stuck(
                message, FailureReason.IMAGE_PULL if image else FailureReason.RUNTIME_ERROR
            )
        return active(WorkloadPhase.PENDING, message)
    # A pod that already ended is still RUNNING until the Job controller records the outcome.
    if dig(pod, "status", "phase") in ("Running", "Succeeded", "Failed"):
        return active(WorkloadPhase.RUNNING)
    return active(WorkloadPhase.PENDING)
