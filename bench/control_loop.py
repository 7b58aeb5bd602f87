"""Benchmark the control loop's cycles: database statements, Kubernetes API calls and time per
cycle.

For each N in `--sizes` (default 100, 1,000, 5,000 active runs) a fresh state is bulk-inserted
into PostgreSQL (database `codexk8s_bench_control_loop`, dropped, recreated and migrated at start):

- N / 50 projects with 40 slots each; per project 40 runs `running` (slot leased, workload
  handle stored, deadline in an hour) and 10 runs `pending` behind them, so 80 % of the N active
  runs hold a slot and 20 % queue; plus 25 finished runs per project (history, logs at EOF).
- An in-memory runtime (bench/_counting.py `CountingRuntime`) knows every workload: the running
  ones and the finished ones, as a cluster would until cleanup. Each Runtime protocol call is
  counted as the Kubernetes API requests `KubernetesRuntime` makes for it (mapping printed).

Cycles, each counted with a `before_cursor_execute` listener on the product's engine (an
executemany counts as one statement; its parameter sets are reported separately):

- dispatch idle      `ControlLoop.dispatch_once` with every slot busy;
- dispatch k         the same after k running runs finished and freed their slots (k = 1, 20);
- sweep idle         `reconcile.reconcile_runs` when no workload changed;
- sweep m            the same when m workloads finished (m = 1, 20);
- watch event        one status from the watch, handled as `ControlLoop._watch_forever` does
                     (`apply_workload_status`, plus the pump query for a live workload): a
                     re-reported running status (idle) / a finished workload (1);
- leader idle / c    one leader tick without the watch task: `Leadership.try_acquire`,
                     `request_deadline_cancellations`, `deliver_cancellations` and the pump query
                     with none / c = 20 runs past deadline;
- leases idle / e    `ControlLoop.leases_once` with no / e = 20 expired leases (runs claimed by a
                     replica that died before launching them).

Changing runs are taken from the first two projects at every N. Every cycle is repeated
(`--repeat`; slow ones at most 3 or 2 times) on the same state, restored between repetitions,
and timed with time.perf_counter (median). A table and one verdict per cycle are printed:
PASS when statements and Kubernetes requests are the same at every N (no-change cycles) or
their extra per changed run is (changing cycles); WARN when that holds but rows read or written,
or workload objects listed, still grow with N; FAIL otherwise, naming the call sites whose
statement count grows. Results go to bench/results/control_loop.json.

Run: `cd /work/main && .venv/bin/python bench/control_loop.py [--sizes 100 1000 5000] [--repeat 5]`
(`--calibrate-k8s` also counts the real KubernetesRuntime's requests against the fake API server
of tests/adapters/kubernetes). The exit status is 1 when any cycle FAILs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from _counting import K8S_REQUESTS_PER_CALL, CountingRuntime, StatementCounter
from sqlalchemy.engine import Engine, make_url

from codexk8s.db.engine import make_engine
from codexk8s.db.migrations import upgrade_to_head
from codexk8s.domain.runs import TERMINAL_STATUSES, RunStatus
from codexk8s.domain.runtime import LogLine, WorkloadPhase, WorkloadStatus
from codexk8s.domain.slots import LEASE_TTL_SECONDS, SlotState
from codexk8s.jobs.control_loop import ControlLoop
from codexk8s.services import dispatch, reconcile, run_logs
from codexk8s.services.dispatch import PROJECTS
from codexk8s.services.run_states import RUNS, SLOTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "control_loop.json"
DB_NAME = "codexk8s_bench_control_loop"
OWNER = "bench-replica"
CALLBACK_URL = "http://codexk8s.bench/api/v1/runs"

RUNS_PER_PROJECT = 50  # active runs per project
SLOTS_PER_PROJECT = 40  # all leased to running runs; the other 10 active runs are pending
HISTORY_PER_PROJECT = 25  # finished runs (not active), logs complete
CHANGES = 20  # k, m, c, e: runs that change in a "changing" cycle
CHANGE_PROJECTS = 2  # changing runs are spread over this many projects at every N
SLOW_CYCLE_SECONDS = 1.0  # cycles slower than this are repeated at most 3 times,
VERY_SLOW_CYCLE_SECONDS = 5.0  # and slower than this at most twice


@dataclass(slots=True)
class Sample:
    n: int
    cycle: str
    kind: str  # the verdict group
    baseline: str | None  # the no-change cycle this one is compared to
    changed: int
    statements: int
    executemany_rows: int
    transactions: int
    rows_read: int
    rows_written: int
    runtime_calls: dict[str, int]
    k8s_requests: int
    listed_workloads: int  # statuses the runtime's list calls returned (objects listed)
    ms: float
    ms_all: list[float] = field(default_factory=list)
    statements_all: list[int] = field(default_factory=list)
    sites: dict[str, int] = field(default_factory=dict)


# --- database ------------------------------------------------------------------------------


def _admin(admin_url: str, *statements: str) -> None:
    url = make_url(admin_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True
    ) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def create_database(admin_url: str) -> str:
    _admin(
        admin_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)", f"CREATE DATABASE {DB_NAME}"
    )
    url = make_url(admin_url).set(database=DB_NAME).render_as_string(hide_password=False)
    upgrade_to_head(url)
    return url


def _now() -> datetime:
    return datetime.now(UTC)


def _run_row(project_id: int, project_key: str, number: int, status: RunStatus) -> dict[str, Any]:
    return {
        "correlation_id": uuid.uuid4().hex,
        "project_id": project_id,
        "issue_number": number,
        "agent_key": "dev",
        "stage": "dev",
        "status": status.value,
        "lineage": f"{project_key}/0/{number}/dev",
        "created_at": _now() - timedelta(hours=2) + timedelta(microseconds=number),
    }


@dataclass(slots=True)
class State:
    projects: dict[int, str]  # id -> key
    running: list[int]
    next_issue: int


def build_state(engine: Engine, runtime: CountingRuntime, n: int) -> State:
    """Bulk-insert the projects, slots and runs for N active runs (Core executemany)."""
    project_count = max(1, n // RUNS_PER_PROJECT)
    now = _now()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "TRUNCATE projects, agent_runs, slots, flow_events, run_logs RESTART IDENTITY "
                "CASCADE"
            )
        )
        project_rows = connection.execute(
            PROJECTS.insert().returning(
                PROJECTS.c.id, PROJECTS.c.key, sort_by_parameter_order=True
            ),
            [
                {"key": f"bench-{p}", "name": f"Bench {p}",
                 "settings": {"slots": SLOTS_PER_PROJECT, "learning_mode_default": False}}
                for p in range(project_count)
            ],
        ).all()  # fmt: skip
        projects = {row.id: row.key for row in project_rows}
        issue = 0
        placeholder = runtime.handle_for(0).to_json()  # replaced once the ids are known
        running_rows: list[dict[str, Any]] = []
        other_rows: list[dict[str, Any]] = []
        for project_id, key in projects.items():
            for slot in range(1, SLOTS_PER_PROJECT + 1):
                issue += 1
                row = _run_row(project_id, key, issue, RunStatus.RUNNING)
                row.update(
                    slot_number=slot, started_at=now - timedelta(minutes=5),
                    deadline_at=now + timedelta(hours=1), run_token_hash="0" * 64,
                    runtime_handle=placeholder,
                )  # fmt: skip
                running_rows.append(row)
            for _ in range(RUNS_PER_PROJECT - SLOTS_PER_PROJECT):
                issue += 1
                other_rows.append(_run_row(project_id, key, issue, RunStatus.PENDING))
            for _ in range(HISTORY_PER_PROJECT):
                issue += 1
                row = _run_row(project_id, key, issue, RunStatus.SUCCEEDED)
                row.update(
                    started_at=now - timedelta(hours=1), finished_at=now - timedelta(minutes=30),
                    runtime_handle=placeholder, log_cursor=run_logs.EOF_PREFIX + "1",
                )  # fmt: skip
                other_rows.append(row)
        inserted = connection.execute(
            RUNS.insert().returning(RUNS.c.id, RUNS.c.project_id, RUNS.c.slot_number,
                                    sort_by_parameter_order=True),
            running_rows,
        ).all()  # fmt: skip
        running = [row.id for row in inserted]
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == sa.bindparam("rid"))
            .values(runtime_handle=sa.bindparam("handle"), namespace=sa.bindparam("ns"),
                    job_name=sa.bindparam("job")),
            [
                {"rid": rid, "handle": runtime.handle_for(rid).to_json(),
                 "ns": runtime.handle_for(rid).namespace, "job": runtime.handle_for(rid).name}
                for rid in running
            ],
        )  # fmt: skip
        history = connection.execute(
            RUNS.insert().returning(RUNS.c.id, RUNS.c.status, sort_by_parameter_order=True),
            other_rows,
        ).all()
        history_ids = [row.id for row in history if row.status == RunStatus.SUCCEEDED.value]
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id == sa.bindparam("rid"))
            .values(runtime_handle=sa.bindparam("handle")),
            [{"rid": rid, "handle": runtime.handle_for(rid).to_json()} for rid in history_ids],
        )
        connection.execute(
            SLOTS.insert(),
            [
                {"project_id": row.project_id, "number": row.slot_number,
                 "state": SlotState.LEASED.value, "run_id": row.id, "lease_owner": OWNER,
                 "lease_until": now + timedelta(seconds=LEASE_TTL_SECONDS)}
                for row in inserted
            ],
        )  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
    runtime.workloads.clear()
    runtime.add_running(running)
    for rid in history_ids:
        runtime.finish(rid)
    return State(projects=projects, running=running, next_issue=issue)


def active_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(RUNS.c.status, sa.func.count()).group_by(RUNS.c.status)
        ).all()
    return {status: count for status, count in rows}


# --- state changes between measured cycles (never counted) ---------------------------------


def pick_running(engine: Engine, state: State, count: int) -> list[sa.Row[Any]]:
    """`count` running runs, taken in turn from the first CHANGE_PROJECTS projects (the same
    number of projects at every N, so per-project statements do not blur the comparison)."""
    projects = sorted(state.projects)[:CHANGE_PROJECTS]
    ranked = (
        sa.select(
            RUNS.c.id, RUNS.c.project_id,
            sa.func.row_number().over(partition_by=RUNS.c.project_id, order_by=RUNS.c.id)
            .label("rank"),
        )
        .where(
            RUNS.c.status == RunStatus.RUNNING.value,
            RUNS.c.cancel_requested_at.is_(None),
            RUNS.c.project_id.in_(projects),
        )
        .subquery()
    )  # fmt: skip
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(ranked.c.id, ranked.c.project_id)
                .order_by(ranked.c.rank, ranked.c.project_id)
                .limit(count)
            ).all()
        )


def finish_in_db(engine: Engine, runtime: CountingRuntime, rows: list[sa.Row[Any]]) -> None:
    """Settle runs as succeeded and free their slots, as the watch would have."""
    ids = [row.id for row in rows]
    with engine.begin() as connection:
        connection.execute(
            RUNS.update()
            .where(RUNS.c.id.in_(ids))
            .values(
                status=RunStatus.SUCCEEDED.value,
                finished_at=_now(),
                slot_number=None,
                log_cursor=run_logs.EOF_PREFIX + "1",
            )
        )
        connection.execute(
            SLOTS.update()
            .where(SLOTS.c.run_id.in_(ids))
            .values(state=SlotState.FREE.value, run_id=None, lease_owner=None, lease_until=None)
        )
    for rid in ids:
        runtime.finish(rid)


def top_up_pending(engine: Engine, state: State) -> None:
    """Keep RUNS_PER_PROJECT - SLOTS_PER_PROJECT pending runs in every project."""
    wanted = RUNS_PER_PROJECT - SLOTS_PER_PROJECT
    with engine.begin() as connection:
        have = dict(
            connection.execute(
                sa.select(RUNS.c.project_id, sa.func.count())
                .where(RUNS.c.status == RunStatus.PENDING.value)
                .group_by(RUNS.c.project_id)
            ).all()
        )
        rows = []
        for project_id, key in state.projects.items():
            for _ in range(wanted - have.get(project_id, 0)):
                state.next_issue += 1
                row = _run_row(project_id, key, state.next_issue, RunStatus.PENDING)
                row["created_at"] = _now()
                rows.append(row)
        if rows:
            connection.execute(RUNS.insert(), rows)


async def refill(engine: Engine, runtime: CountingRuntime, state: State) -> None:
    """Put the state back to 'every slot leased, 10 pending per project, finished runs' logs
    complete' (the log pumps, not run here, would have stored their EOF)."""
    with engine.begin() as connection:
        connection.execute(
            RUNS.update()
            .where(
                RUNS.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                sa.or_(
                    RUNS.c.log_cursor.is_(None),
                    ~RUNS.c.log_cursor.startswith(run_logs.EOF_PREFIX),
                ),
            )
            .values(log_cursor=run_logs.EOF_PREFIX + "1")
        )
    while True:
        result = await dispatch.dispatch_pending_runs(
            engine=engine, runtime=runtime, owner=OWNER, callback_url=CALLBACK_URL, batch=500
        )
        if not result.launched and not result.failed:
            break
    top_up_pending(engine, state)


