"""The live viewers gauge follows the API's live log streams: up while one is open, down after."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from codexk8s import urls
from codexk8s.web.http import api
from codexk8s.web.http.app import build_http_app
from tests.conftest import serve_in_thread
from tests.web.test_api import World, auth, make_run, run_url, store, world  # noqa: F401


def viewers() -> float:
    return REGISTRY.get_sample_value("codexk8s_live_viewers") or 0.0


def test_a_follow_stream_counts_as_a_live_viewer_while_open(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "FOLLOW_SECONDS", 5)
    monkeypatch.setattr(api, "FOLLOW_POLL_SECONDS", 0.05)
    run_id = make_run(world, status="running")
    store(run_id, 0, 2)
    before = viewers()
    # A real server: the test client would read the whole (bounded) stream before answering.
    with serve_in_thread(build_http_app()) as base, httpx.stream(
        "GET", base + run_url(urls.API_RUN_LOGS, run_id), params={"follow": "1"},
        headers=auth(world, "read"), timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        # Keep the line iterator referenced: a dropped one is closed, and the stream with it.
        lines = response.iter_lines()
        assert next(lines).startswith("id: 1")
        assert _until(lambda: viewers() == before + 1), viewers()
    # The client went away: the stream ended and the viewer is no longer counted.
    assert _until(lambda: viewers() == before), viewers()


def _until(predicate: Callable[[], bool], limit: float = 10) -> bool:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
