"""The leader's log pumps: one task per run whose workload output is not fully stored yet,
following it into run_logs in batches.

Every pump hands its batches to one `run_logs.LogWriter`, so a write is one transaction for all
the runs whose lines arrived meanwhile. Each batch moves the run's position with a
compare-and-set (`run_logs.store_batches`): a pump that lost the race to another writer (a leader
change) stops and stores nothing. A pump that stops early (a dropped stream, a lost race) leaves
its run to the next full scan, which resumes from the stored cursor; one that finished stored the
end marker and is not found again.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from sqlalchemy.engine import Engine

from codexk8s import metrics
from codexk8s.domain.logs import LogLimits
from codexk8s.domain.runtime import LogLine, Runtime, WorkloadHandle
from codexk8s.logging_config import bind_contextvars
from codexk8s.services import run_logs

log = logging.getLogger(__name__)
LOG_BATCH_LINES = 500
LOG_BATCH_SECONDS = 0.2


class LogPumps:
    """The pumps of one control-plane process (its leader's), and the writer they share."""

    def __init__(
        self, engine: Engine, runtime: Runtime, *, limits: LogLimits = run_logs.DEFAULT_LIMITS
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        # Every pump's lines go through one writer: one transaction per write for all runs.
        self.writer = run_logs.LogWriter(engine, limits=limits)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._needs_rescan = True

    def rescan(self) -> None:
        """Have the next `follow_all` look at every run: this process just became the leader,
        so logs still being written may have no pump here."""
        self._needs_rescan = True

    async def follow(self, run_ids: list[int]) -> None:
        """Start a pump for each of RUN_IDS (a launch, a watch event) whose output is not fully
        stored yet and that has none."""
        run_ids = [run_id for run_id in run_ids if run_id not in self._tasks]
        if run_ids:
            await self._start(run_ids)

    async def follow_all(self) -> None:
        """Start a pump for every run whose output is not fully stored yet, when one may be
        missing: after `rescan` and after a pump ended. Otherwise nothing, so the full scan's
        cost is not paid on every tick for every running run."""
        if not self._needs_rescan:
            return
        self._needs_rescan = False
        await self._start(None)

    async def _start(self, run_ids: list[int] | None) -> None:
        for unfinished in await asyncio.to_thread(
            run_logs.unfinished_logs, self.engine, run_ids=run_ids
        ):
            run_id = unfinished.run_id
            if run_id in self._tasks:
                continue
            task = asyncio.create_task(
                self.pump(run_id, unfinished.handle, unfinished.cursor, unfinished.position),
                name=f"log-pump-{run_id}",
            )
            self._tasks[run_id] = task
            task.add_done_callback(functools.partial(self._pump_done, run_id))

    def _pump_done(self, run_id: int, task: asyncio.Task[None]) -> None:
        if self._tasks.get(run_id) is task:
            del self._tasks[run_id]
        # A pump that stopped early (stream error, lost compare-and-set) is found again by the
        # next full scan; one that finished wrote its end marker and is not.
        self._needs_rescan = True

    async def stop(self) -> None:
        """Stop every pump (each stores what it holds first), then the writer."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.close()
        self._tasks.clear()

    async def pump(
        self, run_id: int, handle: WorkloadHandle, cursor: str | None,
        position: run_logs.LogPosition,
    ) -> None:  # fmt: skip
        """Follow one workload's output into run_logs until it ends.

        Lines are stored in batches: when LOG_BATCH_LINES have arrived, or LOG_BATCH_SECONDS after
        the first unsaved line, whichever comes first, so a quiet run's last line is not held back.
        Past the run's cap the lines are still read (and counted, and the cursor moves), just not
        stored.
        """
        bind_contextvars(run_id=run_id)  # this task's own context: every line names the run
        queue: asyncio.Queue[LogLine | BaseException | None] = asyncio.Queue(
            maxsize=4 * LOG_BATCH_LINES
        )

        async def read() -> None:
            try:
                async for line in self.runtime.stream_logs(handle, follow=True, after=cursor):
                    await queue.put(line)
                await queue.put(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await queue.put(exc)

        reader = asyncio.create_task(read(), name=f"log-reader-{run_id}")
        batch: list[LogLine] = []

        async def flush(final: bool = False) -> bool:
            nonlocal position, batch
            stored = await self.writer.store(
                run_logs.PendingBatch(run_id=run_id, expected=position, lines=batch, final=final)
            )
            if stored is None:
                return False  # another writer moved this run's log: stop, never store twice
            metrics.LOG_LINES_STORED.inc(stored.sequence - position.sequence)
            metrics.LOG_LINES_DROPPED.inc(stored.dropped - position.dropped)
            position, batch = stored, []
            return True

        loop = asyncio.get_running_loop()
        # When the oldest unsaved line must be stored: a line arriving every few milliseconds
        # must not keep pushing the batch back (it did, up to LOG_BATCH_LINES lines: seconds).
        due: float | None = None
        try:
            while True:
                if due is None:
                    items = [await queue.get()]
                else:
                    try:
                        items = [await asyncio.wait_for(queue.get(), due - loop.time())]
                    except TimeoutError:
                        items = []
                while not queue.empty():  # take what is there in one go, not one wait per line
                    items.append(queue.get_nowait())
                for item in items:
                    if item is None:
                        await flush(final=True)
                        return
                    if isinstance(item, BaseException):
                        log.error(
                            "log stream of run %s failed: %s; resuming on the next tick",
                            run_id, item,
                        )  # fmt: skip
                        if batch:
                            await flush()
                        return
                    batch.append(item)
                    if due is None:
                        due = loop.time() + LOG_BATCH_SECONDS
                    if len(batch) >= LOG_BATCH_LINES:
                        if not await flush():
                            return
                        due = None
                if due is not None and loop.time() >= due:
                    if not await flush():
                        return
                    due = None
        except asyncio.CancelledError:
            if batch:
                await flush()
            raise
        finally:
            reader.cancel()
