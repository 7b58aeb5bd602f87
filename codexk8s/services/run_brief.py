"""The control plane's side of the agent runner contract: run tokens, the brief, progress and
the result.

A run's workload holds only its run id, the callback URL and the run token dispatch issued
(stored as a SHA-256 hash on the run). Every call here first checks that token against that run,
and only while the run is starting or running; terminal transitions clear the hash
(`run_states.transition`), so the token dies with the run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from codexk8s import metrics
from codexk8s.config import ENV_PREFIX, Settings, get_settings
from codexk8s.crypto import get_secret_box, hash_token, tokens_equal
from codexk8s.db.engine import get_engine
from codexk8s.db.models import (
    Agent,
    FlowEvent,
    Project,
    Repository,
    RunModelResponse,
    WebhookDelivery,
    table_of,
    utcnow,
)
from codexk8s.domain.documents import Skipped
from codexk8s.domain.runs import AgentFailure, RunMode, RunStatus
from codexk8s.domain.stages import REVIEW_STAGE, AgentRole
from codexk8s.errors import (
    ConflictError,
    InvalidArgumentError,
    PreconditionError,
    UnauthorizedError,
)
from codexk8s.services import agent_sessions, repositories
from codexk8s.services.agents import effective_settings
from codexk8s.services.prompt_templates import render_run_prompts
from codexk8s.services.run_states import RUNS, add_event

AGENTS = table_of(Agent)
PROJECTS = table_of(Project)
DELIVERIES = table_of(WebhookDelivery)
REPOSITORIES = table_of(Repository)
FLOW_EVENTS = table_of(FlowEvent)
MODEL_RESPONSES = table_of(RunModelResponse)

RESULT_EVENT = "run_result"
FAILURE_EVENT = "run_failure_reported"
PROGRESS_EVENT = "run_progress"
USAGE_EVENT = "run_usage"
DOCUMENTS_EVENT = "run_documents"
MAX_DOCUMENTS = 100
# The keys of the `run_result` flow event; GitHub feedback reads exactly these.
RESULT_KEYS = (
    "branch", "base_branch", "head_sha", "changed_files", "summary", "pr_title", "pr_body",
    "review_body",
)  # fmt: skip
USAGE_KEYS = ("input", "cached", "output", "reasoning")
MAX_TEXT = 60_000
MAX_PROGRESS_TEXT = 2_000
MAX_CHANGED_FILES = 2_000
DEFAULT_REASONING_EFFORT = "medium"
_ACTIVE = (RunStatus.STARTING.value, RunStatus.RUNNING.value)


class RunTokenError(UnauthorizedError):
    """The bearer token is missing, wrong, of another run, or of a run that has ended."""


def model_precondition(settings: Settings) -> str | None:
    """Why runs on Codex cannot start with this configuration, or None if they can."""
    key = settings.openai_api_key
    if key is None or not key.get_secret_value().strip():
        return (
            f"no model key configured: set {ENV_PREFIX}OPENAI_API_KEY (and "
            f"{ENV_PREFIX}OPENAI_BASE_URL for a provider other than OpenAI) on the control plane"
        )
    return None


def authenticate_run(
    engine: Engine | None = None, *, run_id: int, token: str | None
) -> sa.Row[Any]:
    """The run this token belongs to, if the run is active; RunTokenError otherwise."""
    engine = engine or get_engine()
    denied = RunTokenError("the run token is not valid for this run, or the run has ended")
    if not token:
        raise RunTokenError("send the run token as `Authorization: Bearer <token>`")
    with engine.connect() as connection:
        run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).first()
    # Hash first and always compare, so a missing run costs the same as a wrong token.
    presented = hash_token(token)
    stored = run.run_token_hash if run is not None and run.run_token_hash else "0" * 64
    if not tokens_equal(presented, stored) or run is None or run.status not in _ACTIVE:
        raise denied
    return run


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    name: str
    email: str


def _identity(agent: sa.Row[Any] | None, key: str) -> AgentIdentity:
    login = agent.github_login if agent is not None and agent.github_login else None
    name = login or (agent.name if agent is not None else None) or f"codexk8s-{key}"
    if agent is not None and agent.github_email:
        email = agent.github_email
    elif login:
        email = f"{login}@users.noreply.github.com"
    else:
        email = f"codexk8s-{key}@users.noreply.github.com"
    return AgentIdentity(name=name, email=email)


def _repository_token(repository: sa.Row[Any], settings: Settings) -> str | None:
    """The token the run clones and pushes with: the repository's own, or the global one where a
    platform admin allowed it. A repository that would need the global token but may not use it
    fails the run with a precondition (no token at all configured: None, for public or local
    repositories)."""
    token = repositories.token_for(repository, settings=settings, box=get_secret_box())
    if token is None and settings.github_token is not None and not repository.token_ciphertext:
        raise PreconditionError(
            repositories.global_token_refused(f"{repository.owner}/{repository.name}")
        )
    return token


def is_review_run(run: sa.Row[Any]) -> bool:
    return run.stage == REVIEW_STAGE or run.agent_key == AgentRole.REVIEWER.value


def is_discussion_run(run: sa.Row[Any]) -> bool:
    return run.mode == RunMode.DISCUSSION.value


def documents_marker() -> str:
    """A one-time stand-in for `{{project_docs}}`: the runner, which reads the documents from
    its clone, replaces it. Random per brief, so no text a person wrote can contain it."""
    return f"[[codexk8s:project-docs:{secrets.token_hex(16)}]]"


def _pull_request_branches(
    connection: Connection, run: sa.Row[Any], full_name: str
) -> tuple[str, str] | None:
    """(head, base) branch of the pull request whose review started RUN, when its head is a
    branch of the repository itself (a fork's branch cannot be pushed to)."""
    if run.pr_number is None or run.delivery_id is None:
        return None
    payload = connection.execute(
        sa.select(DELIVERIES.c.payload).where(DELIVERIES.c.delivery_id == run.delivery_id)
    ).scalar()
    pull = payload.get("pull_request") if isinstance(payload, dict) else None
    if not isinstance(pull, dict):
        return None
    head, base = pull.get("head") or {}, pull.get("base") or {}
    head_repo = (head.get("repo") or {}).get("full_name") if isinstance(head, dict) else None
    if not isinstance(head_repo, str) or head_repo.lower() != full_name.lower():
        return None
    head_ref, base_ref = head.get("ref"), base.get("ref") if isinstance(base, dict) else None
    if not isinstance(head_ref, str) or not head_ref or not isinstance(base_ref, str):
        return None
    return head_ref, base_ref


def build_brief(
    engine: Engine | None = None, *, run: sa.Row[Any], openai_path: str, mcp_path: str | None = None
) -> dict[str, Any]:
    """Everything the runner needs for this run. Carries the repository token: never log it.

    `openai_path` is the control-plane path of the run's model proxy; the runner joins it with
    its callback URL, so the model key itself never leaves the control plane.
    """
    engine = engine or get_engine()
    settings = get_settings()
    with engine.connect() as connection:
        agent = connection.execute(sa.select(AGENTS).where(AGENTS.c.key == run.agent_key)).first()
        project = connection.execute(
            sa.select(PROJECTS).where(PROJECTS.c.id == run.project_id)
        ).first()
        repository = (
            connection.execute(
                sa.select(REPOSITORIES).where(REPOSITORIES.c.id == run.repository_id)
            ).first()
            if run.repository_id is not None
            else None
        )
        # A revise run started by a review on a pull request works on that pull request's branch.
        pull_branches = (
            _pull_request_branches(connection, run, f"{repository.owner}/{repository.name}")
            if repository is not None and run.is_revise
            else None
        )
    agent_settings = effective_settings(agent.settings if agent else None, run.agent_key)
    if agent_settings.engine == "codex":
        problem = model_precondition(settings)
        if problem is not None:
            raise PreconditionError(problem)
    if repository is None:
        raise PreconditionError(f"run {run.id} has no repository to work on")
    resume = (
        agent_sessions.find_resumable(engine, run=run) if agent_settings.engine == "codex" else None
    )
    marker = documents_marker() if settings.prompt_documents_max_chars > 0 else ""
    with Session(engine) as session:
        prompts = render_run_prompts(
            session=session, run_id=run.id, project_docs=marker,
            since=(resume.started_at or utcnow()) if resume is not None else None,
        )  # fmt: skip
    project_settings = dict(project.settings or {}) if project is not None else {}
    raw_agent = dict(agent.settings or {}) if agent is not None else {}
    identity = _identity(agent, run.agent_key)
    target = run.issue_number if run.issue_number is not None else run.id
    is_discussion = is_discussion_run(run)
    return {
        "run_id": run.id,
        "correlation_id": run.correlation_id,
        "project": project.key if project is not None else None,
        "stage": run.stage,
        "is_revise": bool(run.is_revise),
        "issue_number": run.issue_number,
        "pr_number": run.pr_number,
        "issue_title": run.issue_title,
        "mode": run.mode,
        "prompt": prompts.prompt,
        "model": run.model or agent_settings.model or settings.default_model,
        "reasoning_effort": (
            run.reasoning_effort or raw_agent.get("reasoning_effort") or DEFAULT_REASONING_EFFORT
        ),
        "agent": {
            "key": run.agent_key,
            "engine": agent_settings.engine,
            "command": list(agent_settings.command) if agent_settings.engine != "codex" else None,
            "git_name": identity.name,
            "git_email": identity.email,
        },
        "repository": {
            "full_name": f"{repository.owner}/{repository.name}",
            "clone_url": f"{settings.github_git_url}/{repository.owner}/{repository.name}.git",
            # None: the remote's default branch (the runner reads it from the clone).
            "base_branch": (
                pull_branches[1] if pull_branches else project_settings.get("base_branch") or None
            ),
            "work_branch": pull_branches[0] if pull_branches else f"codex/issue-{target}",
            "token": _repository_token(repository, settings),
        },
        # GitHub keeps every pull request's head at refs/pull/<n>/head: a reviewer reads that.
        "pull_request": (
            {"number": run.pr_number, "head_ref": f"refs/pull/{run.pr_number}/head"}
            if run.pr_number is not None
            else None
        ),
        # Reviewer runs and discussion turns push nothing: their final message is what they
        # leave (a review, an answer on the issue).
        "push": not is_review_run(run) and not is_discussion,
        "provider": {"name": "codexk8s", "path": openai_path, "wire_api": "responses"},
        # The platform MCP server (ask, request_approval, ...): a tool call may wait for a
        # person up to the wait limit, so Codex must not give up on it sooner.
        "mcp": (
            {
                "name": "codexk8s",
                "path": mcp_path,
                "tool_timeout_seconds": int(settings.human_wait_minutes * 60) + 60,
            }
            if mcp_path is not None
            else None
        ),
        # In a pod the pod is the sandbox; a local process gets Codex's workspace sandbox (a
        # discussion only reads).
        "sandbox": (
            ("read-only" if is_discussion else "workspace-write")
            if settings.runtime == "local"
            else "danger-full-access"
        ),
        # Where the runner puts the documents of its role (services.yaml `docs`).
        "documents": {
            "marker": marker,
            "services_yaml": repository.services_yaml_path or "services.yaml",
            "role": run.agent_key,
            "max_chars": settings.prompt_documents_max_chars,
        },
        # The Codex session to resume (a revise run, a later discussion turn), with the shorter
        # prompt that says only what is new; and the upload limit of the session it leaves.
        "session": {
            "resume": (
                {**resume.as_brief(), "prompt": prompts.continuation}
                if resume is not None
                else None
            ),
            "max_bytes": settings.agent_session_max_bytes,
        },
    }


def record_documents(
    engine: Engine | None = None, *, run: sa.Row[Any], payload: Any
) -> dict[str, Any]:
    """Record which project documents the run's prompt received (the runner read them from its
    clone) as the `run_documents` event the run's page and the runs API show."""
    engine = engine or get_engine()
    if not isinstance(payload, dict):
        raise InvalidArgumentError("the body must be a JSON object")
    raw = payload.get("documents")
    if not isinstance(raw, list) or len(raw) > MAX_DOCUMENTS:
        raise InvalidArgumentError(f"`documents` must be a list of at most {MAX_DOCUMENTS}")
    skipped_values = {item.value for item in Skipped}
    documents = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidArgumentError("each document must be an object")
        path = item.get("path")
        numbers = [item.get("bytes"), item.get("chars")]
        skipped = item.get("skipped")
        if not isinstance(path, str) or not path or len(path) > 300:
            raise InvalidArgumentError("a document's `path` must be a short string")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise InvalidArgumentError("a document's `bytes` and `chars` must be whole numbers")
        if skipped is not None and skipped not in skipped_values:
            raise InvalidArgumentError(f"`skipped` must be one of: {', '.join(skipped_values)}")
        documents.append({
            "path": path, "bytes": numbers[0], "chars": numbers[1],
            "truncated": item.get("truncated") is True, "skipped": skipped,
        })  # fmt: skip
    problems = payload.get("problems") or []
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise InvalidArgumentError("`problems` must be a list of strings")
    services_yaml = payload.get("services_yaml")
    event = {
        "services_yaml": services_yaml if isinstance(services_yaml, str) else None,
        "found": payload.get("found") is True,
        "documents": documents,
        "chars": sum(d["chars"] for d in documents),
        "problems": [p[:300] for p in problems[:20]],
        "resumed": payload.get("resumed") is True,
    }
    with engine.begin() as connection:
        add_event(
            connection, correlation_id=run.correlation_id, event_type=DOCUMENTS_EVENT,
            run_id=run.id, project_id=run.project_id, payload=event, actor_type="agent",
            actor_id=run.agent_key,
        )  # fmt: skip
    return {"recorded": True}


def record_progress(engine: Engine | None = None, *, run: sa.Row[Any], payload: Any) -> None:
    """Append one progress event (a command run, files changed, a message) to the timeline."""
    engine = engine or get_engine()
    if not isinstance(payload, dict):
        raise InvalidArgumentError("the body must be a JSON object")
    kind = payload.get("kind")
    message = payload.get("message")
    if not isinstance(kind, str) or not kind or len(kind) > 32:
        raise InvalidArgumentError("`kind` must be a short string")
    if not isinstance(message, str):
        raise InvalidArgumentError("`message` must be a string")
    event: dict[str, Any] = {"kind": kind, "message": message[:MAX_PROGRESS_TEXT]}
    for key in ("exit_code", "files"):
        if key in payload:
            event[key] = payload[key]
    with engine.begin() as connection:
        add_event(
            connection, correlation_id=run.correlation_id, event_type=PROGRESS_EVENT,
            run_id=run.id, project_id=run.project_id, payload=event, actor_type="agent",
            actor_id=run.agent_key,
        )  # fmt: skip


def cost_usd(
    model: str | None, usage: dict[str, int], prices: dict[str, dict[str, float]]
) -> Decimal:
    """Cost of the usage at the model's price (USD per million tokens); 0 for unknown models.

    Cached tokens are part of the input tokens and bill at the cached price (the input price
    when the table has none); reasoning tokens are part of the output tokens.
    """
    price = prices.get(model or "")
    if price is None:
        return Decimal("0")
    cached = min(usage["cached"], usage["input"])
    total = (
        Decimal(usage["input"] - cached) * Decimal(str(price["input"]))
        + Decimal(cached) * Decimal(str(price.get("cached_input", price["input"])))
        + Decimal(usage["output"]) * Decimal(str(price["output"]))
    ) / Decimal(1_000_000)
    return total.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _text(payload: dict[str, Any], key: str, *, limit: int = MAX_TEXT) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"`{key}` must be a string or null")
    return value[:limit]


