"""Calls into the official, synchronous Kubernetes client: off the event loop, with timeouts,
bounded retries, and plain JSON dicts as results.

Every call asks for the raw response (`_preload_content=False`) and decodes the JSON itself, so
the runtime works on the same plain dicts its manifests are built as, and a field the client's
models do not know yet cannot break a status read. Request bodies still go through the client's
models, which reject unknown fields before anything is sent.

Errors: 429 (honouring Retry-After), 500/502/503/504 and transport failures (refused or reset
connections, timeouts) are retried with capped exponential backoff; after the last attempt
they become `WorkloadRuntimeError`. Any other API error (404, 409, 410, 403, ...) is raised as
the client's `ApiException` at once, because only the caller knows what it means there (a 409
on create is "adopt", a 404 on delete is "already gone"). A POST that timed out may still have
been applied; the retry then meets 409 and the caller adopts the object, which is why every
create in this runtime is create-or-adopt.

Unary calls run in `asyncio.to_thread` with a total timeout. Streams are read chunk by chunk
on the runtime's own thread pools, because a follow may block a thread for minutes and must not
starve the default executor that the rest of the control plane (database calls) shares. Log
follows and watches have separate pools: every running run holds a follow (a quiet one blocks
its thread until its read timeout), and however many there are, the two watches that report
every run's status must always find a thread. Closing a stream shuts its socket down so its
thread is released at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import retry_after_seconds

from codexk8s import metrics
from codexk8s.domain.runtime import WorkloadRuntimeError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Everything urllib3 raises for a failed exchange (MaxRetryError, ProtocolError,
# ReadTimeoutError, ...) plus what the socket layer raises directly.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed in a retryable way."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    # A server asking for more than this is treated as asking for this much.
    max_retry_after: float = 60.0

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after `failures` consecutive failures (>= 1)."""
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        # Jitter in [50%, 100%] keeps replicas that failed together from retrying together.
        return delay * (0.5 + random.random() / 2)

    def delay_for(self, exc: BaseException, failures: int) -> float:
        """Retry-After when the server sent one, else the backoff."""
        if isinstance(exc, ApiException):
            retry_after = retry_after_seconds(exc)
            if retry_after is not None:
                return min(retry_after, self.max_retry_after)
        return self.backoff(failures)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, TRANSPORT_ERRORS)


def api_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


def describe(exc: BaseException) -> str:
    """One line for logs and run messages; never the response body (it may echo a manifest)."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


def decode_json(data: bytes | None) -> Any:
    return json.loads(data) if data else None


class ApiCaller:
    """Runs client methods with a timeout on every call and the retry policy above."""

    def __init__(
        self,
        *,
        request_timeout: float,
        connect_timeout: float,
        retry: RetryPolicy,
        sleep: Sleep,
        stream_executor: Executor,
        watch_executor: Executor | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.retry = retry
        self.sleep = sleep
        self.stream_executor = stream_executor
        # Watches read here; without a pool of their own they share the log follows' pool.
        self.watch_executor = watch_executor or stream_executor

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call `fn` and return its decoded JSON body; `what` names the call in errors."""
        failures = 0
        labels = metrics.kubernetes_call_labels(fn)
        while True:
            metrics.KUBERNETES_API_CALLS.labels(*labels).inc()
            try:
                return await asyncio.to_thread(self._call_json, fn, args, kwargs)
            except Exception as exc:
                metrics.KUBERNETES_API_ERRORS.labels(*labels).inc()
                if not is_retryable(exc):
                    raise
                failures += 1
                if failures >= self.retry.attempts:
                    raise WorkloadRuntimeError(
                        f"{what}: {describe(exc)} (gave up after {failures} attempts)"
                    ) from exc
                delay = self.retry.delay_for(exc, failures)
                log.warning("%s failed (%s); retrying in %.1fs", what, describe(exc), delay)
                await self.sleep(delay)

    def _call_json(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
        response = fn(
            *args, **kwargs, _preload_content=False, _request_timeout=self.request_timeout
        )
        try:
            return decode_json(response.data)
        except ValueError as exc:
            raise WorkloadRuntimeError(f"the API server answered with non-JSON: {exc}") from exc
        finally:
            response.release_conn()

    async def open_stream(
        self,
        fn: Callable[..., Any],
        *args: Any,
        read_timeout: float,
        executor: Executor | None = None,
        **kwargs: Any,
    ) -> ResponseStream:
        """Start a streaming request (one attempt: the stream's owner decides about retries).

        `read_timeout` bounds the silence between two chunks, not the whole stream. The stream
        is opened and read on `executor` (default: the log follows' pool).
        """
        pool = executor or self.stream_executor
        call = functools.partial(
            fn,
            *args,
            **kwargs,
            _preload_content=False,
            _request_timeout=(self.connect_timeout, read_timeout),
        )
        labels = metrics.kubernetes_call_labels(fn)
        metrics.KUBERNETES_API_CALLS.labels(*labels).inc()
        try:
            response = await asyncio.get_running_loop().run_in_executor(pool, call)
        except Exception:
            metrics.KUBERNETES_API_ERRORS.labels(*labels).inc()
            raise
        return ResponseStream(response, pool)


class ResponseStream:
    """An open streaming response, read chunk by chunk without blocking the event loop."""

    def __init__(self, response: urllib3.HTTPResponse, executor: Executor) -> None:
        self._response = response
        self._executor = executor
        self._chunks: Iterator[bytes] = response.stream(amt=None, decode_content=True)
        self._pending: Future[bytes | None] | None = None
        self._finished = False
        # What followed the last newline when the stream ended (see `lines`).
        self.tail = b""

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            self._pending = self._executor.submit(next, self._chunks, None)  # type: ignore[arg-type]
            chunk = await asyncio.wrap_future(self._pending)
            if chunk is None:
                self._finished = True
                return
            if chunk:
                yield chunk

    async def lines(self) -> AsyncIterator[bytes]:
        """Complete lines (without the newline). An unterminated tail is not yielded but kept
        in `tail`: a follow that ends mid-line was cut, and the line comes again on resume."""
        buffer = bytearray()
        async for chunk in self.chunks():
            buffer.extend(chunk)
            while (end := buffer.find(b"\n")) != -1:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                yield line
        self.tail = bytes(buffer)

    def close(self) -> None:
        """Release the connection; if a read is still blocked, unblock it first."""
        response = self._response
        pending = self._pending
        if self._finished:
            # Read to the end: the connection is clean and can serve the next request.
            with suppress(Exception):
                response.release_conn()
        elif pending is None or pending.done():
            # Unread data is left on the connection: it must not go back to the pool as is.
            _close_quietly(response)
        else:
            # Shutting the socket down makes the blocked read in the pool thread return at
            # once; the connection is closed only after that thread let go of it.
            with suppress(Exception):
                response.shutdown()
            pending.add_done_callback(lambda _: _close_quietly(response))


def _close_quietly(response: urllib3.HTTPResponse) -> None:
    with suppress(Exception):
        response.close()
    with suppress(Exception):
        # Hands the (now closed) connection back, so the pool reconnects instead of leaking it.
        response.release_conn()
