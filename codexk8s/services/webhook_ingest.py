"""Webhook ingest: verify, record once, and turn a GitHub delivery into runs (DESIGN §4, §5).

Guarantees:
- Nothing but one audit event is written for a rejected request (bad headers, bad body, no
  secret, wrong signature).
- `X-GitHub-Delivery` is the idempotency key. The delivery row is inserted first with
  `INSERT ... ON CONFLICT DO NOTHING`; the runs it triggers and their flow events are written in
  the same transaction. A concurrent copy blocks on the unique index until the first commits,
  then sees the conflict and is answered as a duplicate, so 50 copies at once make one set of runs.
- The body is a second key: GitHub's signature has no timestamp, so a captured body re-sent
  under a new delivery id would pass. The SHA-256 of every accepted body is upserted in the same
  statement as the delivery row (`webhook_body_hashes`, taken over only when older than
  REPLAY_WINDOW), and the delivery row is written only when that upsert was; the same body within
  the window under another delivery id is answered as a replay (`delivery_replayed`, nothing else
  written). GitHub's own redelivery reuses the delivery id and stays the plain duplicate.
- One active run per (repository, issue/PR number, stage): a delivery that may start one locks
  the repository row (`FOR NO KEY UPDATE`) and checks under the lock, so two different
  deliveries cannot both start one. One that already sees an active run needs no lock.
- Only people of the project start runs: a delivery that would start one (a trigger label, a
  discussion comment, a changes-requested review) from a sender who is neither a member with
  write access (`domain.authorization.sender_may_trigger`, matched by the GitHub login linked
  to the user) nor on the project's bot allow-list starts nothing; it is recorded as
  `ignored:sender_not_allowed` with a `trigger_refused` event, which the reporter explains in
  the issue's service comment. Cancels (unlabel, close) stay open to anyone who can do them on
  GitHub: they stop spending, they never start it.
- Only the decision is made here; GitHub calls and workloads happen later, in the control loop.

Every delivery GitHub sends runs through here, so it uses SQLAlchemy Core with statements built
once: the ORM's unit of work cost more CPU than the queries. The trigger decision is made from the
payload before any query, so one statement reads the repository, its webhook secret and the run
that may already be active for the decision, plus the project's settings and the sender's roles
(outer joins, so nothing is read for a delivery that would start nothing). Most deliveries start
nothing (comments, other
labels, redundant triggers): on PostgreSQL their delivery row and flow events are written by one
`INSERT ... ON CONFLICT DO NOTHING` whose CTE also inserts the events, in autocommit, so the whole
request costs two round trips and stays atomic. Those two statements go straight to the driver's
cursor (compiled once from the same SQLAlchemy statements): SQLAlchemy's per-execution work cost
0.1 ms of CPU per statement here, a tenth of the request. A delivery that may start or cancel
runs takes the locked, multi-statement transaction. Flow events are collected while deciding and
written together, in order.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from codexk8s.adapters.github import webhooks
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.engine import get_engine
from codexk8s.db.models import (
    AgentRun,
    FlowEvent,
    Project,
    ProjectMember,
    Repository,
    User,
    WebhookBodyHash,
    WebhookDelivery,
    table_of,
    utcnow,
)
from codexk8s.domain.access import PlatformRole, ProjectRole
from codexk8s.domain.authorization import Principal, normalize_login, sender_may_trigger
from codexk8s.domain.feedback import sender_refusal
from codexk8s.domain.runs import ACTIVE_STATUSES, RunStatus
from codexk8s.domain.triggers import (
    EVENT_PING,
    DecisionKind,
    ProjectPolicy,
    Reason,
    RunSpec,
    TriggerDecision,
    apply_project_policy,
    decide,
    trigger_input_from_payload,
)
from codexk8s.errors import (
    CodexK8sError,
    InvalidArgumentError,
    UnauthorizedError,
    UnavailableError,
)
from codexk8s.services import audit, repositories, run_requests, run_start, run_states

REJECTED_CORRELATION = "webhook-rejected"
MAX_DELIVERY_ID = 100
MAX_EVENT_NAME = 64
MAX_OUTCOME = 64
# A delivery row's outcome while the runs it starts or cancels are being decided.
PROCESSING = "processing"
# The same body under another delivery id within this long is a replay.
REPLAY_WINDOW = timedelta(hours=24)

_DELIVERIES: sa.Table = table_of(WebhookDelivery)
_RUNS: sa.Table = table_of(AgentRun)
_FLOW_EVENTS: sa.Table = table_of(FlowEvent)
_REPOSITORIES: sa.Table = table_of(Repository)
_BODY_HASHES: sa.Table = table_of(WebhookBodyHash)
_PROJECTS: sa.Table = table_of(Project)
_USERS: sa.Table = table_of(User)
_MEMBERS: sa.Table = table_of(ProjectMember)
_ACTIVE_STATUS_VALUES = sorted(status.value for status in ACTIVE_STATUSES)

# Statements are built once: building one costs more CPU than executing it, since SQLAlchemy
# caches the compiled SQL but not the construction.
# The repository (matched as `repositories.get_by_full_name` does), its webhook secret and the run
# already active for the trigger, in one round trip.
_ACTIVE_RUN_FOR_TRIGGER = (
    sa.select(_RUNS.c.id)
    .where(
        _RUNS.c.repository_id == _REPOSITORIES.c.id,
        _RUNS.c.issue_number == sa.bindparam("number", type_=sa.Integer),
        _RUNS.c.stage == sa.bindparam("stage", type_=sa.String),
        _RUNS.c.mode == sa.bindparam("mode", type_=sa.String),
        # One fixed parameter per status: a plain list would be an "expanding" IN. A discussion
        # turn waits behind a running one (dispatch starts it after), so for discussions only a
        # pending turn counts: it will read the new comment anyway.
        sa.or_(
            _RUNS.c.status == sa.literal(RunStatus.PENDING.value),
            sa.and_(
                sa.bindparam("pending_only", type_=sa.Boolean).is_(sa.false()),
                _RUNS.c.status.in_([sa.literal(status) for status in _ACTIVE_STATUS_VALUES]),
            ),
        ),
    )
    .limit(1)
    .correlate(_REPOSITORIES)
    .scalar_subquery()
)
_WEBHOOK_TARGET = (
    sa.select(
        _REPOSITORIES.c.id,
        _REPOSITORIES.c.project_id,
        _REPOSITORIES.c.webhook_secret_ciphertext,
        _ACTIVE_RUN_FOR_TRIGGER.label("active_run_id"),
        _PROJECTS.c.key,
        _PROJECTS.c.settings,
        # The sender's codexk8s user (by the GitHub login linked to it) and membership; NULL
        # for a delivery that starts nothing (no sender is bound), so nothing is looked up.
        _USERS.c.role,
        _USERS.c.disabled,
        _MEMBERS.c.role,
    )
    .select_from(
        _REPOSITORIES.join(_PROJECTS, _PROJECTS.c.id == _REPOSITORIES.c.project_id)
        .outerjoin(
            _USERS,
            sa.func.lower(_USERS.c.github_login) == sa.bindparam("sender", type_=sa.String),
        )
        .outerjoin(
            _MEMBERS,
            sa.and_(
                _MEMBERS.c.user_id == _USERS.c.id,
                _MEMBERS.c.project_id == _REPOSITORIES.c.project_id,
            ),
        )
    )
    .where(
        _REPOSITORIES.c.provider == sa.bindparam("provider"),
        _REPOSITORIES.c.owner == sa.bindparam("owner"),
        _REPOSITORIES.c.name == sa.bindparam("name"),
    )
)
_SET_OUTCOME = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("row_id"))
    .values(outcome=sa.bindparam("result"))
)
# Asked only when a delivery was not written: was its id recorded before (GitHub's redelivery),
# and which delivery brought the same body (then it is a replay)?
_DUPLICATE_OF = sa.select(
    sa.exists().where(_DELIVERIES.c.delivery_id == sa.bindparam("delivery_id")),
    sa.select(_BODY_HASHES.c.delivery_id)
    .where(_BODY_HASHES.c.body_sha256 == sa.bindparam("body_sha256"))
    .scalar_subquery(),
)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What the HTTP layer read off the request, untouched."""

    delivery_id: str | None
    event: str | None
    signature: str | None
    content_type: str | None
    body: bytes
    remote: str | None = None