def _usage(payload: dict[str, Any]) -> dict[str, int]:
    raw = payload.get("usage") or {}
    if not isinstance(raw, dict):
        raise InvalidArgumentError("`usage` must be an object")
    usage = {}
    for key in USAGE_KEYS:
        value = raw.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(f"`usage.{key}` must be a non-negative integer")
        usage[key] = value
    return usage


def _has_result(connection: Connection, run_id: int) -> bool:
    return (
        connection.execute(
            sa.select(FLOW_EVENTS.c.id)
            .where(
                FLOW_EVENTS.c.run_id == run_id,
                FLOW_EVENTS.c.event_type.in_([RESULT_EVENT, FAILURE_EVENT]),
            )
            .limit(1)
        ).first()
        is not None
    )


def meter_model_usage(
    engine: Engine | None = None, *, run_id: int, model: str | None, usage: dict[str, int]
) -> Decimal:
    """Add one model answer's tokens and cost to the run (called by the model proxy, which sees
    every answer, so the run's usage does not rest on what its workload says)."""
    engine = engine or get_engine()
    cost = cost_usd(model, usage, get_settings().model_prices)
    with engine.begin() as connection:
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == run_id)
            .values(
                tokens_input=RUNS.c.tokens_input + usage["input"],
                tokens_cached=RUNS.c.tokens_cached + usage["cached"],
                tokens_output=RUNS.c.tokens_output + usage["output"],
                tokens_reasoning=RUNS.c.tokens_reasoning + usage["reasoning"],
                cost_usd=RUNS.c.cost_usd + cost,
            )
        )
        project_key = connection.execute(
            sa.select(PROJECTS.c.key).where(
                PROJECTS.c.id
                == sa.select(RUNS.c.project_id).where(RUNS.c.id == run_id).scalar_subquery()
            )
        ).scalar()
    if project_key is not None:
        for kind in ("input", "cached", "output", "reasoning"):
            metrics.OPENAI_TOKENS.labels(project_key, kind).inc(usage[kind])
        metrics.OPENAI_COST_USD.labels(project_key).inc(float(cost))
    return cost