# --- measuring -----------------------------------------------------------------------------


@dataclass(slots=True)
class Bench:
    engine: Engine
    runtime: CountingRuntime
    counter: StatementCounter
    control_loop: ControlLoop
    state: State
    n: int
    repeat: int
    samples: list[Sample] = field(default_factory=list)

    async def measure(
        self,
        cycle: str,
        kind: str,
        run: Callable[[], Awaitable[int]],
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        after: Callable[[], Awaitable[None]] | None = None,
        baseline: str | None = None,
        count_changed: Callable[[], int] | None = None,
    ) -> Sample:
        reps: list[tuple[float, int, Any, Counter[str]]] = []
        repeat = self.repeat
        i = 0
        while i < repeat:
            if before is not None:
                await before()
            self.runtime.calls.clear()
            self.runtime.listed = 0
            self.counter.arm()
            started = time.perf_counter()
            changed = await run()
            elapsed = time.perf_counter() - started
            counts = self.counter.disarm()
            if count_changed is not None:
                changed = count_changed()
            reps.append((elapsed * 1000, changed, counts, Counter(self.runtime.calls)))
            listed = self.runtime.listed
            if after is not None:
                await after()
            if i == 0 and elapsed > SLOW_CYCLE_SECONDS:
                repeat = min(repeat, 2 if elapsed > VERY_SLOW_CYCLE_SECONDS else 3)
            i += 1
        last = reps[-1]
        counts, calls = last[2], last[3]
        sample = Sample(
            n=self.n, cycle=cycle, kind=kind, baseline=baseline, changed=last[1],
            statements=counts.statements, executemany_rows=counts.executemany_rows,
            transactions=counts.checkouts, rows_read=counts.rows_read,
            rows_written=counts.rows_written, runtime_calls=dict(calls),
            k8s_requests=self.runtime.k8s_requests(calls), listed_workloads=listed,
            ms=statistics.median(r[0] for r in reps), ms_all=[round(r[0], 2) for r in reps],
            statements_all=[r[2].statements for r in reps], sites=dict(counts.sites.most_common()),
        )  # fmt: skip
        self.samples.append(sample)
        print(format_row(sample), flush=True)
        return sample

    # --- cycles ----------------------------------------------------------------------------

    async def dispatch_cycle(self) -> int:
        self.control_loop.is_leader = False  # no log pumps started by the measured dispatch
        result = await self.control_loop.dispatch_once()
        return len(result.launched) + len(result.failed)

    async def sweep_cycle(self) -> int:
        result = await reconcile.reconcile_runs(engine=self.engine, runtime=self.runtime)
        return len(result.applied) + len(result.requeued)

    async def watch_event(self, status: WorkloadStatus) -> int:
        changed = await asyncio.to_thread(reconcile.apply_workload_status, self.engine, status)
        if status.phase is not WorkloadPhase.MISSING:
            # As ControlLoop._watch_forever does: look only at the run the event is about.
            await asyncio.to_thread(run_logs.unfinished_logs, self.engine, run_ids=[status.run_id])
        return int(bool(changed))

    async def leader_cycle(self) -> int:
        """`ControlLoop.leader_tick` without the watch task and without starting pumps."""
        control_loop = self.control_loop
        assert await asyncio.to_thread(control_loop.leadership.try_acquire)
        requested = await asyncio.to_thread(reconcile.request_deadline_cancellations, self.engine)
        sent = await reconcile.deliver_cancellations(
            engine=self.engine, runtime=self.runtime,
            grace_seconds=control_loop.timings.cancel_grace_seconds,
        )  # fmt: skip
        # A steady leader does not rescan for log pumps (only on takeover or after a pump ended).
        if len(sent) != len(requested):
            raise RuntimeError(f"requested {len(requested)} cancellations, sent {len(sent)}")
        return len(requested)

    async def leases_cycle(self) -> int:
        self.control_loop.is_leader = True
        await self.control_loop.leases_once()
        return 0  # leases_once returns nothing: counted afterwards by count_requeued

    def count_requeued(self) -> int:
        """Runs the last lease expiry put back to pending (until the next refill claims them)."""
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).where(
                        RUNS.c.status == RunStatus.PENDING.value,
                        RUNS.c.status_reason == "lease_expired",
                    )
                ).scalar_one()
            )

    async def run_all(self) -> None:
        e, rt, st = self.engine, self.runtime, self.state

        async def restore() -> None:
            await refill(e, rt, st)

        # (a) dispatch with every slot busy.
        await self.measure("dispatch idle", "dispatch", self.dispatch_cycle)

        # (b) dispatch after k slots were freed.
        for k in (1, CHANGES):

            async def free_k(k: int = k) -> None:
                finish_in_db(e, rt, pick_running(e, st, k))
                top_up_pending(e, st)

            await self.measure(
                f"dispatch k={k}", "dispatch", self.dispatch_cycle, before=free_k,
                after=restore, baseline="dispatch idle",
            )  # fmt: skip

        # (c) sweep, nothing changed.
        await self.measure("sweep idle", "sweep", self.sweep_cycle)

        # (d) sweep after m workloads finished (the watch missed them).
        for m in (1, CHANGES):

            async def finish_m(m: int = m) -> None:
                for row in pick_running(e, st, m):
                    rt.finish(row.id)

            await self.measure(
                f"sweep m={m}", "sweep", self.sweep_cycle, before=finish_m, after=restore,
                baseline="sweep idle",
            )  # fmt: skip

        # Watch events, handled as ControlLoop._watch_forever does (apply the status; for a live
        # workload also the pump query of LogPumps.follow): one status re-reported (no change),
        # one finished workload.
        some = pick_running(e, st, 1)[0].id

        async def apply_running() -> int:
            status = WorkloadStatus(
                run_id=some, phase=WorkloadPhase.RUNNING, handle=rt.handle_for(some)
            )
            return await self.watch_event(status)

        await self.measure("watch event idle", "watch event", apply_running)
        finished: list[int] = []

        async def finish_one() -> None:
            finished[:] = [pick_running(e, st, 1)[0].id]
            rt.finish(finished[0])

        async def apply_finished() -> int:
            return await self.watch_event(rt.workloads[finished[0]])

        await self.measure(
            "watch event 1", "watch event", apply_finished, before=finish_one, after=restore
        )  # fmt: skip

        # (e) leader tick, then with c runs past their deadline.
        await asyncio.to_thread(self.control_loop.leadership.try_acquire)  # take the lock once
        await self.measure("leader idle", "leader tick", self.leader_cycle)
        overdue: list[int] = []

        async def make_overdue() -> None:
            overdue[:] = [row.id for row in pick_running(e, st, CHANGES)]
            with e.begin() as connection:
                connection.execute(
                    RUNS.update()
                    .where(RUNS.c.id.in_(overdue))
                    .values(deadline_at=_now() - timedelta(hours=1))
                )

        async def undo_overdue() -> None:
            with e.begin() as connection:
                connection.execute(
                    RUNS.update()
                    .where(RUNS.c.id.in_(overdue))
                    .values(deadline_at=_now() + timedelta(hours=1), cancel_requested_at=None,
                            cancel_reason=None, cancel_sent_at=None)
                )  # fmt: skip

        await self.measure(
            f"leader c={CHANGES}", "leader tick", self.leader_cycle, before=make_overdue,
            after=undo_overdue, baseline="leader idle",
        )  # fmt: skip

        # (f) lease renewal and expiry, then with e leases of never-launched claims expired.
        await self.measure(
            "leases idle", "leases", self.leases_cycle, count_changed=self.count_requeued
        )

        async def orphan_claims() -> None:
            rows = pick_running(e, st, CHANGES)
            ids = [row.id for row in rows]
            with e.begin() as connection:
                connection.execute(
                    RUNS.update()
                    .where(RUNS.c.id.in_(ids))
                    .values(status=RunStatus.STARTING.value, runtime_handle=None,
                            namespace=None, job_name=None, started_at=None, deadline_at=None)
                )  # fmt: skip
                connection.execute(
                    SLOTS.update()
                    .where(SLOTS.c.run_id.in_(ids))
                    .values(lease_until=_now() - timedelta(seconds=1), lease_owner="dead")
                )
            for rid in ids:
                rt.workloads.pop(rid, None)

        await self.measure(
            f"leases e={CHANGES}", "leases", self.leases_cycle, before=orphan_claims,
            after=restore, baseline="leases idle", count_changed=self.count_requeued,
        )  # fmt: skip

        # (g) the log writer: one write for b streaming runs with ten lines each (the log pumps'
        # writer stores every pump's lines together; the statements must not grow with b or N).
        batches: list[run_logs.PendingBatch] = []
        stamp = _now()

        for b in (1, CHANGES, 200):

            async def streaming(b: int = b) -> None:
                ids = [row.id for row in pick_running(e, st, b)]
                with e.connect() as connection:
                    positions = connection.execute(
                        sa.select(RUNS.c.id, RUNS.c.log_sequence, RUNS.c.log_dropped_lines)
                        .where(RUNS.c.id.in_(ids))
                    ).all()  # fmt: skip
                batches[:] = [
                    run_logs.PendingBatch(
                        run_id=row.id,
                        expected=run_logs.LogPosition(row.log_sequence, row.log_dropped_lines),
                        lines=[
                            LogLine("stdout", f"compiling module {n}", stamp, str(n))
                            for n in range(10)
                        ],
                    )
                    for row in positions
                ]

            async def write() -> int:
                stored = await asyncio.to_thread(run_logs.store_batches, e, batches)
                return sum(1 for position in stored.values() if position is not None)

            await self.measure(
                f"log write b={b}", "log write", write, before=streaming,
                baseline=None if b == 1 else "log write b=1",
            )  # fmt: skip