@dataclass(slots=True)
class IngestOutcome:
    delivery_id: str
    event: str
    action: str | None = None
    runs: list[int] = field(default_factory=list)
    canceled: list[int] = field(default_factory=list)
    cancel_requested: list[int] = field(default_factory=list)
    ignored: str | None = None
    is_duplicate: bool = False
    # For a replayed body: the delivery that brought it first.
    replay_of: str | None = None

    @property
    def is_ping(self) -> bool:
        return self.event == EVENT_PING


@dataclass(frozen=True, slots=True)
class _Repository:
    """The columns of the delivery's repository that ingest reads, with its project's settings
    and, for a delivery that would start a run, its sender's roles."""

    id: int
    project_id: int
    webhook_secret_ciphertext: str | None
    project_key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    sender_platform_role: str | None = None
    sender_disabled: bool = False
    sender_project_role: str | None = None

    @property
    def allowed_bots(self) -> list[str]:
        bots = self.settings.get("trigger_bots")
        return [bot for bot in bots if isinstance(bot, str)] if isinstance(bots, list) else []

    @property
    def policy(self) -> ProjectPolicy:
        stages = self.settings.get("discussion_stages")
        if not isinstance(stages, list):
            return ProjectPolicy()
        return ProjectPolicy(frozenset(stage for stage in stages if isinstance(stage, str)))

    def may_trigger(self, sender: str | None) -> bool:
        principal = None
        if self.sender_platform_role in {role.value for role in PlatformRole}:
            # The user id plays no part in the rule; the login already identified the user.
            principal = Principal(
                user_id=0,
                platform_role=PlatformRole(self.sender_platform_role),
                is_disabled=bool(self.sender_disabled),
            )
        project_role = (
            ProjectRole(self.sender_project_role)
            if self.sender_project_role in {role.value for role in ProjectRole}
            else None
        )
        return sender_may_trigger(
            sender=sender, principal=principal, project_role=project_role,
            allowed_bots=self.allowed_bots,
        )  # fmt: skip


