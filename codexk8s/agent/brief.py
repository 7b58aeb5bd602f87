"""The runner's client for the control plane's internal API: brief, progress, result.

Calls are authenticated by the run token. Connection errors and 5xx answers are retried with
exponential backoff (the control plane may be restarting or rolling); 4xx answers are final.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from codexk8s.web import routes

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ControlPlaneError(Exception):
    """The control plane could not be reached, or refused the call."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BriefPreconditionError(ControlPlaneError):
    """The control plane says the run cannot start (model key missing, no repository, ...)."""


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
        delays = self._retry_delays if retry else ()
        attempt = 0
        while True:
            try:
                response = self._client.request(method, self.url(template), json=body)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the control plane: {type(exc).__name__}"
                status = None
            else:
                if response.status_code < 500:
                    return self._answer(response)
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
        return self._call("GET", routes.API_AGENT_BRIEF)

    def post_progress(self, payload: dict[str, Any]) -> None:
        """Best effort: progress is for people watching; losing one must not fail the run."""
        with contextlib.suppress(ControlPlaneError):
            self._call("POST", routes.API_AGENT_EVENTS, body=payload, retry=False)

    def post_result(self, payload: dict[str, Any]) -> None:
        """Report the outcome. A 409 means an earlier attempt already stored it."""
        try:
            self._call("POST", routes.API_AGENT_RESULT, body=payload)
        except ControlPlaneError as exc:
            if exc.status != 409:
                raise