# --- report --------------------------------------------------------------------------------

HEADER = (
    f"{'N':>5}  {'cycle':<17} {'stmts':>6} {'tx':>5} {'rows rd':>8} {'rows wr':>8} "
    f"{'rt calls':>8} {'k8s':>5} {'listed':>6} {'changed':>7} {'ms':>9}"
)


def format_row(s: Sample) -> str:
    calls = sum(s.runtime_calls.values())
    return (
        f"{s.n:>5}  {s.cycle:<17} {s.statements:>6} {s.transactions:>5} {s.rows_read:>8} "
        f"{s.rows_written:>8} {calls:>8} {s.k8s_requests:>5} {s.listed_workloads:>6} "
        f"{s.changed:>7} {s.ms:>9.2f}"
    )


def _growing_sites(samples: list[Sample]) -> list[str]:
    """Call sites whose statement count differs between the smallest and largest N."""
    first, last = samples[0], samples[-1]
    out = []
    for site in sorted(set(first.sites) | set(last.sites)):
        a, b = first.sites.get(site, 0), last.sites.get(site, 0)
        if a != b:
            out.append(f"{site} ({a} at N={first.n} -> {b} at N={last.n})")
    return out


def _per_change(
    group: list[Sample], index: dict[tuple[int, str], Sample], attr: str
) -> list[float]:
    """(value - the no-change baseline's value) per changed run, for each N; the raw value for a
    no-change cycle."""
    out = []
    for s in group:
        value = getattr(s, attr)
        if s.baseline is None:
            out.append(float(value))
            continue
        extra = value - getattr(index[(s.n, s.baseline)], attr)
        out.append(round(extra / s.changed, 2) if s.changed else float("nan"))
    return out