@dataclass(slots=True)
class _Delivery:
    """A delivery being recorded: its answer so far, the SHA-256 of its body, and the flow events
    to write with it."""

    outcome: IngestOutcome
    body_sha256: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        event_type: str,
        *,
        payload: dict[str, Any],
        project_id: int | None = None,
        run_id: int | None = None,
    ) -> None:
        self.events.append(
            audit.flow_event_values(
                correlation_id=self.outcome.delivery_id,
                event_type=event_type,
                project_id=project_id,
                run_id=run_id,
                payload=payload,
            )
        )


class _Rejected(Exception):
    """A request refused once its repository is known: the audit event to write, the error."""

    def __init__(self, event_type: str, reason: str, error: CodexK8sError) -> None:
        super().__init__(reason)
        self.event_type = event_type
        self.reason = reason
        self.error = error


def record_rejection(
    request: WebhookRequest, event_type: str, reason: str, *, engine: Engine | None = None
) -> None:
    """The one row a rejected request may leave behind."""
    engine = engine or get_engine()
    delivery = (request.delivery_id or "")[:MAX_DELIVERY_ID] or None
    event = audit.flow_event_values(
        correlation_id=delivery or REJECTED_CORRELATION,
        event_type=event_type,
        payload={
            "reason": reason,
            "delivery_id": delivery,
            "event": (request.event or "")[:MAX_EVENT_NAME] or None,
            "remote": request.remote,
        },
    )
    with engine.begin() as connection:
        audit.insert_events(connection=connection, events=[event])


def _validated_headers(engine: Engine, request: WebhookRequest) -> tuple[str, str]:
    problems = []
    if not request.event:
        problems.append("missing X-GitHub-Event header")
    elif len(request.event) > MAX_EVENT_NAME or not request.event.replace("_", "").isalnum():
        problems.append("X-GitHub-Event is not an event name")
    if not request.delivery_id:
        problems.append("missing X-GitHub-Delivery header")
    elif len(request.delivery_id) > MAX_DELIVERY_ID or not request.delivery_id.isprintable():
        problems.append(f"X-GitHub-Delivery must be at most {MAX_DELIVERY_ID} printable characters")
    if problems:
        message = "; ".join(problems)
        record_rejection(request, "request_rejected", message, engine=engine)
        raise InvalidArgumentError(message)
    assert request.event and request.delivery_id
    return request.event.lower(), request.delivery_id


def _secret_for(
    box: SecretBox, repository: _Repository | None, global_secret: str | None
) -> str | None:
    if repository is not None and repository.webhook_secret_ciphertext:
        return box.decrypt(repository.webhook_secret_ciphertext)
    return global_secret or None


def _verify_signature(
    box: SecretBox,
    repository: _Repository | None,
    global_secret: str | None,
    request: WebhookRequest,
    full_name: str | None,
) -> None:
    """Raise _Rejected unless the body is signed with the repository's (or the global) secret."""
    try:
        secret = _secret_for(box, repository, global_secret)
    except DecryptionError:
        secret = None
    if secret is None:
        reason = "no webhook secret configured"
        raise _Rejected(
            "request_rejected",
            reason,
            UnavailableError(
                f"{reason} for {full_name or 'this hook'}: set CODEXK8S_GITHUB_WEBHOOK_SECRET "
                "or attach the repository with `codexk8s repo add --webhook-secret-env VAR`"
            ),
        )
    if not webhooks.signature_matches(secret, request.body, request.signature):
        reason = "missing signature" if not request.signature else "signature mismatch"
        raise _Rejected(
            "signature_rejected",
            reason,
            UnauthorizedError(f"{reason}: X-Hub-Signature-256 must be the HMAC-SHA256 of the body"),
        )


