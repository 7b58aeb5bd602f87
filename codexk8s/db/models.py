"""SQLModel tables: the whole data model (DESIGN §3) with the indexes its queries use.

Conventions: integer surrogate keys; timestamps are timezone-aware UTC; enumerations are stored
as short strings and validated by the domain enums (no native DB enums, so adding a value needs no
type migration); secrets are stored only as ciphertext (`*_ciphertext` columns); bearer tokens only
as SHA-256 hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Alembic and the tests compare schemas through this naming convention, so constraint names are
# identical on SQLite and PostgreSQL.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else lambda: None,
        sa_type=sa.DateTime(timezone=True),
        nullable=nullable,
        index=index,
    )


def _json() -> Any:
    return Field(default_factory=dict, sa_type=sa.JSON, nullable=False)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    github_login: str | None = Field(default=None, max_length=100, unique=True)
    name: str | None = Field(default=None, max_length=200)
    role: str = Field(default="user", max_length=16)
    disabled: bool = Field(default=False)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    settings: dict[str, Any] = _json()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ProjectMember(SQLModel, table=True):
    __tablename__ = "project_members"
    __table_args__ = (sa.UniqueConstraint("project_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    role: str = Field(max_length=16)
    learning_mode: bool | None = Field(default=None)
    created_at: datetime = _ts()


class Repository(SQLModel, table=True):
    __tablename__ = "repositories"
    __table_args__ = (sa.UniqueConstraint("provider", "owner", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", ondelete="CASCADE", index=True)
    provider: str = Field(default="github", max_length=16)
    # Stored lower-case: GitHub owner and repository names are case-insensitive.
    owner: str = Field(max_length=100)
    name: str = Field(max_length=100)
    token_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    # Whether GitHub calls for this repository may fall back to CODEXK8S_GITHUB_TOKEN when it has
    # no token of its own: only when a platform admin (or the operator) attached or allowed it.
    global_token_allowed: bool = Field(
        default=False, sa_column_kwargs={"server_default": sa.false()}
    )
    webhook_secret_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    webhook_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    services_yaml_path: str = Field(default="services.yaml", max_length=500)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=16, unique=True)
    name: str = Field(max_length=100)
    github_login: str | None = Field(default=None, max_length=100)
    github_email: str | None = Field(default=None, max_length=320)
    # image, command, engine, timeout_minutes, model, reasoning_effort
    settings: dict[str, Any] = _json()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class PromptTemplate(SQLModel, table=True):
    """One version of a prompt. Edits insert a new version; older versions are the history."""

    __tablename__ = "prompt_templates"
    __table_args__ = (sa.UniqueConstraint("scope", "kind", "locale", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    # A stage name ("dev", "plan", "review") or "agent:<key>" for an agent-wide template.
    scope: str = Field(max_length=64)
    kind: str = Field(default="work", max_length=16)  # work | revise
    locale: str = Field(default="en", max_length=16)
    version: int = Field(default=1)
    body: str = Field(sa_type=sa.Text)
    author_id: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=100, unique=True)
    event: str = Field(max_length=64)
    action: str | None = Field(default=None, max_length=64)
    repository_full_name: str | None = Field(default=None, max_length=201)
    repository_id: int | None = Field(
        default=None, foreign_key="repositories.id", ondelete="SET NULL", index=True
    )
    received_at: datetime = _ts(index=True)
    outcome: str = Field(max_length=64)
    payload: dict[str, Any] = _json()


class WebhookBodyHash(SQLModel, table=True):
    """The SHA-256 of each accepted webhook body and when it came. GitHub's signature covers only
    the body, so the same signed body under a new X-GitHub-Delivery within the replay window is
    a replay, not a delivery (webhook ingest writes this row in the delivery's own statement)."""

    __tablename__ = "webhook_body_hashes"

    body_sha256: str = Field(primary_key=True, max_length=64)
    delivery_id: str = Field(max_length=100)
    received_at: datetime = _ts()


class AgentRun(SQLModel, table=True):
    __tablename__ = "agent_runs"
    __table_args__ = (
        sa.Index(
            "ix_agent_runs_project_id_status_created_at", "project_id", "status", "created_at"
        ),
        sa.Index("ix_agent_runs_status_created_at", "status", "created_at"),
        # The Runs page's keyset order (created_at, id), across all projects and per project, and
        # the Overview's 14-day window.
        sa.Index("ix_agent_runs_created_at_id", "created_at", "id"),
        sa.Index("ix_agent_runs_project_id_created_at_id", "project_id", "created_at", "id"),
        sa.Index(
            "ix_agent_runs_repository_id_issue_number_stage",
            "repository_id",
            "issue_number",
            "stage",
        ),
        # Log upkeep: finished runs whose lines are still rows (compaction), or not yet removed
        # (retention), oldest first.
        sa.Index("ix_agent_runs_log_storage_finished_at", "log_storage", "finished_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    correlation_id: str = Field(max_length=64, unique=True)
    project_id: int = Field(foreign_key="projects.id", ondelete="CASCADE")
    repository_id: int | None = Field(
        default=None, foreign_key="repositories.id", ondelete="SET NULL"
    )
    issue_number: int | None = Field(default=None)
    pr_number: int | None = Field(default=None)
    issue_title: str | None = Field(default=None, max_length=500)
    agent_key: str = Field(max_length=16)
    stage: str = Field(max_length=32)
    is_revise: bool = Field(default=False)
    # work (a branch and a pull request) or discussion (an answer on the issue, nothing pushed):
    # domain.runs.RunMode.
    mode: str = Field(
        default="work", max_length=16, sa_column_kwargs={"server_default": sa.text("'work'")}
    )
    trigger_label: str | None = Field(default=None, max_length=100)
    delivery_id: str | None = Field(default=None, max_length=100)
    status: str = Field(default="pending", max_length=16)
    status_reason: str | None = Field(default=None, max_length=64)
    status_message: str | None = Field(default=None, sa_type=sa.Text)
    model: str | None = Field(default=None, max_length=100)
    reasoning_effort: str | None = Field(default=None, max_length=16)
    learning_mode: bool = Field(default=False)
    slot_number: int | None = Field(default=None)
    namespace: str | None = Field(default=None, max_length=63)
    job_name: str | None = Field(default=None, max_length=63)
    attempt: int = Field(default=1)
    parent_run_id: int | None = Field(
        default=None, foreign_key="agent_runs.id", ondelete="SET NULL"
    )
    # Set when someone (user, unlabel, issue closed) asks an active run to stop; the control
    # loop carries it out and moves the run to canceled.
    cancel_requested_at: datetime | None = _ts(nullable=True)
    cancel_reason: str | None = Field(default=None, max_length=64)
    # A requeued run is not claimed before this (a launch deferred by the runtime).
    dispatch_after: datetime | None = _ts(nullable=True)
    # Engine bookkeeping: where the workload lives, when it must end, how far its logs are stored.
    lineage: str | None = Field(default=None, max_length=300)
    # none_as_null: "no handle" must be SQL NULL (IS NULL queries), not the JSON value null.
    runtime_handle: dict[str, Any] | None = Field(
        default=None, sa_type=sa.JSON(none_as_null=True), nullable=True
    )
    deadline_at: datetime | None = _ts(nullable=True)
    cancel_sent_at: datetime | None = _ts(nullable=True)
    cleaned_at: datetime | None = _ts(nullable=True)
    log_cursor: str | None = Field(default=None, sa_type=sa.Text)
    log_sequence: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": sa.text("0")}
    )
    # The per-run cap: bytes stored so far, and what was dropped after the cap (lines, bytes).
    log_bytes: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": sa.text("0")}
    )
    log_dropped_lines: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": sa.text("0")}
    )
    log_dropped_bytes: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": sa.text("0")}
    )
    # Where the lines are (domain.logs.LogStorage): rows, chunks, removing, removed.
    log_storage: str = Field(
        default="rows", max_length=16, sa_column_kwargs={"server_default": sa.text("'rows'")}
    )
    log_removed_at: datetime | None = _ts(nullable=True)
    # Set while the run waits for a person (a question or an approval, `run_requests`): its
    # deadline stops counting; the answer moves `deadline_at` on by the time waited.
    waiting_since: datetime | None = _ts(nullable=True)
    # Set while the run, waiting for a person, has given its slot to the next run (the project's
    # waiting-slot policy is `release`); dispatch gives it a slot back before any queued run.
    slot_released_at: datetime | None = _ts(nullable=True)
    # What the runtime's own timer allows beyond the timeout for waiting (WorkloadSpec): for such
    # a run the control plane's deadline is the one that stops it, so it is enforced without the
    # grace that lets a runtime's timer fire first.
    wait_allowance_seconds: int = Field(
        default=0, sa_column_kwargs={"server_default": sa.text("0")}
    )
    run_token_hash: str | None = Field(default=None, max_length=64)
    pr_url: str | None = Field(default=None, max_length=500)
    # GitHub feedback: the newest GitHub-visible flow event of this run already reported there.
    reported_event_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    summary: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    tokens_input: int = Field(default=0, sa_type=sa.BigInteger)
    tokens_cached: int = Field(default=0, sa_type=sa.BigInteger)
    tokens_output: int = Field(default=0, sa_type=sa.BigInteger)
    tokens_reasoning: int = Field(default=0, sa_type=sa.BigInteger)
    cost_usd: Decimal = Field(default=Decimal("0"), sa_type=sa.Numeric(12, 6))


