"""Run outcomes and timeline events in words: what a status reason or a flow event means to a
person, for the run page, the runs list and anything else people read.

Pure data and functions (no web, no database), so the dashboard, the CLI and GitHub comments
can all say the same thing. An unknown code still reads as words (underscores become spaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Status reasons, as written by the runtime (domain.runtime.FailureReason), the agent runner
# (domain.runs.AgentFailure), dispatch, reconcile, cancel paths and webhook ingest.
REASON_WORDS: dict[str, str] = {
    # the runtime
    "exit_code": "The agent's process exited with an error",
    # a person in the loop (platform MCP tools)
    "approval_denied": "A person denied the approval the agent asked for",
    "question_unanswered": "Nobody answered the agent's question in time",
    "timeout": "The run took longer than its agent's timeout",
    "canceled": "The runtime stopped the workload",
    "oom_killed": "The run ran out of memory",
    "image_pull": "The agent's container image could not be pulled",
    "evicted": "Kubernetes evicted the run's pod",
    "pod_rejected": "The cluster refused to create the run's pod",
    "unschedulable": "No node could take the run's pod",
    "runtime_error": "The runtime could not run the agent",
    # the agent runner
    "precondition": "Something must be configured first",
    "model_rate_limited": "The model kept answering 'too many requests'",
    "model_unavailable": "The model's provider was unavailable",
    "model_timeout": "The model stopped answering in time",
    "model_error": "The model refused the request",
    "git_error": "Cloning, fetching or committing failed",
    "push_rejected": "The repository refused the pushed branch",
    "agent_error": "The agent reported a failure",
    # the control loop
    "launch_deferred": "The runtime asked to wait before launching",
    "lease_expired": "The run's slot lease expired before it launched; it was queued again",
    "no_slot_expired": "No slot became free in time",
    # people and GitHub
    "canceled_by_user": "Canceled by a person",
    "issue_closed": "The issue was closed",
    "pull_request_closed": "The pull request was closed",
    "run_label_removed": "The run label was removed",
    "label_removed": "The run label was removed",
    "superseded": "A newer run replaced it",
}

# Reasons that are not failures of the run (shown in gray, not red).
NEUTRAL_REASONS = frozenset(
    {"launch_deferred", "lease_expired", "canceled_by_user", "issue_closed",
     "pull_request_closed", "run_label_removed", "label_removed", "superseded"}
)  # fmt: skip


def reason_words(reason: str | None) -> str:
    """A status reason as a sentence; "" for none."""
    if not reason:
        return ""
    return REASON_WORDS.get(reason, reason.replace("_", " ").capitalize())


@dataclass(frozen=True, slots=True)
class EventWords:
    """One flow event as the timeline shows it."""

    title: str
    detail: str
    tone: str  # "neutral", "good", "bad", "warn"
    step: str  # which step of a run it belongs to: queue, launch, work, result, report, log


_TITLES: dict[str, tuple[str, str, str]] = {
    # event type → (title, tone, step)
    "run_created": ("Run created", "neutral", "queue"),
    "run_rerun_requested": ("Rerun requested", "neutral", "queue"),
    "run_pending": ("Queued again", "warn", "queue"),
    "run_starting": ("Slot taken, launching", "neutral", "launch"),
    "run_running": ("Agent started", "neutral", "work"),
    "run_progress": ("Agent progress", "neutral", "work"),
    "run_milestone": ("Agent progress, shared on GitHub", "neutral", "work"),
    "run_usage": ("Model usage recorded", "neutral", "result"),
    "run_result": ("Agent reported its result", "good", "result"),
    "run_failure_reported": ("Agent reported a failure", "bad", "result"),
    "run_succeeded": ("Run succeeded", "good", "result"),
    "run_failed": ("Run failed", "bad", "result"),
    "run_canceled": ("Run canceled", "warn", "result"),
    "run_cancel_requested": ("Cancel requested", "warn", "work"),
    "run_cancel_sent": ("Stop sent to the workload", "warn", "work"),
    "run_already_active": ("Already running for this issue", "neutral", "queue"),
    "github_feedback_failed": ("GitHub feedback failed", "bad", "report"),
    "log_truncated": ("Log cap reached: later lines not stored", "warn", "log"),
    "log_removed": ("Log removed by retention", "neutral", "log"),
    "delivery_accepted": ("Webhook received", "neutral", "queue"),
    "tool_called": ("Agent used a platform tool", "neutral", "work"),
    "run_request_opened": ("Agent is waiting for a person", "warn", "work"),
    "run_request_answered": ("A person answered", "good", "work"),
    "run_request_approved": ("Approved", "good", "work"),
    "run_request_denied": ("Denied", "bad", "work"),
    "run_request_timed_out": ("Nobody answered in time", "bad", "work"),
    "run_request_canceled": ("Question withdrawn: the run ended", "neutral", "work"),
    "answer_refused": ("Answer refused", "warn", "work"),
    "run_slot_released": ("Slot given to the next run while waiting", "neutral", "work"),
    "run_slot_taken_back": ("Slot taken back, agent resumes", "neutral", "work"),
    "waiting_slot_changed": ("Waiting-slot policy changed", "neutral", "queue"),
    "tool_policy_changed": ("Tool approval policy changed", "neutral", "queue"),
}


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _money(value: Any) -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    return f"${amount:.4f}" if 0 < amount < 0.01 else f"${amount:,.2f}"


def _detail(event_type: str, payload: dict[str, Any]) -> str:
    reason = payload.get("reason")
    message = payload.get("message")
    parts: list[str] = []
    if event_type in ("run_starting", "run_slot_released", "run_slot_taken_back") and (
        payload.get("slot") is not None
    ):
        parts.append(f"slot {payload['slot']}")
    elif event_type == "run_running":
        if payload.get("adopted"):
            parts.append("adopted after a restart")
    elif event_type in ("run_progress", "run_milestone"):
        kind, text = payload.get("kind"), str(payload.get("message") or "")
        if kind == "command":
            code = payload.get("exit_code")
            parts.append(f"$ {text}" + (f" (exit {code})" if code not in (None, 0) else ""))
        elif kind == "files" and isinstance(payload.get("files"), list):
            parts.append("changed " + ", ".join(str(f) for f in payload["files"][:8]))
        elif text:
            parts.append(text)
        message = None
    elif event_type == "run_usage":
        usage = payload.get("metered") or payload.get("reported") or {}
        if isinstance(usage, dict):
            total = sum(int(usage.get(k) or 0) for k in ("input", "output"))
            if total:
                parts.append(_plural(total, "token"))
        if payload.get("cost_usd") is not None:
            parts.append(_money(payload["cost_usd"]))
        if payload.get("model"):
            parts.append(str(payload["model"]))
    elif event_type == "run_result":
        files = payload.get("changed_files") or []
        if payload.get("branch"):
            parts.append(f"branch {payload['branch']}")
        if isinstance(files, list) and files:
            parts.append(_plural(len(files), "file") + " changed")
    elif event_type in ("run_failed", "run_canceled", "run_pending", "run_failure_reported"):
        if reason:
            parts.append(reason_words(str(reason)))
        if payload.get("exit_code") not in (None, 0):
            parts.append(f"exit code {payload['exit_code']}")
    elif event_type == "run_cancel_requested" or event_type == "run_cancel_sent":
        if reason:
            parts.append(reason_words(str(reason)))
    elif event_type == "tool_called":
        parts.append(f"{payload.get('tool')} (approval: {payload.get('policy')})")
    elif event_type.startswith("run_request_"):
        if payload.get("text"):
            parts.append(str(payload["text"]))
        if payload.get("answer"):
            parts.append(f"“{payload['answer']}”")
        if payload.get("by"):
            parts.append(f"by {payload['by']}")
        if payload.get("via"):
            parts.append(f"via {payload['via']}")
    elif event_type == "tool_policy_changed":
        parts.append(f"{payload.get('tool')}: {payload.get('policy')}")
    elif event_type == "answer_refused" and payload.get("reason"):
        parts.append(str(payload["reason"]))
        reason = None
    elif event_type == "run_rerun_requested" and payload.get("new_run_id"):
        parts.append(f"as run #{payload['new_run_id']}")
    elif event_type == "run_created" and payload.get("rerun_of"):
        parts.append(f"rerun of #{payload['rerun_of']}")
    elif event_type == "log_truncated":
        if payload.get("after_lines") is not None:
            parts.append(f"after {_plural(int(payload['after_lines']), 'line')}")
    elif event_type == "log_removed" and payload.get("lines") is not None:
        parts.append(_plural(int(payload["lines"]), "line") + " removed")
    elif event_type == "github_feedback_failed":
        if payload.get("error"):
            parts.append(str(payload["error"]))
        if payload.get("retry_in"):
            parts.append(f"retrying in {int(payload['retry_in'])} s")
    if message and isinstance(message, str):
        parts.append(message)
    return " · ".join(p for p in parts if p)


def describe_event(event_type: str, payload: dict[str, Any]) -> EventWords:
    """EVENT_TYPE with its PAYLOAD in words: a title, one line of detail, a tone and a step."""
    title, tone, step = _TITLES.get(
        event_type, (event_type.replace("_", " ").capitalize(), "neutral", "work")
    )
    if event_type == "run_progress" and payload.get("kind") == "command":
        title = "Ran a command"
        if payload.get("exit_code") not in (None, 0):
            tone = "bad"
    elif event_type == "run_progress" and payload.get("kind") == "files":
        title = "Changed files"
    elif event_type == "run_progress" and payload.get("kind") == "push":
        title = "Pushed the branch"
    elif event_type == "run_pending" and payload.get("reason") == "launch_deferred":
        title = "Launch deferred by the runtime"
    reason = payload.get("reason")
    if event_type == "run_canceled" and reason in NEUTRAL_REASONS:
        tone = "neutral"
    return EventWords(title=title, detail=_detail(event_type, payload)[:400], tone=tone, step=step)


def actor_words(actor_type: str, actor_id: str | None, *, who: str | None = None) -> str:
    """Who did it: a person's email (WHO), "agent dev", "codexk8s" for the system."""
    if actor_type == "human":
        return who or "a person"
    if actor_type == "agent":
        return f"agent {actor_id}" if actor_id else "the agent"
    return "codexk8s"