# PostgreSQL: the body's hash, then the delivery row, which is written only when the hash row is
# new or older than the window (it selects from the upsert's RETURNING). Explicit casts: the
# parameters of an INSERT ... SELECT are not typed by the target columns.
_CLAIM_BODY_PG = """
    INSERT INTO webhook_body_hashes (body_sha256, delivery_id, received_at)
    VALUES (:body_sha256, :delivery_id, :received_at)
    ON CONFLICT (body_sha256) DO UPDATE
        SET delivery_id = EXCLUDED.delivery_id, received_at = EXCLUDED.received_at
        WHERE webhook_body_hashes.received_at < :replay_cutoff
    RETURNING 1
"""
_INSERT_DELIVERY_PG = """
    INSERT INTO webhook_deliveries (delivery_id, event, action, repository_full_name,
                                    repository_id, received_at, outcome, payload)
    SELECT CAST(:delivery_id AS text), CAST(:event AS text), CAST(:action AS text),
           CAST(:repository_full_name AS text), CAST(:repository_id AS integer),
           CAST(:received_at AS timestamptz), CAST(:outcome AS text), CAST(:payload AS json)
    FROM body
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING id
"""
# A delivery that may start or cancel runs, in its transaction: the row before the runs.
_CLAIM_DELIVERY_PG = sa.text(f"WITH body AS ({_CLAIM_BODY_PG}) {_INSERT_DELIVERY_PG}")
# A delivery that starts nothing: body hash, delivery row and its flow events in one statement.
# Each insert selects from the RETURNING of the one before, so a duplicate or a replay writes
# nothing and a new delivery is recorded whole or not at all, without BEGIN/COMMIT; the events
# keep the order given. Table names are spelled out (the statement is a constant); the tests
# write through it.
_RECORD_DECIDED_PG = sa.text(
    f"""
WITH body AS ({_CLAIM_BODY_PG}), delivery AS ({_INSERT_DELIVERY_PG}), events AS (
    INSERT INTO flow_events (correlation_id, project_id, run_id, actor_type, actor_id,
                                     event_type, payload, created_at)
    SELECT e.correlation_id, e.project_id, e.run_id, e.actor_type, e.actor_id,
           e.event_type, e.payload, e.created_at
    FROM delivery, ROWS FROM (json_to_recordset(CAST(:events AS json)) AS (
            correlation_id text, project_id integer, run_id integer, actor_type text,
            actor_id text, event_type text, payload json, created_at timestamptz
        )) WITH ORDINALITY AS e(correlation_id, project_id, run_id, actor_type, actor_id,
                                event_type, payload, created_at, position)
    ORDER BY e.position
)
SELECT id FROM delivery
"""  # noqa: S608 (composed of the constants above, no input)
)
_DELIVERY_COLUMNS = (
    "delivery_id", "event", "action", "repository_full_name", "repository_id", "received_at",
    "outcome", "payload",
)  # fmt: skip


def _claim_delivery(connection: Connection, values: dict[str, Any]) -> int | None:
    """Write the body's hash and the delivery row (with VALUES from `_delivery_values`); the
    row's id, or None when the delivery id or the body (within the window) was seen before."""
    if connection.dialect.name == "postgresql":
        return connection.execute(_CLAIM_DELIVERY_PG, values).scalar_one_or_none()
    # SQLite (one process, in a transaction): the same two inserts, one after the other.
    received_at = values["received_at"]
    body = (
        sqlite.insert(_BODY_HASHES)
        .values(
            body_sha256=values["body_sha256"], delivery_id=values["delivery_id"],
            received_at=received_at,
        )
        .on_conflict_do_update(
            index_elements=["body_sha256"],
            set_={"delivery_id": values["delivery_id"], "received_at": received_at},
            where=_BODY_HASHES.c.received_at < values["replay_cutoff"],
        )
        .returning(_BODY_HASHES.c.body_sha256)
    )  # fmt: skip
    if connection.execute(body).first() is None:
        return None
    return connection.execute(
        sqlite.insert(_DELIVERIES)
        .values({name: values[name] for name in _DELIVERY_COLUMNS})
        .on_conflict_do_nothing(index_elements=["delivery_id"])
        .returning(_DELIVERIES.c.id)
    ).scalar_one_or_none()


