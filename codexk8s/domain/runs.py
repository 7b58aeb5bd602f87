"""Run states and the transitions allowed between them (DESIGN §6)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED})
ACTIVE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING})

ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.STARTING, RunStatus.CANCELED, RunStatus.FAILED}),
    # starting → pending: a claim whose launch never happened (its replica died) is requeued.
    RunStatus.STARTING: frozenset({RunStatus.PENDING, RunStatus.RUNNING, *TERMINAL_STATUSES}),
    RunStatus.RUNNING: TERMINAL_STATUSES,
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


class RunMode(StrEnum):
    """What a run produces: WORK pushes a branch and opens or updates a pull request (reviewer
    runs post a review); DISCUSSION answers on the issue with one comment and pushes nothing."""

    WORK = "work"
    DISCUSSION = "discussion"


class ActorType(StrEnum):
    HUMAN = "human"
    AGENT = "agent"
    SYSTEM = "system"


class AgentFailure(StrEnum):
    """Why the agent runner says its run failed; stored as the run's status reason."""

    PRECONDITION = "precondition"  # something to configure first (model key, repository token)
    MODEL_RATE_LIMITED = "model_rate_limited"  # 429s outlasted the retries
    MODEL_UNAVAILABLE = "model_unavailable"  # 5xx outlasted the retries
    MODEL_TIMEOUT = "model_timeout"  # the model stream stalled or timed out
    MODEL_ERROR = "model_error"  # any other model answer (bad key, unknown model, bad request)
    GIT_ERROR = "git_error"  # clone, fetch or commit failed
    PUSH_REJECTED = "push_rejected"  # the remote refused the work branch
    AGENT_ERROR = "agent_error"  # the engine (Codex or the agent's command) failed otherwise