def verdicts(samples: list[Sample]) -> list[dict[str, Any]]:
    """PASS: statements and Kubernetes requests are constant across N (no-change cycles), or the
    extra over the no-change cycle per changed run is (changing cycles). WARN: that holds, but
    rows read or written, or workload objects listed, still grow with N. FAIL: it does not."""
    by_cycle: dict[str, list[Sample]] = {}
    for s in samples:
        by_cycle.setdefault(s.cycle, []).append(s)
    index = {(s.n, s.cycle): s for s in samples}
    results = []
    for cycle, group in by_cycle.items():
        group.sort(key=lambda s: s.n)
        sizes = [s.n for s in group]
        baseline = group[0].baseline
        stmts = _per_change(group, index, "statements")
        k8s = _per_change(group, index, "k8s_requests")
        changed = [s.changed for s in group]
        ok = len(set(stmts)) == 1 and len(set(k8s)) == 1
        if baseline is not None:
            base = [index[(s.n, baseline)].statements for s in group]
            ok = ok and len(set(base)) == 1 and all(c > 0 for c in changed)
        notes = [] if ok else _growing_sites(group)
        for attr, label in (
            ("rows_read", "rows read"),
            ("rows_written", "rows written"),
            ("listed_workloads", "workload statuses listed by the runtime"),
        ):
            values = _per_change(group, index, attr)
            if values[-1] > values[0]:  # grows with N (finished workloads pile up a little)
                per = "" if baseline is None else " per changed run"
                notes.append(f"{label}{per} {_fmt(values)}")
        status = "FAIL" if not ok else ("WARN" if notes else "PASS")
        if baseline is None:
            text = (
                f"{cycle}: statements {_fmt(stmts)}, k8s requests {_fmt(k8s)} at N={sizes}"
                f" -> {'constant' if ok else 'GROWS WITH N'}"
            )
        else:
            text = (
                f"{cycle}: changed {changed}; per changed run over '{baseline}': statements "
                f"{_fmt(stmts)}, k8s requests {_fmt(k8s)} at N={sizes} -> "
                + ("grows only with changed rows" if ok else "NOT only with changed rows")
            )
        results.append({"cycle": cycle, "status": status, "ok": ok, "verdict": text,
                        "notes": notes})  # fmt: skip
    return results


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