@functools.cache
def _driver_sql(statement: sa.Executable) -> tuple[str, dict[str, Any]]:
    """STATEMENT compiled once for psycopg: its SQL (`%(name)s` parameters) and the values of the
    parameters it binds itself (the literal statuses)."""
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    return str(compiled), dict(compiled.params)


def _execute_on_driver(
    connection: Connection, statement: sa.Executable, parameters: dict[str, Any]
) -> tuple[Any, ...] | None:
    """Run STATEMENT on CONNECTION's psycopg connection (in its autocommit mode); its first row."""
    sql, bound = _driver_sql(statement)
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(sql, {**bound, **parameters})
        return cursor.fetchone() if cursor.description else None


def _delivery_values(
    delivery: _Delivery, *, full_name: str | None, repository: _Repository | None,
    payload: dict[str, Any] | str, outcome: str,
) -> dict[str, Any]:  # fmt: skip
    """The delivery row's columns and its body hash's (PAYLOAD: the JSON text received on
    PostgreSQL, where it is stored as sent; the decoded payload on SQLite)."""
    received_at = utcnow()
    return {
        "delivery_id": delivery.outcome.delivery_id,
        "event": delivery.outcome.event,
        "action": delivery.outcome.action,
        "repository_full_name": full_name[:201] if full_name else None,
        "repository_id": repository.id if repository else None,
        "received_at": received_at,
        "outcome": outcome[:MAX_OUTCOME],
        "payload": payload,
        "body_sha256": delivery.body_sha256,
        "replay_cutoff": received_at - REPLAY_WINDOW,
    }


def _events_json(events: list[dict[str, Any]]) -> str:
    return json.dumps(
        [{**event, "created_at": event["created_at"].isoformat()} for event in events],
        separators=(",", ":"),
    )


def _lookup(
    connection: Connection, full_name: str | None, spec: RunSpec | None, sender: str | None
) -> tuple[_Repository, int | None] | None:
    """The delivery's repository (with its project and, given a SENDER, the sender's roles)
    and, for a run trigger, the run already active for it."""
    if not full_name:
        return None
    try:
        owner, name = repositories.parse_full_name(full_name)
    except InvalidArgumentError:
        return None
    parameters = {
        "provider": repositories.PROVIDER_GITHUB,
        "owner": owner,
        "name": name,
        # No spec: `issue_number = NULL` matches nothing, so the subquery is NULL.
        "number": spec.number if spec else None,
        "stage": spec.stage if spec else None,
        "mode": spec.mode if spec else None,
        "pending_only": bool(spec and spec.is_discussion),
        # No sender: `lower(github_login) = NULL` matches no user.
        "sender": normalize_login(sender) if spec and sender else None,
    }
    if connection.dialect.name == "postgresql":
        row = _execute_on_driver(connection, _WEBHOOK_TARGET, parameters)
    else:
        row = connection.execute(_WEBHOOK_TARGET, parameters).first()
    if row is None:
        return None
    (
        repository_id, project_id, secret_ciphertext, active_run_id, project_key, settings,
        platform_role, disabled, project_role,
    ) = row  # fmt: skip
    if isinstance(settings, str):  # a driver that hands JSON back as text
        settings = json.loads(settings)
    repository = _Repository(
        repository_id, project_id, secret_ciphertext, project_key=project_key,
        settings=settings if isinstance(settings, dict) else {},
        sender_platform_role=platform_role, sender_disabled=bool(disabled),
        sender_project_role=project_role,
    )  # fmt: skip
    return repository, active_run_id