class Installation(SQLModel, table=True):
    """One row: this database's id, stamped on every workload (see services/installation.py)."""

    __tablename__ = "installation"

    id: str = Field(primary_key=True, max_length=32)
    created_at: datetime = _ts()


class RunModelResponse(SQLModel, table=True):
    """A model response a run created through the model proxy: the only ones it may read later."""

    __tablename__ = "run_model_responses"
    __table_args__ = (sa.UniqueConstraint("run_id", "response_id"),)

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer, "sqlite")
    )
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE")
    response_id: str = Field(max_length=128)
    created_at: datetime = _ts()


class Slot(SQLModel, table=True):
    __tablename__ = "slots"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "number"),
        sa.Index("ix_slots_project_id_state", "project_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", ondelete="CASCADE")
    number: int
    state: str = Field(default="free", max_length=16)  # free | leased | releasing
    run_id: int | None = Field(default=None, foreign_key="agent_runs.id", ondelete="SET NULL")
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: datetime | None = _ts(nullable=True)


class FlowEvent(SQLModel, table=True):
    """Append-only audit trail of every action, human, agent or system."""

    __tablename__ = "flow_events"
    __table_args__ = (
        sa.Index("ix_flow_events_correlation_id_created_at", "correlation_id", "created_at"),
        sa.Index("ix_flow_events_project_id_created_at", "project_id", "created_at"),
        sa.Index("ix_flow_events_run_id_id", "run_id", "id"),
    )

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer, "sqlite")
    )
    correlation_id: str = Field(max_length=100)
    project_id: int | None = Field(default=None, foreign_key="projects.id", ondelete="SET NULL")
    run_id: int | None = Field(default=None, foreign_key="agent_runs.id", ondelete="SET NULL")
    actor_type: str = Field(max_length=16)  # human | agent | system
    actor_id: str | None = Field(default=None, max_length=320)
    event_type: str = Field(max_length=64, index=True)
    payload: dict[str, Any] = _json()
    created_at: datetime = _ts(index=True)


