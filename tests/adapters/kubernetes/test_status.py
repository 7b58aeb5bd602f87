"""Job + pod -> WorkloadStatus, one failure reason at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from codexk8s.adapters.kubernetes.status import is_explained, workload_status
from codexk8s.domain.runtime import FailureReason, WorkloadPhase

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def job(*conditions: dict[str, Any], deleting: bool = False, **status: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "codexk8s-run-7",
        "namespace": "codexk8s-run-demo-abc",
        "uid": "uid-7",
        "labels": {"codexk8s.io/run-id": "7"},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-03-01T11:59:00Z"
    return {
        "metadata": metadata,
        "status": {"startTime": "2026-03-01T11:00:00Z", "conditions": list(conditions), **status},
    }


def failed(reason: str = "BackoffLimitExceeded", message: str = "Job has reached the limit"):
    return {
        "type": "Failed",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-03-01T11:30:00Z",
    }


def pod(
    *,
    phase: str = "Running",
    state: dict[str, Any] | None = None,
    last_state: dict[str, Any] | None = None,
    reason: str | None = None,
    created: datetime = NOW - timedelta(seconds=30),
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "agent", "state": state or {"running": {}}}
    if last_state:
        container["lastState"] = last_state
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [container]}
    if reason:
        status["reason"] = reason
        status["message"] = f"pod {reason}"
    if conditions:
        status["conditions"] = conditions
    return {
        "metadata": {"name": "p", "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "status": status,
    }


def terminated(exit_code: int, reason: str = "Error", message: str | None = None):
    body: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if message:
        body["message"] = message
    return {"terminated": body}


def waiting(reason: str, message: str = "details") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


def status_of(job_obj: dict[str, Any] | None, *pods: dict[str, Any], grace: float = 300):
    return workload_status(7, job_obj, list(pods), now=NOW, startup_grace_seconds=grace)


def test_no_job_is_missing() -> None:
    assert status_of(None).phase is WorkloadPhase.MISSING


def test_complete_job_succeeded_with_times_and_handle() -> None:
    done = job(
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-03-01T11:40:00Z"},
        completionTime="2026-03-01T11:41:00Z",
    )
    status = status_of(done, pod(phase="Succeeded", state=terminated(0, "Completed")))
    assert status.phase is WorkloadPhase.SUCCEEDED
    assert status.exit_code == 0
    assert status.started_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert status.finished_at == datetime(2026, 3, 1, 11, 41, tzinfo=UTC)
    assert status.handle is not None
    assert status.handle.details == {"uid": "uid-7"}
    assert status.handle.namespace == "codexk8s-run-demo-abc"


def test_a_condition_that_is_not_true_does_not_count() -> None:
    pending_complete = job({"type": "Complete", "status": "False"})
    assert status_of(pending_complete, pod()).phase is WorkloadPhase.RUNNING


@pytest.mark.parametrize(
    ("job_condition", "pod_obj", "reason", "exit_code"),
    [
        pytest.param(
            failed(),
            pod(phase="Failed", state=terminated(137, "OOMKilled")),
            FailureReason.OOM_KILLED,
            137,
            id="oom-killed",
        ),
        pytest.param(
            failed(),
            pod(phase="Failed", state=terminated(3, "Error", "boom")),
            FailureReason.EXIT_CODE,
            3,
            id="non-zero-exit",
        ),
        pytest.param(
            failed(),
            pod(phase="Failed", state={"waiting": {}}, last_state=terminated(2)),
            FailureReason.EXIT_CODE,
            2,
            id="exit-code-from-last-state",
        ),
        pytest.param(
            failed("DeadlineExceeded", "Job was active longer than specified deadline"),
            pod(phase="Failed", state=terminated(143)),
            FailureReason.TIMEOUT,
            143,
            id="deadline-exceeded",
        ),
        pytest.param(
            failed(),
            pod(phase="Failed", reason="DeadlineExceeded", state=terminated(137)),
            FailureReason.TIMEOUT,
            137,
            id="pod-deadline-exceeded",
        ),
        pytest.param(
            failed(),
            pod(phase="Failed", reason="Evicted", state=terminated(137)),
            FailureReason.EVICTED,
            137,
            id="evicted",
        ),
        pytest.param(
            failed(),
            pod(
                phase="Failed",
                state=terminated(137),
                conditions=[{"type": "DisruptionTarget", "status": "True", "message": "pre"}],
            ),
            FailureReason.EVICTED,
            137,
            id="preempted",
        ),
        pytest.param(
            failed("DeadlineExceeded"),
            pod(phase="Pending", state=waiting("ImagePullBackOff")),
            FailureReason.IMAGE_PULL,
            None,
            id="deadline-while-pulling-is-image-pull",
        ),
        pytest.param(
            failed(),
            None,
            FailureReason.RUNTIME_ERROR,
            None,
            id="no-pod",
        ),
        pytest.param(
            failed(),
            pod(phase="Failed", state=terminated(0, "Completed")),
            FailureReason.RUNTIME_ERROR,
            0,
            id="failed-job-clean-exit",
        ),
    ],
)
def test_failure_reasons(
    job_condition: dict[str, Any],
    pod_obj: dict[str, Any] | None,
    reason: FailureReason,
    exit_code: int | None,
) -> None:
    pods = [pod_obj] if pod_obj else []
    status = status_of(job(job_condition), *pods)
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is reason
    assert status.exit_code == exit_code
    assert status.finished_at == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    if reason is not FailureReason.EXIT_CODE:  # the engine words exit codes itself
        assert status.message


def test_exit_code_message_comes_from_the_termination_message() -> None:
    status = status_of(job(failed()), pod(state=terminated(1, "Error", "tests failed")))
    assert status.message == "tests failed"


def test_runtime_error_carries_the_job_message() -> None:
    status = status_of(job(failed(message="something odd")))
    assert status.message == "something odd"


def test_a_deleting_job_is_canceled() -> None:
    status = status_of(job(deleting=True), pod())
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.CANCELED


@pytest.mark.parametrize(
    ("pod_obj", "phase"),
    [
        (None, WorkloadPhase.PENDING),
        (pod(phase="Pending", state=waiting("ContainerCreating")), WorkloadPhase.PENDING),
        (pod(phase="Running"), WorkloadPhase.RUNNING),
        # The pod ended but the Job controller has not written the outcome yet.
        (pod(phase="Failed", state=terminated(1)), WorkloadPhase.RUNNING),
    ],
)
def test_active_job_phases(pod_obj: dict[str, Any] | None, phase: WorkloadPhase) -> None:
    pods = [pod_obj] if pod_obj else []
    assert status_of(job(active=1), *pods).phase is phase


def test_image_pull_backoff_is_pending_within_the_grace() -> None:
    stuck = pod(phase="Pending", state=waiting("ImagePullBackOff", "Back-off pulling image"))
    status = status_of(job(active=1), stuck, grace=300)
    assert status.phase is WorkloadPhase.PENDING
    assert status.reason is None
    assert status.message is not None
    assert "ImagePullBackOff" in status.message


def test_image_pull_backoff_fails_after_the_grace() -> None:
    stuck = pod(
        phase="Pending",
        state=waiting("ErrImagePull"),
        created=NOW - timedelta(seconds=301),
    )
    status = status_of(job(active=1), stuck, grace=300)
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.IMAGE_PULL


def test_an_invalid_image_name_fails_at_once() -> None:
    status = status_of(job(active=1), pod(phase="Pending", state=waiting("InvalidImageName")))
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.IMAGE_PULL


def test_a_broken_container_config_fails_as_runtime_error_after_the_grace() -> None:
    broken = pod(
        phase="Pending",
        state=waiting("CreateContainerConfigError", 'secret "x" not found'),
        created=NOW - timedelta(minutes=10),
    )
    status = status_of(job(active=1), broken)
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.RUNTIME_ERROR
    assert status.message is not None
    assert "secret" in status.message


def test_the_newest_pod_decides() -> None:
    old = pod(phase="Failed", state=terminated(137, "OOMKilled"), created=NOW - timedelta(hours=1))
    new = pod(phase="Failed", state=terminated(4), created=NOW - timedelta(minutes=1))
    status = status_of(job(failed()), old, new)
    assert (status.reason, status.exit_code) == (FailureReason.EXIT_CODE, 4)


def test_long_messages_are_cut() -> None:
    status = status_of(job(failed()), pod(state=terminated(1, "Error", "x" * 5000)))
    assert status.message is not None
    assert len(status.message) == 500


@pytest.mark.parametrize(
    ("job_obj", "pod_obj", "explained"),
    [
        (job(failed()), None, False),
        (job(failed()), pod(state={"running": {}}), False),
        (job(failed()), pod(state=terminated(1)), True),
        (job(failed("DeadlineExceeded")), None, True),
        (job(active=1), None, True),
    ],
)
def test_is_explained_asks_for_the_pod_only_when_it_matters(
    job_obj: dict[str, Any], pod_obj: dict[str, Any] | None, explained: bool
) -> None:
    assert is_explained(job_obj, pod_obj) is explained


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient cpu.",
}


def test_an_unschedulable_pod_waits_within_the_grace_and_says_why() -> None:
    waiting_pod = pod(phase="Pending", state={"waiting": {}}, conditions=[UNSCHEDULABLE])
    status = status_of(job(active=1), waiting_pod, grace=300)
    assert status.phase is WorkloadPhase.PENDING
    assert status.message == "waiting for a node: 0/3 nodes are available: 3 Insufficient cpu."


def test_an_unschedulable_pod_fails_the_run_after_the_grace() -> None:
    stuck = pod(
        phase="Pending",
        state={"waiting": {}},
        conditions=[UNSCHEDULABLE],
        created=NOW - timedelta(seconds=301),
    )
    status = status_of(job(active=1), stuck, grace=300)
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.UNSCHEDULABLE
    assert status.message == "no node can run the pod: 0/3 nodes are available: 3 Insufficient cpu."
    # Scheduled (the condition turned True) is not stuck, however old.
    scheduled = pod(
        phase="Pending",
        state={"waiting": {"reason": "ContainerCreating"}},
        conditions=[{**UNSCHEDULABLE, "status": "True", "reason": None}],
        created=NOW - timedelta(hours=1),
    )
    assert status_of(job(active=1), scheduled).phase is WorkloadPhase.PENDING


def test_a_refused_pod_fails_the_run_with_the_api_servers_words() -> None:
    refusal = 'pods "codexk8s-run-7-x" is forbidden: exceeded quota: codexk8s-run'
    status = workload_status(7, job(active=1), [], now=NOW, rejection=refusal)
    assert status.phase is WorkloadPhase.FAILED
    assert status.reason is FailureReason.POD_REJECTED
    assert status.message == f"the cluster refused the pod: {refusal}"
    # Once a pod exists the refusal is history (quota freed up, the controller retried).
    running = workload_status(7, job(active=1), [pod()], now=NOW, rejection=refusal)
    assert running.phase is WorkloadPhase.RUNNING