@contextmanager
def _reading_connection(engine: Engine) -> Iterator[Connection]:
    """Where the lookup runs and a decided delivery is written: autocommit on PostgreSQL (the
    write is one statement), a transaction on SQLite (the write is several)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
    else:
        with engine.begin() as connection:
            yield connection


def ingest_github_delivery(
    *,
    engine: Engine | None = None,
    box: SecretBox,
    global_secret: str | None,
    request: WebhookRequest,
) -> IngestOutcome:
    """Verify and record one delivery; raise a CodexK8sError subclass for a rejected request."""
    engine = engine or get_engine()
    event, delivery_id = _validated_headers(engine, request)
    try:
        payload, payload_text = webhooks.decode_payload(request.body, request.content_type)
    except webhooks.WebhookFormatError as exc:
        record_rejection(request, "request_rejected", str(exc), engine=engine)
        raise InvalidArgumentError(str(exc)) from None
    full_name = webhooks.repository_full_name(payload)
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    delivery = _Delivery(
        IngestOutcome(delivery_id=delivery_id, event=event, action=action),
        body_sha256=hashlib.sha256(request.body).hexdigest(),
    )
    # The decision needs only the payload; made first, it tells the lookup which run to look for.
    trigger = None if event == EVENT_PING else trigger_input_from_payload(event, payload)
    decision = None if trigger is None else decide(trigger)
    spec = (
        decision.run if decision is not None and decision.kind is DecisionKind.START_RUN else None
    )

    sender = trigger.sender if trigger is not None else None
    try:
        with _reading_connection(engine) as connection:
            found = _lookup(connection, full_name, spec, sender)
            repository, active_run_id = found if found else (None, None)
            _verify_signature(box, repository, global_secret, request, full_name)
            if repository is not None and decision is not None:
                settled = apply_project_policy(decision, repository.policy)
                if settled.run is not None and spec is not None and settled.run.mode != spec.mode:
                    # The run already active was looked up for the other mode.
                    active_run_id = None
                decision = settled
            result = _decide(
                delivery, full_name, repository, decision, active_run_id, sender=sender,
                number=trigger.number if trigger is not None else None,
            )  # fmt: skip
            if result is not None:
                recorded = _record_decided(
                    connection, delivery, full_name=full_name, repository=repository,
                    payload=payload, payload_text=payload_text, outcome=result,
                )  # fmt: skip
        if result is not None:
            if trigger is not None and trigger.is_answer and not recorded.is_duplicate:
                _answer(engine, repository, trigger.number, sender, payload, delivery_id)
            return recorded
    except _Rejected as rejected:
        # Nothing was written by the request; the audit event is the one row it leaves.
        record_rejection(request, rejected.event_type, rejected.reason, engine=engine)
        raise rejected.error from None

    # It may start or cancel runs: that is decided under the repository lock, in one transaction.
    assert repository is not None and decision is not None and trigger is not None
    with engine.begin() as connection:
        return _record_with_runs(
            connection, delivery, decision=decision, number=trigger.number,
            full_name=full_name, repository=repository, payload=payload,
            payload_text=payload_text,
        )  # fmt: skip


def _answer(
    engine: Engine, repository: _Repository | None, number: int | None, sender: str | None,
    payload: dict[str, Any], delivery_id: str,
) -> None:  # fmt: skip
    """An `/answer` comment, once its delivery is recorded: the answer to the waiting run on that
    issue, if the sender may give it (services.run_requests decides and audits)."""
    comment = payload.get("comment")
    if repository is None or number is None or not isinstance(comment, dict):
        return
    run_requests.answer_from_github(
        engine, repository_id=repository.id, number=number, login=sender,
        body=str(comment.get("body") or ""), correlation_id=delivery_id,
    )  # fmt: skip


def _decide(
    delivery: _Delivery,
    full_name: str | None,
    repository: _Repository | None,
    decision: TriggerDecision | None,
    active_run_id: int | None,
    *,
    sender: str | None = None,
    number: int | None = None,
) -> str | None:
    """Record what can be decided without a lock and return the delivery's outcome; None when it
    may start or cancel runs."""
    outcome = delivery.outcome
    delivery.record(
        "delivery_accepted",
        project_id=repository.project_id if repository else None,
        payload={"event": outcome.event, "action": outcome.action, "repository": full_name},
    )
    if outcome.event == EVENT_PING:
        return "ping"
    if repository is None:
        return _ignore(delivery, "unknown_repository", full_name=full_name)
    assert decision is not None
    project_id = repository.project_id
    match decision.kind:
        case DecisionKind.CONFLICT:
            outcome.ignored = f"trigger_conflict:{decision.reason}"
            delivery.record(
                "trigger_conflict",
                project_id=project_id,
                payload={
                    "reason": str(decision.reason), "message": decision.message,
                    "repository_id": repository.id, "number": number,
                },
            )  # fmt: skip
            return outcome.ignored
        case DecisionKind.RECORD_ONLY | DecisionKind.IGNORED:
            return _ignore(
                delivery, str(decision.reason), project_id=project_id, message=decision.message
            )
        case DecisionKind.START_RUN:
            # Most triggers for an issue whose run is still going end here, without the
            # repository lock. That is safe: a run read here is committed, and it could only be
            # finishing, which the lock does not hold back either (cancels and the control loop
            # never take it). The lock serialises creation, so only a delivery that may create a run
            # takes it, and checks again under it (`_start_run`).
            assert decision.run is not None
            if not repository.may_trigger(sender):
                return _refuse(delivery, repository, decision, sender)
            if active_run_id is None:
                return None
            return _already_active(delivery, repository, decision.run, active_run_id)
    # The two cancels.
    return None


def _duplicate(connection: Connection, delivery: _Delivery) -> IngestOutcome:
    """The answer to a delivery that was not written: GitHub's redelivery of a recorded delivery
    id (`delivery_duplicate`), or a body seen under another delivery id within the window
    (`delivery_replayed`). Its one flow event is the only row it leaves."""
    outcome = delivery.outcome
    parameters = {"delivery_id": outcome.delivery_id, "body_sha256": delivery.body_sha256}
    is_recorded, first = connection.execute(_DUPLICATE_OF, parameters).one()
    replay_of = None if is_recorded or first == outcome.delivery_id else first
    payload: dict[str, Any] = {"event": outcome.event, "action": outcome.action}
    if replay_of is not None:
        payload["replay_of"] = replay_of
    event = audit.flow_event_values(
        correlation_id=outcome.delivery_id,
        event_type="delivery_duplicate" if replay_of is None else "delivery_replayed",
        payload=payload,
    )
    audit.insert_events(connection=connection, events=[event])
    return IngestOutcome(
        delivery_id=outcome.delivery_id, event=outcome.event, action=outcome.action,
        is_duplicate=True, replay_of=replay_of,
    )  # fmt: skip


def _record_decided(
    connection: Connection, delivery: _Delivery, *, full_name: str | None,
    repository: _Repository | None, payload: dict[str, Any], payload_text: str, outcome: str,
) -> IngestOutcome:  # fmt: skip
    """Write a delivery that starts and cancels nothing, with its flow events, unless a copy of it
    is already recorded or its body is a replay."""
    if connection.dialect.name == "postgresql":
        values = _delivery_values(
            delivery, full_name=full_name, repository=repository, payload=payload_text,
            outcome=outcome,
        )  # fmt: skip
        values["events"] = _events_json(delivery.events)
        row = _execute_on_driver(connection, _RECORD_DECIDED_PG, values)
        return delivery.outcome if row is not None else _duplicate(connection, delivery)
    values = _delivery_values(
        delivery, full_name=full_name, repository=repository, payload=payload, outcome=outcome
    )
    if _claim_delivery(connection, values) is None:
        return _duplicate(connection, delivery)
    audit.insert_events(connection=connection, events=delivery.events)
    return delivery.outcome


def _record_with_runs(
    connection: Connection, delivery: _Delivery, *, decision: TriggerDecision,
    number: int | None, full_name: str | None, repository: _Repository, payload: dict[str, Any],
    payload_text: str,
) -> IngestOutcome:  # fmt: skip
    """Record a delivery that may start or cancel runs: the row first (so a copy of it waits on
    the unique index and is answered as a duplicate), then the runs, then its final outcome."""
    is_postgres = connection.dialect.name == "postgresql"
    values = _delivery_values(
        delivery, full_name=full_name, repository=repository,
        payload=payload_text if is_postgres else payload, outcome=PROCESSING,
    )  # fmt: skip
    row_id = _claim_delivery(connection, values)
    if row_id is None:
        return _duplicate(connection, delivery)
    if decision.kind is DecisionKind.START_RUN:
        result = _start_run(connection, delivery, decision, repository, payload)
    else:
        result = _cancel(connection, delivery, decision, number, repository)
    connection.execute(_SET_OUTCOME, {"row_id": row_id, "result": result[:MAX_OUTCOME]})
    audit.insert_events(connection=connection, events=delivery.events)
    return delivery.outcome


def _ignore(
    delivery: _Delivery,
    reason: str,
    *,
    project_id: int | None = None,
    message: str = "",
    full_name: str | None = None,
) -> str:
    delivery.outcome.ignored = reason
    delivery.record(
        "delivery_ignored",
        project_id=project_id,
        payload={"reason": reason, "message": message, "repository": full_name},
    )
    return f"ignored:{reason}"


def _refuse(
    delivery: _Delivery, repository: _Repository, decision: TriggerDecision, sender: str | None
) -> str:
    """A trigger from someone who may not start runs: recorded as ignored, with the event the
    reporter turns into the service comment's explanation."""
    assert decision.run is not None
    message = sender_refusal(
        sender, project_key=repository.project_key, allowed_bots=repository.allowed_bots
    )
    reason = Reason.SENDER_NOT_ALLOWED.value
    _ignore(delivery, reason, project_id=repository.project_id, message=message)
    delivery.record(
        "trigger_refused",
        project_id=repository.project_id,
        payload={
            "reason": reason, "message": message, "sender": sender,
            "repository_id": repository.id, "number": decision.run.number,
            "stage": decision.run.stage, "mode": decision.run.mode,
            "trigger": decision.label or decision.run.trigger_label,
        },
    )  # fmt: skip
    return f"ignored:{reason}"