class RunLog(SQLModel, table=True):
    """Every line a run's workload printed, kept so logs outlive pods and processes."""

    __tablename__ = "run_logs"
    __table_args__ = (sa.UniqueConstraint("run_id", "sequence"),)

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer, "sqlite")
    )
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE")
    sequence: int = Field(sa_type=sa.BigInteger)
    stream: str = Field(default="stdout", max_length=8)
    line: str = Field(sa_type=sa.Text)
    ts: datetime = _ts()


class RunLogChunk(SQLModel, table=True):
    """Consecutive lines of a finished run's log, compressed (encoding: db/log_chunks.py).

    Compaction moves a finished log's rows here in bounded transactions; readers merge rows and
    chunks by sequence, so a log reads the same whichever way it is stored.
    """

    __tablename__ = "run_log_chunks"
    __table_args__ = (sa.UniqueConstraint("run_id", "first_sequence"),)

    id: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer, "sqlite")
    )
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE")
    first_sequence: int = Field(sa_type=sa.BigInteger)
    last_sequence: int = Field(sa_type=sa.BigInteger)
    line_count: int
    data: bytes = Field(sa_type=sa.LargeBinary)


class LearningFeedback(SQLModel, table=True):
    __tablename__ = "learning_feedback"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE", index=True)
    file_path: str | None = Field(default=None, max_length=500)
    line: int | None = Field(default=None)
    kind: str = Field(max_length=16)  # inline | post_pr
    explanation: str = Field(sa_type=sa.Text)
    created_at: datetime = _ts()