# --- Kubernetes calibration (optional) -----------------------------------------------------


async def calibrate_k8s() -> dict[str, int]:
    """Count the requests the real KubernetesRuntime makes, against the tests' fake API server."""
    sys.path.insert(0, str(ROOT))
    import kmock
    from kmock._internal import parsing as kmock_parsing

    from tests.adapters.kubernetes import fake_api
    from tests.adapters.kubernetes.conftest import Sleeps, make_runtime, make_spec

    tolerant = getattr(fake_api, "tolerant_parse_path", None) or fake_api._tolerant_parse_path
    kmock_parsing.parse_path = tolerant
    counts: dict[str, int] = {}
    async with fake_api.FakeApiServer() as api, kmock.Server(api):
        runtime = make_runtime(api, Sleeps())

        def seen() -> int:
            return sum(1 for request in list(api) if fake_api.rbac_verb(request) is not None)

        async def count(name: str, call: Awaitable[Any]) -> Any:
            before = seen()
            result = await call
            counts[name] = seen() - before
            return result

        handle = await count("launch", runtime.launch(make_spec(7)))
        api.cluster.start_pod(handle.namespace, handle.name)
        await count("status", runtime.status(handle, 7))
        await count("list_workloads", runtime.list_workloads())
        await count("cancel", runtime.cancel(handle))
        await count("cleanup", runtime.cleanup(handle))
        runtime.close()
        api.cluster.close_streams()
    return counts


