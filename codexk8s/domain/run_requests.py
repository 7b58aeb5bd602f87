"""Agents that ask: the platform tools a run's agent may call, the approval policy of each, and
who may answer a question or an approval request (issue #18)."""

from __future__ import annotations

from enum import StrEnum

from codexk8s.domain.access import ProjectRole
from codexk8s.domain.authorization import Action, Principal, is_allowed
from codexk8s.domain.labels import MODE_PREFIX, NEED_PREFIX, RUN_PREFIX, STATE_PREFIX


class Tool(StrEnum):
    ASK = "ask"
    REQUEST_APPROVAL = "request_approval"
    REPORT_PROGRESS = "report_progress"
    PAST_RUNS = "past_runs"
    POST_COMMENT = "post_comment"
    SET_LABELS = "set_labels"


class ApprovalPolicy(StrEnum):
    NONE = "none"  # allowed without asking anyone
    OWNER = "owner"  # a project admin (or a platform admin) decides
    DELEGATED = "delegated"  # any member with write access decides


class RequestKind(StrEnum):
    QUESTION = "question"
    APPROVAL = "approval"


class RequestStatus(StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"  # the run ended while it waited


# What each tool needs unless the project says otherwise: a question always waits for a person
# (its policy says who may answer), an approval request waits for an admin, the read-only and
# timeline tools go through.
DEFAULT_POLICIES: dict[Tool, ApprovalPolicy] = {
    Tool.ASK: ApprovalPolicy.DELEGATED,
    Tool.REQUEST_APPROVAL: ApprovalPolicy.OWNER,
    Tool.REPORT_PROGRESS: ApprovalPolicy.NONE,
    Tool.PAST_RUNS: ApprovalPolicy.NONE,
    # They act on the run's own issue only; a project that wants to see each one first says so.
    Tool.POST_COMMENT: ApprovalPolicy.NONE,
    Tool.SET_LABELS: ApprovalPolicy.NONE,
}
# A question cannot be answered by nobody.
ALLOWED_POLICIES: dict[Tool, frozenset[ApprovalPolicy]] = {
    tool: (
        frozenset({ApprovalPolicy.OWNER, ApprovalPolicy.DELEGATED})
        if tool is Tool.ASK
        else frozenset(ApprovalPolicy)
    )
    for tool in Tool
}
# The project settings key holding {tool: policy} overrides.
POLICIES_SETTING = "tool_policies"


class WaitingSlot(StrEnum):
    """What a run does with its slot while its agent waits for a person."""

    KEEP = "keep"  # it holds the slot: nothing else of the project starts meanwhile
    # The slot goes to the next run; once answered, the run takes the next free slot before any
    # queued run, and its agent hears the answer when it holds one again.
    RELEASE = "release"


# The project settings key holding the waiting-slot policy; KEEP when absent.
WAITING_SLOT_SETTING = "waiting_slot"
DEFAULT_WAITING_SLOT = WaitingSlot.KEEP
WAITING_SLOT_WORDS: dict[str, str] = {
    WaitingSlot.KEEP.value: "keeps its slot",
    WaitingSlot.RELEASE.value: "gives its slot to the next run and takes one back when answered",
}


def waiting_slot(settings: dict[str, object] | None) -> WaitingSlot:
    """The project's waiting-slot policy from its SETTINGS (unknown values: the default)."""
    try:
        return WaitingSlot(str((settings or {}).get(WAITING_SLOT_SETTING) or DEFAULT_WAITING_SLOT))
    except ValueError:
        return DEFAULT_WAITING_SLOT


# The flow event of a `report_progress` the agent shares on GitHub: the service comment shows
# the newest one while the run is active.
MILESTONE_EVENT = "run_milestone"

POLICY_WORDS: dict[str, str] = {
    ApprovalPolicy.NONE.value: "no one is asked",
    ApprovalPolicy.OWNER.value: "a project admin decides",
    ApprovalPolicy.DELEGATED.value: "any member with write access decides",
}
TOOL_WORDS: dict[str, str] = {
    Tool.ASK.value: "Questions to the team",
    Tool.REQUEST_APPROVAL.value: "Approval before a risky action",
    Tool.REPORT_PROGRESS.value: "Progress lines on the timeline",
    Tool.PAST_RUNS.value: "Reading the project's earlier runs",
    Tool.POST_COMMENT.value: "Comments on the run's issue",
    Tool.SET_LABELS.value: "Labels on the run's issue",
}

STATUS_WORDS: dict[RequestStatus, str] = {
    RequestStatus.PENDING: "waiting for an answer",
    RequestStatus.ANSWERED: "answered",
    RequestStatus.APPROVED: "approved",
    RequestStatus.DENIED: "denied",
    RequestStatus.TIMED_OUT: "no answer in time",
    RequestStatus.CANCELED: "the run ended first",
}


def effective_policy(tool: Tool, overrides: dict[str, str] | None) -> ApprovalPolicy:
    """TOOL's policy on a project with these settings overrides (unknown values: the default)."""
    raw = (overrides or {}).get(tool.value)
    try:
        policy = ApprovalPolicy(raw) if raw is not None else DEFAULT_POLICIES[tool]
    except ValueError:
        return DEFAULT_POLICIES[tool]
    return policy if policy in ALLOWED_POLICIES[tool] else DEFAULT_POLICIES[tool]


def may_answer(
    principal: Principal | None, policy: ApprovalPolicy, project_role: ProjectRole | None
) -> bool:
    """May PRINCIPAL (with PROJECT_ROLE on the run's project) answer a request under POLICY?"""
    if policy is ApprovalPolicy.OWNER:
        return is_allowed(principal, Action.EDIT_PROJECT, project_role)
    return is_allowed(principal, Action.START_RUN, project_role)


def agent_label_problem(label: str) -> str | None:
    """Why an agent may not set or remove LABEL (the platform's own labels start and steer runs:
    an agent that set `run:dev` would start runs itself), or None."""
    if not label.strip() or len(label) > 50:
        return "a label is 1-50 characters"
    if label.lower().startswith((RUN_PREFIX, NEED_PREFIX, STATE_PREFIX, MODE_PREFIX)):
        return f"{label!r} is one of codexk8s's own labels, which only people and codexk8s set"
    return None


def parse_answer_command(body: str) -> tuple[int | None, str] | None:
    """`/answer [#<request id>] <text>` at the start of a comment's line: (id or None, text);
    None when the comment holds no such line. Approvals: `/answer approve` or `/answer deny ...`."""
    for line in body.splitlines():
        stripped = line.strip()
        if not stripped.lower().startswith("/answer"):
            continue
        rest = stripped[len("/answer") :]
        if rest and not rest[0].isspace():
            continue
        rest = rest.strip()
        request_id: int | None = None
        if rest.startswith("#"):
            head, _, tail = rest[1:].partition(" ")
            if head.isdigit():
                request_id, rest = int(head), tail.strip()
        if rest:
            return request_id, rest
    return None


def approval_decision(text: str) -> tuple[bool, str] | None:
    """An approval answer's decision: (approved, the note after the word); None if it is neither
    an approval nor a denial."""
    word, _, note = text.strip().partition(" ")
    if word.lower() in ("approve", "approved", "yes"):
        return True, note.strip()
    if word.lower() in ("deny", "denied", "no", "reject"):
        return False, note.strip()
    return None
