"""The reporter (Prow's "crier"): shows each run's state on its GitHub issue or pull request.

What changed is found from the flow events: a run is due when it has a GitHub-visible event
(state transitions, `run_result`) newer than its `reported_event_id`. Work is grouped by issue,
and an issue is claimed in `github_feedback` with a compare-and-set lease before anything is
sent, so two replicas never report the same issue at once. Then, for that issue:

1. each new `run_result` opens or updates the run's pull request (reviewer runs post their
   review as a PR comment instead, discussion turns their answer as an issue comment) and
   stores `pr_url` / `pr_number` on the run;
2. the one service comment is created (or found by its hidden marker) and edited when its text
   changes; 3. `state:*` labels follow the newest run; 4. learning mode posts one explanation
   comment and stores it in `learning_feedback`.

Deliveries that started nothing but deserve an explanation (`trigger_refused`: the sender may
not start runs; `trigger_conflict`: conflicting labels) are found the same way, by flow events
newer than the issue's `notice_event_id`; the newest one becomes the service comment's notice
(the whole comment when the issue has no run yet), shown until a newer run exists.

Every step is idempotent, so a failure anywhere just leaves the runs unreported: the issue is
retried after a growing delay (or the rate limit's Retry-After), with the error on the feedback
row and as a `github_feedback_failed` flow event. Nothing is lost, nothing is done twice.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from codexk8s import urls
from codexk8s.adapters.github.client import GitHubClient
from codexk8s.config import Settings
from codexk8s.crypto import DecryptionError, SecretBox
from codexk8s.db.models import (
    FlowEvent,
    GitHubFeedback,
    LearningFeedback,
    Project,
    Repository,
    RunRequest,
    table_of,
    utcnow,
)
from codexk8s.domain.feedback import (
    LABEL_COLORS,
    SERVICE_MARKER,
    RunView,
    WaitingFor,
    discussion_marker,
    learning_marker,
    render_notice_comment,
    render_service_comment,
    review_marker,
    shows_notice,
    state_labels,
)
from codexk8s.domain.repository_provider import (
    ProviderError,
    ProviderRateLimitedError,
    ProviderValidationError,
    PullRequest,
    RepositoryProvider,
    Usage,
)
from codexk8s.domain.run_requests import MILESTONE_EVENT
from codexk8s.domain.runs import RunMode, RunStatus
from codexk8s.domain.stages import REVIEW_STAGE
from codexk8s.errors import CodexK8sError
from codexk8s.services import model_checks, repositories
from codexk8s.services.run_states import RUNS, add_event

log = logging.getLogger(__name__)
FEEDBACK = table_of(GitHubFeedback)
EVENTS = table_of(FlowEvent)
REPOSITORIES = table_of(Repository)
PROJECTS = table_of(Project)
LEARNING = table_of(LearningFeedback)

REQUESTS = table_of(RunRequest)
RUN_RESULT = "run_result"
# Flow events of deliveries that started nothing, explained in the service comment.
NOTICE_EVENTS = ("trigger_refused", "trigger_conflict")
# Flow events whose change GitHub readers see.
VISIBLE_EVENTS = (
    "run_created", "run_pending", "run_starting", "run_running", "run_succeeded", "run_failed",
    "run_canceled", RUN_RESULT, "run_request_opened", "run_request_answered",
    "run_request_approved", "run_request_denied", "run_request_timed_out", MILESTONE_EVENT,
)  # fmt: skip
CLAIM_SECONDS = 120.0
# Most cycles only look at events of the last RECENT_WINDOW (an index range on created_at); every
# FULL_SCAN_EVERY cycles (and the first) look at all, for anything older still unreported.
RECENT_WINDOW = timedelta(hours=1)
FULL_SCAN_EVERY = 100
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
EARLIER_RUNS = 5


@dataclass(slots=True)
class ReportResult:
    reported: list[tuple[int, int]] = field(default_factory=list)
    failed: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    repository_id: int
    project_id: int
    project_key: str
    owner: str
    name: str
    token: str | None = field(repr=False)


def _aware(value: Any) -> Any:
    # SQLite hands timestamps back without their zone; they were stored in UTC.
    if value is not None and getattr(value, "tzinfo", None) is None:
        return value.replace(tzinfo=UTC)
    return value


def retry_delay(attempts: int) -> float:
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2 ** max(0, attempts - 1)))


def _insert_ignore(connection: Connection) -> Any:
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    return insert(FEEDBACK).on_conflict_do_nothing(index_elements=["repository_id", "issue_number"])


class GitHubFeedback:
    """Reports runs to GitHub. `report_once` is the leader job's body; safe on any replica."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        box: SecretBox,
        owner: str,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.box = box
        self.owner = owner
        self.client_options = client_options or {}
        self._labels_ready: set[tuple[int, str]] = set()
        self._cycles = 0

    def client(self, token: str) -> GitHubClient:
        return GitHubClient(
            token=token, api_url=self.settings.github_api_url, **self.client_options
        )

    def run_url(self, run_id: int) -> str:
        return f"{self.settings.effective_public_url}{urls.run_page(run_id)}"

    # --- finding and claiming work ---------------------------------------------------------------

    def _due(self, batch: int, *, full: bool) -> dict[tuple[int, int], dict[int, int]]:
        """(repository, issue) → {run id: newest visible event id} for issues ready to report."""
        now = utcnow()
        newest = sa.func.max(EVENTS.c.id).label("newest")
        ready = sa.or_(
            FEEDBACK.c.id.is_(None),
            sa.and_(
                sa.or_(FEEDBACK.c.claimed_until.is_(None), FEEDBACK.c.claimed_until < now),
                sa.or_(FEEDBACK.c.retry_after.is_(None), FEEDBACK.c.retry_after <= now),
            ),
        )
        query = (
            sa.select(RUNS.c.repository_id, RUNS.c.issue_number, RUNS.c.id, newest)
            .select_from(
                RUNS.join(EVENTS, EVENTS.c.run_id == RUNS.c.id).outerjoin(
                    FEEDBACK,
                    sa.and_(
                        FEEDBACK.c.repository_id == RUNS.c.repository_id,
                        FEEDBACK.c.issue_number == RUNS.c.issue_number,
                    ),
                )
            )
            .where(
                RUNS.c.repository_id.is_not(None),
                RUNS.c.issue_number.is_not(None),
                EVENTS.c.event_type.in_(VISIBLE_EVENTS),
                EVENTS.c.id > sa.func.coalesce(RUNS.c.reported_event_id, 0),
                ready,
                sa.true() if full else EVENTS.c.created_at > now - RECENT_WINDOW,
            )
            .group_by(RUNS.c.repository_id, RUNS.c.issue_number, RUNS.c.id)
            .order_by(sa.func.min(EVENTS.c.id))
            .limit(batch * 4)
        )
        due: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                key = (row.repository_id, row.issue_number)
                if key in due or len(due) < batch:
                    due[key][row.id] = row.newest
        return dict(due)

    def _due_notices(self, batch: int, *, full: bool) -> dict[tuple[int, int], int]:
        """(repository, issue) → the newest notice event not yet shown, for issues ready."""
        now = utcnow()
        repository_id = EVENTS.c.payload["repository_id"].as_integer()
        number = EVENTS.c.payload["number"].as_integer()
        newest = sa.func.max(EVENTS.c.id).label("newest")
        query = (
            sa.select(repository_id.label("repository_id"), number.label("number"), newest)
            .select_from(
                EVENTS.outerjoin(
                    FEEDBACK,
                    sa.and_(
                        FEEDBACK.c.repository_id == repository_id,
                        FEEDBACK.c.issue_number == number,
                    ),
                )
            )
            .where(
                EVENTS.c.event_type.in_(NOTICE_EVENTS),
                # Conflicts recorded before notices existed name no issue.
                repository_id.is_not(None),
                number.is_not(None),
                EVENTS.c.id > sa.func.coalesce(FEEDBACK.c.notice_event_id, 0),
                sa.or_(
                    FEEDBACK.c.id.is_(None),
                    sa.and_(
                        sa.or_(FEEDBACK.c.claimed_until.is_(None), FEEDBACK.c.claimed_until < now),
                        sa.or_(FEEDBACK.c.retry_after.is_(None), FEEDBACK.c.retry_after <= now),
                    ),
                ),
                sa.true() if full else EVENTS.c.created_at > now - RECENT_WINDOW,
            )
            .group_by(repository_id, number)
            .order_by(newest)
            .limit(batch)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        # A repository deleted since (its id no longer exists) is skipped by `_target`.
        return {
            (row.repository_id, row.number): row.newest
            for row in rows
            if row.repository_id is not None and row.number is not None
        }

    def _load_notice(self, event_id: int) -> tuple[str, Any]:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(EVENTS.c.payload, EVENTS.c.created_at).where(EVENTS.c.id == event_id)
            ).one()
        return str((row.payload or {}).get("message") or ""), row.created_at

    def _store_notice(
        self, repository_id: int, issue_number: int, notice: str, notice_at: Any
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                FEEDBACK.update()
                .where(
                    FEEDBACK.c.repository_id == repository_id,
                    FEEDBACK.c.issue_number == issue_number,
                )
                .values(notice=notice, notice_at=notice_at)
            )

    def _claim(self, repository_id: int, issue_number: int) -> bool:
        """Compare-and-set lease on the issue's feedback row (created on first use)."""
        now = utcnow()
        with self.engine.begin() as connection:
            connection.execute(
                _insert_ignore(connection).values(
                    repository_id=repository_id, issue_number=issue_number, attempts=0,
                    updated_at=now,
                )
            )  # fmt: skip
            claimed = connection.execute(
                FEEDBACK.update()
                .where(
                    FEEDBACK.c.repository_id == repository_id,
                    FEEDBACK.c.issue_number == issue_number,
                    sa.or_(FEEDBACK.c.claimed_until.is_(None), FEEDBACK.c.claimed_until < now),
                    sa.or_(FEEDBACK.c.retry_after.is_(None), FEEDBACK.c.retry_after <= now),
                )
                .values(claimed_by=self.owner, claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            ).rowcount
        return bool(claimed)

    def _feedback_row(self, repository_id: int, issue_number: int) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(FEEDBACK).where(
                    FEEDBACK.c.repository_id == repository_id,
                    FEEDBACK.c.issue_number == issue_number,
                )
            ).one()

    def _release(
        self, repository_id: int, issue_number: int, runs: dict[int, int], *, error: str | None,
        retry_after: float | None = None, comment: tuple[int, str] | None = None,
        notice_event_id: int | None = None,
    ) -> None:  # fmt: skip
        """End the claim: mark RUNS reported on success, or schedule the retry on failure."""
        now = utcnow()
        mine = sa.and_(
            FEEDBACK.c.repository_id == repository_id,
            FEEDBACK.c.issue_number == issue_number,
            FEEDBACK.c.claimed_by == self.owner,
        )
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(FEEDBACK.c.attempts).where(mine)).first()
            if row is None:
                return  # our lease expired and someone else took over: leave their state alone
            values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "updated_at": now}
            if comment is not None:
                values.update(comment_id=comment[0], body_sha256=comment[1])
            if error is None:
                values.update(attempts=0, last_error=None, retry_after=None)
                if notice_event_id is not None:
                    values["notice_event_id"] = (
                        sa.func.greatest(
                            sa.func.coalesce(FEEDBACK.c.notice_event_id, 0), notice_event_id
                        )
                        if connection.dialect.name == "postgresql"
                        else sa.func.max(
                            sa.func.coalesce(FEEDBACK.c.notice_event_id, 0), notice_event_id
                        )
                    )
                for run_id, newest in runs.items():
                    connection.execute(
                        RUNS.update()
                        .where(
                            RUNS.c.id == run_id,
                            sa.func.coalesce(RUNS.c.reported_event_id, 0) < newest,
                        )
                        .values(reported_event_id=newest)
                    )
            else:
                attempts = row.attempts + 1
                delay = max(retry_after or 0.0, retry_delay(attempts))
                values.update(
                    attempts=attempts, last_error=error[:2000],
                    retry_after=now + timedelta(seconds=delay),
                )  # fmt: skip
                failure = {"error": error[:500], "attempt": attempts, "retry_in": delay}
                if runs:
                    latest = max(runs)
                    run = connection.execute(
                        sa.select(RUNS.c.correlation_id, RUNS.c.project_id).where(
                            RUNS.c.id == latest
                        )
                    ).one()
                    add_event(
                        connection, correlation_id=run.correlation_id, run_id=latest,
                        project_id=run.project_id, event_type="github_feedback_failed",
                        payload=failure,
                    )  # fmt: skip
                else:
                    add_event(
                        connection, correlation_id=f"feedback-{repository_id}-{issue_number}",
                        event_type="github_feedback_failed",
                        payload={**failure, "repository_id": repository_id,
                                 "number": issue_number},
                    )  # fmt: skip
            connection.execute(FEEDBACK.update().where(mine).values(**values))

    # --- the job ---------------------------------------------------------------------------------

    async def report_once(self, *, batch: int = 20) -> ReportResult:
        result = ReportResult()
        full = self._cycles % FULL_SCAN_EVERY == 0
        self._cycles += 1
        due = await asyncio.to_thread(functools.partial(self._due, batch, full=full))
        for (repository_id, issue_number), runs in due.items():
            if not await asyncio.to_thread(self._claim, repository_id, issue_number):
                continue
            key = (repository_id, issue_number)
            comment: tuple[int, str] | None = None
            try:
                target = await asyncio.to_thread(self._target, repository_id)
                if target.token is None:
                    log.warning("repository %s has no token: GitHub feedback skipped", target.name)
                    await asyncio.to_thread(self._release, *key, runs, error=None)
                    result.skipped.append(key)
                    continue
                comment = await self._report_issue(target, issue_number, runs)
            except ProviderRateLimitedError as exc:
                await asyncio.to_thread(
                    self._release, *key, runs, error=str(exc), retry_after=exc.retry_after
                )
                result.failed.append(key)
                continue
            except (ProviderError, CodexK8sError, DecryptionError) as exc:
                log.warning(
                    "GitHub feedback for %s#%s failed: %s", repository_id, issue_number, exc
                )
                await asyncio.to_thread(self._release, *key, runs, error=str(exc))
                result.failed.append(key)
                continue
            except Exception as exc:
                log.exception("GitHub feedback for %s#%s failed", repository_id, issue_number)
                await asyncio.to_thread(
                    self._release, *key, runs, error=f"internal error: {type(exc).__name__}"
                )
                result.failed.append(key)
                continue
            await asyncio.to_thread(self._release, *key, runs, error=None, comment=comment)
            result.reported.append(key)
        notices = await asyncio.to_thread(functools.partial(self._due_notices, batch, full=full))
        for key, event_id in notices.items():
            if key in due or not await asyncio.to_thread(self._claim, *key):
                continue
            await self._report_notice(key, event_id, result)
        return result

    async def _report_notice(
        self, key: tuple[int, int], event_id: int, result: ReportResult
    ) -> None:
        """Put the newest notice of an issue into its service comment (creating it when the
        issue has no run yet)."""
        repository_id, issue_number = key
        comment: tuple[int, str] | None = None
        try:
            target = await asyncio.to_thread(self._target, repository_id)
            if target.token is None:
                await asyncio.to_thread(
                    self._release, *key, {}, error=None, notice_event_id=event_id
                )
                result.skipped.append(key)
                return
            notice, notice_at = await asyncio.to_thread(self._load_notice, event_id)
            await asyncio.to_thread(self._store_notice, *key, notice, notice_at)
            rows = await asyncio.to_thread(self._issue_runs, repository_id, issue_number)
            async with self.client(target.token) as github:
                comment = await self._upsert_comment(
                    github, target, issue_number, [self._view(row) for row in rows]
                )
        except sa.exc.NoResultFound:
            # The repository was removed since: nothing to tell anyone.
            await asyncio.to_thread(self._release, *key, {}, error=None, notice_event_id=event_id)
            result.skipped.append(key)
            return
        except ProviderRateLimitedError as exc:
            await asyncio.to_thread(
                self._release, *key, {}, error=str(exc), retry_after=exc.retry_after
            )
            result.failed.append(key)
            return
        except (ProviderError, CodexK8sError, DecryptionError) as exc:
            log.warning("GitHub notice for %s#%s failed: %s", repository_id, issue_number, exc)
            await asyncio.to_thread(self._release, *key, {}, error=str(exc))
            result.failed.append(key)
            return
        except Exception as exc:
            log.exception("GitHub notice for %s#%s failed", repository_id, issue_number)
            await asyncio.to_thread(
                self._release, *key, {}, error=f"internal error: {type(exc).__name__}"
            )
            result.failed.append(key)
            return
        await asyncio.to_thread(
            self._release, *key, {}, error=None, comment=comment, notice_event_id=event_id
        )
        result.reported.append(key)

    def _target(self, repository_id: int) -> _Target:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(
                    REPOSITORIES.c.project_id, REPOSITORIES.c.owner, REPOSITORIES.c.name,
                    REPOSITORIES.c.token_ciphertext, REPOSITORIES.c.global_token_allowed,
                    PROJECTS.c.key,
                )
                .join(PROJECTS, PROJECTS.c.id == REPOSITORIES.c.project_id)
                .where(REPOSITORIES.c.id == repository_id)
            ).one()  # fmt: skip
        token = repositories.token_for(row, settings=self.settings, box=self.box)
        return _Target(repository_id, row.project_id, row.key, row.owner, row.name, token)

    def _issue_runs(self, repository_id: int, issue_number: int) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(RUNS)
                    .where(
                        RUNS.c.repository_id == repository_id,
                        RUNS.c.issue_number == issue_number,
                    )
                    .order_by(RUNS.c.id.desc())
                    .limit(EARLIER_RUNS + 1)
                ).all()
            )

    def _new_results(self, run_ids: list[int]) -> dict[int, tuple[int, dict[str, Any]]]:
        """Each run's newest `run_result` event that it has not reported yet."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(EVENTS.c.run_id, EVENTS.c.id, EVENTS.c.payload)
                .join(RUNS, RUNS.c.id == EVENTS.c.run_id)
                .where(
                    EVENTS.c.run_id.in_(run_ids),
                    EVENTS.c.event_type == RUN_RESULT,
                    EVENTS.c.id > sa.func.coalesce(RUNS.c.reported_event_id, 0),
                )
                .order_by(EVENTS.c.id)
            ).all()
        return {row.run_id: (row.id, dict(row.payload or {})) for row in rows}

    async def _report_issue(
        self, target: _Target, issue_number: int, runs: dict[int, int]
    ) -> tuple[int, str]:
        assert target.token is not None
        results = await asyncio.to_thread(self._new_results, sorted(runs))
        async with self.client(target.token) as github:
            for run_id in sorted(results):
                await self._apply_result(github, target, run_id, results[run_id][1])
            rows = await asyncio.to_thread(self._issue_runs, target.repository_id, issue_number)
            views = [self._view(row) for row in rows]
            comment = await self._upsert_comment(github, target, issue_number, views)
            await self._apply_labels(github, target, issue_number, views[0])
            for row in rows:
                is_work = row.mode != RunMode.DISCUSSION.value
                if row.id in results and row.learning_mode and row.pr_number and is_work:
                    await self._learning(github, target, row, results[row.id][1])
        return comment

    def _view(self, row: Any) -> RunView:
        return RunView(
            run_id=row.id, status=row.status, stage=row.stage, is_revise=row.is_revise,
            run_url=self.run_url(row.id), trigger_label=row.trigger_label,
            status_reason=row.status_reason, status_message=row.status_message, model=row.model,
            reasoning_effort=row.reasoning_effort, pr_url=row.pr_url, pr_number=row.pr_number,
            summary=row.summary, mode=row.mode, created_at=_aware(row.created_at),
            waiting_for=self._waiting_for(row) if row.waiting_since is not None else None,
            milestone=None if RunStatus(row.status).is_terminal else self._milestone(row),
        )  # fmt: skip

    def _milestone(self, row: Any) -> str | None:
        with self.engine.connect() as connection:
            payload = connection.execute(
                sa.select(EVENTS.c.payload)
                .where(EVENTS.c.run_id == row.id, EVENTS.c.event_type == MILESTONE_EVENT)
                .order_by(EVENTS.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return str((payload or {}).get("message") or "") or None

    def _waiting_for(self, row: Any) -> WaitingFor | None:
        with self.engine.connect() as connection:
            request = connection.execute(
                sa.select(REQUESTS.c.id, REQUESTS.c.kind, REQUESTS.c.text)
                .where(REQUESTS.c.run_id == row.id, REQUESTS.c.status == "pending")
                .order_by(REQUESTS.c.id)
                .limit(1)
            ).first()
        if request is None:
            return None
        return WaitingFor(request_id=request.id, kind=request.kind, text=request.text)

    # --- steps -----------------------------------------------------------------------------------

    async def _apply_result(
        self, github: RepositoryProvider, target: _Target, run_id: int, result: dict[str, Any]
    ) -> None:
        with self.engine.connect() as connection:
            run = connection.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).one()
        summary = str(result.get("summary") or "").strip() or None
        if run.mode == RunMode.DISCUSSION.value:
            # The answer goes on the issue (or PR) as a comment of its own; its marker makes a
            # retry find it instead of posting it twice, and ingest ignore it as a trigger.
            if summary:
                number = run.issue_number or run.pr_number
                marker = discussion_marker(run_id)
                if await github.find_comment(target.owner, target.name, number, marker) is None:
                    footer = f"<sub>codexk8s discussion · run [#{run_id}]({self.run_url(run_id)})"
                    footer += f" · `{run.model}`</sub>" if run.model else "</sub>"
                    await github.create_comment(
                        target.owner, target.name, number, f"{marker}\n{summary}\n\n{footer}\n"
                    )
            await asyncio.to_thread(self._store_result, run_id, None, summary)
            return
        if run.stage == REVIEW_STAGE:
            body = str(result.get("review_body") or "").strip()
            if body:
                number = run.pr_number or run.issue_number
                marker = review_marker(run_id)
                if await github.find_comment(target.owner, target.name, number, marker) is None:
                    await github.create_comment(
                        target.owner, target.name, number, f"{marker}\n{body}\n"
                    )
            await asyncio.to_thread(self._store_result, run_id, None, summary)
            return
        branch = str(result.get("branch") or "").strip()
        if not branch:
            await asyncio.to_thread(self._store_result, run_id, None, summary)
            return
        title = str(result.get("pr_title") or "").strip() or f"{run.stage}: #{run.issue_number}"
        body = (
            f"{str(result.get('pr_body') or '').strip()}\n\n---\n"
            f"<sub>codexk8s run [#{run_id}]({self.run_url(run_id)}) for #{run.issue_number}</sub>"
        )
        pull = await github.find_open_pull(target.owner, target.name, branch)
        if pull is None:
            base = str(result.get("base_branch") or "").strip()
            if not base:
                base = (await github.get_repository(target.owner, target.name)).default_branch
            try:
                pull = await github.create_pull(
                    target.owner, target.name, head=branch, base=base, title=title, body=body
                )
            except ProviderValidationError:
                # Opened meanwhile (a retry after an answer we never saw): adopt it.
                pull = await github.find_open_pull(target.owner, target.name, branch)
                if pull is None:
                    raise
        else:
            pull = await github.update_pull(
                target.owner, target.name, pull.number, title=title, body=body
            )
        await asyncio.to_thread(self._store_result, run_id, pull, summary)

    def _store_result(self, run_id: int, pull: PullRequest | None, summary: str | None) -> None:
        values: dict[str, Any] = {}
        if pull is not None:
            values.update(pr_url=pull.html_url, pr_number=pull.number)
        if summary:
            values["summary"] = summary
        if values:
            with self.engine.begin() as connection:
                connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(**values))

    async def _upsert_comment(
        self, github: RepositoryProvider, target: _Target, issue_number: int, views: list[RunView]
    ) -> tuple[int, str]:
        row = await asyncio.to_thread(self._feedback_row, target.repository_id, issue_number)
        notice_at = _aware(row.notice_at) if row.notice_at is not None else None
        newest = views[0] if views else None
        notice = row.notice if row.notice and shows_notice(newest, notice_at) else None
        if newest is None:
            body = render_notice_comment(notice or "")
        else:
            body = render_service_comment(newest, views[1:], notice=notice)
        digest = hashlib.sha256(body.encode()).hexdigest()
        if row.comment_id is not None and row.body_sha256 == digest:
            return row.comment_id, digest
        owner, name = target.owner, target.name
        if row.comment_id is not None:
            try:
                await github.update_comment(owner, name, row.comment_id, body)
                return row.comment_id, digest
            except ProviderError as exc:
                if exc.status != 404:
                    raise  # 404: someone deleted it; find or recreate below
        found = await github.find_comment(owner, name, issue_number, SERVICE_MARKER)
        if found is not None:
            if found.body != body:
                await github.update_comment(owner, name, found.id, body)
            return found.id, digest
        created = await github.create_comment(owner, name, issue_number, body)
        # Stored at once: if a later step fails, the retry edits this comment instead of
        # searching for it.
        await asyncio.to_thread(self._store_comment, target.repository_id, issue_number, created.id)
        return created.id, digest

    def _store_comment(self, repository_id: int, issue_number: int, comment_id: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                FEEDBACK.update()
                .where(
                    FEEDBACK.c.repository_id == repository_id,
                    FEEDBACK.c.issue_number == issue_number,
                )
                .values(comment_id=comment_id, body_sha256=None)
            )

    async def _apply_labels(
        self, github: RepositoryProvider, target: _Target, issue_number: int, view: RunView
    ) -> None:
        plan = state_labels(view)
        for label in plan.add:
            if (target.repository_id, label) not in self._labels_ready:
                await github.ensure_label(
                    target.owner, target.name, label, color=LABEL_COLORS.get(label, "ededed"),
                    description="Set by codexk8s",
                )  # fmt: skip
                self._labels_ready.add((target.repository_id, label))
        await github.add_labels(target.owner, target.name, issue_number, plan.add)
        for label in plan.remove:
            await github.remove_label(target.owner, target.name, issue_number, label)

    async def _learning(
        self, github: RepositoryProvider, target: _Target, run: Any, result: dict[str, Any]
    ) -> None:
        """One learning comment per run on its PR, stored in learning_feedback."""
        if await asyncio.to_thread(self._has_learning, run.id):
            return
        marker = learning_marker(run.id)
        existing = await github.find_comment(target.owner, target.name, run.pr_number, marker)
        if existing is not None:
            # Posted before a crash that kept it from being stored: store what was posted.
            await asyncio.to_thread(
                self._store_learning, run, [model_checks.Explanation(None, existing.body)], Usage()
            )
            return
        if not model_checks.is_configured(self.settings) or not run.model:
            log.info("learning mode on for run %s but no model is configured; skipped", run.id)
            return
        explanations, usage = await model_checks.explain_changes(
            settings=self.settings, model=run.model,
            title=str(result.get("pr_title") or run.issue_title or ""),
            summary=str(result.get("summary") or ""),
            changed_files=[str(p) for p in result.get("changed_files") or []],
            project_key=target.project_key,
        )  # fmt: skip
        if explanations:
            await github.create_comment(
                target.owner, target.name, run.pr_number,
                model_checks.render_learning_comment(marker, explanations),
            )  # fmt: skip
        await asyncio.to_thread(self._store_learning, run, explanations, usage)

    def _has_learning(self, run_id: int) -> bool:
        with self.engine.connect() as connection:
            return (
                connection.execute(
                    sa.select(LEARNING.c.id)
                    .where(LEARNING.c.run_id == run_id, LEARNING.c.kind == "post_pr")
                    .limit(1)
                ).first()
                is not None
            )

    def _store_learning(
        self, run: Any, explanations: list[model_checks.Explanation], usage: Usage
    ) -> None:
        now = utcnow()
        with self.engine.begin() as connection:
            if explanations:
                connection.execute(
                    LEARNING.insert(),
                    [
                        {"run_id": run.id, "file_path": item.file_path, "kind": "post_pr",
                         "explanation": item.text, "created_at": now}
                        for item in explanations
                    ],
                )  # fmt: skip
            connection.execute(
                RUNS.update()
                .where(RUNS.c.id == run.id)
                .values(
                    tokens_input=RUNS.c.tokens_input + usage.input,
                    tokens_cached=RUNS.c.tokens_cached + usage.cached,
                    tokens_output=RUNS.c.tokens_output + usage.output,
                    tokens_reasoning=RUNS.c.tokens_reasoning + usage.reasoning,
                )
            )
