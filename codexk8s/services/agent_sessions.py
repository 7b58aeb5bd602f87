"""Resumable agent sessions: the Codex session a succeeded run leaves, kept by the control plane
for the next run of its lineage (issue #19).

A run's pod (or work folder) dies with the run, so the runner uploads its session — Codex's
rollout file, gzip-compressed — at the end of a successful engine run, and a later run of the
same lineage downloads it at the start and resumes it (`codex exec resume`) instead of starting
cold. Here:

- **Lineage**: runs of one repository, stage, agent and mode (work or discussion) on one issue
  or its pull requests. A revise run resumes the newest session a *succeeded* run of its lineage
  left (failed runs' half-done sessions are never resumed); so does every discussion turn after
  the first. A fresh `run:<stage>` never resumes: starting over is what it asks for.
- **Versions**: a session that resumed version N is stored as N + 1 (`parent_session_id`); only
  the newest two of a chain keep their data, older ones are deleted when a new one arrives.
- **At rest**: the gzip blob is encrypted with the secret box (`data_ciphertext`, rotated by
  `secrets rotate`); it holds the prompts and command output of the run. The control plane's
  own secrets (model key, repository and global GitHub tokens) are scrubbed from it before it is
  stored, on top of the runner's own masking, and nothing of it is ever logged.
- **Limits**: CODEXK8S_AGENT_SESSION_MAX_BYTES compressed (413 above), 16 times that
  uncompressed (a gzip bomb is refused, not inflated); one upload per run (a second is 409, the
  same body again is accepted as the retry of a lost answer).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codexk8s.config import Settings, get_settings
from codexk8s.crypto import DecryptionError, SecretBox, get_secret_box
from codexk8s.db.engine import get_engine
from codexk8s.db.models import AgentRun, AgentSession, Repository, table_of, utcnow
from codexk8s.domain.runs import RunMode, RunStatus
from codexk8s.domain.sessions import is_session_path, is_thread_id
from codexk8s.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
)
from codexk8s.services import repositories
from codexk8s.services.run_states import add_event

SESSIONS: sa.Table = table_of(AgentSession)
RUNS: sa.Table = table_of(AgentRun)
REPOSITORIES: sa.Table = table_of(Repository)

STORED_EVENT = "session_stored"
RESUME_EVENT = "session_resume_started"
# How much larger than its compressed size a session may inflate to.
MAX_INFLATION = 16
REDACTED = b"[redacted]"


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A stored session a run may resume."""

    id: int
    version: int
    thread_id: str
    path: str
    run_id: int
    # When the run that left it started: comments after this are new to the session.
    started_at: datetime | None

    def as_brief(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "thread_id": self.thread_id,
            "path": self.path, "from_run": self.run_id,
        }  # fmt: skip


def is_resumable_kind(run: Any) -> bool:
    """Whether RUN continues an earlier session at all: revise runs and discussion turns."""
    return bool(run.is_revise) or run.mode == RunMode.DISCUSSION.value


def _lineage_numbers(connection: Connection, run: Any) -> set[int]:
    """The issue and pull request numbers RUN's lineage spans: a revise run started by a review
    carries the pull request's number, the run that opened the pull request its issue's."""
    numbers = {n for n in (run.issue_number, run.pr_number) if n is not None}
    if not numbers:
        return numbers
    related = connection.execute(
        sa.select(RUNS.c.issue_number, RUNS.c.pr_number).where(
            RUNS.c.repository_id == run.repository_id,
            RUNS.c.stage == run.stage,
            sa.or_(RUNS.c.issue_number.in_(numbers), RUNS.c.pr_number.in_(numbers)),
        )
    ).all()
    for issue_number, pr_number in related:
        numbers.update(n for n in (issue_number, pr_number) if n is not None)
    return numbers


