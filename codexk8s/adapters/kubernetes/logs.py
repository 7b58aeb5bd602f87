"""Follow a run's pod log with timestamps, resume exactly after a dropped stream or a restart.

The log is read with `timestamps=True` and `_preload_content=False`: each line starts with an
RFC3339Nano timestamp written by the container runtime, which becomes `LogLine.ts`.

Cursor format: `<timestamp as sent>#<n>`, e.g. `2026-01-02T03:04:05.123456789Z#2` for the second
line carrying exactly that timestamp. Timestamps alone are not unique (a burst of lines can
share one), the count makes the position exact.

Resuming (after a dropped connection, or from a cursor the control loop kept): the log endpoint only
offers `sinceSeconds` in this client, which is relative to the server's clock. The stream is
reopened with `sinceSeconds` reaching `resume_margin_seconds` further back than the cursor (to
absorb clock skew between control plane and node), then every line before the cursor is
skipped: older timestamps entirely, and the first n lines with the cursor's own timestamp. So
no line is lost or repeated as long as the clocks differ by less than the margin.

When a follow ends cleanly while the container still runs, the stream was cut (an API server or
proxy timeout) and is reopened. When the container has terminated, one last read without
follow from the cursor collects anything written between a cut and the end. A read refused
with 403 calls `on_forbidden` once (the runtime grants itself the log reader in that
namespace) and is tried again after a pause.

Kubernetes merges stdout and stderr into one stream, so every line is reported as "stdout".
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from codexk8s.adapters.kubernetes.client import ApiCaller, describe, is_retryable
from codexk8s.adapters.kubernetes.manifests import CONTAINER_NAME, JOB_NAME_LABEL
from codexk8s.adapters.kubernetes.status import agent_container, dig, latest_pod
from codexk8s.domain.runtime import LogLine, WorkloadHandle, WorkloadRuntimeError

log = logging.getLogger(__name__)

STREAM = "stdout"
_TIMESTAMP = re.compile(
    r"^(?P<seconds>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})$"
)
_NANOS = 1_000_000_000


def timestamp_nanos(value: str) -> int | None:
    """Nanoseconds since the epoch of an RFC3339(Nano) timestamp, or None if it is not one.

    Exact integers, because RFC3339Nano drops trailing zeros (".5Z" vs ".123Z") so the strings
    do not sort, and datetime keeps only microseconds.
    """
    match = _TIMESTAMP.match(value)
    if match is None:
        return None
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    try:
        seconds = datetime.fromisoformat(match["seconds"] + zone)
    except ValueError:
        return None
    fraction = (match["fraction"] or "").ljust(9, "0")
    return int(seconds.timestamp()) * _NANOS + int(fraction)


def nanos_to_datetime(nanos: int) -> datetime:
    seconds, rest = divmod(nanos, _NANOS)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)


@dataclass(frozen=True, slots=True)
class LogCursor:
    """The position right after the `count`-th line stamped `timestamp`."""

    timestamp: str
    nanos: int
    count: int

    def __str__(self) -> str:
        return f"{self.timestamp}#{self.count}"

    @classmethod
    def parse(cls, value: str) -> LogCursor:
        timestamp, sep, count = value.rpartition("#")
        nanos = timestamp_nanos(timestamp) if sep else None
        if nanos is None or not count.isdigit() or int(count) < 1:
            raise WorkloadRuntimeError(f"not a Kubernetes log cursor: {value!r}")
        return cls(timestamp=timestamp, nanos=nanos, count=int(count))


class LineReader:
    """Stamps lines with cursors and drops those at or before a starting cursor.

    Feed it every line of one stream from its start; after a reconnect, start a new reader from
    the last cursor handed out.
    """

    def __init__(self, after: LogCursor | None) -> None:
        self._after = after
        self._last: LogCursor | None = after
        self._timestamp: str | None = None
        self._nanos: int | None = None
        self._count = 0

    @property
    def last(self) -> LogCursor | None:
        return self._last

    def read(self, raw: bytes) -> LogLine | None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        stamp, _, rest = text.partition(" ")
        nanos = timestamp_nanos(stamp)
        if nanos is None:
            # Not stamped (should not happen with timestamps=True): keep the whole text and
            # count it under the previous timestamp so cursors stay in order.
            rest = text
            stamp, nanos = self._timestamp or "1970-01-01T00:00:00Z", self._nanos or 0
        if nanos == self._nanos:
            self._count += 1
        else:
            self._timestamp, self._nanos, self._count = stamp, nanos, 1
        cursor = LogCursor(timestamp=stamp, nanos=nanos, count=self._count)
        after = self._after
        if after is not None and (
            nanos < after.nanos or (nanos == after.nanos and self._count <= after.count)
        ):
            return None
        self._last = cursor
        return LogLine(stream=STREAM, line=rest, ts=nanos_to_datetime(nanos), cursor=str(cursor))


def container_started(pod: Mapping[str, Any] | None) -> bool:
    state = dig(agent_container(pod), "state") or {}
    return "running" in state or "terminated" in state


def container_terminated(pod: Mapping[str, Any] | None) -> bool:
    if dig(pod, "status", "phase") in ("Succeeded", "Failed"):
        return True
    return "terminated" in (dig(agent_container(pod), "state") or {})


class PodLogStreamer:
    """Everything `KubernetesRuntime.stream_logs` does, for one call."""

    def __init__(
        self,
        caller: ApiCaller,
        core: Any,
        batch: Any,
        handle: WorkloadHandle,
        *,
        poll_interval: float,
        read_timeout: float,
        resume_margin_seconds: float,
        on_forbidden: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if not handle.namespace:
            raise WorkloadRuntimeError(f"workload {handle.name} has no namespace")
        self._caller = caller
        self._core = core
        self._batch = batch
        self._namespace = handle.namespace
        self._job = handle.name
        self._poll_interval = poll_interval
        self._read_timeout = read_timeout
        self._margin = resume_margin_seconds
        self._on_forbidden = on_forbidden

    async def _pods(self) -> Sequence[Mapping[str, Any]]:
        what = f"list pods of {self._namespace}/{self._job}"
        try:
            found = await self._caller.call(
                what,
                self._core.list_namespaced_pod,
                self._namespace,
                label_selector=f"{JOB_NAME_LABEL}={self._job}",
            )
        except ApiException as exc:
            raise WorkloadRuntimeError(f"{what}: {describe(exc)}") from exc
        return (found or {}).get("items") or []

    async def _job_is_over(self) -> bool:
        """Whether no pod will ever come: the Job is gone or has finished."""
        try:
            job = await self._caller.call(
                f"read job {self._namespace}/{self._job}",
                self._batch.read_namespaced_job,
                self._job,
                self._namespace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise WorkloadRuntimeError(f"read job {self._job}: {describe(exc)}") from exc
        conditions = dig(job, "status", "conditions") or []
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in conditions
        )

    async def _started_pod(self, follow: bool) -> Mapping[str, Any] | None:
        """The pod whose container has started; with follow, wait for it (None: never)."""
        while True:
            pod = latest_pod(await self._pods())
            if container_started(pod):
                return pod
            if not follow or container_terminated(pod) or await self._job_is_over():
                return None
            # Waiting for a pod to be scheduled and its image pulled: a few cheap reads of
            # one namespace, only for a viewer that asked to follow.
            await self._caller.sleep(self._poll_interval)

    def _since_seconds(self, after: LogCursor | None) -> int | None:
        if after is None:
            return None
        age = (datetime.now(UTC) - nanos_to_datetime(after.nanos)).total_seconds()
        return max(1, math.ceil(age + self._margin))

    async def stream(self, *, follow: bool, after: str | None) -> AsyncIterator[LogLine]:
        cursor = LogCursor.parse(after) if after else None
        pod = await self._started_pod(follow)
        if pod is None:
            return
        failures = 0
        while True:
            name = str(dig(pod, "metadata", "name"))
            reader = LineReader(cursor)
            stream = None
            error: Exception | None = None
            try:
                stream = await self._caller.open_stream(
                    self._core.read_namespaced_pod_log,
                    name,
                    self._namespace,
                    container=CONTAINER_NAME,
                    follow=follow,
                    timestamps=True,
                    since_seconds=self._since_seconds(cursor),
                    read_timeout=self._read_timeout,
                )
                failures = 0
                async for raw in stream.lines():
                    if (line := reader.read(raw)) is not None:
                        yield line
                if not follow:
                    # A read without follow is complete: an unterminated last line is real.
                    if stream.tail and (line := reader.read(stream.tail)) is not None:
                        yield line
                    return
            except ApiException as exc:
                if exc.status == 404:
                    return  # the pod is gone, and its log with it
                if exc.status == 403 and self._on_forbidden is not None:
                    on_forbidden, self._on_forbidden = self._on_forbidden, None
                    await on_forbidden()
                elif not is_retryable(exc) and exc.status != 400:
                    raise WorkloadRuntimeError(f"logs of {name}: {describe(exc)}") from exc
                error = exc
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                error = exc
            finally:
                if stream is not None:
                    stream.close()
            if stream is None and error is not None:
                # Could not even open the stream: count it, give up after the policy's attempts.
                failures = await self._backoff(error, failures)
            elif reader.last == cursor:
                # Cut (or ended) without a single new line: pause before reopening, so that a
                # server that keeps closing at once does not get hammered.
                await self._caller.sleep(self._caller.retry.backoff(1))
            if error is not None:
                log.info("log stream of %s cut (%s); resuming", self._job, describe(error))
            cursor = reader.last
            current = next(
                (p for p in await self._pods() if dig(p, "metadata", "name") == name), None
            )
            if current is None:
                return
            if container_terminated(current):
                # Whatever came between a cut and the end: one complete read from the cursor.
                follow = False
            pod = current

    async def _backoff(self, exc: BaseException, failures: int) -> int:
        failures += 1
        if failures >= self._caller.retry.attempts:
            raise WorkloadRuntimeError(
                f"logs of {self._namespace}/{self._job}: {describe(exc)} "
                f"(gave up after {failures} attempts)"
            ) from exc
        await self._caller.sleep(self._caller.retry.delay_for(exc, failures))
        return failures