def _issue_title(payload: dict[str, Any]) -> str | None:
    for key in ("issue", "pull_request"):
        item = payload.get(key)
        if isinstance(item, dict) and isinstance(item.get("title"), str):
            return item["title"][:500]
    return None


def _sender_login(payload: dict[str, Any]) -> str | None:
    """The GitHub user whose action sent the delivery (who applied the label)."""
    sender = payload.get("sender")
    login = sender.get("login") if isinstance(sender, dict) else None
    return login[:100] if isinstance(login, str) and login else None


def _already_active(
    delivery: _Delivery, repository: _Repository, spec: RunSpec, run_id: int
) -> str:
    delivery.outcome.ignored = "already_active"
    delivery.record(
        "run_already_active",
        project_id=repository.project_id,
        run_id=run_id,
        payload={"stage": spec.stage, "number": spec.number},
    )
    return "ignored:already_active"


def _start_run(
    connection: Connection,
    delivery: _Delivery,
    decision: TriggerDecision,
    repository: _Repository,
    payload: dict[str, Any],
) -> str:
    spec = decision.run
    assert spec is not None
    # The repository lock and the check under it are shared with manual starts (run_start).
    inserted = run_start.insert_run_locked(
        connection,
        project_id=repository.project_id,
        repository_id=repository.id,
        spec=spec,
        issue_title=_issue_title(payload),
        delivery_id=delivery.outcome.delivery_id,
        requested_by_login=_sender_login(payload),
    )
    if inserted.run_id is None:
        assert inserted.active_run_id is not None
        return _already_active(delivery, repository, spec, inserted.active_run_id)
    run_id, model = inserted.run_id, inserted.model
    delivery.outcome.runs.append(run_id)
    delivery.record(
        "run_created",
        project_id=repository.project_id,
        run_id=run_id,
        payload={
            "stage": spec.stage,
            "agent": spec.role.value,
            "number": spec.number,
            "is_pull_request": spec.is_pull_request,
            "is_revise": spec.is_revise,
            "trigger_label": spec.trigger_label,
            "model": model,
            "reasoning_effort": inserted.reasoning_effort,
            "mode": spec.mode,
        },
    )
    return "run_created"