def record_model_responses(
    engine: Engine | None = None, *, run_id: int, response_ids: list[str]
) -> None:
    """Remember the model responses RUN_ID created through the proxy (each once), so it may read
    them later; ids that are no plain token are not kept (the proxy would not forward them)."""
    engine = engine or get_engine()
    rows = [
        {"run_id": run_id, "response_id": response_id, "created_at": utcnow()}
        for response_id in dict.fromkeys(response_ids)
        if 0 < len(response_id) <= 128
    ]
    if not rows:
        return
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as connection:
        connection.execute(
            insert(MODEL_RESPONSES).on_conflict_do_nothing(
                index_elements=["run_id", "response_id"]
            ),
            rows,
        )


def owns_model_response(engine: Engine | None = None, *, run_id: int, response_id: str) -> bool:
    """Whether RUN_ID created the model response RESPONSE_ID through the proxy."""
    engine = engine or get_engine()
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(MODEL_RESPONSES.c.id).where(
                MODEL_RESPONSES.c.run_id == run_id, MODEL_RESPONSES.c.response_id == response_id
            )
        ).first()
    return found is not None


def store_result(engine: Engine | None = None, *, run: sa.Row[Any], payload: Any) -> dict[str, Any]:
    """Store the runner's result once: the summary on the run, a `run_usage` event (the usage
    the runner reports next to what the proxy metered) and the `run_result` (success) or
    `run_failure_reported` (failure) event. A second result for the same run is a ConflictError
    and changes nothing."""
    engine = engine or get_engine()
    if not isinstance(payload, dict):
        raise InvalidArgumentError("the body must be a JSON object")
    outcome = payload.get("outcome")
    if outcome not in ("succeeded", "failed"):
        raise InvalidArgumentError("`outcome` must be succeeded or failed")
    reported = _usage(payload)
    model = _text(payload, "model", limit=100) or run.model
    changed = payload.get("changed_files") or []
    if not isinstance(changed, list) or not all(isinstance(item, str) for item in changed):
        raise InvalidArgumentError("`changed_files` must be a list of paths")
    result = {key: _text(payload, key) for key in RESULT_KEYS if key != "changed_files"}
    result["changed_files"] = changed[:MAX_CHANGED_FILES]
    failure: dict[str, Any] | None = None
    if outcome == "failed":
        reason = payload.get("reason")
        if reason not in {item.value for item in AgentFailure}:
            raise InvalidArgumentError(
                f"`reason` must be one of: {', '.join(item.value for item in AgentFailure)}"
            )
        failure = {"reason": reason, "message": _text(payload, "message", limit=4000)}
    with engine.begin() as connection:
        query = sa.select(RUNS).where(RUNS.c.id == run.id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        current = connection.execute(query).first()
        if current is None or current.status not in _ACTIVE:
            raise RunTokenError("the run has ended")
        if _has_result(connection, run.id):
            raise ConflictError(f"run {run.id} already reported its result")
        connection.execute(
            RUNS.update().where(RUNS.c.id == run.id).values(summary=result["summary"])
        )
        metered = {
            "input": current.tokens_input, "cached": current.tokens_cached,
            "output": current.tokens_output, "reasoning": current.tokens_reasoning,
        }  # fmt: skip
        common = {
            "correlation_id": run.correlation_id, "run_id": run.id,
            "project_id": run.project_id, "actor_type": "agent", "actor_id": run.agent_key,
        }  # fmt: skip
        add_event(
            connection, **common, event_type=USAGE_EVENT,
            payload={"model": model, "metered": metered, "reported": reported,
                     "cost_usd": str(current.cost_usd)},
        )  # fmt: skip
        if failure is None:
            add_event(connection, **common, event_type=RESULT_EVENT, payload=result)
        else:
            add_event(connection, **common, event_type=FAILURE_EVENT, payload=failure)
    return {"stored": True, "cost_usd": str(current.cost_usd)}


def reported_failure(connection: Connection, run_id: int) -> tuple[str, str | None] | None:
    """The failure the runner reported for this run (reason, message), if any."""
    row = connection.execute(
        sa.select(FLOW_EVENTS.c.payload)
        .where(FLOW_EVENTS.c.run_id == run_id, FLOW_EVENTS.c.event_type == FAILURE_EVENT)
        .order_by(FLOW_EVENTS.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return str(row.payload.get("reason")), row.payload.get("message")
