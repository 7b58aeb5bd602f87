"""The control loop inside a control-plane process: it schedules the dispatcher, the reconciler
and the leader's jobs, and holds leadership.

Every replica dispatches (claims are safe with SKIP LOCKED). One replica at a time, the leader,
runs what must not run twice: the runtime watch, the safety sweep, lease renewal and expiry,
cancellation delivery, deadline checks, log pumps, log retention and compaction, cleanup, GitHub
feedback (the reporter) and redelivery of failed webhooks. Leadership is a PostgreSQL
session-level advisory lock held on a dedicated connection; when that connection drops, another
replica takes over and resumes from what is stored (log cursors, runtime handles). On SQLite (the
embedded, single-process default) the one process is always the leader. The log pumps are
services/log_pumps.py; this module starts, rescans and stops them.

Timers run on APScheduler's AsyncIOScheduler; every job is `max_instances=1` and coalesced, so
a slow cycle delays the next one instead of stacking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import Engine

from codexk8s import metrics
from codexk8s.domain.logs import LogPolicy
from codexk8s.domain.runs import TERMINAL_STATUSES
from codexk8s.domain.runtime import Runtime, WorkloadPhase
from codexk8s.domain.slots import LEASE_RENEW_SECONDS
from codexk8s.logging_config import bound_contextvars
from codexk8s.services import (
    dispatch,
    log_maintenance,
    notifications,
    reconcile,
    webhook_redelivery,
)
from codexk8s.services.github_feedback import GitHubFeedback
from codexk8s.services.log_pumps import LogPumps

log = logging.getLogger(__name__)
# Its log lines still say "engine" ("engine stopped", "engine job … failed"): operators' log
# queries look for those words (docs/decisions.md).
LEADER_LOCK_KEY = 0x636B3873  # "ck8s": one advisory lock per database
# On shutdown, a dispatch that already claimed runs gets this long to record their launches.
STOP_JOBS_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ControlLoopTimings:
    dispatch_seconds: float = 1.0
    leader_seconds: float = 2.0
    sweep_seconds: float = 30.0
    lease_seconds: float = LEASE_RENEW_SECONDS
    cleanup_seconds: float = 300.0
    cancel_grace_seconds: float = 10.0
    feedback_seconds: float = 3.0
    redelivery_seconds: float = 120.0
    log_maintenance_seconds: float = 10.0


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Leadership:
    """The PostgreSQL advisory lock that makes one replica the leader."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: sa.Connection | None = None

    def try_acquire(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.DBAPIError:
                self.release()  # the session (and its lock) is gone
        connection = self.engine.connect()
        try:
            held = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
            ).scalar_one()
            connection.commit()
        except sa.exc.DBAPIError:
            connection.close()
            return False
        if held:
            self._connection = connection
            return True
        connection.close()
        return False

    def release(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY}
            )
            self._connection.commit()
        except sa.exc.DBAPIError:
            pass
        finally:
            self._connection.close()
            self._connection = None