def resumable_for(connection: Connection, run: Any) -> SessionRef | None:
    """The session RUN should resume, or None (a fresh start)."""
    if not is_resumable_kind(run) or run.repository_id is None:
        return None
    numbers = _lineage_numbers(connection, run)
    if not numbers:
        return None
    row = connection.execute(
        sa.select(
            SESSIONS.c.id,
            SESSIONS.c.version,
            SESSIONS.c.thread_id,
            SESSIONS.c.path,
            SESSIONS.c.run_id,
            RUNS.c.started_at,
        )
        .join(RUNS, RUNS.c.id == SESSIONS.c.run_id)
        .where(
            RUNS.c.repository_id == run.repository_id,
            RUNS.c.stage == run.stage,
            RUNS.c.agent_key == run.agent_key,
            RUNS.c.mode == run.mode,
            RUNS.c.status == RunStatus.SUCCEEDED.value,
            RUNS.c.id != run.id,
            sa.or_(RUNS.c.issue_number.in_(numbers), RUNS.c.pr_number.in_(numbers)),
        )
        .order_by(SESSIONS.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return SessionRef(
        id=row.id, version=row.version, thread_id=row.thread_id, path=row.path,
        run_id=row.run_id, started_at=row.started_at,
    )  # fmt: skip


def find_resumable(engine: Engine, *, run: Any) -> SessionRef | None:
    with engine.connect() as connection:
        return resumable_for(connection, run)


def load_for_resume(
    engine: Engine | None = None, *, run: Any, session_id: int | None, box: SecretBox | None = None
) -> tuple[SessionRef, bytes]:
    """The gzip blob of the session RUN resumes (SESSION_ID, when given, must be that one), and
    a `session_resume_started` event. NotFoundError when there is none (or it no longer opens:
    a key rotated away, a pruned version); the runner then starts fresh."""
    engine = engine or get_engine()
    box = box or get_secret_box()
    with engine.begin() as connection:
        ref = resumable_for(connection, run)
        if ref is None or (session_id is not None and ref.id != session_id):
            raise NotFoundError("this run has no session to resume")
        ciphertext = connection.execute(
            sa.select(SESSIONS.c.data_ciphertext).where(SESSIONS.c.id == ref.id)
        ).scalar()
        if ciphertext is None:
            raise NotFoundError("the session's data is gone")
        try:
            data = box.decrypt_bytes(bytes(ciphertext))
        except DecryptionError:
            raise NotFoundError("the stored session does not open with the current keys") from None
        add_event(
            connection, correlation_id=run.correlation_id, event_type=RESUME_EVENT,
            run_id=run.id, project_id=run.project_id, actor_type="agent",
            actor_id=run.agent_key,
            payload={"session_id": ref.id, "version": ref.version, "from_run": ref.run_id,
                     "thread_id": ref.thread_id},
        )  # fmt: skip
    return ref, data


def _inflate(data: bytes, limit: int) -> bytes:
    """DATA gunzipped, refusing more than LIMIT bytes (InvalidArgumentError for no gzip)."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise InvalidArgumentError("the session must be gzip-compressed") from None
    if len(raw) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(f"the session inflates to more than {limit} bytes")
    if not inflater.eof:
        raise InvalidArgumentError("the session's gzip stream is incomplete")
    return raw


def _control_plane_secrets(repository: Any, settings: Settings, box: SecretBox) -> list[bytes]:
    found: list[str | None] = []
    if settings.openai_api_key is not None:
        found.append(settings.openai_api_key.get_secret_value())
    if settings.github_token is not None:
        found.append(settings.github_token.get_secret_value())
    if repository is not None:
        with contextlib.suppress(DecryptionError):
            found.append(repositories.token_for(repository, settings=settings, box=box))
    return sorted({s.encode() for s in found if s and len(s) >= 8}, key=len, reverse=True)


def store(
    engine: Engine | None = None,
    *,
    run: Any,
    body: bytes,
    thread_id: str | None,
    path: str | None,
    parent_id: int | None,
    box: SecretBox | None = None,
) -> dict[str, Any]:
    """Keep RUN's session (BODY: its rollout, gzip-compressed). Validates everything first;
    stores it once per run."""
    engine = engine or get_engine()
    settings = get_settings()
    box = box or get_secret_box()
    limit = settings.agent_session_max_bytes
    if len(body) > limit:
        raise PayloadTooLargeError(f"a session may be at most {limit} bytes compressed")
    if not is_thread_id(thread_id):
        raise InvalidArgumentError("X-Codexk8s-Session-Thread must be the session's UUID")
    if not is_session_path(path, thread_id):
        raise InvalidArgumentError(
            "X-Codexk8s-Session-Path must be sessions/YYYY/MM/DD/rollout-<time>-<thread>.jsonl "
            "of this thread"
        )
    raw = _inflate(body, limit * MAX_INFLATION)
    digest = hashlib.sha256(body).hexdigest()
    with engine.begin() as connection:
        existing = connection.execute(
            sa.select(SESSIONS.c.id, SESSIONS.c.sha256, SESSIONS.c.version).where(
                SESSIONS.c.run_id == run.id
            )
        ).first()
        if existing is not None:
            if existing.sha256 == digest:
                # The retry of an upload whose answer was lost.
                return {"stored": True, "id": existing.id, "version": existing.version}
            raise ConflictError(f"run {run.id} already stored its session")
        repository = (
            connection.execute(
                sa.select(REPOSITORIES).where(REPOSITORIES.c.id == run.repository_id)
            ).first()
            if run.repository_id is not None
            else None
        )
        scrubbed = raw
        for secret in _control_plane_secrets(repository, settings, box):
            scrubbed = scrubbed.replace(secret, REDACTED)
        if scrubbed != raw:
            body = gzip.compress(scrubbed, mtime=0)
        parent = resumable_for(connection, run) if parent_id is not None else None
        if parent is not None and parent.id != parent_id:
            parent = None  # not a session this run could have resumed: a new chain
        version = parent.version + 1 if parent is not None else 1
        session_id = connection.execute(
            SESSIONS.insert()
            .values(
                run_id=run.id, parent_session_id=parent.id if parent else None, version=version,
                thread_id=thread_id, path=path, size_bytes=len(body),
                raw_size_bytes=len(scrubbed), sha256=digest,
                data_ciphertext=box.encrypt_bytes(body), created_at=utcnow(),
            )
            .returning(SESSIONS.c.id)
        ).scalar_one()  # fmt: skip
        if parent is not None:
            # Keep the new version and the one it resumed; older ones of the chain go.
            grandparent = connection.execute(
                sa.select(SESSIONS.c.parent_session_id).where(SESSIONS.c.id == parent.id)
            ).scalar()
            if grandparent is not None:
                connection.execute(SESSIONS.delete().where(SESSIONS.c.id == grandparent))
        add_event(
            connection, correlation_id=run.correlation_id, event_type=STORED_EVENT,
            run_id=run.id, project_id=run.project_id, actor_type="agent",
            actor_id=run.agent_key,
            payload={"session_id": session_id, "version": version, "thread_id": thread_id,
                     "bytes": len(body), "raw_bytes": len(scrubbed),
                     "parent_session_id": parent.id if parent else None,
                     "redacted": scrubbed != raw},
        )  # fmt: skip
    return {"stored": True, "id": session_id, "version": version}