def _cancel(
    connection: Connection,
    delivery: _Delivery,
    decision: TriggerDecision,
    number: int | None,
    repository: _Repository,
) -> str:
    outcome = delivery.outcome
    # Built per call (unlike the hot statements): a None number must compile to IS NULL.
    query = sa.select(_RUNS.c.id, _RUNS.c.status, _RUNS.c.project_id).where(
        _RUNS.c.repository_id == repository.id,
        _RUNS.c.issue_number == number,
        _RUNS.c.status.in_(_ACTIVE_STATUS_VALUES),
    )
    if decision.kind is DecisionKind.CANCEL_PENDING_FOR_LABEL:
        query = query.where(
            _RUNS.c.status == RunStatus.PENDING.value, _RUNS.c.trigger_label == decision.label
        )
    reason = (
        "label_removed"
        if decision.kind is DecisionKind.CANCEL_PENDING_FOR_LABEL
        else str(decision.reason)
    )
    now = utcnow()
    for run_id, status, project_id in connection.execute(query.with_for_update()).all():
        # Nothing runs yet: cancel right away, guarded against a dispatcher claiming it now. The
        # event goes with the delivery's others (`run_states.transition` would write it at once).
        if status == RunStatus.PENDING.value and run_states.change_status(
            connection, run_id=run_id, from_statuses=[RunStatus.PENDING],
            to_status=RunStatus.CANCELED, reason=reason,
            values={"finished_at": now, "cancel_requested_at": now, "cancel_reason": reason},
        ):  # fmt: skip
            outcome.canceled.append(run_id)
            delivery.record(
                "run_canceled", project_id=project_id, run_id=run_id,
                payload={"reason": reason, "from": RunStatus.PENDING.value},
            )  # fmt: skip
            continue
        connection.execute(
            sa.update(_RUNS)
            .where(_RUNS.c.id == run_id, _RUNS.c.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, cancel_reason=reason)
        )
        outcome.cancel_requested.append(run_id)
        delivery.record(
            "run_cancel_requested", project_id=project_id, run_id=run_id,
            payload={"reason": reason},
        )  # fmt: skip
    if not outcome.canceled and not outcome.cancel_requested:
        return _ignore(delivery, "nothing_to_cancel", project_id=repository.project_id)
    return reason