class ControlLoop:
    """One process's dispatcher and, while it leads, the leader's jobs, each on its timer."""

    def __init__(
        self,
        *,
        engine: Engine,
        runtime: Runtime,
        callback_url: str,
        timings: ControlLoopTimings | None = None,
        owner: str | None = None,
        feedback: GitHubFeedback | None = None,
        model_check: dispatch.ModelCheck | None = None,
        cleanup_after: timedelta = reconcile.CLEANUP_AFTER,
        log_policy: LogPolicy | None = None,
    ) -> None:
        self.engine = engine
        # The per-run log cap (pumps) and the default retention (log maintenance).
        self.log_policy = log_policy or LogPolicy()
        self.log_pumps = LogPumps(engine, runtime, limits=self.log_policy.limits)
        # How long finished runs keep their namespace or work folder (CLEANUP_AFTER_HOURS).
        self.cleanup_after = cleanup_after
        self.runtime = runtime
        self.callback_url = callback_url
        self.timings = timings or ControlLoopTimings()
        self.owner = owner or replica_id()
        # GitHub reporting and webhook redelivery (leader jobs); None turns both off.
        self.feedback = feedback
        self.model_check = model_check
        self.leadership = Leadership(engine)
        self.is_leader = False
        self._scheduler: AsyncIOScheduler | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._running_jobs: set[asyncio.Task[Any]] = set()
        self._dispatch_lock = asyncio.Lock()
        self._nudges: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        scheduler = AsyncIOScheduler()
        jobs: list[tuple[Callable[[], Awaitable[Any]], float]] = [
            (self.dispatch_once, self.timings.dispatch_seconds),
            (self.leader_tick, self.timings.leader_seconds),
            (self.sweep_once, self.timings.sweep_seconds),
            (self.leases_once, self.timings.lease_seconds),
            (self.cleanup_once, self.timings.cleanup_seconds),
            (self.report_once, self.timings.feedback_seconds),
            (self.redeliver_once, self.timings.redelivery_seconds),
            (self.maintain_logs_once, self.timings.log_maintenance_seconds),
        ]
        for job, seconds in jobs:
            scheduler.add_job(
                self._guarded(job), "interval", seconds=seconds, max_instances=1, coalesce=True,
                id=job.__name__, next_run_time=None,
            )  # fmt: skip
        scheduler.start()
        self._scheduler = scheduler
        # Adopt what the runtime runs now and settle what vanished, before anything new starts.
        await self.leader_tick()
        if self.is_leader:
            await self.sweep_once()
        for job in scheduler.get_jobs():
            job.modify(next_run_time=datetime.now(UTC))
        self._nudges = asyncio.create_task(self._dispatch_on_changes(), name="control-loop-nudges")

    async def _dispatch_on_changes(self) -> None:
        """Dispatch as soon as a project changes (a webhook or a person started a run, a run
        ended and freed a slot), here or on another replica, instead of at the next tick: the
        timer stays as the safety net. Changes that arrive during a dispatch cause one more."""
        async for topic in notifications.subscribe():
            if not topic.startswith("project-"):
                continue
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch after a change failed; the timer tries again")

    async def stop(self, *, jobs_timeout: float = STOP_JOBS_SECONDS) -> None:
        """Stop in an order that strands nothing: no new cycles; let a running dispatch record
        the launches it began; stop the leader's watch and pumps (a pump stores what it holds);
        hand this replica's slot leases back; give up leadership."""
        if self._nudges is not None:
            self._nudges.cancel()
            await asyncio.gather(self._nudges, return_exceptions=True)
            self._nudges = None
        if self._scheduler is not None:
            self._scheduler.pause()  # no new cycles; shutdown() would cancel the running ones
        await self._wait_running_jobs(jobs_timeout)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        await self._stop_leader_work()
        try:
            released = await asyncio.to_thread(
                reconcile.release_leases, self.engine, owner=self.owner
            )
        except sa.exc.SQLAlchemyError:
            # The leases then run out after LEASE_TTL_SECONDS, as after a crash.
            log.warning("releasing slot leases failed", exc_info=True)
            released = 0
        await asyncio.to_thread(self.leadership.release)
        was_leader, self.is_leader = self.is_leader, False
        log.info(
            "engine stopped",
            extra={"leases_released": released, "was_leader": was_leader, "owner": self.owner},
        )

    async def _wait_running_jobs(self, limit: float) -> None:
        running = [task for task in self._running_jobs if task is not asyncio.current_task()]
        if not running:
            return
        _done, pending = await asyncio.wait(running, timeout=limit)
        for task in pending:
            log.warning("engine job still running at shutdown; cancelling it: %s", task.get_name())
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _guarded(self, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running_jobs.add(task)
            try:
                await job()
            except Exception:
                # A failing cycle must not kill the scheduler; the next cycle retries.
                log.exception("engine job %s failed", job.__name__)
            finally:
                if task is not None:
                    self._running_jobs.discard(task)

        run.__name__ = job.__name__
        return run

    # --- jobs -------------------------------------------------------------------------------

    async def dispatch_once(self) -> dispatch.DispatchResult:
        # The timer and the change nudges take turns (dispatching twice at once is safe, as
        # replicas do, but a wasted query).
        async with self._dispatch_lock:
            result = await dispatch.dispatch_pending_runs(
                engine=self.engine,
                runtime=self.runtime,
                owner=self.owner,
                callback_url=self.callback_url,
                model_check=self.model_check,
            )
        for seconds in result.latencies:
            metrics.DISPATCH_LATENCY_SECONDS.observe(seconds)
        if result.launched and self.is_leader:
            await self.log_pumps.follow(result.launched)
        return result

    async def leader_tick(self) -> None:
        was_leader = self.is_leader
        self.is_leader = await asyncio.to_thread(self.leadership.try_acquire)
        if not self.is_leader:
            if was_leader:
                await self._stop_leader_work()
            return
        if not was_leader:
            self.log_pumps.rescan()  # taking over: find every log still being written
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._watch_forever(), name="control-loop-watch")
        await asyncio.to_thread(reconcile.request_deadline_cancellations, self.engine)
        await reconcile.deliver_cancellations(
            engine=self.engine,
            runtime=self.runtime,
            grace_seconds=self.timings.cancel_grace_seconds,
        )
        await self.log_pumps.follow_all()

    async def sweep_once(self) -> reconcile.SweepResult | None:
        if not self.is_leader:
            return None
        with _cycle("sweep"):
            result = await reconcile.reconcile_runs(engine=self.engine, runtime=self.runtime)
            await asyncio.to_thread(
                reconcile.renew_leases, self.engine, run_ids=result.alive, owner=self.owner
            )
        await self._observe_finished(result.applied)
        return result

    async def leases_once(self) -> None:
        if not self.is_leader:
            return
        with _cycle("leases"):
            workloads = await self.runtime.list_workloads()
            alive = [
                s.run_id
                for s in workloads
                if s.phase in (WorkloadPhase.PENDING, WorkloadPhase.RUNNING)
            ]
            await asyncio.to_thread(
                reconcile.renew_leases, self.engine, run_ids=alive, owner=self.owner
            )
            result = await reconcile.expire_leases(
                engine=self.engine, runtime=self.runtime, owner=self.owner
            )
        await self._observe_finished(result.applied)

    async def cleanup_once(self) -> list[int]:
        if not self.is_leader:
            return []
        cleaned = await reconcile.cleanup_runtimes(
            engine=self.engine, runtime=self.runtime, older_than=self.cleanup_after
        )
        await reconcile.sweep_leftovers(
            engine=self.engine, runtime=self.runtime, older_than=self.cleanup_after
        )
        return cleaned

    async def report_once(self) -> None:
        """Leader job: show changed runs on GitHub (service comment, labels, PRs)."""
        if self.is_leader and self.feedback is not None:
            await self.feedback.report_once()

    async def redeliver_once(self) -> None:
        """Leader job: ask GitHub to redeliver webhooks that failed to reach us."""
        if self.is_leader and self.feedback is not None:
            await webhook_redelivery.redeliver_failed(
                engine=self.engine, settings=self.feedback.settings, box=self.feedback.box,
                client_options=self.feedback.client_options,
            )  # fmt: skip

    async def maintain_logs_once(self) -> None:
        """Leader job: remove logs past retention, compact finished ones (bounded per tick)."""
        if not self.is_leader:
            return
        with _cycle("logs"):
            retention, compaction = await asyncio.to_thread(
                log_maintenance.maintain, self.engine, policy=self.log_policy
            )
        if retention.marked or retention.removed or compaction.lines:
            log.info(
                "log maintenance",
                extra={
                    "logs_marked_removed": len(retention.marked),
                    "log_rows_deleted": retention.rows_deleted,
                    "log_chunks_deleted": retention.chunks_deleted,
                    "log_lines_compacted": compaction.lines,
                    "log_chunks_written": compaction.chunks,
                    "logs_compacted": len(compaction.compacted),
                },
            )

    # --- leader work ------------------------------------------------------------------------

    async def _watch_forever(self) -> None:
        backoff = 1.0
        while True:
            try:
                async for status in self.runtime.watch():
                    backoff = 1.0
                    with bound_contextvars(run_id=status.run_id):
                        await self._apply_watched(status)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.RECONCILE_ERRORS.labels("watch").inc()
                log.exception("runtime watch failed; restarting in %.0fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _apply_watched(self, status: Any) -> None:
        changed = await asyncio.to_thread(reconcile.apply_workload_status, self.engine, status)
        if changed:
            await self._observe_finished({status.run_id: changed})
            await reconcile.stop_if_stuck(self.runtime, status)
        if status.phase is not WorkloadPhase.MISSING:
            await self.log_pumps.follow([status.run_id])

    async def _stop_leader_work(self) -> None:
        watch, self._watch_task = self._watch_task, None
        if watch is not None:
            watch.cancel()
        await self.log_pumps.stop()  # stopping pumps store what they hold
        if watch is not None:
            await asyncio.gather(watch, return_exceptions=True)

    # --- metrics ----------------------------------------------------------------------------

    async def _observe_finished(self, applied: dict[int, str]) -> None:
        """Run duration by stage of the runs this replica just moved to a terminal state.

        Only runs that started count: a run canceled or failed before launch has no duration.
        """
        terminal = [run_id for run_id, status in applied.items() if status in TERMINAL_STATUSES]
        if not terminal:
            return
        try:
            rows = await asyncio.to_thread(reconcile.finished_runs, self.engine, run_ids=terminal)
        except sa.exc.SQLAlchemyError:
            log.warning("metrics: reading finished runs failed", exc_info=True)
            return
        for row in rows:
            seconds = metrics.seconds_between(row.finished_at, row.started_at)
            if seconds is not None:
                metrics.RUN_DURATION_SECONDS.labels(row.stage or "", row.status).observe(seconds)


class _cycle:
    """Time one reconcile cycle; count it as an error when it raises (and re-raise)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        metrics.RECONCILE_SECONDS.labels(self.name).observe(time.perf_counter() - self._start)
        if kind is not None and not issubclass(kind, asyncio.CancelledError):
            metrics.RECONCILE_ERRORS.labels(self.name).inc()