# --- main ----------------------------------------------------------------------------------


async def bench_size(url: str, n: int, repeat: int) -> list[Sample]:
    engine = make_engine(url)
    runtime = CountingRuntime()
    try:
        started = time.perf_counter()
        state = build_state(engine, runtime, n)
        counts = active_counts(engine)
        print(
            f"-- N={n}: {len(state.projects)} projects x {SLOTS_PER_PROJECT} slots; "
            f"runs {counts} (built in {time.perf_counter() - started:.1f}s)",
            flush=True,
        )
        counter = StatementCounter(engine)
        control_loop = ControlLoop(
            engine=engine, runtime=runtime, callback_url=CALLBACK_URL, owner=OWNER
        )
        bench = Bench(engine, runtime, counter, control_loop, state, n, repeat)
        try:
            await bench.run_all()
        finally:
            await asyncio.to_thread(control_loop.leadership.release)
        return bench.samples
    finally:
        engine.dispose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per cycle")
    parser.add_argument(
        "--calibrate-k8s", action="store_true",
        help="also count the real KubernetesRuntime's requests against the tests' fake API",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--admin-url", default=None, help="default: a private PostgreSQL")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.servers import bench_postgres

    with bench_postgres(args.admin_url) as admin_url:
        return run(args, admin_url)


def run(args: argparse.Namespace, admin_url: str) -> int:
    # Codex agents need a model key to be dispatched; the benchmark never calls the model.
    os.environ.setdefault("CODEXK8S_OPENAI_API_KEY", "sk-unused")
    total = time.perf_counter()
    url = create_database(admin_url)
    mapping = ", ".join(f"{k}={v}" for k, v in K8S_REQUESTS_PER_CALL.items())
    print(f"Kubernetes API requests per runtime call: {mapping}")
    calibrated: dict[str, int] | None = None
    if args.calibrate_k8s:
        try:
            calibrated = asyncio.run(calibrate_k8s())
        except Exception as exc:  # the adapter and its test doubles are optional here
            print(f"calibration against the fake API server failed: {exc!r}")
        else:
            print(f"calibrated against KubernetesRuntime + fake API server: {calibrated}")
    print(HEADER)
    samples: list[Sample] = []
    for n in args.sizes:
        samples.extend(asyncio.run(bench_size(url, n, args.repeat)))
    print()
    print(HEADER)
    for s in sorted(samples, key=lambda s: (s.cycle, s.n)):
        print(format_row(s))
    print()
    results = verdicts(samples)
    for v in results:
        print(f"{v['status']}  {v['verdict']}")
        for note in v["notes"]:
            print(f"        {note}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "generated_at": _now().isoformat(),
                "database": DB_NAME,
                "mix": {
                    "projects": "N / 50",
                    "slots_per_project": SLOTS_PER_PROJECT,
                    "running_per_project": SLOTS_PER_PROJECT,
                    "pending_per_project": RUNS_PER_PROJECT - SLOTS_PER_PROJECT,
                    "finished_per_project": HISTORY_PER_PROJECT,
                    "changes_per_changing_cycle": CHANGES,
                },
                "k8s_requests_per_runtime_call": K8S_REQUESTS_PER_CALL,
                "k8s_calibration": calibrated,
                "samples": [_as_dict(s) for s in samples],
                "verdicts": results,
            },
            indent=2,
        )
        + "\n"
    )
    shown = args.output.resolve()
    shown_text = str(shown.relative_to(ROOT)) if shown.is_relative_to(ROOT) else str(shown)
    print(f"\nresults written to {shown_text} ({time.perf_counter() - total:.0f}s)")
    return 0 if all(v["ok"] for v in results) else 1


def _as_dict(sample: Sample) -> dict[str, Any]:
    return {name: getattr(sample, name) for name in Sample.__dataclass_fields__}


if __name__ == "__main__":
    sys.exit(main())
