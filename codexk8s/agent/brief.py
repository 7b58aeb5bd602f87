"""The runner's client for the control plane's internal API: brief, progress, documents, the
resumable session, result.

Calls are authenticated by the run token. Connection errors and 5xx answers are retried with
exponential backoff (the control plane may be restarting or rolling); 4xx answers are final.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from codexk8s import urls
from codexk8s.domain import sessions as session_wire

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ControlPlaneError(Exception):
    """The control plane could not be reached, or refused the call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BriefPreconditionError(ControlPlaneError):
    """The control plane says the run cannot start (model key missing, no repository, ...)."""


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session the control plane handed back for this run to resume."""

    id: int
    version: int
    thread_id: str
    path: str
    data: bytes  # the rollout, gzip-compressed


class ControlPlane:
    def __init__(
        self,
        *,
        callback_url: str,
        run_id: int,
        token: str,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.callback_url = callback_url.rstrip("/")
        self.run_id = run_id
        self._retry_delays = retry_delays
        self._sleep = sleep
        self._client = httpx.Client(timeout=TIMEOUT, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._client.close()

    def url(self, template: str) -> str:
        return self.callback_url + template.format(run_id=self.run_id)

    def _call(self, method: str, template: str, *, body: Any = None, retry: bool = True) -> Any:
        response = self._send(method, template, retry=retry, json=body)
        return self._answer(response)

    def _send(self, method: str, template: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """The first answer below 500 (connection errors and 5xx are retried with backoff)."""
        delays = self._retry_delays if retry else ()
        attempt = 0
        while True:
            try:
                response = self._client.request(method, self.url(template), **kwargs)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the control plane: {type(exc).__name__}"
                status = None
            else:
                if response.status_code < 500:
                    return response
                problem = f"the control plane answered {response.status_code}"
                status = response.status_code
            if attempt >= len(delays):
                raise ControlPlaneError(problem, status=status)
            self._sleep(delays[attempt])
            attempt += 1

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code < 400:
            return data
        message = data.get("message") if isinstance(data, dict) else None
        message = message or f"HTTP {response.status_code}"
        if response.status_code == 422:
            raise BriefPreconditionError(message, status=422)
        raise ControlPlaneError(message, status=response.status_code)

    def fetch_brief(self) -> dict[str, Any]:
        return self._call("GET", urls.API_AGENT_BRIEF)

    def post_progress(self, payload: dict[str, Any]) -> None:
        """Best effort: progress is for people watching; losing one must not fail the run."""
        with contextlib.suppress(ControlPlaneError):
            self._call("POST", urls.API_AGENT_EVENTS, body=payload, retry=False)

    def post_documents(self, payload: dict[str, Any]) -> None:
        """Which project documents the prompt received (shown on the run's page)."""
        self._call("POST", urls.API_AGENT_DOCUMENTS, body=payload)

    def fetch_session(self, session_id: int) -> StoredSession | None:
        """The session the brief offered, or None when the control plane has none (any more)."""
        response = self._send("GET", urls.API_AGENT_SESSION, params={"id": str(session_id)})
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            self._answer(response)  # raises with the control plane's message
        headers = response.headers
        try:
            return StoredSession(
                id=int(headers[session_wire.ID_HEADER]),
                version=int(headers[session_wire.VERSION_HEADER]),
                thread_id=headers[session_wire.THREAD_HEADER],
                path=headers[session_wire.PATH_HEADER],
                data=response.content,
            )
        except (KeyError, ValueError):
            raise ControlPlaneError("the session came without its id, version or path") from None

    def put_session(
        self, data: bytes, *, thread_id: str, path: str, parent_id: int | None
    ) -> dict[str, Any]:
        """Leave this run's session for the next run of its lineage. A 409 means an earlier
        attempt stored another one (the same one again is accepted)."""
        headers = {
            "Content-Type": "application/gzip",
            session_wire.THREAD_HEADER: thread_id,
            session_wire.PATH_HEADER: path,
        }
        if parent_id is not None:
            headers[session_wire.PARENT_HEADER] = str(parent_id)
        response = self._send("PUT", urls.API_AGENT_SESSION, content=data, headers=headers)
        return self._answer(response)

    def post_result(self, payload: dict[str, Any]) -> None:
        """Report the outcome. A 409 means an earlier attempt already stored it."""
        try:
            self._call("POST", urls.API_AGENT_RESULT, body=payload)
        except ControlPlaneError as exc:
            if exc.status != 409:
                raise