class GitHubFeedback(SQLModel, table=True):
    """The service comment of one issue/PR and the reporter's claim on it.

    The reporter claims a row (compare-and-set on `claimed_until`) before touching the issue, so
    two replicas never post or edit the same issue's comment and labels at once.
    """

    __tablename__ = "github_feedback"
    __table_args__ = (sa.UniqueConstraint("repository_id", "issue_number"),)

    id: int | None = Field(default=None, primary_key=True)
    repository_id: int = Field(foreign_key="repositories.id", ondelete="CASCADE")
    issue_number: int
    comment_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    # SHA-256 of the body last written, so an unchanged comment is not edited again.
    body_sha256: str | None = Field(default=None, max_length=64)
    claimed_by: str | None = Field(default=None, max_length=200)
    claimed_until: datetime | None = _ts(nullable=True)
    retry_after: datetime | None = _ts(nullable=True)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    # The newest notice about a delivery that started nothing (a refused sender, conflicting
    # labels), shown in the service comment while no newer run exists; the newest flow event
    # reported that way.
    notice: str | None = Field(default=None, sa_type=sa.Text)
    notice_at: datetime | None = _ts(nullable=True)
    notice_event_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    updated_at: datetime = _ts()


class AgentSession(SQLModel, table=True):
    """A Codex session a succeeded run left behind, so the next run of its lineage (a revise run,
    the next turn of a discussion) can resume it instead of starting cold.

    `data_ciphertext` is the session's rollout file, gzip-compressed, then encrypted with the
    secret box (it holds the prompt and command output). Versions count along a lineage: a run
    that resumed version N stores N + 1 with `parent_session_id` pointing at N.
    """

    __tablename__ = "agent_sessions"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE", unique=True)
    parent_session_id: int | None = Field(
        default=None, foreign_key="agent_sessions.id", ondelete="SET NULL"
    )
    version: int = Field(default=1)
    thread_id: str = Field(max_length=64)
    # Where the file lives under CODEX_HOME (sessions/YYYY/MM/DD/rollout-...jsonl).
    path: str = Field(max_length=300)
    size_bytes: int = Field(sa_type=sa.BigInteger)
    raw_size_bytes: int = Field(sa_type=sa.BigInteger)
    sha256: str = Field(max_length=64)
    data_ciphertext: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = _ts()


class RunRequest(SQLModel, table=True):
    """A question or an approval request a run's agent put to the people of its project
    (domain.run_requests): pending until someone answers, or until the wait limit passes."""

    __tablename__ = "run_requests"
    __table_args__ = (sa.Index("ix_run_requests_status_project_id", "status", "project_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="agent_runs.id", ondelete="CASCADE", index=True)
    project_id: int = Field(foreign_key="projects.id", ondelete="CASCADE")
    # question or approval
    kind: str = Field(max_length=16)
    # pending, answered, approved, denied, timed_out, canceled
    status: str = Field(default="pending", max_length=16)
    # The question, or the action to approve; the options offered, or the action's details.
    text: str = Field(sa_type=sa.Text)
    options: list[Any] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    details: str | None = Field(default=None, sa_type=sa.Text)
    # Who may answer: owner (a project admin) or delegated (any member with write access).
    policy: str = Field(max_length=16)
    answer: str | None = Field(default=None, sa_type=sa.Text)
    answered_by: str | None = Field(default=None, max_length=320)
    # dashboard, api, github
    answered_via: str | None = Field(default=None, max_length=16)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    answered_at: datetime | None = _ts(nullable=True)
    # When the waiting tool call handed the decision to the agent: a decided request not yet
    # delivered is what the same call, retried (its HTTP request was cut), waits on again.
    delivered_at: datetime | None = _ts(nullable=True)


class GitHubRedelivery(SQLModel, table=True):
    """A failed webhook delivery codexk8s asked GitHub to redeliver (each GUID once)."""

    __tablename__ = "github_redeliveries"

    id: int | None = Field(default=None, primary_key=True)
    repository_id: int = Field(foreign_key="repositories.id", ondelete="CASCADE", index=True)
    guid: str = Field(max_length=100, unique=True)
    delivery_id: int = Field(sa_type=sa.BigInteger)
    requested_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    name: str = Field(default="", max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    # The token's first characters (TOKEN_PREFIX and four more), to recognise it in a list.
    prefix: str | None = Field(default=None, max_length=16)
    scopes: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    expires_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class UserSession(SQLModel, table=True):
    """A browser sign-in: the cookie carries the token, the table only its SHA-256 hash."""

    __tablename__ = "sessions"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    user_agent: str | None = Field(default=None, max_length=200)


class SignInLink(SQLModel, table=True):
    """A one-time sign-in link (embedded mode without OAuth); stored only as a hash."""

    __tablename__ = "signin_links"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)


def table_of(model: type[SQLModel]) -> sa.Table:
    """MODEL's Core table, typed: SQLModel sets `__table__` only at run time, so the Core
    statements of the services reach their tables through here."""
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table)
    return table
